"""Settings from the environment (nested groups, the flat names of earlier releases, errors that name the
variable) and what a request's choices resolve to (``resolve_options``: defaults, caps, cadence)."""

from __future__ import annotations

import math
import os
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from service.config import ALIASES, ENV_PREFIX, DetectorSettings, Settings, nest_aliases
from service.errors import InvalidInput
from service.options import Requested, resolve_options


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    """No EMOTION_* variable of the machine running the tests leaks in."""
    for name in list(os.environ):
        if name.upper().startswith(ENV_PREFIX):
            monkeypatch.delenv(name)


def settings(**kwargs) -> Settings:
    return Settings(_env_file=None, **kwargs)


def at(s: Settings, path: tuple[str, ...]):
    node = s
    for key in path:
        node = getattr(node, key)
    return node


# --- nested names ---------------------------------------------------------------------------------------------


def test_defaults():
    s = settings()
    assert (s.limits.max_faces, s.detector.backend, s.detector.dlib_hog.threshold) == (20, "retinaface", -0.2)
    assert (s.backend, s.detector.retinaface.max_side) == ("onnx-int8", 320)
    assert (s.batching.workers, s.video.max_frames, s.video.full_detect_every_s) == (2, 3000, 1.0)


def test_nested_env_names(monkeypatch):
    monkeypatch.setenv("EMOTION_LIMITS__MAX_FACES", "7")
    monkeypatch.setenv("EMOTION_DETECTOR__DLIB_HOG__THRESHOLD", "-0.4")
    monkeypatch.setenv("EMOTION_VIDEO__MAX_FRAMES", "10")
    monkeypatch.setenv("EMOTION_DETECTOR__MAX_SIDE", "640")
    s = settings()
    assert (s.limits.max_faces, s.detector.dlib_hog.threshold, s.video.max_frames) == (7, -0.4, 10)
    assert s.detector.max_side == 640 and s.detector.backend == "retinaface"


def test_nested_init_kwargs():
    s = settings(limits={"max_faces": 7}, detector={"dlib_hog": {"threshold": -0.4}})
    assert (s.limits.max_faces, s.detector.dlib_hog.threshold) == (7, -0.4)


def test_unknown_field_in_a_group_is_refused():
    with pytest.raises(ValidationError, match="max_facez"):
        settings(limits={"max_facez": 7})


# --- flat names of earlier releases ---------------------------------------------------------------------------

# flat alias -> (environment text, the value it becomes)
ALIAS_VALUES: dict[str, tuple[str, object]] = {
    "max_upload_bytes": ("2048", 2048),
    "max_image_pixels": ("10000", 10000),
    "max_faces": ("7", 7),
    "max_in_flight": ("3", 3),
    "request_timeout_s": ("12.5", 12.5),
    "min_face_size": ("33", 33),
    "detector_max_pixels": ("123456", 123456),
    "detector_max_side": ("321", 321),
    "detector_instances": ("2", 2),
    "whole_image_fallback_max_side": ("128", 128),
    "detector_threshold": ("-0.4", -0.4),
    "detector_rotation_fallback": ("true", True),
    "batch_max_size": ("16", 16),
    "batch_max_wait_ms": ("5.5", 5.5),
    "inference_workers": ("3", 3),
    "max_video_bytes": ("4096", 4096),
    "max_video_duration_s": ("60", 60.0),
    "max_video_frames": ("10", 10),
    "video_timeout_s": ("45", 45.0),
    "video_detector_max_side": ("512", 512),
    "video_full_detect_every_s": ("0.5", 0.5),
    "queue_url": ("redis://127.0.0.1:6379/3", "redis://127.0.0.1:6379/3"),
    "jobs_dir": ("/tmp", Path("/tmp")),
    "job_ttl_s": ("60", 60.0),
}


def test_every_alias_has_a_test_value():
    assert set(ALIAS_VALUES) == set(ALIASES)


@pytest.mark.parametrize("flat", sorted(ALIASES))
def test_flat_alias_from_the_environment(monkeypatch, flat):
    text, value = ALIAS_VALUES[flat]
    monkeypatch.setenv(f"EMOTION_{flat.upper()}", text)
    assert at(settings(), ALIASES[flat]) == value
    assert at(settings(), ALIASES[flat]) != at(Settings.model_construct(), ALIASES[flat])  # not the default


