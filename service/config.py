"""One ``Settings`` object, from ``EMOTION_*`` environment variables, validated at start."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from model_store import DEFAULT_ROOT, is_valid_name

MiB = 1024 * 1024


class Settings(BaseSettings):
    """Every knob of the service; each is ``EMOTION_<NAME>`` in the environment (or a ``.env`` file)."""

    model_config = SettingsConfigDict(env_prefix="EMOTION_", env_file=".env", extra="ignore", protected_namespaces=())

    store_path: Path = Field(DEFAULT_ROOT, description="folder holding <name>/<version>/manifest.json")
    default_model: str = Field("fer_emotion_cnn", description="model used when a request names none")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    backend: Literal["onnx", "torch"] = "onnx"
    max_loaded_models: int = Field(3, ge=1, le=64)
    warmup: bool = True
    inference_threads: int = Field(0, ge=0, le=256, description="onnxruntime intra-op threads; 0 = its default")
    inference_workers: int = Field(
        1, ge=1, le=64, description="model calls run at once per model (threads sharing one session)"
    )
    tta: bool = Field(
        True, description="average each face with its mirror image (the setting the models were measured with)"
    )
    api_key: SecretStr | None = Field(None, description="when set, /predict and /models need header X-API-Key")

    max_upload_bytes: int = Field(10 * MiB, ge=1024)
    max_image_pixels: int = Field(40_000_000, ge=64 * 64)
    max_faces: int = Field(20, ge=1, le=500)
    min_face_size: int | None = Field(
        None,
        ge=1,
        description="smallest face searched for and returned (pixels); unset = what EMOTION_DETECTOR_MAX_SIDE "
        "allows: faces from 1/6 of the longest side",
    )
    detector_max_pixels: int = Field(
        2_000_000, ge=10_000, description="most pixels scanned when min_face_size asks for small faces"
    )
    detector: Literal["dlib-hog"] = "dlib-hog"
    detector_threshold: float = Field(-0.2, ge=-2.0, le=2.0, description="dlib HOG adjust_threshold (lower finds more)")
    detector_max_side: int = Field(
        480,
        ge=64,
        le=8192,
        description="longest side images are shrunk to for detection; faces under ~80 px there are missed",
    )
    whole_image_fallback_max_side: int = Field(
        256,
        ge=0,
        le=4096,
        description="an image or frame this small with no face found is taken as one face crop; 0 = off",
    )
    detector_rotation_fallback: bool = Field(
        False,
        description="retry at +-20 degrees when no face is found (finds a few more tilted faces, adds false ones)",
    )
    detector_instances: int = Field(
        0, ge=0, le=64, description="detections run at once (one detector object each); 0 = one per CPU core, <= 8"
    )

    batch_max_size: int = Field(64, ge=1, le=4096)
    batch_max_wait_ms: float = Field(2.0, ge=0.0, le=1000.0)
    max_in_flight: int = Field(64, ge=1, description="concurrent requests before 503 + Retry-After")
    request_timeout_s: float = Field(30.0, gt=0)

    max_video_bytes: int = Field(200 * MiB, ge=1024)
    max_video_duration_s: float = Field(600.0, gt=0)
    max_video_frames: int = Field(3000, ge=1, description="frames analysed per video at most")
    video_timeout_s: float = Field(300.0, gt=0)
    video_detector_max_side: int = Field(
        640,
        ge=64,
        le=8192,
        description="longest side video frames are scanned at on full-frame passes (faces from 1/8 of it); video "
        "is scored offline, so it looks deeper than EMOTION_DETECTOR_MAX_SIDE",
    )
    video_full_detect_every_s: float = Field(
        1.0,
        ge=0.0,
        le=60.0,
        description="seconds between full-frame detections; in between only around tracks (0 = always)",
    )
    temp_dir: Path | None = Field(None, description="where uploads are spooled (default: the system temp dir)")

    log_level: Literal["debug", "info", "warning", "error"] = "info"

    @field_validator("default_model")
    @classmethod
    def _check_model_name(cls, value: str) -> str:
        if not is_valid_name(value):
            raise ValueError(
                f"EMOTION_DEFAULT_MODEL={value!r} is not a model name; use the folder name of a model in the store"
            )
        return value

    @field_validator("store_path")
    @classmethod
    def _check_store(cls, value: Path) -> Path:
        if not value.is_dir():
            raise ValueError(
                f"EMOTION_STORE_PATH={value} is not a folder; point it at the model store (folders <name>/<version>/)"
            )
        return value.resolve()

    @field_validator("temp_dir")
    @classmethod
    def _check_temp(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_dir():
            raise ValueError(f"EMOTION_TEMP_DIR={value} does not exist; create it or unset the variable")
        return value

    @model_validator(mode="after")
    def _check_device(self) -> Settings:
        if self.device == "cuda":
            from model_store import resolve_device

            try:
                resolve_device("cuda")
            except ValueError as exc:
                raise ValueError(f"EMOTION_DEVICE=cuda: {exc}") from exc
        return self


@lru_cache
def get_settings() -> Settings:
    return Settings()
