"""Python client for the emotion service: ``EmotionClient`` (blocking) and ``AsyncEmotionClient`` (asyncio), on
httpx, with typed results (the service's own response schemas), retries, video jobs and live streams (``stream()`` on
``WS /stream``); ``emotion`` is its CLI.

Its own distribution (``clients/python``, ``pip install ./clients/python``) depends on httpx, pydantic, tqdm and
websockets only; it imports nothing of the server (numpy with OpenCV or Pillow only to send numpy images, and
OpenCV for ``emotion watch``: the ``watch`` extra).
"""

from emotion_client.aio import AsyncEmotionClient
from emotion_client.calls import Call, RetryPolicy
from emotion_client.errors import EmotionAPIError, EmotionConnectionError, EmotionError, JobFailed, StreamClosed
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
from emotion_client.stream_aio import AsyncStream, AsyncStreamSession
from emotion_client.stream_messages import (
    StreamError,
    StreamFace,
    StreamOptions,
    StreamReady,
    StreamResult,
    StreamSummary,
    StreamTrack,
    pack_frame,
)
from emotion_client.stream_sync import Stream, StreamSession
from emotion_client.sync import EmotionClient

__all__ = [
    "AsyncEmotionClient",
    "AsyncStream",
    "AsyncStreamSession",
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
    "Stream",
    "StreamClosed",
    "StreamError",
    "StreamFace",
    "StreamOptions",
    "StreamReady",
    "StreamResult",
    "StreamSession",
    "StreamSummary",
    "StreamTrack",
    "VideoPredictionResponse",
    "pack_frame",
]
