"""One ``Settings`` object from ``EMOTION_*`` environment variables, in nested groups, validated at start.

Groups are set with a double underscore: ``EMOTION_LIMITS__MAX_FACES=10``, ``EMOTION_DETECTOR__MAX_SIDE=640``,
``EMOTION_DETECTOR__DLIB_HOG__THRESHOLD=-0.3``. The flat names of earlier releases (``EMOTION_MAX_FACES``,
``EMOTION_DETECTOR_THRESHOLD``, ...) keep working as aliases (``ALIASES``); where both are set, the nested one wins.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from model_store import BACKENDS, DEFAULT_ROOT, is_valid_name
from service.detection.settings import DetectorSettings

MiB = 1024 * 1024
ENV_PREFIX = "EMOTION_"
MAX_PROCESSES = 64  # server processes one `python -m service` may start (EMOTION_WORKERS, --workers)


class Group(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LimitsSettings(Group):
    """What one request may ask of the service."""

    max_upload_bytes: int = Field(10 * MiB, ge=1024)
    max_image_pixels: int = Field(40_000_000, ge=64 * 64)
    max_faces: int = Field(20, ge=1, le=500, description="faces per image or video frame at most")
    max_in_flight: int = Field(
        64, ge=1, description="requests handled at once, counted once their body is in, before 503 + Retry-After"
    )
    max_receiving: int = Field(
        256,
        ge=1,
        description="requests still sending their body at once before 503 + Retry-After (they take no in-flight "
        "place until their body is in)",
    )
    body_timeout_s: float = Field(
        15.0,
        gt=0,
        le=3600,
        description="longest wait for the next part of a request body, and the grace before min_upload_bytes_per_s "
        "applies; a body that stalls is answered 408 and its connection closed",
    )
    min_upload_bytes_per_s: int = Field(
        8192, ge=0, description="after the first body_timeout_s, a body must have come at least this fast; 0 = off"
    )
    request_timeout_s: float = Field(30.0, gt=0)
    max_feature_rows: int = Field(4096, ge=1, description="rows one /predict/features request may send")
    max_feature_values: int = Field(
        1_048_576, ge=1, description="values (rows x features) one /predict/features request may send"
    )
    max_suite_models: int = Field(32, ge=1, le=256, description="models one /predict/attributes request may name")


class BatchingSettings(Group):
    """Micro-batching of model calls across concurrent requests."""

    max_size: int = Field(64, ge=1, le=4096, description="rows per model call at most")
    max_wait_ms: float = Field(2.0, ge=0.0, le=1000.0, description="how long a batch waits for more rows")
    workers: int = Field(
        2,
        ge=1,
        le=64,
        description="model calls run at once per model (threads sharing one session): two keep both cores of a small "
        "host busy while small batches run, and many-core or GPU hosts may want more",
    )


class VideoSettings(Group):
    """Limits and detection cadence of ``/predict/video``."""

    max_bytes: int = Field(200 * MiB, ge=1024)
    max_duration_s: float = Field(600.0, gt=0)
    max_frames: int = Field(3000, ge=1, description="frames analysed per video at most")
    timeout_s: float = Field(300.0, gt=0)
    max_scans: int = Field(
        0,
        ge=0,
        le=256,
        description="videos scanned at once (uploads, in-process jobs, the scorer) on threads of their own; more wait "
        "their turn. 0 = half the cores, at least 2 (a scan keeps about two cores busy)",
    )
    detector_max_side: int = Field(
        640, ge=64, le=8192, description="longest side full-frame passes scan at (faces from 1/8 of it)"
    )
    full_detect_every_s: float = Field(
        1.0, ge=0.0, le=60.0, description="seconds between full-frame detections; in between only around tracks"
    )
    quiet_passes: int = Field(
        3,
        ge=0,
        le=100,
        description="a scheduled full-frame detection is put off while nothing changed outside the tracked faces' "
        "search regions since the last one (it would find nothing new), for at most this many cadences; needs "
        "shot_cuts; 0 = every scheduled pass runs. Also live streams'",
    )
    min_readable_share: float = Field(
        0.5,
        ge=0.0,
        le=1.0,
        description="share of a video's analysed span that must decode (damaged stretches are read past and "
        "reported); less is refused with 422 instead of summarising what is left. Applies to jobs too; 0 = never",
    )
    shot_cuts: bool = Field(
        True,
        description="a track is one person: a hard cut (shot change) between sampled frames ends every track, and a "
        "face replaced in place by another starts a new one; false = tracks follow boxes across both",
    )
    cut_threshold: float = Field(
        0.75,
        gt=0.0,
        le=1.0,
        description="share of a sampled frame whose content is new (not moved or relit) since the last sample that "
        "makes a cut; lower finds subtler cuts and splits more tracks",
    )
    link_persons: bool = Field(
        True,
        description="link a clip's tracks into persons by face descriptor (computed and kept inside the process: "
        "never returned, stored or logged); person ids are labels within one answer, never matched across videos",
    )
    person_threshold: float = Field(
        0.575,
        gt=0.0,
        le=2.0,
        description="descriptor distance (dlib's measure) under which two tracks are one person; calibrated on clips "
        "of the shared photos by benchmarks/persons.py; lower splits more, higher merges more",
    )
    person_faces: int = Field(3, ge=1, le=16, description="faces per track described for linking (largest, sharpest)")
    steady_boxes: bool = Field(
        True,
        description="a tracked face is cut for the model from its track's smoothed box (size and centre filtered over "
        "samples, detector noise ignored), so a still face gets the same crop every sample; results still report the "
        "detector's box. Video, jobs, the scorer and live streams; false = each detection's own box",
    )


class StreamSettings(Group):
    """Limits of live sessions on ``WS /stream``: frames in, one answer per analysed frame out, newest frame wins."""

    max_sessions: int = Field(
        8, ge=1, le=1024, description="live sessions at once; one more is closed with 1013 (try again later)"
    )
    max_frame_bytes: int = Field(
        4 * MiB, ge=1024, description="largest frame message (JPEG, PNG or WebP); larger closes with 1009"
    )
    idle_timeout_s: float = Field(30.0, gt=0, description="a session that sends nothing for this long is closed (1001)")
    max_session_s: float = Field(
        4 * 3600.0, gt=0, description="a session is closed (1001, with its summary) after this long"
    )
    full_detect_every_s: float = Field(
        0.5, ge=0.0, le=60.0, description="seconds between full-frame detections; in between only around tracks"
    )
    smoothing: float = Field(
        0.25, ge=0.0, le=10.0, description="EMA time constant (seconds) of smoothed emotions, unless a session sets it"
    )


class QualitySettings(Group):
    """The ``reliable`` flag on every face (``service.quality``): each face must pass all four; defaults chosen on
    RAF-DB val and the shared photos by ``benchmarks/reliability.py --choose`` (its report states the figures): the
    margin is the signal, the picture gates stay only where they pay."""

    min_face_px: int = Field(32, ge=0, description="shorter side of the face box, pixels; smaller faces are unreliable")
    min_sharpness: float = Field(
        0.0,
        ge=0.0,
        description="variance of the Laplacian of the gray face at 64 px; blurrier faces are unreliable (0 = off, the "
        "measured default)",
    )
    min_frontal: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="frontalness from the landmarks (1 = frontal; 0 = off, the measured default); faces without "
        "landmarks pass",
    )
    min_margin: float = Field(
        0.45, ge=0.0, le=1.0, description="top-1 minus top-2 probability; less certain answers are unreliable"
    )


class QueueSettings(Group):
    """Background video jobs: in the API process (no ``url``), or on Redis served by ``python -m service.worker``."""

    url: str | None = Field(None, description="redis://host:port/db; unset = jobs run inside the API process")
    jobs_dir: Path | None = Field(
        None,
        description="folder for uploaded clips and results, shared by the API and its workers (default: "
        "<system temp>/emotion-jobs/<namespace>)",
    )
    namespace: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9_.-]{1,64}$",
        description="keeps this deployment's jobs apart from every other one on the host (the default jobs folder's "
        "last part); unset: a hash of the model store folder and the API port (with url: of the store, url and "
        "name, so that the API and its workers on one host agree)",
    )
    job_ttl_s: float = Field(7 * 24 * 3600.0, gt=0, description="finished jobs and their files are kept this long")
    embedded_workers: int = Field(1, ge=1, le=64, description="jobs run at once inside the API process (no url)")
    max_queued: int = Field(
        1000, ge=1, description="jobs waiting to run at most; one more is refused with 503 + Retry-After"
    )
    min_free_bytes: int = Field(
        1024 * MiB,
        ge=0,
        description="free space the jobs folder's disk keeps: under it a new job is refused with 507 (a full disk "
        "fails every job and the API's own uploads); 0 = off",
    )
    max_bytes: int = Field(4 * 1024 * MiB, ge=1024, description="largest clip a job accepts")
    max_duration_s: float = Field(6 * 3600.0, gt=0, description="longest clip a job accepts")
    max_tries: int = Field(3, ge=1, le=20, description="a job that keeps crashing its worker is failed after this")
    max_frames: int = Field(120_000, ge=1, description="frames a job analyses at most (6 h at 5 per second: 108,000)")
    job_timeout_s: float = Field(6 * 3600.0, gt=0, description="a job running longer than this is failed")
    name: str = Field(
        "emotion",
        pattern=r"^[A-Za-z0-9_.-]{1,64}$",
        description="prefix of the Redis keys and the arq queue name: each deployment sharing a Redis needs its own",
    )
    lease_s: float = Field(
        30.0, ge=0.5, le=300.0, description="a running job is taken over this long after its worker stops renewing"
    )
    worker_jobs: int = Field(1, ge=1, le=64, description="jobs one `python -m service.worker` process runs at once")
    worker_metrics_port: int = Field(
        9100,
        ge=0,
        le=65535,
        description="first port a worker serves its /metrics on; taken (another worker on this host): the next "
        "free one of worker_metrics_ports, logged; 0 = none",
    )
    worker_metrics_ports: int = Field(
        16, ge=1, le=1024, description="ports tried from worker_metrics_port on; none free: metrics off, logged"
    )

    @field_validator("url")
    @classmethod
    def _redis_url(cls, value: str | None) -> str | None:
        if value and not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(f"EMOTION_QUEUE_URL={value!r} is not a Redis URL; use redis://host:6379/0 or unset it")
        return value or None


# Flat names of earlier releases -> (group, field[, subfield]).
ALIASES: dict[str, tuple[str, ...]] = {
    "max_upload_bytes": ("limits", "max_upload_bytes"),
    "max_image_pixels": ("limits", "max_image_pixels"),
    "max_faces": ("limits", "max_faces"),
    "max_in_flight": ("limits", "max_in_flight"),
    "request_timeout_s": ("limits", "request_timeout_s"),
    "min_face_size": ("detector", "min_face_size"),
    "detector_max_pixels": ("detector", "max_pixels"),
    "detector_max_side": ("detector", "max_side"),
    "detector_instances": ("detector", "instances"),
    "whole_image_fallback_max_side": ("detector", "whole_image_fallback_max_side"),
    "detector_threshold": ("detector", "dlib_hog", "threshold"),
    "detector_rotation_fallback": ("detector", "dlib_hog", "rotation_fallback"),
    "batch_max_size": ("batching", "max_size"),
    "batch_max_wait_ms": ("batching", "max_wait_ms"),
    "inference_workers": ("batching", "workers"),
    "max_video_bytes": ("video", "max_bytes"),
    "max_video_duration_s": ("video", "max_duration_s"),
    "max_video_frames": ("video", "max_frames"),
    "video_timeout_s": ("video", "timeout_s"),
    "video_detector_max_side": ("video", "detector_max_side"),
    "video_full_detect_every_s": ("video", "full_detect_every_s"),
    "queue_url": ("queue", "url"),
    "jobs_dir": ("queue", "jobs_dir"),
    "job_ttl_s": ("queue", "job_ttl_s"),
}


def nest_aliases(data: dict[str, Any]) -> dict[str, Any]:
    """Move flat alias keys into their groups, unless the nested key is set already (nested names win).

    A key may also arrive with its prefix (``emotion_max_faces``): pydantic-settings 2.14+ hands on ``.env`` entries
    that match no field that way."""
    data = dict(data)
    for flat, path in ALIASES.items():
        prefixed = f"{ENV_PREFIX.lower()}{flat}"
        if flat not in data and prefixed not in data:
            continue
        value = data.pop(flat) if flat in data else data.pop(prefixed)
        data.pop(prefixed, None)
        node = data
        for key in path[:-1]:
            node[key] = node = dict(node.get(key) or {})
        node.setdefault(path[-1], value)
    return data


class _AliasEnvSource(PydanticBaseSettingsSource):
    """The flat ``EMOTION_*`` names of earlier releases, read from the environment."""

    def get_field_value(self, field, field_name):  # pragma: no cover - the whole mapping comes from __call__
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        env = {k.upper(): v for k, v in os.environ.items()}
        found = {flat: env[f"{ENV_PREFIX}{flat.upper()}"] for flat in ALIASES if f"{ENV_PREFIX}{flat.upper()}" in env}
        return {k: v for k, v in found.items() if v != ""}


class _EnvSource(EnvSettingsSource):
    """``EMOTION_DETECTOR=dlib-hog`` (the backend's name, as in earlier releases) as well as a JSON group."""

    def decode_complex_value(self, field_name, field, value):
        if field_name == "detector" and isinstance(value, str) and not value.lstrip().startswith("{"):
            return {"backend": value}
        return super().decode_complex_value(field_name, field, value)


class Settings(BaseSettings):
    """Every knob of the service; each is ``EMOTION_<NAME>`` (``EMOTION_<GROUP>__<NAME>`` in a group)."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", env_file=".env", extra="ignore", protected_namespaces=()
    )

    store_path: Path = Field(DEFAULT_ROOT, description="folder holding <name>/<version>/manifest.json")
    default_model: str = Field("emotion_transfer", description="model used when a request names none")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    backend: str = Field(
        "onnx-int8",
        description=f"model runtime, one of: {', '.join(BACKENDS)} (onnx-int8: a model's int8 graph where it "
        "has one, published when it costs at most half a point of accuracy; its fp32 graph otherwise)",
    )
    int8_weights: Literal["auto", "7", "8"] = Field(
        "auto",
        description="an int8 graph's weight bits: auto = 7 on x86 CPUs without VNNI, whose int8 products saturate "
        "(they lost 3-5 points of accuracy with 8), else 8 as published; 7 or 8 = always",
    )
    max_loaded_models: int = Field(3, ge=1, le=64)
    warmup: bool = True
    inference_threads: int = Field(0, ge=0, le=256, description="runtime intra-op threads; 0 = its default")
    tta: bool = Field(True, description="average each face with its mirror image (as the models were measured)")
    tta_margin: float | None = Field(
        None,
        ge=0.0,
        le=1.0,
        description="with tta, mirror only the faces whose calibrated top-two margin is under this, in a second "
        "pass; 1 = every face, in the same call; unset = each model's own (its manifest's mirror_tta_margin)",
    )
    gate: bool = Field(
        True,
        description="where a model's manifest has a gate (an ensemble member that answers alone for the faces it is "
        "sure of), serve it; false: every face gets the whole ensemble",
    )
    api_key: SecretStr | None = Field(None, description="when set, /predict and /models need header X-API-Key")
    temp_dir: Path | None = Field(None, description="where uploads are spooled (default: the system temp dir)")
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    reload_interval_s: float = Field(
        0.0, ge=0.0, le=86400.0, description="rescan the store for new or removed versions this often; 0 = off"
    )
    workers: int = Field(
        1,
        ge=1,
        le=MAX_PROCESSES,
        description="server processes `python -m service` starts (its --workers wins): each loads its own models and "
        "takes its share of the cores; two served 30-50% more face crops a second than one on two cores",
    )
    reload_signal: Path | None = Field(
        None,
        description="set by `python -m service --workers N`: the file through which its processes follow each "
        "other's store rescans",
    )
    port: int | None = Field(
        None,
        ge=0,
        le=65535,
        description="the port the API listens on, set by `python -m service --port`; part of the default job namespace",
    )

    limits: LimitsSettings = Field(default_factory=LimitsSettings)
    detector: DetectorSettings = Field(default_factory=DetectorSettings)
    batching: BatchingSettings = Field(default_factory=BatchingSettings)
    video: VideoSettings = Field(default_factory=VideoSettings)
    queue: QueueSettings = Field(default_factory=QueueSettings)
    quality: QualitySettings = Field(default_factory=QualitySettings)
    stream: StreamSettings = Field(default_factory=StreamSettings)

    @classmethod
    def settings_customise_sources(
        cls, settings_cls, init_settings, env_settings, dotenv_settings, file_secret_settings
    ):
        env = _EnvSource(settings_cls)
        return init_settings, env, _AliasEnvSource(settings_cls), dotenv_settings, file_secret_settings

    @model_validator(mode="before")
    @classmethod
    def _aliases(cls, data: Any) -> Any:
        return nest_aliases(data) if isinstance(data, dict) else data

    @field_validator("default_model")
    @classmethod
    def _check_model_name(cls, value: str) -> str:
        if not is_valid_name(value):
            raise ValueError(
                f"EMOTION_DEFAULT_MODEL={value!r} is not a model name; use the folder name of a model in the store"
            )
        return value

    @field_validator("backend")
    @classmethod
    def _check_backend(cls, value: str) -> str:
        if value not in BACKENDS:
            raise ValueError(f"EMOTION_BACKEND={value!r} is not a runtime; use one of: {', '.join(BACKENDS)}")
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


def job_namespace(settings: Settings) -> str:
    """``EMOTION_QUEUE__NAMESPACE``, else one derived from what sets this deployment apart on its host: the model
    store folder and the API port (embedded jobs), or the store, Redis URL and queue name (what the API and its
    workers share). Two services with their own port or store never see each other's jobs."""
    queue = settings.queue
    if queue.namespace:
        return queue.namespace
    parts = [str(settings.store_path)]
    parts += [queue.url, queue.name] if queue.url else [str(settings.port)]
    return "d" + hashlib.sha256("\n".join(parts).encode()).hexdigest()[:12]


def jobs_folder(settings: Settings) -> Path:
    """Where uploads and results live: ``jobs_dir``, else ``<system temp>/emotion-jobs/<namespace>`` (kept across
    restarts, as both parts are)."""
    return settings.queue.jobs_dir or Path(tempfile.gettempdir()) / "emotion-jobs" / job_namespace(settings)


@lru_cache
def get_settings() -> Settings:
    return Settings()


def settings_or_exit() -> Settings:
    """The settings for a command-line entry point: invalid ones end the process with pydantic's message, which
    names each variable and the fix."""
    try:
        return get_settings()
    except ValidationError as exc:
        raise SystemExit(f"invalid settings:\n{exc}") from None
