"""The manifest: what a served model is, how to feed it and what it was measured at."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    TypeAdapter,
    field_validator,
    model_validator,
)

MANIFEST_NAME = "manifest.json"
NAME_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,63}$"
# A version is a name, optionally with a PEP 440 local part: ``1.0.0+p07`` (a personalised 1.0.0).
VERSION_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,47}(\+[a-z0-9][a-z0-9_.]{0,15})?$"
_NAME_RE = re.compile(NAME_PATTERN)
_VERSION_RE = re.compile(VERSION_PATTERN)

Task = Literal[
    "face-classification",
    "face-multitask",
    "clip-classification",
    "binary-attribute",
    "frame-attributes",
    "feature-classification",
    "face-detection",
    "face-embedding",
]
FileRole = Literal["weights", "onnx", "torch_program", "onnx_int8"]


@dataclass(frozen=True)
class TaskKind:
    """What a task means for everyone who runs it; the one table the Predictor, the registry and the pipelines
    dispatch on, so a new task is one row here rather than an ``if`` in every module."""

    input: Literal["face", "clip", "frame", "features"]  # a face crop, a clip of crops, a whole frame, a vector
    multi_label: bool = False  # sigmoid per label with a threshold each, instead of softmax over labels
    mirror_tta: bool = False  # averaged with the mirror image (faces only: text on a frame is not mirror-symmetric)
    affect: bool = True  # valence/arousal make sense (derived from emotion labels or predicted)
    component: bool = False  # a part of the pipelines (a face detector), read from the store, never served alone


TASKS: dict[str, TaskKind] = {
    "face-classification": TaskKind("face", mirror_tta=True),
    "face-multitask": TaskKind("face", mirror_tta=True),
    "binary-attribute": TaskKind("face", mirror_tta=True),
    "clip-classification": TaskKind("clip"),
    "frame-attributes": TaskKind("frame", multi_label=True, affect=False),
    "feature-classification": TaskKind("features", affect=False),
    "face-detection": TaskKind("frame", affect=False, component=True),
    # a descriptor of an aligned face chip, used inside the process only (linking a video's tracks into persons)
    "face-embedding": TaskKind("face", affect=False, component=True),
}


def routes(faces: Iterable[str]) -> bool:
    """Whether any ensemble member is routed to gray or colour faces only (``faces`` as the members record them)."""
    return any(kind != "all" for kind in faces)


def is_valid_name(value: str) -> bool:
    """True for names safe to use as a folder: lowercase letters, digits, ``_ . -``, no path parts."""
    return bool(_NAME_RE.match(value)) and ".." not in value


def is_valid_version(value: str) -> bool:
    """A name, or a name with a PEP 440 local part (``1.0.0+p07``); still a safe folder name."""
    return bool(_VERSION_RE.match(value)) and ".." not in value


def public_version(version: str) -> str:
    """``1.0.0`` for ``1.0.0+p07``: the version without its local part."""
    return version.split("+", 1)[0]


def _finite(values: list[float], what: str) -> None:
    if not all(math.isfinite(v) for v in values):
        raise ValueError(f"{what} must be finite numbers")


class InputSpec(BaseModel):
    """How an image (a face crop, a clip of crops or a whole frame) becomes the model's input tensor; read by the
    one preprocessing function."""

    model_config = ConfigDict(extra="forbid")

    height: int = Field(gt=0, le=1024)
    width: int = Field(gt=0, le=1024)
    channels: Literal[1, 3] = 1
    mean: list[float] = Field(default_factory=lambda: [0.5])
    std: list[float] = Field(default_factory=lambda: [0.25])
    face_margin: float = Field(
        default=0.0,
        ge=0.0,
        le=1.0,
        description="extra context around the face, per side, as a fraction of its size (for 'chip' framing: "
        "dlib's chip padding)",
    )
    framing: Literal["box", "chip"] = Field(
        default="box",
        description="how a face is cut from a photo or frame, as the model was trained: 'box', the detector box "
        "grown by face_margin into a square; 'chip', dlib's 5-point aligned chip (eyes and nose brought to a fixed "
        "template, as dlib's face networks were trained) padded by face_margin",
    )
    edge: Literal["clip", "replicate"] = Field(
        default="clip",
        description="'box' framing at the image's edge: 'clip' cuts the square off at the edge (the resize then "
        "stretches the face); 'replicate' keeps it square and fills what lies outside by repeating the border, so a "
        "face keeps the crop it would get on a larger canvas (chosen per model by benchmarks/stability.py)",
    )
    frames: int | None = Field(default=None, gt=0, description="clip models: frames per clip")

    @model_validator(mode="after")
    def _check_norm(self) -> InputSpec:
        if len(self.mean) != self.channels or len(self.std) != self.channels:
            raise ValueError(f"mean and std need {self.channels} value(s), one per channel")
        if any(s <= 0 for s in self.std):
            raise ValueError("std values must be positive")
        return self

    @property
    def tensor_shape(self) -> tuple[int, ...]:
        """One row of the model input: ``C x H x W``, or ``C x T x H x W`` for clips."""
        return (self.channels, *((self.frames,) if self.frames else ()), self.height, self.width)


class FeatureSpec(BaseModel):
    """A 1-D feature vector (e.g. EEG band powers) and the per-feature standardisation computed on the training
    set, which serving applies before the model: ``(x - mean) / std``."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["features"] = "features"
    length: int = Field(gt=0, le=100_000, description="values per row")
    mean: list[float] | None = Field(None, description="per-feature mean subtracted first (none: 0)")
    std: list[float] | None = Field(None, description="per-feature scale divided by next (none: 1)")
    names: list[str] | None = Field(None, description="the feature columns the model was trained on, in order")

    @model_validator(mode="after")
    def _check_lengths(self) -> FeatureSpec:
        for field in ("mean", "std", "names"):
            values = getattr(self, field)
            if values is not None and len(values) != self.length:
                raise ValueError(
                    f"input.{field} has {len(values)} values but input.length is {self.length}: give one per "
                    f"feature, or leave {field} out"
                )
        if self.mean is not None:
            _finite(self.mean, "input.mean")
        if self.std is not None:
            _finite(self.std, "input.std")
            if any(s <= 0 for s in self.std):
                raise ValueError("input.std values must be positive (a constant feature gets std 1)")
        return self

    @property
    def tensor_shape(self) -> tuple[int, ...]:
        """One row of the model input: ``L``."""
        return (self.length,)


