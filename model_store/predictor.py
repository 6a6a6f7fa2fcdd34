"""The Predictor: face crops -> typed predictions, the one way the service, evaluation and benchmarks run a model.

It owns everything between a crop and a probability: the shared preprocessing, mirror test-time augmentation,
the backend call, calibration, valence/arousal and the label mapping. Its three steps (``prepare``, ``run``,
``postprocess``) are public so that a server can batch the middle one across requests.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from model_store.affect import derive_valence_arousal, probabilities
from model_store.manifest import Manifest
from model_store.preprocess import normalize, prepare_batch, to_uint8_face
from model_store.runtime import Runner, create_runner
from model_store.store import StoreEntry


@dataclass(frozen=True)
class Prepared:
    """A model input for ``n`` faces (or clips); with ``mirrored`` their mirror images follow as rows n..2n-1."""

    x: np.ndarray
    n: int
    mirrored: bool = False


@dataclass(frozen=True)
class FacePrediction:
    emotions: dict[str, float]
    dominant: str
    valence: float | None
    arousal: float | None


@dataclass(frozen=True)
class Predictions:
    """Predictions for N faces: logits before calibration, calibrated probabilities, valence/arousal (or None)."""

    labels: tuple[str, ...]
    logits: np.ndarray
    probabilities: np.ndarray
    valence_arousal: np.ndarray | None

    def __len__(self) -> int:
        return len(self.probabilities)

    def __getitem__(self, i: int) -> FacePrediction:
        row = self.probabilities[i]
        va = self.valence_arousal
        return FacePrediction(
            emotions={label: float(p) for label, p in zip(self.labels, row, strict=True)},
            dominant=self.labels[int(row.argmax())],
            valence=None if va is None else float(va[i, 0]),
            arousal=None if va is None else float(va[i, 1]),
        )

    def __iter__(self) -> Iterator[FacePrediction]:
        return (self[i] for i in range(len(self)))

    @property
    def dominant(self) -> list[str]:
        return [self.labels[i] for i in self.probabilities.argmax(axis=1)]

    def select(self, idx: Sequence[int] | np.ndarray) -> Predictions:
        """The rows ``idx``, in that order."""
        idx = np.asarray(idx, dtype=int)
        va = None if self.valence_arousal is None else self.valence_arousal[idx]
        return Predictions(self.labels, self.logits[idx], self.probabilities[idx], va)

    @classmethod
    def concat(cls, parts: Sequence[Predictions], labels: Sequence[str], with_va: bool) -> Predictions:
        """Rows of ``parts`` one after another (an empty list gives zero rows)."""
        k = len(labels)
        if not parts:
            empty = np.zeros((0, k), np.float32)
            return cls(tuple(labels), empty, empty.copy(), np.zeros((0, 2), np.float32) if with_va else None)
        va = np.concatenate([p.valence_arousal for p in parts]) if parts[0].valence_arousal is not None else None
        return cls(
            tuple(labels),
            np.concatenate([p.logits for p in parts]),
            np.concatenate([p.probabilities for p in parts]),
            va,
        )


def merge_mirror(x: np.ndarray, n: int) -> np.ndarray:
    """Average rows ``0..n-1`` with their mirror images in rows ``n..2n-1`` (mirror test-time augmentation)."""
    if len(x) != 2 * n:
        raise ValueError(f"expected {2 * n} rows ({n} faces and their mirrors), got {len(x)}")
    return (x[:n] + x[n:]) / 2


def valence_arousal(manifest: Manifest, probs: np.ndarray, head: np.ndarray | None) -> np.ndarray | None:
    """``N x 2`` in [-1, 1]: the model's own head, coordinates derived from ``probs``, or None, as the manifest says."""
    if manifest.valence_arousal == "predicted":
        if head is None:
            raise ValueError(f"{manifest.key} declares a valence/arousal head but returned no 'valence_arousal'")
        return np.clip(head, -1.0, 1.0).astype(np.float32)
    if manifest.valence_arousal == "derived":
        return np.clip(derive_valence_arousal(probs, manifest.labels), -1.0, 1.0)
    return None


