"""Turning uploaded bytes into a BGR array safely: format sniffing, pixel limits before decoding, EXIF."""

from __future__ import annotations

import io
import warnings

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from service.errors import InputTooLarge, InvalidInput, UnsupportedFormat

SIGNATURES = {
    b"\xff\xd8\xff": "jpeg",
    b"\x89PNG\r\n\x1a\n": "png",
    b"BM": "bmp",
    b"II*\x00": "tiff",
    b"MM\x00*": "tiff",
}


def sniff_format(data: bytes) -> str | None:
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return next((fmt for sig, fmt in SIGNATURES.items() if data.startswith(sig)), None)


def image_size(data: bytes) -> tuple[int, int]:
    """Width and height from the header alone (no pixel decoding)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data)) as img:
                return img.size
    except Image.DecompressionBombError as exc:
        raise InputTooLarge("the image declares too many pixels") from exc
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise InvalidInput("the image header is corrupt or truncated") from exc


def decode_image(data: bytes, max_pixels: int) -> np.ndarray:
    """Bytes -> BGR uint8 image, EXIF orientation applied; UnsupportedFormat, InputTooLarge or InvalidInput."""
    if not data:
        raise InvalidInput("the uploaded file is empty")
    fmt = sniff_format(data)
    if fmt is None:
        raise UnsupportedFormat("unsupported image format; send JPEG, PNG, WebP, BMP or TIFF")
    width, height = image_size(data)
    if width * height > max_pixels:
        raise InputTooLarge(f"image has {width}x{height} pixels; the limit is {max_pixels} pixels")
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)  # applies EXIF orientation
    if image is None or image.size == 0:
        raise InvalidInput(f"the {fmt} image could not be decoded (corrupt or truncated)")
    return image
