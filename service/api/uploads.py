"""Video uploads streamed to disk, shared by ``POST /predict/video`` (a temp file) and ``POST /jobs/video`` (the
job's folder): the container is checked on the first chunk and the size while streaming, never whole in memory."""

from __future__ import annotations

import errno
import os
import re
import tempfile
from pathlib import Path

from fastapi import Request, UploadFile

from service.errors import InputTooLarge, InvalidInput, StorageFull
from service.video.decode import SNIFF_BYTES, check_container

CHUNK = 1 << 20
# Set by MultipartCloseMiddleware on multipart requests: whether the body reached its closing boundary.
MULTIPART_CLOSED = "emotion.multipart_closed"


# The plain shape of a one-file form, as httpx, requests, curl and browsers send it; anything else goes to the full
# form parser (which then also says what is wrong). Boundaries: RFC 2046's characters, no space.
PLAIN_FORM = re.compile(rb'multipart/form-data; ?boundary=("?)([0-9A-Za-z\'()+_,./:=?-]{1,70})\1', re.IGNORECASE)
PLAIN_FILE_HEADER = re.compile(rb'content-disposition: ?form-data; name="file"; filename="[^"\\\r\n]+"', re.IGNORECASE)
PLAIN_TYPE_HEADER = re.compile(rb"content-type: ?[!-~]+", re.IGNORECASE)


def plain_boundary(content_type: bytes) -> bytes | None:
    """The boundary of a ``multipart/form-data`` Content-Type in its plain form, else None."""
    match = PLAIN_FORM.fullmatch(content_type)
    return match[2] if match else None


def plain_file_part(body: bytes, boundary: bytes) -> bytes | None:
    """The file of a form that is exactly one part, field ``file`` with a filename (and at most a Content-Type),
    closed by its final delimiter; None for any other shape. What the full form parser would read as that field:
    the thin path takes it without the parser's per-part machinery and temporary file."""
    opening, closing = b"--" + boundary + b"\r\n", b"\r\n--" + boundary + b"--"
    end = body.rfind(closing)
    if not body.startswith(opening) or end < 0 or body[end + len(closing) :] not in (b"", b"\r\n"):
        return None
    head_end = body.find(b"\r\n\r\n", len(opening), end + 2)
    if head_end < 0:
        return None
    first, *rest = body[len(opening) : head_end].split(b"\r\n")
    if not PLAIN_FILE_HEADER.fullmatch(first) or len(rest) > 1 or not all(PLAIN_TYPE_HEADER.fullmatch(h) for h in rest):
        return None
    content = body[head_end + 4 : end]
    return content if content and closing[:-2] not in content else None


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
                    check_container(chunk[:SNIFF_BYTES])
                written += len(chunk)
                if written > limit:
                    raise InputTooLarge(f"video is larger than the {limit} byte limit")
                out.write(chunk)
        if written == 0:
            raise InvalidInput("the uploaded file is empty")
        return path
    except BaseException as exc:
        os.unlink(path)
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise StorageFull("the server's disk is full; the upload was not kept; retry later") from exc
        raise
