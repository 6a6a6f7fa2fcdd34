"""Video uploads streamed to disk, shared by ``POST /predict/video`` (a temp file) and ``POST /jobs/video`` (the
job's folder): the container is checked on the first chunk and the size while streaming, never whole in memory."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from fastapi import Request, UploadFile

from service.errors import InputTooLarge, InvalidInput
from service.video.decode import check_container

CHUNK = 1 << 20
# Set by MultipartCloseMiddleware on multipart requests: whether the body reached its closing boundary.
MULTIPART_CLOSED = "emotion.multipart_closed"


def upload_problem(request: Request, what: str) -> tuple[int, str]:
    """Status and reason for a request whose upload did not arrive: not a form at all (415), a multipart form cut
    off before its closing boundary (the parser then just sees fewer fields), or a form without the field (422)."""
    content_type = request.headers.get("content-type", "")
    if content_type.lower().startswith("application/x-www-form-urlencoded"):
        return 422, f"a URL-encoded form has no file field 'file'; send the {what} as multipart field 'file'"
    if not content_type.lower().startswith("multipart/form-data"):
        sent = f"Content-Type {content_type!r}" if content_type else "no Content-Type"
        return 415, f"send the {what} as multipart/form-data field 'file' (the request has {sent})"
    if request.scope.get(MULTIPART_CLOSED) is False:
        return 422, "the multipart body ends before its closing boundary: the upload was cut off; send it again"
    return 422, f"the form has no field 'file'; send the {what} as multipart field 'file'"


async def spool_upload(file: UploadFile, limit: int, directory: Path | None = None) -> str:
    """Copy the upload to a new file in ``directory`` (default: the system temp dir) chunk by chunk; the file is
    removed again on UnsupportedFormat, InputTooLarge (over ``limit`` bytes) or InvalidInput (empty)."""
    fd, path = tempfile.mkstemp(prefix="emotion-video-", suffix=".bin", dir=directory)
    written = 0
    try:
        with os.fdopen(fd, "wb") as out:
            while chunk := await file.read(CHUNK):
                if written == 0:
                    check_container(chunk[:16])
                written += len(chunk)
                if written > limit:
                    raise InputTooLarge(f"video is larger than the {limit} byte limit")
                out.write(chunk)
        if written == 0:
            raise InvalidInput("the uploaded file is empty")
        return path
    except BaseException:
        os.unlink(path)
        raise
