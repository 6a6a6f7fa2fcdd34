"""Turning what a caller holds (a path, bytes, a numpy image, an open file) into a request body.

Images go as the raw request body (no multipart), videos as multipart field ``file``, streamed from disk.
numpy, OpenCV and Pillow are optional: they are imported only when a numpy image is passed.
"""

from __future__ import annotations

import mimetypes
import os
import sys
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal

ImageInput = str | os.PathLike | bytes | bytearray | memoryview | Any  # Any: a numpy array (numpy is optional)
VideoInput = str | os.PathLike | bytes | IO[bytes]

OCTET = "application/octet-stream"
SIGNATURES = {
    b"\xff\xd8\xff": "image/jpeg",
    b"\x89PNG\r\n\x1a\n": "image/png",
    b"BM": "image/bmp",
    b"II*\x00": "image/tiff",
    b"MM\x00*": "image/tiff",
}


@dataclass(frozen=True)
class RawBody:
    """Bytes sent as the request body with their content type."""

    content: bytes
    content_type: str

    def open(self, stack: ExitStack) -> dict[str, Any]:
        return {"content": self.content, "headers": {"Content-Type": self.content_type}}


@dataclass(frozen=True)
class FileBody:
    """A multipart field ``file``: from a path (opened afresh for every attempt, streamed), bytes or a file."""

    source: str | os.PathLike | bytes | IO[bytes]
    filename: str
    content_type: str

    def open(self, stack: ExitStack) -> dict[str, Any]:
        source = self.source
        if isinstance(source, str | os.PathLike):
            source = stack.enter_context(open(source, "rb"))  # noqa: SIM115 - closed by the caller's stack
        elif hasattr(source, "seek"):
            source.seek(0)  # a retry sends the file again from its start
        return {"files": {"file": (self.filename, source, self.content_type)}}


Body = RawBody | FileBody


def _content_type(name: str, prefix: str) -> str:
    guessed = mimetypes.guess_type(name)[0]
    return guessed if guessed and guessed.startswith(prefix) else OCTET


def _sniff(data: bytes) -> str:
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return next((ctype for sig, ctype in SIGNATURES.items() if data.startswith(sig)), OCTET)


def is_numpy_array(value: Any) -> bool:
    """True for a numpy array, without importing numpy (an array exists only if numpy was imported)."""
    np = sys.modules.get("numpy")
    return np is not None and isinstance(value, np.ndarray)


def encode_image(image: Any, fmt: Literal["png", "jpeg"] = "png", quality: int | None = None) -> bytes:
    """A uint8 ``H x W`` (gray), ``H x W x 3`` (BGR, as OpenCV reads) or, for PNG, ``H x W x 4`` (BGRA) array ->
    PNG or JPEG (``quality``) bytes, with OpenCV when installed, else Pillow. Uploads send PNG (lossless: the server
    sees exactly these pixels); live frames JPEG (many a second: size bounds the rate)."""
    channels = (1, 3, 4) if fmt == "png" else (1, 3)
    if str(image.dtype) != "uint8" or image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in channels):
        shapes = "/".join(map(str, channels))
        raise ValueError(f"expected a uint8 H x W or H x W x {shapes} image array, got {image.dtype} {image.shape}")
    try:
        import cv2
    except ImportError:
        return _encode_pillow(image, fmt, quality)
    params = [] if quality is None else [cv2.IMWRITE_JPEG_QUALITY, quality]
    ok, buf = cv2.imencode(".png" if fmt == "png" else ".jpg", image, params)
    if not ok:
        raise ValueError(f"OpenCV could not encode the image as {fmt.upper()}")
    return buf.tobytes()


def _encode_pillow(image: Any, fmt: str, quality: int | None) -> bytes:
    import io

    try:
        from PIL import Image
    except ImportError as exc:
        raise ImportError("sending a numpy image needs opencv-python or Pillow installed") from exc
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    elif image.ndim == 3:
        image = image[:, :, [2, 1, 0, 3][: image.shape[2]]]  # BGR(A) -> RGB(A)
    out = io.BytesIO()
    Image.fromarray(image).save(out, format=fmt.upper(), **({} if quality is None else {"quality": quality}))
    return out.getvalue()


def image_body(image: ImageInput) -> RawBody:
    """The raw request body for an image given as a path, encoded bytes or a numpy array."""
    if isinstance(image, str | os.PathLike):
        path = Path(image)
        return RawBody(path.read_bytes(), _content_type(path.name, "image/"))
    if isinstance(image, bytes | bytearray | memoryview):
        data = bytes(image)
        return RawBody(data, _sniff(data))
    if is_numpy_array(image):
        return RawBody(encode_image(image), "image/png")
    raise TypeError(f"an image is a path, encoded bytes or a numpy array, not {type(image).__name__}")


def video_body(video: VideoInput, filename: str | None = None) -> FileBody:
    """The multipart upload for a video given as a path, bytes or a binary file object."""
    if isinstance(video, str | os.PathLike):
        path = Path(video)
        if not path.is_file():
            raise FileNotFoundError(f"no such video file: {path}")
        name = filename or path.name
    elif isinstance(video, bytes | bytearray) or hasattr(video, "read"):
        name = filename or Path(getattr(video, "name", "video.mp4") or "video.mp4").name
        video = bytes(video) if isinstance(video, bytearray) else video
    else:
        raise TypeError(f"a video is a path, bytes or a binary file, not {type(video).__name__}")
    return FileBody(video, name, _content_type(name, "video/"))
