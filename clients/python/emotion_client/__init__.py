"""Python client for the emotion service: ``EmotionClient`` (blocking) and ``AsyncEmotionClient`` (asyncio), on
httpx, with typed results (the service's own response schemas), retries and video jobs; ``emotion`` is its CLI.

Its own distribution (``clients/python``, ``pip install ./clients/python``) depends on httpx, pydantic and tqdm
only; it imports nothing of the server (numpy with OpenCV or Pillow only to send numpy images).
"""

from emotion_client.aio import AsyncEmotionClient
from emotion_client.calls import Call, RetryPolicy
from emotion_client.errors import EmotionAPIError, EmotionConnectionError, EmotionError, JobFailed
from emotion_client.schemas import (
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
from emotion_client.sync import EmotionClient

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
