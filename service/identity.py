"""Face descriptors, inside the process only: dlib's face-recognition network (the store's ``face-embedding``
component, ``model_store/dlib_face_descriptor``) on dlib's five-point aligned chip.

A descriptor (128 floats) tells whether two faces of one video are the same person (``service.persons`` links a
clip's tracks with it). It never leaves the process: nothing here returns one to a caller, writes one to a file,
a log line, Redis or a metric, and no result type has a field for one.

The chip: dlib's ``get_face_chip`` geometry (a similarity transform bringing five landmarks to a template, padded
by 0.25, 150x150 RGB). RetinaFace's five points (eye centres, nose tip, mouth corners) are not dlib's (eye corners
and the base of the nose), so they go to ``RETINA_TEMPLATE``: where RetinaFace's points fall in dlib's chips, the
median over 299 shared photos (both aligners on the same faces). Detectors without landmarks (dlib's) fall back to
dlib's 5-point shape predictor (``service.detection.align``) and dlib's own template.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from model_store import DEFAULT_ROOT, StoreError, find, verify_file
from model_store.int8 import as_served
from model_store.runtime import session_options

log = logging.getLogger(__name__)
DEFAULT_MODEL = "dlib_face_descriptor"
CHIP, PADDING = 150, 0.25  # dlib's compute_face_descriptor
# dlib's 5-point template (get_face_chip_details, points 0-1 and 2-3 the corners of each eye, 4 the nose base) in
# units of the unpadded chip
DLIB_TEMPLATE = np.array(
    [
        (0.8595674595992, 0.2134981538014),
        (0.6460604764104, 0.2289674387677),
        (0.1205750620789, 0.2137274526848),
        (0.3340850613712, 0.2290642403242),
        (0.4901123135679, 0.6277975316475),
    ]
)
# RetinaFace's points (left eye, right eye, nose tip, left and right mouth corner; image left first) in the same
# units: the median of where they fell in dlib's 0.25-padded chips of 299 shared photos, x * 1.5 - 0.25
RETINA_TEMPLATE = np.array([(0.2324, 0.2086), (0.7577, 0.2089), (0.4921, 0.5152), (0.2728, 0.8012), (0.712, 0.8045)])


def similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The least-squares similarity transform (rotation, uniform scale, shift; Umeyama) taking ``src`` points to
    ``dst``, as a 2x3 matrix (dlib's ``find_similarity_transform``)."""
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d
    u, sv, vt = np.linalg.svd(d.T @ s / len(src))
    flip = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        flip[1, 1] = -1
    rotation = u @ flip @ vt
    scale = np.trace(np.diag(sv) @ flip) / max((s**2).sum() / len(src), 1e-12)
    return np.hstack([scale * rotation, (mu_d - scale * rotation @ mu_s)[:, None]])


def chip_matrix(points: Sequence[tuple[float, float]], template: np.ndarray, size: int = CHIP) -> np.ndarray:
    """Image -> chip pixels for the face whose landmarks are ``points`` (``template``'s order), padded by
    ``PADDING`` as dlib pads (the chip's corners land on pixel centres 0 and size - 1, as dlib maps them)."""
    target = (PADDING + template) / (2 * PADDING + 1) * (size - 1)
    return similarity(np.asarray(points, np.float64), target)


