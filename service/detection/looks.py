"""A second look at a photo in which the first scan found no face: with a border, for faces that fill it."""

from __future__ import annotations

from dataclasses import replace

import cv2
import numpy as np

from service.detection.base import Detection, FaceDetector
from service.detection.scaling import rescaled

# A photo larger than this is shrunk to it before its close-up scan: bordering 12 megapixels cost 50 ms, and the
# scan shrinks the canvas much further anyway.
CLOSE_UP_SIDE = 1024


def close_up_faces(
    detector: FaceDetector, image: np.ndarray, padding: float, min_face: int | None = None
) -> list[Detection]:
    """Faces that fill the photo, for a second look when a first scan found none.

    HOG (like most detectors) scores a window that holds some background around the face, so a face cropped to
    the photo's edges is missed; scanning again with a mid-gray border ``padding`` of the longest side wide on
    every side finds many of them (11 of the 20 photos of ``shared/data/photos`` HOG found nothing in, and no false
    face on 200 faceless images, where a mirrored border made 4). Boxes come back in the photo's pixels, clipped
    to it.
    """
    if padding <= 0:
        return []
    h, w = image.shape[:2]
    shrink = min(1.0, CLOSE_UP_SIDE / max(h, w))  # a large photo is bordered at a size the scan shrinks it to anyway
    small = rescaled(image, shrink)
    pad = max(1, round(max(small.shape[:2]) * padding))
    gray = (128,) * (1 if image.ndim == 2 else image.shape[2])
    canvas = cv2.copyMakeBorder(small, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=gray)
    out = []
    for found in detector.detect(canvas, None if min_face is None else max(1, round(min_face * shrink))):
        d = found.moved(-pad, -pad, 1.0).moved(0, 0, shrink)  # out of the border, back to the photo's pixels
        x0, y0 = max(d.x, 0), max(d.y, 0)
        x1, y1 = min(d.x + d.width, w), min(d.y + d.height, h)
        if x1 > x0 and y1 > y0:
            out.append(replace(d, x=x0, y=y0, width=x1 - x0, height=y1 - y0))
    return out
