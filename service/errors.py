"""Domain errors: what went wrong, in words a client can act on. Only ``service/api/errors.py`` knows which HTTP
status each one becomes; the offline scorer reports the same ``detail`` per file."""

from __future__ import annotations


class ServiceError(Exception):
    """A request that cannot be served as asked; ``detail`` says why."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class InvalidInput(ServiceError):
    """The input is empty, corrupt or truncated, or the options contradict each other."""


class UnsupportedFormat(ServiceError):
    """The input is of a kind this service does not read (image format, video container, content type)."""


class InputTooLarge(ServiceError):
    """The input is over a configured limit (bytes, pixels, duration)."""


class WrongModelKind(ServiceError):
    """The model cannot take this input (e.g. a clip model given a photo)."""


class ModelNotFound(ServiceError, LookupError):
    """No such model or version in the store."""


class ModelUnavailable(ServiceError):
    """The model exists but cannot serve now (failed to load, unloaded); retrying may help."""


class ModelUnloaded(ModelUnavailable):
    """The model was unloaded while this request waited for it; retry at once."""


class StorageFull(ServiceError):
    """The server has no room to keep the upload (its disk is full, or under the free space it keeps); retry later."""
