"""Face crops and clips (face-classification, face-multitask, binary-attribute, clip-classification): ImageFolder
trees, the FER2013 CSV or a ``path,label,split`` manifest, with augmentation and mirror TTA."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from tqdm import tqdm

from model_store import InputSpec, Predictor, StoreEntry, read_manifest
from training.data import FER_LABELS, FaceArrays, available_splits, load_faces
from training.engine import Teacher, TeacherTable, predict, train_one_epoch
from training.reports import classification_metrics, regression_metrics
from training.runs import SHARED_INPUT, load_store_model, require_compatible, require_compatible_labels
from training.tasks.base import TrainTask, class_counts_dict, device_class_weights, split_labels, train_and_val

CHUNK = 2048  # training rows a teacher scores per progress step


def holdout(data: FaceArrays, fraction: float, seed: int) -> tuple[FaceArrays, FaceArrays]:
    """Stratified split of one pool into train and val."""
    rng = np.random.default_rng(seed)
    val_idx = np.concatenate(
        [
            rng.permutation(np.flatnonzero(data.targets == c))[: max(1, round(fraction * (data.targets == c).sum()))]
            for c in np.unique(data.targets)
        ]
    )
    mask = np.zeros(len(data), bool)
    mask[val_idx] = True

    def take(m: np.ndarray) -> FaceArrays:
        return FaceArrays(data.images[m], data.targets[m], data.labels, data.valence_arousal[m])

    return take(~mask), take(mask)


class FaceTask(TrainTask):
    def __init__(self, args) -> None:
        super().__init__(args)
        self.tta = not args.no_tta
        self._teacher: Teacher | None = None

    def build_spec(self) -> InputSpec:
        """The architecture's input, or the one its arguments record (an ensemble's), then the overrides."""
        spec, args = self.cfg.input, self.args
        update = dict(args.arch_args.get("input") or {})
        if args.input_size:
            update.update(height=args.input_size, width=args.input_size)
        if args.face_margin is not None:
            update["face_margin"] = args.face_margin
        if args.channels and args.channels != spec.channels:  # gray <-> colour: the default mean/std per channel
            n = args.channels
            update.update(channels=n, mean=[spec.mean[0]] * n, std=[spec.std[0]] * n)
        return spec.model_copy(update=update)

    def read_sets(self, spec: InputSpec) -> tuple[FaceArrays, FaceArrays]:
        """Train and val rows read at ``spec`` (the same rows in the same order whatever the spec)."""
        args = self.args
        labels = split_labels(args.labels) or FER_LABELS

        def read(source, split, limit, names=labels):
            return load_faces(source, split, spec, names, limit, args.seed)

        return train_and_val(args, read, available_splits(args.data), holdout)

    def load(self) -> tuple[FaceArrays, FaceArrays]:
        self.spec = self.build_spec()
        train, val = self.read_sets(self.spec)
        self.labels = train.labels
        return train, val

    def epoch(self, model, train: FaceArrays, opt, sched, gen, amp_dtype, scaler) -> dict:
        args = self.args
        weights = device_class_weights(train.class_counts(), args)
        teacher = self.teacher(train)
        return train_one_epoch(model, train, self.spec, opt, sched, args, gen, weights, amp_dtype, scaler, teacher)

    def teacher(self, train: FaceArrays) -> Teacher | TeacherTable | None:
        """``--teacher``: published models over the same labels, loaded once and frozen. One teacher that reads the
        same input runs beside the student on each batch; otherwise (another input, or several teachers: the mean of
        their calibrated probabilities, an ensemble) each scores every training row once (``teacher_probs.npy`` in
        the run folder, kept for ``--resume``)."""
        args = self.args
        if not args.teacher:
            return None
        if self._teacher is None:
            entries = [StoreEntry(read_manifest(folder), Path(folder)) for folder in args.teacher]
            for entry in entries:
                require_compatible_labels(entry.manifest, self.labels, "--teacher")
            same = set(SHARED_INPUT)
            if len(entries) == 1 and entries[0].manifest.input.model_dump(include=same) == self.spec.model_dump(
                include=same
            ):
                self._teacher = self.online_teacher()
            else:
                self._teacher = TeacherTable(self.teacher_table(train, entries), args.distill)
        return self._teacher

    def online_teacher(self) -> Teacher:
        model, manifest = load_store_model(self.args.teacher[0])
        require_compatible(manifest, self.labels, self.spec, "--teacher")
        for p in model.parameters():
            p.requires_grad_(False)
        return Teacher(model.to(self.args.device), manifest.calibration_temperature, self.args.distill)

    def teacher_table(self, train: FaceArrays, entries: list[StoreEntry]) -> np.ndarray:
        """The teachers' mean calibrated probabilities for every training row (each reads the rows at its own input,
        mirror TTA, through the Predictor)."""
        path = self.args.output / "teacher_probs.npy"
        if path.is_file():
            probs = np.load(path)
            if probs.shape == (len(train), len(self.labels)):
                return probs
        probs = np.zeros((len(train), len(self.labels)), np.float32)
        for entry in entries:
            rows, _ = self.read_sets(entry.manifest.input)
            if not np.array_equal(rows.targets, train.targets):
                raise SystemExit(f"--teacher {entry.folder}: its reading of the training rows does not line up")
            predictor = Predictor.load(entry, threads=self.args.threads or 0)
            chunks = range(0, len(rows.images), CHUNK)
            for s in tqdm(chunks, desc=f"teacher {entry.manifest.key}", unit="chunk", leave=False, mininterval=5):
                part = predictor.predict_faces(rows.images[s : s + CHUNK]).probabilities
                probs[s : s + CHUNK] += part / len(entries)
        np.save(path, probs)
        return probs

    def evaluate(self, model, data: FaceArrays, amp_dtype) -> dict:
        logits, va = predict(model, data.images, self.spec, self.args.device, tta=self.tta, amp_dtype=amp_dtype)
        metrics = classification_metrics(logits, data.targets, data.labels)
        if va is not None:
            metrics["valence_arousal"] = regression_metrics(va, data.valence_arousal)
        metrics["_logits"] = logits
        return metrics

    def dataset(self, train: FaceArrays, val: FaceArrays) -> dict:
        return {
            "train_class_counts": class_counts_dict(train.labels, train.class_counts()),
            "val_class_counts": class_counts_dict(val.labels, val.class_counts()),
        }
