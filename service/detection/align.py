"""Face alignment that keeps the training framing: turn the crop so the eyes are level, nothing else.

A template alignment (dlib's ``get_face_chip``) reframes the face: scale and centre come from the landmarks, not
from the detector box the model's crops were cut like, and on real photos that cost the shipped model 5-10 points.
Here the crop is the same square ``crop_face`` cuts (box centre, box side plus the model's margin); only the roll
is taken out, with the image rotated about the box centre. Where the rotation reaches past the image the border
pixels are repeated.

Landmarks come from dlib's 5-point shape predictor (``shape_predictor_5_face_landmarks.dat``, 9 MB, CC0) in the
``face-recognition-models`` package, read from the installed files.
"""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np

from model_store import InputSpec
from service.detection.packaged import packaged_model

MODEL_FILE = "shape_predictor_5_face_landmarks.dat"


def eye_angle(eye_a: tuple[float, float], eye_b: tuple[float, float]) -> float:
    """Degrees the line from the image-left eye to the image-right eye rises (OpenCV's positive = anticlockwise)."""
    (xa, ya), (xb, yb) = sorted([eye_a, eye_b])
    return math.degrees(math.atan2(ya - yb, xb - xa))


def level_crop(
    image: np.ndarray, box: tuple[int, int, int, int], margin: float, angle: float, max_angle: float = 45.0
) -> np.ndarray:
    """The square around ``box`` (side ``max(w, h) * (1 + 2 * margin)``) rotated by ``-angle`` about its centre.

    Angles beyond ``max_angle`` are landmark failures on a hard face more often than real tilts: no rotation then.
    """
    x, y, w, h = box
    side = max(w, h) * (1.0 + 2.0 * margin)
    out = max(1, round(side))
    cx, cy = x + w / 2.0, y + h / 2.0
    angle = angle if abs(angle) <= max_angle else 0.0
    matrix = cv2.getRotationMatrix2D((cx, cy), -angle, 1.0)
    matrix[:, 2] += (out / 2.0 - cx, out / 2.0 - cy)
    return cv2.warpAffine(image, matrix, (out, out), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def landmark_file(path: Path | None = None) -> Path:
    return packaged_model(MODEL_FILE, "face alignment", path)


class LandmarkAligner:
    """Eye-levelling crops from dlib's 5-point landmarks (points 0-1 and 2-3 are the corners of each eye)."""

    def __init__(self, model_path: Path | None = None) -> None:
        import dlib

        self._predictor = dlib.shape_predictor(str(landmark_file(model_path)))
        self._rect = dlib.rectangle

    def angle(self, image: np.ndarray, box: tuple[int, int, int, int]) -> float:
        x, y, w, h = box
        gray = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        shape = self._predictor(gray, self._rect(x, y, x + w, y + h))
        pts = [(shape.part(i).x, shape.part(i).y) for i in range(shape.num_parts)]
        eye_a = ((pts[0][0] + pts[1][0]) / 2, (pts[0][1] + pts[1][1]) / 2)
        eye_b = ((pts[2][0] + pts[3][0]) / 2, (pts[2][1] + pts[3][1]) / 2)
        return eye_angle(eye_a, eye_b)

    def crop(self, image: np.ndarray, box: tuple[int, int, int, int], spec: InputSpec) -> np.ndarray:
        """What ``model_store.crop_face`` cuts (same contract: the crop at image resolution), roll taken out."""
        return level_crop(image, box, spec.face_margin, self.angle(image, box))
