"""Python client for the emotion service: ``EmotionClient`` (blocking) and ``AsyncEmotionClient`` (asyncio), on
httpx, with typed results (the service's own response schemas), retries and video jobs; ``emotion`` is its CLI.

It imports nothing of the server: httpx and pydantic are all it needs (numpy with OpenCV or Pillow only to send
numpy images).
"""

from service.client.aio import AsyncEmotionClient
from service.client.calls import Call, RetryPolicy
from service.client.errors import EmotionAPIError, EmotionConnectionError, EmotionError, JobFailed
from service.client.schemas import (
    FacePredictionResponse,
    Health,
    ImagePredictionResponse,
    Job,
    JobAccepted,
    JobInfo,
    JobPage,
    ModelInfo,
    ModelList,
    VideoPredictionResponse,
)
from service.client.sync import EmotionClient

__all__ = [
    "AsyncEmotionClient",
    "Call",
    "EmotionAPIError",
    "EmotionClient",
    "EmotionConnectionError",
    "EmotionError",
    "FacePredictionResponse",
    "Health",
    "ImagePredictionResponse",
    "Job",
    "JobAccepted",
    "JobFailed",
    "JobInfo",
    "JobPage",
    "ModelInfo",
    "ModelList",
    "RetryPolicy",
    "VideoPredictionResponse",
]