def _input_kind(value: Any) -> str:
    """``features`` for a vector spec (``kind: features`` or a ``length``), ``image`` for everything else."""
    if isinstance(value, dict):
        return "features" if value.get("kind") == "features" or "length" in value else "image"
    return "features" if isinstance(value, FeatureSpec) else "image"


AnyInput = Annotated[
    Annotated[InputSpec, Tag("image")] | Annotated[FeatureSpec, Tag("features")], Discriminator(_input_kind)
]
_INPUT_ADAPTER: TypeAdapter[InputSpec | FeatureSpec] = TypeAdapter(AnyInput)


def parse_input(value: dict | InputSpec | FeatureSpec) -> InputSpec | FeatureSpec:
    """An image or feature input spec from its JSON form (what the manifest's ``input`` holds)."""
    return _INPUT_ADAPTER.validate_python(value)


def _is_plain_file_name(value: str) -> bool:
    return "/" not in value and "\\" not in value and value not in {"", ".", ".."}


class FileEntry(BaseModel):
    """One artifact next to the manifest, with its checksum."""

    model_config = ConfigDict(extra="forbid")

    path: str
    role: FileRole
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    bytes: int = Field(ge=0)

    @field_validator("path")
    @classmethod
    def _plain_file_name(cls, value: str) -> str:
        if not _is_plain_file_name(value):
            raise ValueError(f"file path {value!r} must be a plain file name inside the model folder")
        return value


