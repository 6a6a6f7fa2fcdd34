"""Cutting faces as each model was trained (the manifest's ``input.framing``), with dlib's 5-point landmarks.

- ``box`` framing: the square ``crop_face`` cuts (box centre, box side plus the model's margin). With
  ``EMOTION_DETECTOR__ALIGN`` the roll is taken out too (the image rotated about the box centre, border pixels
  repeated) and nothing else: a template alignment reframes the face (scale and centre from the landmarks, not from
  the detector box the crops were cut like), and on real photos that cost the 48-px model 5-10 points.
- ``chip`` framing: dlib's aligned face chip (``get_face_chip``: the five points brought to dlib's template by a
  similarity transform, padded by the model's margin), the input dlib's face-recognition network was trained on.

Landmarks come from dlib's 5-point shape predictor (``shape_predictor_5_face_landmarks.dat``, 9 MB, CC0) in the
``face-recognition-models`` package, read from the installed files and loaded on first use.
"""

from __future__ import annotations

import math
import threading
from pathlib import Path

import cv2
import numpy as np

from model_store import InputSpec, crop_face
from model_store.packaged import packaged_model

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

        self._dlib = dlib
        self._predictor = dlib.shape_predictor(str(landmark_file(model_path)))
        self._rect = dlib.rectangle

    def landmarks(self, image: np.ndarray, box: tuple[int, int, int, int]):
        """dlib's ``full_object_detection`` of the five points inside ``box``."""
        x, y, w, h = box
        gray = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        return self._predictor(gray, self._rect(x, y, x + w, y + h))

    def angle(self, image: np.ndarray, box: tuple[int, int, int, int]) -> float:
        shape = self.landmarks(image, box)
        pts = [(shape.part(i).x, shape.part(i).y) for i in range(shape.num_parts)]
        eye_a = ((pts[0][0] + pts[1][0]) / 2, (pts[0][1] + pts[1][1]) / 2)
        eye_b = ((pts[2][0] + pts[3][0]) / 2, (pts[2][1] + pts[3][1]) / 2)
        return eye_angle(eye_a, eye_b)

    def crop(self, image: np.ndarray, box: tuple[int, int, int, int], spec: InputSpec) -> np.ndarray:
        """What ``model_store.crop_face`` cuts (same contract: the crop at image resolution), roll taken out."""
        return level_crop(image, box, spec.face_margin, self.angle(image, box))

    def chip(self, image: np.ndarray, box: tuple[int, int, int, int], spec: InputSpec) -> np.ndarray:
        """dlib's aligned chip of the face in ``box``, at the model's size, padded by the model's margin."""
        colour = image if image.ndim == 3 else cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
        shape = self.landmarks(colour, box)
        return self._dlib.get_face_chip(np.ascontiguousarray(colour), shape, spec.height, spec.face_margin)


class FaceCropper:
    """Cuts a detected face out of a photo or frame the way its model was trained (``spec.framing``), at image
    resolution for ``box`` framing and at model size for ``chip`` framing; the landmark model loads on first need.

    ``level``: eye-levelled ``box`` crops (``EMOTION_DETECTOR__ALIGN``).
    """

    def __init__(self, level: bool = False, model_path: Path | None = None) -> None:
        self.level, self._model_path = level, model_path
        self._aligner: LandmarkAligner | None = None
        self._lock = threading.Lock()

    @property
    def aligner(self) -> LandmarkAligner:
        with self._lock:
            if self._aligner is None:
                self._aligner = LandmarkAligner(self._model_path)
            return self._aligner

    def crop(self, image: np.ndarray, box: tuple[int, int, int, int], spec: InputSpec) -> np.ndarray:
        if spec.framing == "chip":
            return self.aligner.chip(image, box, spec)
        if self.level:
            return self.aligner.crop(image, box, spec)
        return crop_face(image, box, spec)
