"""Domain errors of background jobs (no HTTP status: ``service/api/errors.py`` maps them)."""

from __future__ import annotations

from service.errors import ServiceError


class JobNotFound(ServiceError, LookupError):
    """No job with this id: never created, expired, or not an id at all."""


class JobFinished(ServiceError):
    """The job has already ended, so it cannot be cancelled."""


class QueueUnavailable(ServiceError):
    """The job store or queue cannot be reached (Redis down or unreachable); retrying later may help."""


class QueueFull(ServiceError):
    """As many jobs wait to run as the queue takes (``max_queued``); retrying later may help."""


class JobCancelled(Exception):
    """Raised inside a running analysis once its job is cancelled, to stop it at the next sampled frame."""
