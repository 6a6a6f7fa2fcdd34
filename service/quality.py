"""How far to trust one face's label: its picture (size, sharpness, head pose, detector score), the model's answer
(probability margin, entropy) and the ``reliable`` rule over them.

Pure arithmetic on arrays, no models or files: the face and video pipelines call it where they cut a face, and
``benchmarks/reliability.py`` measures the thresholds on RAF-DB val and the shared photos with the same functions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import cv2
import numpy as np

SHARPNESS_SIDE = 64  # the gray face is resized to this side first, so sharpness does not grow with face size
# Where the nose sits between the eye line and the mouth line on a frontal face (the 5-point ArcFace template:
# eyes at y 51.6, nose 71.7, mouth 92.3 of 112 -> 0.495).
FRONTAL_NOSE_DROP = 0.5

Landmarks = Sequence[tuple[float, float]]  # left eye, right eye, nose, left and right mouth corner (image left first)


@dataclass(frozen=True)
class Pose:
    """Head-pose proxies from five landmarks, each in -1..1 (0 = frontal): ``yaw`` is the nose's offset from the
    eyes' midpoint across the face (negative: nose towards the image's left), ``pitch`` its offset from halfway
    between the eye line and the mouth line (negative: towards the eye line). ``frontal`` =
    1 - max(|yaw|, |pitch|), in 0..1."""

    yaw: float
    pitch: float
    frontal: float


@dataclass(frozen=True)
class PictureQuality:
    """What the picture of a face says, before the model: computed where the face is cut."""

    face_px: int  # the face box's shorter side, in pixels of the original image
    sharpness: float  # variance of the Laplacian of the gray face at SHARPNESS_SIDE px
    pose: Pose | None  # None without landmarks (face crops, dlib detectors, boxes carried forward in video)
    detector_score: float | None  # None for a face crop (no detector); 0 for a box no detector confirmed


@dataclass(frozen=True)
class Quality:
    """A face's picture quality and answer certainty, and whether they pass the ``reliable`` rule."""

    picture: PictureQuality
    margin: float  # top-1 minus top-2 probability
    entropy: float  # of the probabilities, over log(labels): 0 = certain, 1 = uniform
    reliable: bool


class Thresholds(Protocol):
    """The ``reliable`` rule's settings (``service.config.QualitySettings``)."""

    min_face_px: int
    min_sharpness: float
    min_frontal: float
    min_margin: float


def sharpness(face: np.ndarray) -> float:
    """Variance of the Laplacian of the gray face resized to ``SHARPNESS_SIDE`` (area-averaged down, linear up):
    a small face enlarged or a blurred one scores low, whatever its size was."""
    if face.size == 0:
        return 0.0
    gray = cv2.cvtColor(face, cv2.COLOR_BGR2GRAY) if face.ndim == 3 and face.shape[2] == 3 else face
    gray = gray.reshape(gray.shape[:2])
    interpolation = cv2.INTER_AREA if max(gray.shape) > SHARPNESS_SIDE else cv2.INTER_LINEAR
    side = cv2.resize(gray, (SHARPNESS_SIDE, SHARPNESS_SIDE), interpolation=interpolation)
    return float(cv2.Laplacian(side.astype(np.float32), cv2.CV_32F).var())


def pose(landmarks: Landmarks) -> Pose:
    """Yaw and pitch proxies from five landmarks, after levelling the eyes (roll is not a pose problem here)."""
    pts = np.asarray(landmarks, np.float64).reshape(5, 2)
    (lx, ly), (rx, ry) = pts[0], pts[1]
    angle = math.atan2(ry - ly, rx - lx)
    c, s = math.cos(-angle), math.sin(-angle)
    pts = (pts - pts[:2].mean(axis=0)) @ np.array([[c, s], [-s, c]])  # eyes' midpoint at 0, eye line horizontal
    eyes, nose, mouth = pts[:2], pts[2], pts[3:].mean(axis=0)
    half_eyes = max(abs(eyes[1, 0] - eyes[0, 0]) / 2, 1e-6)
    yaw = float(np.clip(nose[0] / half_eyes, -1, 1))
    drop = mouth[1]  # the eye line is y = 0
    pitch = 1.0 if drop <= 1e-6 else float(np.clip((nose[1] / drop - FRONTAL_NOSE_DROP) / FRONTAL_NOSE_DROP, -1, 1))
    return Pose(round(yaw, 4), round(pitch, 4), round(1 - max(abs(yaw), abs(pitch)), 4))


def certainty(probabilities: Sequence[float] | np.ndarray) -> tuple[float, float]:
    """The margin (top-1 minus top-2) and the entropy over log(K) of one row of probabilities."""
    p = np.asarray(probabilities, np.float64).ravel()
    if p.size < 2:
        return 1.0, 0.0
    top = np.partition(p, -2)[-2:]
    q = p[p > 0]
    entropy = float(-(q * np.log(q)).sum() / math.log(p.size))
    return float(top[1] - top[0]), min(max(entropy, 0.0), 1.0)


def picture_quality(
    image: np.ndarray,
    box: tuple[int, int, int, int],
    landmarks: Landmarks | None = None,
    detector_score: float | None = None,
) -> PictureQuality:
    """The quality of the face in ``box`` (x, y, w, h) of ``image``: the box itself, unexpanded, is what is judged."""
    x, y, w, h = box
    face = image[max(y, 0) : max(y + h, 0), max(x, 0) : max(x + w, 0)]
    return PictureQuality(
        face_px=int(min(w, h)),
        sharpness=round(sharpness(face), 2),
        pose=None if landmarks is None else pose(landmarks),
        detector_score=detector_score,
    )


def is_reliable(picture: PictureQuality, margin: float, rule: Thresholds) -> bool:
    """Large, sharp and (where landmarks say) frontal enough, and a clear enough answer. An unknown pose passes:
    a caller who sends a crop has chosen the face."""
    frontal_ok = picture.pose is None or picture.pose.frontal >= rule.min_frontal
    return (
        picture.face_px >= rule.min_face_px
        and picture.sharpness >= rule.min_sharpness
        and frontal_ok
        and margin >= rule.min_margin
    )


def assess(picture: PictureQuality, probabilities: Sequence[float] | np.ndarray, rule: Thresholds) -> Quality:
    """The full quality of one face from its picture and its (unsmoothed) probabilities."""
    margin, entropy = certainty(probabilities)
    return Quality(picture, round(margin, 4), round(entropy, 4), is_reliable(picture, margin, rule))
