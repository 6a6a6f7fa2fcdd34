"""The messages of a live session on ``WS /stream``: plain pydantic, shared by the server and the client.

A session (see the docs' "Live streams" page for the whole contract and its close codes):

1. the client may send ``StreamOptions`` first, as a JSON text message; the server answers ``StreamReady``
   (without options, ``StreamReady`` comes before the first frame's result, with the defaults);
2. then frames, as binary messages: JPEG, PNG or WebP bytes, optionally prefixed by ``FRAME_TIME_MAGIC`` and a
   little-endian float64 capture time in seconds (``pack_frame``); the server answers each frame it analyses with a
   ``StreamResult``, and drops frames that arrive while it is busy (the newest frame wins; ``skipped`` counts them);
3. a ``StreamControl`` text message asks for ``StreamSummary`` (``summary``) or ends the session (``close``: the
   summary, then close code 1000); a frame the server cannot read gets ``StreamError`` and the session goes on.
"""

from __future__ import annotations

import struct
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from emotion_client.schemas import AffectPrediction, Box, EmotionSummary, FaceQuality, ModelRef, Segment, VASource

STREAM_PATH = "/stream"
SUBPROTOCOL = "emotion-stream"  # offered by clients; browsers add "key.<api key>" beside it (no headers there)
KEY_PROTOCOL_PREFIX = "key."
FRAME_TIME_MAGIC = b"EMT1"  # then 8 bytes: float64 little-endian capture time (seconds), then the image bytes

# Close codes (RFC 6455 and the registry) a session ends with.
CLOSE_NORMAL = 1000  # the client asked (``close``); the summary was sent first
CLOSE_GOING_AWAY = 1001  # idle for ``idle_timeout_s``, or longer than ``max_session_s`` (after a final summary)
CLOSE_SERVICE_RESTART = 1012  # the server is stopping (uvicorn closes every socket with it)
CLOSE_INVALID_OPTIONS = 1007  # the options message is not JSON, not an object, or has an unknown or bad field
CLOSE_POLICY = 1008  # no API key, or a wrong one, where the service requires one
CLOSE_TOO_BIG = 1009  # a frame message larger than ``max_frame_bytes``
CLOSE_INTERNAL = 1011  # a server fault (never expected; logged)
CLOSE_TRY_AGAIN = 1013  # ``max_sessions`` sessions are live; try again later


def pack_frame(image: bytes, t: float | None = None) -> bytes:
    """A frame message: the encoded image, with its capture time in front when given (seconds from 0 to 1e10:
    ``time.time()``, or since the stream began; the server refuses a frame with any other)."""
    return image if t is None else FRAME_TIME_MAGIC + struct.pack("<d", t) + image


def unpack_frame(message: bytes) -> tuple[bytes, float | None]:
    """``pack_frame``'s inverse: the image bytes and the capture time (None when the frame carries none)."""
    if message[:4] == FRAME_TIME_MAGIC and len(message) >= 12:
        return message[12:], struct.unpack("<d", message[4:12])[0]
    return message, None


class StreamOptions(BaseModel):
    """The session's first text message (all optional). Unknown fields close the session with 1007."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["options"] = "options"
    model: str | None = Field(None, description="a face model's name (default: the service's default model)")
    version: str | None = Field(None, description="the model's version (default: its default version)")
    max_faces: int | None = Field(None, ge=1, description="faces per frame at most (capped by the service's limit)")
    min_face_size: int | None = Field(None, ge=1, description="smallest face searched for, pixels")
    smoothing: float | None = Field(
        None, ge=0, le=10, description="EMA time constant of `emotions`, seconds (0 = raw; default: the service's)"
    )
    full_detect_every_s: float | None = Field(
        None, ge=0, le=60, description="seconds between full-frame detections (default: the service's)"
    )
    api_key: str | None = Field(None, description="the API key, where the service requires one and no header can")


class StreamReady(BaseModel):
    """The session is set up: what it runs and the limits it holds the client to."""

    type: Literal["ready"] = "ready"
    session: str = Field(description="an opaque id, for logs")
    model: ModelRef
    labels: list[str]
    valence_arousal_source: VASource
    max_frame_bytes: int
    idle_timeout_s: float


class StreamFace(AffectPrediction):
    """A face of an analysed frame: ``emotions``/``dominant``/``valence``/``arousal`` are smoothed along its track
    (as in video timelines); ``raw`` is this frame's own answer."""

    track_id: int = Field(description="stable while the same face is followed; a cut or a new person gets a new id")
    box: Box
    score: float = Field(description="detector confidence in 0..1 (0: the box was carried forward, not searched)")
    raw: AffectPrediction = Field(description="this frame's own probabilities, unsmoothed")
    quality: FaceQuality | None = None
    reliable: bool | None = None


class StreamResult(BaseModel):
    type: Literal["result"] = "result"
    seq: int = Field(description="the frame's number in the session: binary messages received before it, from 0")
    t: float = Field(description="the frame's capture time if it carried one, else seconds since the session began")
    skipped: int = Field(0, description="frames dropped (newest wins) since the previous result")
    width: int
    height: int
    faces: list[StreamFace]
    server_ms: float = Field(description="decode to answer on the server, milliseconds")


class StreamTrack(BaseModel):
    track_id: int
    first_seen: float
    last_seen: float
    samples: int = Field(description="frames analysed with this face")
    segments: list[Segment]
    summary: EmotionSummary


class StreamCounts(BaseModel):
    received: int = Field(description="frame messages received")
    analysed: int
    dropped: int = Field(description="not analysed: a newer frame arrived first")
    bad: int = Field(description="unreadable frames (each answered with an error)")


class StreamSummary(BaseModel):
    """The session so far, per track (live and ended), and its frame counts."""

    type: Literal["summary"] = "summary"
    final: bool = Field(description="true when the session ends after it")
    tracks: list[StreamTrack]
    frames: StreamCounts
    summary: EmotionSummary | None = Field(None, description="over every analysed face so far")


class StreamControl(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["summary", "close"]


class StreamError(BaseModel):
    """A frame or message the session could not use; the session goes on."""

    type: Literal["error"] = "error"
    seq: int | None = Field(None, description="the frame it concerns, if any")
    detail: str


StreamMessage = StreamReady | StreamResult | StreamSummary | StreamError
