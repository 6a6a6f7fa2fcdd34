"""The job record: what was asked, where the clip is, and how far it got. Stores keep it as JSON."""

from __future__ import annotations

import os
import re
import socket
import time
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, Field

from service.options import Requested

Status = Literal["queued", "running", "succeeded", "failed", "cancelled"]
STATUSES: tuple[Status, ...] = ("queued", "running", "succeeded", "failed", "cancelled")
FINAL: frozenset[str] = frozenset({"succeeded", "failed", "cancelled"})
ID_PATTERN = re.compile(r"^[0-9a-f]{32}$")
RESULT_FILE = "result.json"


def new_id() -> str:
    """32 hex digits: the creation time in milliseconds, then 80 random bits, so ids sort by creation (folder
    listings and Redis indexes need no extra field for "newest first")."""
    return f"{int(time.time() * 1000):012x}{os.urandom(10).hex()}"


def valid_id(job_id: str) -> bool:
    """Ids become folder names and Redis keys: anything else is refused before it touches either."""
    return bool(ID_PATTERN.fullmatch(job_id))


def worker_id() -> str:
    """Who runs a job, as stored in it: host and process id."""
    return f"{socket.gethostname()}-{os.getpid()}"


def utcnow() -> datetime:
    return datetime.now(UTC)


class Job(BaseModel):
    """One background video analysis. ``tries`` counts starts: a worker that dies mid-job used one."""

    id: str
    status: Status = "queued"
    progress: float = Field(0.0, ge=0.0, le=1.0)
    created: datetime = Field(default_factory=utcnow)
    started: datetime | None = None
    finished: datetime | None = None
    expires: datetime | None = None
    tries: int = 0
    error: str | None = None
    worker: str | None = None
    model: str
    version: str
    options: dict[str, Any] = Field(default_factory=dict, description="the request's own choices (Requested)")
    upload: str | None = Field(None, description="the clip's file name in the job's folder, until the job ends")
    duration: float = Field(0.0, description="seconds of footage, from the container header")

    @property
    def final(self) -> bool:
        return self.status in FINAL

    def requested(self) -> Requested:
        return Requested(**self.options)

    def ended(self, status: Status, ttl_s: float, **fields: Any) -> dict[str, Any]:
        """The fields that end this job now with ``status``; it is deleted ``ttl_s`` later."""
        now = utcnow()
        return {"status": status, "finished": now, "expires": now + timedelta(seconds=ttl_s), **fields}