class LinkedFile(BaseModel):
    """Another store entry's weights file that this entry reads tensors from instead of holding a copy (an ensemble
    member that is published on its own): its path from the store root, its checksum, and how names map."""

    model_config = ConfigDict(extra="forbid")

    path: str = Field(description="<name>/<version>/<file>, relative to the store root")
    role: Literal["linked_weights"] = "linked_weights"
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    bytes: int = Field(ge=0)
    prefix: str = Field(description="this entry's name for a tensor of that file: prefix + its name there")
    float16: list[str] = Field(
        default_factory=list,
        description="tensors (named as in that file) this entry holds in float16, rounded from that file's float32",
    )

    @field_validator("path")
    @classmethod
    def _entry_file(cls, value: str) -> str:
        parts = value.split("/")
        if len(parts) != 3 or not (
            is_valid_name(parts[0]) and is_valid_version(parts[1]) and _is_plain_file_name(parts[2])
        ):
            raise ValueError(f"linked file {value!r} must be <name>/<version>/<file> of an entry in the same store")
        return value

    @property
    def entry_key(self) -> str:
        """``name:version`` of the entry that owns the file."""
        name, version, _ = self.path.split("/")
        return f"{name}:{version}"


def _file_kind(value: Any) -> str:
    role = value.get("role") if isinstance(value, dict) else getattr(value, "role", None)
    return "linked" if role == "linked_weights" else "own"


AnyFile = Annotated[Annotated[FileEntry, Tag("own")] | Annotated[LinkedFile, Tag("linked")], Discriminator(_file_kind)]


class Gate(BaseModel):
    """An ensemble member that answers alone for the faces it is sure of (``model_store.gate``)."""

    model_config = ConfigDict(extra="forbid")

    output: str = Field(description="the graph tensor holding that member's calibrated probabilities (N x labels)")
    margin: float = Field(
        gt=0.0,
        le=1.0,
        description="faces whose top-two margin of those probabilities is at least this get the member's answer; "
        "chosen on val so that their labels are the ensemble's (benchmarks.gate)",
    )
    member: str = Field(default="", description="which member it is, for people (its source)")


