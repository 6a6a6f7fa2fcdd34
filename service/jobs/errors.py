"""Domain errors of background jobs (no HTTP status: ``service/api/errors.py`` maps them)."""

from __future__ import annotations

from service.errors import ServiceError


class JobNotFound(ServiceError, LookupError):
    """No job with this id: never created, expired, or not an id at all."""


class JobStopping(ServiceError):
    """The job was cancelled while it ran and its worker has not stopped yet, so it cannot be deleted yet."""


class QueueUnavailable(ServiceError):
    """The job store or queue cannot be reached (Redis down or unreachable); retrying later may help."""


class QueueFull(ServiceError):
    """As many jobs wait to run as the queue takes (``max_queued``); retrying later may help."""


class JobCancelled(Exception):
    """Raised inside a running analysis once its job is cancelled, to stop it at the next sampled frame."""