@pytest.mark.parametrize("flat", sorted(ALIASES))
def test_flat_alias_as_init_kwarg(flat):
    value = ALIAS_VALUES[flat][1]
    assert at(settings(**{flat: value}), ALIASES[flat]) == value


def test_all_aliases_at_once(monkeypatch):
    for flat, (text, _) in ALIAS_VALUES.items():
        monkeypatch.setenv(f"EMOTION_{flat.upper()}", text)
    s = settings()
    assert {flat: at(s, path) for flat, path in ALIASES.items()} == {f: v for f, (_, v) in ALIAS_VALUES.items()}


def test_nested_env_name_wins_over_flat(monkeypatch):
    monkeypatch.setenv("EMOTION_LIMITS__MAX_FACES", "7")
    monkeypatch.setenv("EMOTION_MAX_FACES", "9")
    monkeypatch.setenv("EMOTION_DETECTOR__DLIB_HOG__THRESHOLD", "-0.4")
    monkeypatch.setenv("EMOTION_DETECTOR_THRESHOLD", "0.3")
    s = settings()
    assert (s.limits.max_faces, s.detector.dlib_hog.threshold) == (7, -0.4)


def test_nested_init_kwarg_wins_over_flat_kwarg():
    assert settings(limits={"max_faces": 7}, max_faces=9).limits.max_faces == 7


def test_flat_alias_sits_beside_other_nested_values(monkeypatch):
    monkeypatch.setenv("EMOTION_DETECTOR__MAX_SIDE", "320")
    monkeypatch.setenv("EMOTION_DETECTOR_THRESHOLD", "-0.4")
    s = settings()
    assert (s.detector.max_side, s.detector.dlib_hog.threshold) == (320, -0.4)


def test_empty_flat_alias_is_ignored(monkeypatch):
    monkeypatch.setenv("EMOTION_MAX_FACES", "")
    assert settings().limits.max_faces == 20


def test_legacy_detector_variable_is_the_backend_name(monkeypatch):
    monkeypatch.setenv("EMOTION_DETECTOR", "dlib-hog")
    monkeypatch.setenv("EMOTION_DETECTOR_THRESHOLD", "-0.4")
    s = settings()
    assert (s.detector.backend, s.detector.dlib_hog.threshold) == ("dlib-hog", -0.4)


def test_detector_variable_as_a_json_group(monkeypatch):
    monkeypatch.setenv("EMOTION_DETECTOR", '{"backend": "dlib-hog", "max_side": 320}')
    assert settings().detector.max_side == 320


def test_flat_aliases_in_a_dotenv_file(tmp_path: Path):
    env = tmp_path / ".env"
    env.write_text("EMOTION_MAX_FACES=7\nEMOTION_LIMITS__MAX_IN_FLIGHT=5\n")
    s = Settings(_env_file=env)
    assert (s.limits.max_faces, s.limits.max_in_flight) == (7, 5)


# --- nest_aliases ---------------------------------------------------------------------------------------------


def test_nest_aliases_moves_flat_keys_into_their_groups():
    assert nest_aliases({"max_faces": 7, "detector_threshold": -0.4, "tta": False}) == {
        "limits": {"max_faces": 7},
        "detector": {"dlib_hog": {"threshold": -0.4}},
        "tta": False,
    }


def test_nest_aliases_keeps_nested_values_and_other_group_keys():
    data = {"limits": {"max_faces": 7, "max_in_flight": 3}, "max_faces": 9, "batch_max_size": 8}
    assert nest_aliases(data) == {"limits": {"max_faces": 7, "max_in_flight": 3}, "batching": {"max_size": 8}}
    assert data["max_faces"] == 9 and data["limits"] == {"max_faces": 7, "max_in_flight": 3}  # input untouched


def test_nest_aliases_without_aliases_is_an_equal_copy():
    data = {"limits": {"max_faces": 7}}
    assert nest_aliases(data) == data and nest_aliases(data) is not data


