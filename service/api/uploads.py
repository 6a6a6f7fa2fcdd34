"""Video uploads streamed to disk, shared by ``POST /predict/video`` (a temp file) and ``POST /jobs/video`` (the
job's folder): the container is checked on the first chunk and the size while streaming, never whole in memory."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from fastapi import UploadFile

from service.errors import InputTooLarge, InvalidInput
from service.video.decode import check_container

CHUNK = 1 << 20


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