def cut_chip(frame: np.ndarray, matrix: np.ndarray, size: int = CHIP) -> np.ndarray:
    """The ``size`` x ``size`` RGB chip of a BGR (or gray) frame."""
    chip = cv2.warpAffine(frame, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return cv2.cvtColor(chip, cv2.COLOR_GRAY2RGB if chip.ndim == 2 else cv2.COLOR_BGR2RGB)


def distances(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Euclidean distances between every row of ``a`` and every row of ``b`` (dlib's measure)."""
    squared = (a**2).sum(1)[:, None] + (b**2).sum(1)[None] - 2.0 * a @ b.T
    return np.sqrt(np.maximum(squared, 0.0))


def load_graph(model: str = DEFAULT_MODEL, version: str | None = None, root: Path | None = None, int8: bool = True):
    """The component's graph bytes (int8 where asked and present), size and sha256 checked."""
    try:
        entry = find(model, version, root=root or DEFAULT_ROOT)
        if entry.manifest.task != "face-embedding":
            raise StoreError(f"{entry.manifest.key} is a {entry.manifest.task} model, not a face embedding")
        role = "onnx_int8" if int8 and entry.manifest.file("onnx_int8") is not None else "onnx"
        if entry.manifest.file(role) is None:  # the shipped entry holds the int8 graph only
            raise StoreError(
                f"{entry.manifest.key} has no float graph; build one into a store of your own with python -m "
                "training.publish_face_embedding --keep-float --store DIR"
            )
        return entry, verify_file(entry, role).read_bytes()
    except StoreError as exc:
        raise RuntimeError(
            f"linking tracks into persons needs the face-embedding component: {exc}. The package ships it in "
            f"{DEFAULT_ROOT / DEFAULT_MODEL}; reinstall the package, or turn linking off (EMOTION_VIDEO__LINK_PERSONS"
            "=false)"
        ) from exc


class FaceDescriber:
    """Chips and descriptors: one onnxruntime session (thread-safe), the landmark fallback loaded on first need."""

    def __init__(
        self,
        int8: bool = True,
        threads: int = 1,
        root: Path | None = None,
        mirror: bool = False,
        int8_weights: str = "auto",
    ) -> None:
        import onnxruntime as ort

        self.mirror = mirror  # each chip described with its mirror image too, the two averaged

        entry, graph = load_graph(int8=int8, root=root)
        if int8:  # 7-bit weights where the CPU's int8 products saturate (model_store.int8)
            graph = as_served(graph, int8_weights)
        spec = entry.manifest.input
        self.size = spec.height
        self._mean = np.array(spec.mean, np.float32) * 255.0  # the manifest's (x / 255 - mean) / std, on 0-255
        self._scale = 1.0 / (np.array(spec.std, np.float32) * 255.0)
        self._session = ort.InferenceSession(graph, session_options(threads), providers=["CPUExecutionProvider"])
        self._aligner = None
        self._lock = threading.Lock()
        # a session's first runs allocate its buffers: pay that at start, not in the first video's linking
        for _ in range(2):
            self.describe(np.full((3, self.size, self.size, 3), 127, np.uint8))

    def chip(self, frame: np.ndarray, box: tuple[int, int, int, int], landmarks=None) -> np.ndarray | None:
        """The aligned chip of the face at ``box``: from the detector's five points where it gave them, else from
        dlib's shape predictor; None where neither is to be had (no points, and the optional landmark model of
        ``face-recognition-models`` not installed): such a face is not described."""
        if landmarks is not None:
            return cut_chip(frame, chip_matrix(landmarks, RETINA_TEMPLATE, self.size), self.size)
        aligner = self._landmarks()
        if aligner is None:
            return None
        shape = aligner.landmarks(frame, box)
        points = [(shape.part(i).x, shape.part(i).y) for i in range(5)]
        return cut_chip(frame, chip_matrix(points, DLIB_TEMPLATE, self.size), self.size)

    def _landmarks(self):
        """dlib's 5-point model, loaded on first need; None (logged once) where its package is not installed."""
        from service.detection.align import LandmarkAligner

        with self._lock:
            if self._aligner is None:
                try:
                    self._aligner = LandmarkAligner()
                except RuntimeError as exc:  # face-recognition-models is an optional extra
                    log.info("faces without detector landmarks are not described for persons: %s", exc)
                    self._aligner = False
            return self._aligner or None

    def describe(self, chips: np.ndarray) -> np.ndarray:
        """128 floats per RGB chip (N x 150 x 150 x 3 uint8); kept by the caller, never returned to a client."""
        if len(chips) == 0:
            return np.zeros((0, 128), np.float32)
        x = ((chips.astype(np.float32) - self._mean) * self._scale).transpose(0, 3, 1, 2)
        if not self.mirror:
            return self._session.run(None, {"input": np.ascontiguousarray(x)})[0]
        both = self._session.run(None, {"input": np.ascontiguousarray(np.concatenate([x, x[..., ::-1]]))})[0]
        return (both[: len(x)] + both[len(x) :]) / 2


class TrackChips:
    """The best few faces of each track, kept as chips while a video is scanned: faces with landmarks first (their
    chips align without a second model), then the largest (up to the chip's own size) and sharpest. Chips are cut
    only for faces that make a track's top ``per_track``, so most samples cost a comparison. With more than
    ``MAX_HELD`` tracks holding chips (a long video), those unseen for ``SETTLED_S`` (over, for the tracker) are
    described at once and their chips dropped, so memory stays bounded."""

    MAX_HELD = 64  # tracks holding chips (3 chips of 67 kB each) before finished ones are described
    SETTLED_S = 2.0  # unseen this long, a track is over (the tracker ends one after 1.5 s)

    def __init__(self, describer: FaceDescriber, per_track: int = 3) -> None:
        self.describer, self.per_track = describer, per_track
        self._best: dict[int, list[tuple[tuple, np.ndarray]]] = {}
        self._last: dict[int, float] = {}
        self._described: dict[int, np.ndarray] = {}
        self.frames: dict[int, set[int]] = {}
        self.first_seen: dict[int, float] = {}

    def offer(self, track_id: int, t: float, frame_index: int, frame: np.ndarray, detection, sharpness: float) -> None:
        """A face of ``track_id`` in the sampled frame ``frame_index`` (a ``Detection``, its picture's sharpness)."""
        self.frames.setdefault(track_id, set()).add(frame_index)
        self.first_seen.setdefault(track_id, t)
        self._last[track_id] = t
        if detection.carried and self._best.get(track_id):
            return  # a box carried forward without a search: its face was offered when it was found
        side = min(detection.width, detection.height, self.describer.size)
        key = (detection.landmarks is not None, side * min(sharpness, 400.0), detection.score)
        kept = self._best.setdefault(track_id, [])
        if len(kept) >= self.per_track and key <= kept[-1][0]:
            return
        chip = self.describer.chip(frame, detection.box, detection.landmarks)
        if chip is None:
            return
        kept.append((key, chip))
        kept.sort(key=lambda item: item[0], reverse=True)
        del kept[self.per_track :]
        if len(self._best) > self.MAX_HELD:
            self._describe([tid for tid in self._best if t - self._last[tid] > self.SETTLED_S])

    def _describe(self, track_ids: list[int]) -> None:
        """Describe these tracks' chips in one batch and drop the chips."""
        ids = [tid for tid in track_ids for _ in self._best[tid]]
        if not ids:
            return
        rows = self.describer.describe(np.stack([chip for tid in track_ids for _, chip in self._best.pop(tid)]))
        for tid in dict.fromkeys(ids):
            self._described[tid] = rows[[i for i, other in enumerate(ids) if other == tid]]

    def descriptors(self) -> dict[int, np.ndarray]:
        """``track_id -> k x 128`` descriptors of each track's kept faces."""
        self._describe(list(self._best))
        return dict(self._described)