class Predictor:
    """A store entry loaded on a backend, with the manifest's preprocessing, calibration and labels."""

    def __init__(self, manifest: Manifest, runner: Runner, tta: bool = True) -> None:
        self.manifest, self.runner = manifest, runner
        self.tta = tta and not self.is_clip_model  # clips are not mirrored (the clip models were not measured so)

    @classmethod
    def load(
        cls, entry: StoreEntry, backend: str = "onnx", device: str = "cpu", threads: int = 0, tta: bool = True
    ) -> Predictor:
        """Check the entry's file for ``backend`` (size, sha256) and load it."""
        return cls(entry.manifest, create_runner(entry, backend, device, threads), tta)

    @property
    def labels(self) -> list[str]:
        return self.manifest.labels

    @property
    def is_clip_model(self) -> bool:
        return self.manifest.task == "clip-classification"

    def prepare(self, crops: Sequence[np.ndarray]) -> Prepared:
        """Face crops of any size (BGR or gray) -> the model input."""
        spec = self.manifest.input
        faces = [to_uint8_face(crop, spec) for crop in crops]
        shape = (0, spec.height, spec.width, spec.channels)
        return self.prepare_faces(np.stack(faces) if faces else np.zeros(shape, np.uint8))

    def prepare_faces(self, faces: np.ndarray) -> Prepared:
        """Model-sized uint8 faces ``N x H x W x C`` (what ``to_uint8_face`` gives) -> the model input."""
        return Prepared(prepare_batch(faces, self.manifest.input, hflip_tta=self.tta), len(faces), self.tta)

    def prepare_clip(self, frames: np.ndarray) -> Prepared:
        """One clip of model-sized uint8 frames ``T x H x W x C`` -> a one-row model input ``1 x C x T x H x W``."""
        return Prepared(normalize(np.asarray(frames)[None], self.manifest.input), 1)

    def run(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """The backend call on a prepared batch (rows of several ``Prepared`` may be concatenated)."""
        return self.runner(x)

    def postprocess(self, outputs: dict[str, np.ndarray], prepared: Prepared) -> Predictions:
        """The backend's outputs for ``prepared`` -> mirror-merged logits, calibrated probabilities, valence/arousal."""

        def merged(x: np.ndarray) -> np.ndarray:
            return merge_mirror(x, prepared.n) if prepared.mirrored else x

        logits = merged(np.asarray(outputs[self.manifest.outputs[0]], np.float32))
        head = outputs.get("valence_arousal")
        probs = probabilities(logits, self.manifest.calibration_temperature)
        va = valence_arousal(self.manifest, probs, None if head is None else merged(head))
        return Predictions(tuple(self.labels), logits, probs, va)

    def empty(self) -> Predictions:
        return Predictions.concat([], self.labels, self.manifest.valence_arousal != "none")

    def infer(self, prepared: Prepared) -> Predictions:
        return self.postprocess(self.run(prepared.x), prepared) if prepared.n else self.empty()

    def predict(self, crops: Sequence[np.ndarray], batch_size: int = 256) -> Predictions:
        """Face crops of any size -> predictions, in chunks of ``batch_size`` faces."""
        parts = [self.infer(self.prepare(crops[s : s + batch_size])) for s in range(0, len(crops), batch_size)]
        return Predictions.concat(parts, self.labels, self.manifest.valence_arousal != "none")

    def predict_faces(self, faces: np.ndarray, batch_size: int = 256) -> Predictions:
        """Model-sized uint8 faces -> predictions, in chunks (evaluation over whole data sets)."""
        parts = [self.infer(self.prepare_faces(faces[s : s + batch_size])) for s in range(0, len(faces), batch_size)]
        return Predictions.concat(parts, self.labels, self.manifest.valence_arousal != "none")

    def warmup(self) -> None:
        """One call on zeros, so that the first request does not pay for lazy initialisation."""
        spec = self.manifest.input
        shape = (1, spec.channels, *((spec.frames,) if spec.frames else ()), spec.height, spec.width)
        self.run(np.zeros(shape, np.float32))
