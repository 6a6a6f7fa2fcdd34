"""The Predictor: face crops, whole frames or feature rows -> typed predictions, the one way the service,
evaluation and benchmarks run a model.

It owns everything between an input and a probability: the shared preprocessing, mirror test-time augmentation,
the backend call, calibration, valence/arousal and the label mapping. Its three steps (``prepare``, ``run``,
``postprocess``) are public so that a server can batch the middle one across requests. What differs between
tasks is read from one table, ``model_store.manifest.TASKS``: the input kind (``prepare*``), softmax over labels
or a sigmoid per label with thresholds (``postprocess``), mirror TTA and valence/arousal.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from model_store.affect import derive_valence_arousal, probabilities
from model_store.gate import log_probs, top_margin
from model_store.manifest import FeatureSpec, InputSpec, Manifest
from model_store.preprocess import normalize, prepare_batch, standardize, to_uint8_face
from model_store.runtime import Runner, create_runner, join_rows
from model_store.store import StoreEntry


@dataclass(frozen=True)
class Prepared:
    """A model input for ``n`` faces (or clips); with ``mirrored`` their mirror images follow as rows n..2n-1."""

    x: np.ndarray
    n: int
    mirrored: bool = False


@dataclass(frozen=True)
class FacePrediction:
    """One row of a single-label model: probabilities over its labels (``emotions`` for face models), the most
    probable label, and valence/arousal where the model has them."""

    emotions: dict[str, float]
    dominant: str
    valence: float | None
    arousal: float | None


@dataclass(frozen=True)
class AttributePrediction:
    """One row of a multi-label model: a probability per attribute and the attributes over their threshold."""

    attributes: dict[str, float]
    present: list[str]


@dataclass(frozen=True)
class Predictions:
    """Predictions for N inputs: logits before calibration (the manifest's ``logit_bias`` added), calibrated
    probabilities (softmax over the labels, or a sigmoid per label when ``thresholds`` is set: multi-label models),
    valence/arousal (or None)."""

    labels: tuple[str, ...]
    logits: np.ndarray
    probabilities: np.ndarray
    valence_arousal: np.ndarray | None
    thresholds: np.ndarray | None = None  # multi-label models: a threshold per label

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

    @property
    def present(self) -> np.ndarray:
        """``N x K`` booleans: each label's probability at or over its threshold (multi-label models)."""
        if self.thresholds is None:
            raise ValueError("only multi-label predictions have thresholds")
        return self.probabilities >= self.thresholds

    def attributes(self, i: int) -> AttributePrediction:
        """Row ``i`` of a multi-label model: probability per attribute and those present, in label order."""
        present = self.present[i]
        return AttributePrediction(
            attributes={label: float(p) for label, p in zip(self.labels, self.probabilities[i], strict=True)},
            present=[label for label, on in zip(self.labels, present, strict=True) if on],
        )

    def select(self, idx: Sequence[int] | np.ndarray) -> Predictions:
        """The rows ``idx``, in that order."""
        idx = np.asarray(idx, dtype=int)
        va = None if self.valence_arousal is None else self.valence_arousal[idx]
        return Predictions(self.labels, self.logits[idx], self.probabilities[idx], va, self.thresholds)

    @classmethod
    def concat(
        cls, parts: Sequence[Predictions], labels: Sequence[str], with_va: bool, thresholds: np.ndarray | None = None
    ) -> Predictions:
        """Rows of ``parts`` one after another (an empty list gives zero rows)."""
        k = len(labels)
        if not parts:
            empty = np.zeros((0, k), np.float32)
            va = np.zeros((0, 2), np.float32) if with_va else None
            return cls(tuple(labels), empty, empty.copy(), va, thresholds)
        va = np.concatenate([p.valence_arousal for p in parts]) if parts[0].valence_arousal is not None else None
        return cls(
            tuple(labels),
            np.concatenate([p.logits for p in parts]),
            np.concatenate([p.probabilities for p in parts]),
            va,
            parts[0].thresholds if thresholds is None else thresholds,
        )


def merge_mirror(x: np.ndarray, n: int) -> np.ndarray:
    """Average rows ``0..n-1`` with their mirror images in rows ``n..2n-1`` (mirror test-time augmentation)."""
    if len(x) != 2 * n:
        raise ValueError(f"expected {2 * n} rows ({n} faces and their mirrors), got {len(x)}")
    return (x[:n] + x[n:]) / 2


# up to this many faces in a batch, their mirror images ride in the first call (its fixed cost outweighs the rows)
MIRROR_IN_ONE_CALL = 1
# ... and behind a gate, only where the gate's margin is under this: over it most faces need no mirror pass (54% of
# the photos' faces there), so the rest graph reads the face alone and the whole graph its mirror image if needed
MIRROR_AHEAD = 0.3


def average_rows(x: np.ndarray, rows: np.ndarray, mirrors: np.ndarray, n: int) -> np.ndarray:
    """``x`` with ``rows`` averaged with ``mirrors`` (their mirror images' outputs, in order), as ``merge_mirror``
    averages; an output that is not one float row per face (``n`` of them) is left as the first pass gave it."""
    if not (np.issubdtype(x.dtype, np.floating) and x.ndim and len(x) == n):
        return x
    out = np.array(x, copy=True)
    out[rows] = (out[rows] + mirrors) / 2
    return out


def sigmoid(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Independent probability per label: ``1 / (1 + exp(-logits / temperature))``."""
    z = np.clip(np.asarray(logits, dtype=np.float64) / temperature, -60.0, 60.0)
    return (1.0 / (1.0 + np.exp(-z))).astype(np.float32)


def valence_arousal(manifest: Manifest, probs: np.ndarray, head: np.ndarray | None) -> np.ndarray | None:
    """``N x 2`` in [-1, 1]: the model's own head, coordinates derived from ``probs``, or None, as the manifest says."""
    if manifest.valence_arousal == "predicted":
        if head is None:
            raise ValueError(f"{manifest.key} declares a valence/arousal head but returned no 'valence_arousal'")
        return np.clip(head, -1.0, 1.0).astype(np.float32)
    if manifest.valence_arousal == "derived":
        return np.clip(derive_valence_arousal(probs, manifest.labels), -1.0, 1.0)
    return None


def mirrored(manifest: Manifest, tta: bool = True) -> bool:
    """Whether faces are averaged with their mirror image when served (``tta``: the service's switch): clips,
    frames and vectors never are; a face model is where its manifest says it pays."""
    return tta and manifest.kind.mirror_tta and manifest.mirror_tta


def mirror_margin(manifest: Manifest, tta: bool = True, margin: float | None = None) -> float:
    """The calibrated top-two margin under which a face gets its mirror pass: ``margin`` (an override) or the
    manifest's ``mirror_tta_margin``; 1 (every face) where faces are not mirrored or a model has no single margin
    (multi-label)."""
    if not mirrored(manifest, tta) or manifest.kind.multi_label:
        return 1.0
    return float(manifest.mirror_tta_margin if margin is None else margin)


def gate_margin(
    manifest: Manifest, gate: bool = True, backend: str = "onnx", tta: bool = True, tta_margin: float | None = None
) -> float | None:
    """The gate member's margin at or over which it answers alone, as served; None where every face gets the whole
    model: no gate, gate off, a backend that does not cut one (torch), or every face's mirror in its one pass."""
    if manifest.gate is None or not gate or not backend.startswith("onnx"):
        return None
    paired = mirrored(manifest, tta) and mirror_margin(manifest, tta, tta_margin) >= 1.0
    return None if paired else manifest.gate.margin


class Predictor:
    """A store entry loaded on a backend, with the manifest's preprocessing, calibration and labels."""

    def __init__(
        self,
        manifest: Manifest,
        runner: Runner,
        tta: bool = True,
        tta_margin: float | None = None,
        gate: bool = True,
    ) -> None:
        """``tta_margin`` (default: the manifest's) below 1: only faces whose calibrated top-two margin is under it
        get their mirror image, in a second pass of ``run`` (``paired``: every face's mirror image rides along as
        rows of the one pass). ``gate``: serve the manifest's gate where the runner has cut one (not with
        ``paired`` rows, whose mirror images the gate does not see)."""
        self.manifest, self.runner = manifest, runner
        self.kind = manifest.kind
        self.tta = mirrored(manifest, tta)
        self.tta_margin = mirror_margin(manifest, tta, tta_margin)
        self.paired = self.tta and self.tta_margin >= 1.0
        self.mirror_ahead = MIRROR_AHEAD  # behind a gate, a lone face's mirror joins its rest call under this margin
        gated = getattr(runner, "gated", False)  # an onnxruntime runner that cut the gate (a plain install cuts none)
        self.gate_margin = gate_margin(manifest, gate, runner.backend, tta, tta_margin) if gated else None
        self.on_gate: Callable[[int, int], None] | None = None  # told (faces, answered by the gate) per gated call
        self.on_mirror_pass: Callable[[int], None] | None = None  # told how many faces each second pass takes
        multi = self.kind.multi_label
        self.thresholds = np.array([manifest.thresholds[k] for k in manifest.labels], np.float32) if multi else None
        bias = manifest.logit_bias
        self.bias = np.array([bias.get(k, 0.0) for k in manifest.labels], np.float32) if bias else None

    @classmethod
    def load(
        cls,
        entry: StoreEntry,
        backend: str = "onnx",
        device: str = "cpu",
        threads: int = 0,
        tta: bool = True,
        tta_margin: float | None = None,
        gate: bool = True,
        int8_weights: str = "auto",
    ) -> Predictor:
        """Check the entry's file for ``backend`` (size, sha256) and load it (``int8_weights``: see
        ``create_runner``)."""
        runner = create_runner(entry, backend, device, threads, gate, int8_weights)
        return cls(entry.manifest, runner, tta, tta_margin, gate)

    @property
    def labels(self) -> list[str]:
        return self.manifest.labels

    @property
    def is_clip_model(self) -> bool:
        return self.kind.input == "clip"

    @property
    def image_spec(self) -> InputSpec:
        """The image input spec; ValueError for models that take feature vectors."""
        spec = self.manifest.input
        if not isinstance(spec, InputSpec):
            raise ValueError(f"{self.manifest.key} takes feature vectors, not images")
        return spec

    def prepare(self, crops: Sequence[np.ndarray]) -> Prepared:
        """Face crops (or whole frames, for frame models) of any size, BGR or gray -> the model input."""
        spec = self.image_spec
        faces = [to_uint8_face(crop, spec) for crop in crops]
        shape = (0, spec.height, spec.width, spec.channels)
        return self.prepare_faces(np.stack(faces) if faces else np.zeros(shape, np.uint8))

    def prepare_faces(self, faces: np.ndarray) -> Prepared:
        """Model-sized uint8 faces ``N x H x W x C`` (what ``to_uint8_face`` gives) -> the model input."""
        return Prepared(prepare_batch(faces, self.image_spec, hflip_tta=self.paired), len(faces), self.paired)

    def prepare_clip(self, frames: np.ndarray) -> Prepared:
        """One clip of model-sized uint8 frames ``T x H x W x C`` -> a one-row model input ``1 x C x T x H x W``."""
        return Prepared(normalize(np.asarray(frames)[None], self.image_spec), 1)

    def prepare_features(self, rows: np.ndarray) -> Prepared:
        """Raw feature rows ``N x L`` -> standardised with the manifest's per-feature mean and std."""
        spec = self.manifest.input
        if not isinstance(spec, FeatureSpec):
            raise ValueError(f"{self.manifest.key} takes images, not feature vectors")
        x = standardize(rows, spec)
        return Prepared(x, len(x))

    def run(self, x: np.ndarray, eligible: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """The backend call on a prepared batch (rows of several ``Prepared`` may be concatenated). With a gate,
        the faces its member is sure of get its answer (``model_store.gate``) and only the others go on. With a
        ``tta_margin`` below 1, the faces the first pass is unsure of go through a second pass as their mirror
        images, and their rows of every output become the average of both passes (what ``paired`` rows give).
        ``eligible`` (a row mask) keeps the other rows as the model gave them (a client's own tensors)."""
        if self.gate_margin is None or not len(x):
            return self._run(x, eligible)
        n, probs = len(x), self.runner.gate_probs(x)  # type: ignore[attr-defined]
        margin = top_margin(probs)
        sure = margin >= self.gate_margin
        if eligible is not None:
            sure &= eligible
        if self.on_gate is not None:
            self.on_gate(n, int(sure.sum()))
        rest = np.flatnonzero(~sure)
        if not len(rest):
            return {self.manifest.outputs[0]: log_probs(probs)}
        left = None if eligible is None else eligible[rest]
        # a lone face left (alone, or the one face of a batch the gate is unsure of) with a low gate margin is likely
        # to need its mirror pass: its mirror image rides in the rest call
        ahead = self._one_call(x[rest], left) and bool((margin[rest] < self.mirror_ahead).all())
        if len(rest) == n:
            return self._run(x, eligible, probs, ahead)
        answer = log_probs(probs[sure])
        outputs = self._run(x[rest], left, probs[rest], ahead)
        return join_rows(n, [(rest, outputs), (sure, dict.fromkeys(outputs, answer))])

    def _call(self, x: np.ndarray, probs: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """One backend call; with the gate's probabilities for the first rows, the rest graph (the gate runs on the
        others: mirror images)."""
        if probs is None:
            return self.runner(x)
        if len(probs) < len(x):
            probs = np.concatenate([probs, self.runner.gate_probs(x[len(probs) :])])  # type: ignore[attr-defined]
        return self.runner.rest(x, probs)  # type: ignore[attr-defined]

    def _one_call(self, x: np.ndarray, eligible: np.ndarray | None) -> bool:
        """Whether the faces' mirror images go in their first call (a few faces, all of them the model's)."""
        return self.tta and not self.paired and len(x) <= MIRROR_IN_ONE_CALL and (eligible is None or eligible.all())

    def _run(
        self, x: np.ndarray, eligible: np.ndarray | None, probs: np.ndarray | None = None, ahead: bool | None = None
    ) -> dict:
        """``run`` without the gate; ``probs``: the gate's probabilities of the rows, so the rest graph runs instead
        of the whole. ``ahead``: whether the mirror images go in the first call (default: ``_one_call``)."""
        if not self.tta or self.paired or not len(x):
            return self._call(x, probs)
        if self._one_call(x, eligible) if ahead is None else ahead:
            return self._run_with_mirrors(x, probs)
        outputs = self._call(x, probs)
        unsure = self._unsure(outputs, eligible)
        if not len(unsure):
            return outputs
        mirrors = self.runner(np.ascontiguousarray(x[unsure][..., ::-1]))
        return {k: average_rows(v, unsure, mirrors[k], len(x)) for k, v in outputs.items()}

    def _run_with_mirrors(self, x: np.ndarray, probs: np.ndarray | None = None) -> dict[str, np.ndarray]:
        """``run``'s answer for a few faces from one call over them and their mirror images: one call of two rows
        costs less than two calls of one, and the answer is the same (sure faces keep their first pass)."""
        n, both = len(x), self._call(np.concatenate([x, x[..., ::-1]]), probs)
        first = {k: v[:n] if v.ndim and len(v) == 2 * n else v for k, v in both.items()}
        unsure = self._unsure(first)
        out = {}
        for k, v in both.items():
            per_face = v.ndim and len(v) == 2 * n
            out[k] = average_rows(v[:n], unsure, v[n:][unsure], n) if per_face else v
        return out

    def _unsure(self, outputs: dict[str, np.ndarray], eligible: np.ndarray | None = None) -> np.ndarray:
        """The rows (of those ``eligible``) whose first pass is under the margin, counted for ``on_mirror_pass``."""
        unsure = self.margins(outputs) < self.tta_margin
        rows = np.flatnonzero(unsure if eligible is None else unsure & eligible)
        if len(rows) and self.on_mirror_pass is not None:
            self.on_mirror_pass(len(rows))
        return rows

    def margins(self, outputs: dict[str, np.ndarray]) -> np.ndarray:
        """Each row's calibrated top-two probability margin (how sure the model is), from its raw outputs."""
        logits = np.asarray(outputs[self.manifest.outputs[0]], np.float32)
        if self.bias is not None:
            logits = logits + self.bias
        return top_margin(probabilities(logits, self.manifest.calibration_temperature))

    def postprocess(self, outputs: dict[str, np.ndarray], prepared: Prepared) -> Predictions:
        """The backend's outputs for ``prepared`` -> mirror-merged logits, calibrated probabilities (softmax, or a
        sigmoid per label for multi-label models), valence/arousal."""

        def merged(x: np.ndarray) -> np.ndarray:
            return merge_mirror(x, prepared.n) if prepared.mirrored else x

        logits = merged(np.asarray(outputs[self.manifest.outputs[0]], np.float32))
        if self.bias is not None:
            logits = logits + self.bias  # the manifest's prior correction: every reader of logits sees it
        temperature = self.manifest.calibration_temperature
        if self.kind.multi_label:
            return Predictions(tuple(self.labels), logits, sigmoid(logits, temperature), None, self.thresholds)
        head = outputs.get("valence_arousal")
        probs = probabilities(logits, temperature)
        va = valence_arousal(self.manifest, probs, None if head is None else merged(head))
        return Predictions(tuple(self.labels), logits, probs, va)

    def empty(self) -> Predictions:
        return self.concat([])

    def concat(self, parts: Sequence[Predictions]) -> Predictions:
        """Rows of ``parts`` one after another, as this model's predictions (none: zero rows)."""
        return Predictions.concat(parts, self.labels, self.manifest.valence_arousal != "none", self.thresholds)

    def infer(self, prepared: Prepared) -> Predictions:
        return self.postprocess(self.run(prepared.x), prepared) if prepared.n else self.empty()

    def predict(self, crops: Sequence[np.ndarray], batch_size: int = 256) -> Predictions:
        """Face crops (or frames) of any size -> predictions, in chunks of ``batch_size``."""
        return self.concat(
            [self.infer(self.prepare(crops[s : s + batch_size])) for s in range(0, len(crops), batch_size)]
        )

    def predict_faces(self, faces: np.ndarray, batch_size: int = 256) -> Predictions:
        """Model-sized uint8 faces -> predictions, in chunks (evaluation over whole data sets)."""
        return self.concat(
            [self.infer(self.prepare_faces(faces[s : s + batch_size])) for s in range(0, len(faces), batch_size)]
        )

    def predict_features(self, rows: np.ndarray, batch_size: int = 1024) -> Predictions:
        """Raw feature rows ``N x L`` -> predictions, in chunks."""
        return self.concat(
            [self.infer(self.prepare_features(rows[s : s + batch_size])) for s in range(0, len(rows), batch_size)]
        )

    def warmup(self) -> None:
        """One call on zeros, so that the first request does not pay for lazy initialisation (every session of a
        runner that has several)."""
        shape = self.manifest.input.tensor_shape
        warm = getattr(self.runner, "warmup", None)
        if warm is not None:
            warm(shape)
        else:
            self.run(np.zeros((1, *shape), np.float32))