# --- errors that say which variable and how to fix it ---------------------------------------------------------


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        (
            "EMOTION_DETECTOR__BACKEND",
            "nope",
            r"EMOTION_DETECTOR__BACKEND='nope' is not a detector; use one of: dlib-hog",
        ),
        ("EMOTION_DETECTOR", "nope", r"EMOTION_DETECTOR__BACKEND='nope' is not a detector; use one of: dlib-hog"),
        ("EMOTION_BACKEND", "tensorrt", r"EMOTION_BACKEND='tensorrt' is not a runtime; use one of: onnx"),
        ("EMOTION_STORE_PATH", "/no/such/store", r"EMOTION_STORE_PATH=/no/such/store is not a folder; point it at"),
        ("EMOTION_DEFAULT_MODEL", "../etc", r"EMOTION_DEFAULT_MODEL='../etc' is not a model name"),
        ("EMOTION_TEMP_DIR", "/no/such/dir", r"EMOTION_TEMP_DIR=/no/such/dir does not exist; create it"),
    ],
)
def test_bad_value_names_the_variable_and_the_fix(monkeypatch, variable, value, message):
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValidationError, match=message):
        settings()


def test_store_path_that_is_a_file_is_refused(tmp_path: Path):
    file = tmp_path / "store"
    file.write_text("")
    with pytest.raises(ValidationError, match=r"EMOTION_STORE_PATH=.* is not a folder"):
        settings(store_path=file)


def test_out_of_range_value_names_the_field(monkeypatch):
    monkeypatch.setenv("EMOTION_LIMITS__MAX_FACES", "0")
    with pytest.raises(ValidationError, match=r"limits\.max_faces"):
        settings()


def test_detector_settings_refuse_an_unknown_backend_directly():
    with pytest.raises(ValidationError, match="is not a detector"):
        DetectorSettings(backend="haar")


# --- resolve_options ------------------------------------------------------------------------------------------


def test_options_defaults_come_from_settings():
    s = settings(limits={"max_faces": 7}, detector={"min_face_size": 24, "whole_image_fallback_max_side": 100})
    o = resolve_options(s, Requested())
    assert (o.max_faces, o.min_face_size, o.whole_image_fallback_max_side) == (7, 24, 100)
    assert (o.sample_fps, o.max_frames, o.start, o.end, o.smoothing) == (5.0, 3000, 0.0, None, 0.25)
    assert (o.max_duration, o.full_detect_every, o.detect_max_side) == (600.0, 5, 640)


def test_options_request_overrides_defaults():
    o = resolve_options(settings(), Requested(max_faces=3, min_face_size=40, max_frames=50, start=1.0, end=2.0))
    assert (o.max_faces, o.min_face_size, o.max_frames, o.start, o.end) == (3, 40, 50, 1.0, 2.0)


def test_options_capped_at_the_settings_limits():
    s = settings(limits={"max_faces": 5}, video={"max_frames": 100, "max_duration_s": 30})
    o = resolve_options(s, Requested(max_faces=50, max_frames=10_000))
    assert (o.max_faces, o.max_frames, o.max_duration) == (5, 100, 30.0)


def test_options_uncapped_lift_faces_frames_and_duration():
    s = settings(limits={"max_faces": 5}, video={"max_frames": 100})
    o = resolve_options(s, Requested(max_faces=50, max_frames=10_000), capped=False)
    assert (o.max_faces, o.max_frames, o.max_duration) == (50, 10_000, math.inf)
    o = resolve_options(s, Requested(), capped=False)
    assert (o.max_faces, o.max_frames) == (5, sys.maxsize)


@pytest.mark.parametrize(("start", "end"), [(2.0, 2.0), (2.0, 1.0), (0.0, 0.0)])
def test_options_end_not_after_start_is_invalid(start, end):
    with pytest.raises(InvalidInput, match="end must be after start"):
        resolve_options(settings(), Requested(start=start, end=end))
    with pytest.raises(InvalidInput):
        resolve_options(settings(), Requested(start=start, end=end), capped=False)


@pytest.mark.parametrize("fps", [0.0, -1.0])
def test_options_non_positive_sample_fps_is_invalid(fps):
    with pytest.raises(InvalidInput, match="sample_fps must be positive"):
        resolve_options(settings(), Requested(sample_fps=fps))


@pytest.mark.parametrize(
    ("fps", "every_s", "expected"),
    [(5.0, 1.0, 5), (10.0, 0.5, 5), (2.0, 2.0, 4), (1.0, 0.0, 1), (0.5, 1.0, 1), (30.0, 0.1, 3)],
)
def test_options_full_detect_every_is_sample_fps_times_seconds_at_least_one(fps, every_s, expected):
    s = settings(video={"full_detect_every_s": every_s})
    assert resolve_options(s, Requested(sample_fps=fps)).full_detect_every == expected


def test_options_video_detect_max_side_from_settings():
    assert resolve_options(settings(video={"detector_max_side": 320})).detect_max_side == 320