class Manifest(BaseModel):
    """A model version in the store: ``model_store/<name>/<version>/manifest.json``."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    schema_version: int = 1
    name: str
    version: str
    task: Task
    architecture: str
    architecture_args: dict = Field(default_factory=dict)
    labels: list[str] = Field(min_length=1)
    input: AnyInput
    outputs: list[str] = Field(default_factory=lambda: ["logits"], description="ONNX output names in order")
    valence_arousal: Literal["derived", "predicted", "none"] = "derived"
    calibration_temperature: float = Field(default=1.0, gt=0.0)
    mirror_tta: bool = Field(
        default=True,
        description="face models: average each face with its mirror image when serving; false where that was "
        "measured not to pay (an ensemble already averages); the calibration temperature was fitted the same way",
    )
    mirror_tta_margin: float = Field(
        default=1.0,
        ge=0.0,
        le=1.0,
        description="single-label face models with mirror_tta: only faces whose calibrated top-two margin is under "
        "this get the mirror pass (a second, smaller backend call); 1: every face, its mirror in the same call. "
        "Chosen on val as the saving that keeps accuracy (training.evaluate --tta-margin)",
    )
    gate: Gate | None = Field(
        default=None,
        description="single-label face ensembles: a member whose sure answers are served without the others "
        "(onnxruntime backends; EMOTION_GATE=false serves every face the whole ensemble)",
    )
    logit_bias: dict[str, float] = Field(
        default_factory=dict,
        description="single-label models: added to the logits of these labels before calibration, a prior "
        "correction for the images the model serves (fitted on development data, not the val split)",
    )
    thresholds: dict[str, float] = Field(
        default_factory=dict, description="frame-attributes: probability over which each label counts as present"
    )
    files: list[AnyFile] = Field(default_factory=list)
    metrics: dict = Field(default_factory=dict)
    dataset: dict = Field(default_factory=dict)
    training: dict = Field(default_factory=dict)
    description: str = ""
    license: str = Field(default="", description="the weights' licence (SPDX id) and attribution, where it is not ours")
    created: str = Field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    @field_validator("name")
    @classmethod
    def _safe_name(cls, value: str) -> str:
        if not is_valid_name(value):
            raise ValueError(f"{value!r} is not a valid name: use lowercase letters, digits, '_', '.', '-' (max 64)")
        return value

    @field_validator("version")
    @classmethod
    def _safe_version(cls, value: str) -> str:
        if not is_valid_version(value):
            raise ValueError(
                f"{value!r} is not a valid version: use lowercase letters, digits, '_', '.', '-' (max 48), "
                "optionally followed by a local part such as '+p07' (max 16)"
            )
        return value

    @field_validator("labels")
    @classmethod
    def _unique_labels(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("labels must be unique")
        return value

    @model_validator(mode="after")
    def _check_task(self) -> Manifest:
        kind = TASKS[self.task]
        unknown = sorted(set(self.logit_bias) - set(self.labels))
        if unknown:
            raise ValueError(f"logit_bias names labels the model lacks: {unknown}")
        if self.logit_bias and kind.multi_label:
            raise ValueError("logit_bias is for single-label models; multi-label models have thresholds")
        self._check_input(kind)
        if self.task == "clip-classification" and not self.input.frames:
            raise ValueError("clip-classification models need input.frames")
        if self.task == "binary-attribute" and len(self.labels) != 2:
            raise ValueError("binary-attribute models have exactly two labels")
        if not kind.affect:
            if "valence_arousal" in self.model_fields_set and self.valence_arousal != "none":
                raise ValueError(f"{self.task} models have no valence/arousal: set valence_arousal to 'none'")
            self.valence_arousal = "none"
        if self.valence_arousal == "predicted" and "valence_arousal" not in self.outputs:
            raise ValueError("valence_arousal='predicted' needs a 'valence_arousal' output")
        self._check_thresholds(kind)
        if self.mirror_tta_margin < 1.0 and (kind.multi_label or not (kind.mirror_tta and self.mirror_tta)):
            raise ValueError(
                f"mirror_tta_margin applies to single-label face models served with mirror_tta; {self.key} has "
                "none to apply it to: set it to 1 or remove it"
            )
        if self.gate is not None and (kind.multi_label or kind.input != "face" or self.outputs != ["logits"]):
            raise ValueError(
                f"a gate applies to single-label face models whose one output is logits; {self.key} is not one: "
                "remove its gate"
            )
        return self

    def _check_input(self, kind: TaskKind) -> None:
        if kind.input == "features" and not isinstance(self.input, FeatureSpec):
            raise ValueError(
                f"{self.task} models take feature vectors: input needs 'length' (values per row) and optionally "
                "per-feature 'mean' and 'std', not image fields"
            )
        if kind.input != "features" and not isinstance(self.input, InputSpec):
            raise ValueError(
                f"{self.task} models take images: input needs height, width, channels, mean, std; feature vectors "
                "belong to task 'feature-classification'"
            )

    def _check_thresholds(self, kind: TaskKind) -> None:
        if not kind.multi_label:
            if self.thresholds:
                raise ValueError(f"thresholds apply to frame-attributes models, not {self.task}: remove them")
            return
        unknown = sorted(set(self.thresholds) - set(self.labels))
        if unknown:
            raise ValueError(f"thresholds name {unknown}, which are not labels of this model ({self.labels})")
        bad = sorted(k for k, v in self.thresholds.items() if not 0.0 < v < 1.0)
        if bad:
            raise ValueError(f"thresholds of {bad} must lie strictly between 0 and 1")
        # every label gets one, in label order; 0.5 where none was chosen
        self.thresholds = {label: float(self.thresholds.get(label, 0.5)) for label in self.labels}

    @property
    def key(self) -> str:
        return f"{self.name}:{self.version}"

    @property
    def kind(self) -> TaskKind:
        """What the task means: input kind, sigmoid or softmax, mirror TTA, valence/arousal."""
        return TASKS[self.task]

    @property
    def routed(self) -> bool:
        """An ensemble whose members are routed to gray or colour faces only (``architecture_args.members``)."""
        members = self.architecture_args.get("members", [])
        return routes(m.get("faces", "all") for m in members if isinstance(m, dict))

    def file(self, role: FileRole) -> FileEntry | None:
        """The first file of the entry's own with this role, if any."""
        return next((f for f in self.files if isinstance(f, FileEntry) and f.role == role), None)

    @property
    def links(self) -> list[LinkedFile]:
        """Other entries' weights files this entry reads tensors from (``model_store.linked``)."""
        return [f for f in self.files if isinstance(f, LinkedFile)]
