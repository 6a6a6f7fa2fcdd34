"""Turning uploaded bytes into a BGR array safely: format sniffing, pixel limits before decoding, EXIF."""

from __future__ import annotations

import io
import struct
import warnings

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from service.errors import InputTooLarge, InvalidInput, UnsupportedFormat

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SIGNATURES = {
    b"\xff\xd8\xff": "jpeg",
    PNG_SIGNATURE: "png",
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


TIFF_SAMPLE_FORMAT, TIFF_FLOAT = 339, 3  # the SampleFormat tag, and its value for IEEE floating point


def tiff_sample_format(data: bytes) -> int | None:
    """The SampleFormat of a TIFF's first image (1 unsigned integers, the default; 3 floating point), read from its
    first directory; None where that cannot be read."""
    order = "<" if data.startswith(b"II") else ">"
    try:
        (ifd,) = struct.unpack_from(order + "I", data, 4)
        (count,) = struct.unpack_from(order + "H", data, ifd)
        for at in range(ifd + 2, ifd + 2 + 12 * count, 12):
            tag, kind, n = struct.unpack_from(order + "HHI", data, at)
            if tag == TIFF_SAMPLE_FORMAT and kind == 3:  # SHORTs: inline when they fit in 4 bytes
                where = at + 8 if n <= 2 else struct.unpack_from(order + "I", data, at + 8)[0]
                return struct.unpack_from(order + "H", data, where)[0]
    except struct.error:
        return None
    return 1


JPEG_FRAMES = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}  # SOF0..SOF15 (C4, C8, CC are other segments)
JPEG_STANDALONE = frozenset([0x01, *range(0xD0, 0xD9)])  # TEM, RST0..7, SOI: markers without a length


def header_size(data: bytes) -> tuple[int, int] | None:
    """Width and height declared by a PNG's IHDR or a JPEG's frame header, read directly (for every upload: PIL's
    parser costs 20 times more, about 20 us a face crop); None where the header is not as expected (PIL then reads
    it, and says what is wrong)."""
    if data.startswith(PNG_SIGNATURE) and data[12:16] == b"IHDR" and len(data) >= 24:
        return struct.unpack_from(">II", data, 16)
    if not data.startswith(b"\xff\xd8"):
        return None
    at = 2
    while at + 9 <= len(data) and data[at] == 0xFF:
        marker = data[at + 1]
        if marker == 0xFF or marker in JPEG_STANDALONE:  # a fill byte, or a marker with no segment
            at += 1 if marker == 0xFF else 2
        elif marker in JPEG_FRAMES:
            height, width = struct.unpack_from(">HH", data, at + 5)
            return (width, height) if width and height else None
        elif marker in (0xD9, 0xDA):  # the image ends or its scan starts before any frame header
            return None
        else:
            at += 2 + struct.unpack_from(">H", data, at + 2)[0]
    return None


def declared_size(data: bytes) -> tuple[int, int]:
    """Width and height the image declares: from its header where it is plain (``header_size``), else from PIL's
    parser, which raises InputTooLarge or InvalidInput for what it cannot read."""
    return header_size(data) or image_size(data)


def decode_image(data: bytes, max_pixels: int) -> np.ndarray:
    """Bytes -> BGR uint8 image, EXIF orientation applied; UnsupportedFormat, InputTooLarge or InvalidInput."""
    if not data:
        raise InvalidInput("the uploaded file is empty")
    fmt = sniff_format(data)
    if fmt is None:
        raise UnsupportedFormat("unsupported image format; send JPEG, PNG, WebP, BMP or TIFF")
    if fmt == "tiff" and tiff_sample_format(data) == TIFF_FLOAT:  # neither PIL (colour) nor OpenCV reads them
        raise UnsupportedFormat("floating-point TIFF is not supported; send 8- or 16-bit integer pixels")
    width, height = declared_size(data)
    if width * height > max_pixels:
        raise InputTooLarge(f"image has {width}x{height} pixels; the limit is {max_pixels} pixels")
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)  # applies EXIF orientation
    if image is None or image.size == 0:
        raise InvalidInput(f"the {fmt} image could not be decoded (corrupt or truncated)")
    return image
