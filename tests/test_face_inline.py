"""Which face crops are decoded on the event loop: small in bytes and in declared pixels (a highly compressed large
image is not, so it cannot hold the loop up); anything unreadable goes to the thread, whose decode reports it."""

from __future__ import annotations

import cv2
import numpy as np

from service.pipelines.face import INLINE_DECODE_BYTES, decodes_quickly


def encoded(side: int, ext: str = ".jpg") -> bytes:
    return cv2.imencode(ext, np.full((side, side, 3), 120, np.uint8))[1].tobytes()


def test_a_face_crop_is_decoded_inline():
    assert decodes_quickly(encoded(48)) and decodes_quickly(encoded(256, ".png"))


def test_few_bytes_declaring_many_pixels_go_to_a_thread():
    bomb = encoded(1500, ".png")  # a flat 1500 px square compresses to a few kilobytes
    assert len(bomb) <= INLINE_DECODE_BYTES and not decodes_quickly(bomb)


def test_large_or_unreadable_uploads_go_to_a_thread():
    noisy = cv2.imencode(".png", np.random.default_rng(0).integers(0, 256, (100, 100, 3), dtype=np.uint8))[1]
    assert len(noisy) > INLINE_DECODE_BYTES and not decodes_quickly(noisy.tobytes())
    assert not decodes_quickly(b"\xff\xd8\xff truncated") and not decodes_quickly(b"")
