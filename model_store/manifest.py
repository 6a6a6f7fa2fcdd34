"""The manifest: what a served model is, how to feed it and what it was measured at."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

MANIFEST_NAME = "manifest.json"
NAME_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,63}$"
_NAME_RE = re.compile(NAME_PATTERN)

Task = Literal["face-classification", "face-multitask", "clip-classification", "binary-attribute"]
FileRole = Literal["weights", "onnx", "torch_program"]


def is_valid_name(value: str) -> bool:
    """True for names safe to use as a folder: lowercase letters, digits, ``_ . -``, no path parts."""
    return bool(_NAME_RE.match(value)) and ".." not in value


class InputSpec(BaseModel):
    """How a face crop becomes the model's input tensor; read by the one preprocessing function."""

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
        description="extra context around a detected box, per side, as a fraction of its size",
    )
    frames: int | None = Field(default=None, gt=0, description="clip models: frames per clip")

    @model_validator(mode="after")
    def _check_norm(self) -> InputSpec:
        if len(self.mean) != self.channels or len(self.std) != self.channels:
            raise ValueError(f"mean and std need {self.channels} value(s), one per channel")
        if any(s <= 0 for s in self.std):
            raise ValueError("std values must be positive")
        return self


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
        if "/" in value or "\\" in value or value in {"", ".", ".."}:
            raise ValueError(f"file path {value!r} must be a plain file name inside the model folder")
        return value


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
    input: InputSpec
    outputs: list[str] = Field(default_factory=lambda: ["logits"], description="ONNX output names in order")
    valence_arousal: Literal["derived", "predicted", "none"] = "derived"
    calibration_temperature: float = Field(default=1.0, gt=0.0)
    files: list[FileEntry] = Field(default_factory=list)
    metrics: dict = Field(default_factory=dict)
    dataset: dict = Field(default_factory=dict)
    training: dict = Field(default_factory=dict)
    description: str = ""
    created: str = Field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    @field_validator("name", "version")
    @classmethod
    def _safe_name(cls, value: str) -> str:
        if not is_valid_name(value):
            raise ValueError(f"{value!r} is not a valid name: use lowercase letters, digits, '_', '.', '-' (max 64)")
        return value

    @field_validator("labels")
    @classmethod
    def _unique_labels(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("labels must be unique")
        return value

    @model_validator(mode="after")
    def _check_task(self) -> Manifest:
        if self.task == "clip-classification" and not self.input.frames:
            raise ValueError("clip-classification models need input.frames")
        if self.task == "binary-attribute" and len(self.labels) != 2:
            raise ValueError("binary-attribute models have exactly two labels")
        if self.valence_arousal == "predicted" and "valence_arousal" not in self.outputs:
            raise ValueError("valence_arousal='predicted' needs a 'valence_arousal' output")
        return self

    @property
    def key(self) -> str:
        return f"{self.name}:{self.version}"

    def file(self, role: FileRole) -> FileEntry | None:
        """The first file with this role, if any."""
        return next((f for f in self.files if f.role == role), None)
