"""Shared fixtures: data paths, the real default model, app clients, real images and generated media."""

from __future__ import annotations

import io
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest
from fastapi.testclient import TestClient

from model_store import find, scan, version_key
from service.config import Settings
from service.main import create_app

ROOT = Path(__file__).resolve().parents[1]
# The suite's apps never share a jobs folder with a service running on this machine: a job namespace
# of this session's own (tests that need a folder or a queue still set theirs); removed at the end.
TEST_NAMESPACE = os.environ.setdefault("EMOTION_QUEUE__NAMESPACE", f"pytest-{os.getpid()}")
SHARED = ROOT.parent / "shared" / "data"
FER = SHARED / "fer2013"
PHOTOS = SHARED / "photos" / "images"
DEFAULT_MODEL = "emotion_transfer"
# what the committed store holds: the version requests get by default, and every version newest first
DEFAULT_VERSION = find(DEFAULT_MODEL).manifest.version


ONNX_GRAPHS = ("model.onnx", "model.int8.onnx")  # an entry's fp32 graph and, where published, its int8 one


def break_graphs(folder: Path) -> None:
    """Truncate a store entry's ONNX graphs (a checksum mismatch), whichever of them the backend runs."""
    for name in ONNX_GRAPHS:
        graph = folder / name
        if graph.is_file():
            graph.write_bytes(graph.read_bytes()[:1000])


def store_versions(name: str) -> list[str]:
    """Every version of ``name`` the committed store holds, newest first."""
    return sorted((e.manifest.version for e in scan()[0] if e.manifest.name == name), key=version_key, reverse=True)


STORE_VERSIONS = store_versions(DEFAULT_MODEL)


def pytest_unconfigure(config):
    shutil.rmtree(Path(tempfile.gettempdir()) / "emotion-jobs" / TEST_NAMESPACE, ignore_errors=True)


def pytest_collection_modifyitems(config, items):
    if not FER.is_dir():
        skip = pytest.mark.skip(reason=f"{FER} not found (the shared data sets sit beside the checkout)")
        for item in items:
            if "needs_data" in item.keywords:
                item.add_marker(skip)


@pytest.fixture(scope="session")
def fer_root() -> Path:
    if not FER.is_dir():
        pytest.skip(f"{FER} not found")
    return FER


@pytest.fixture(scope="session")
def default_entry():
    return find(DEFAULT_MODEL)


def jpeg(image: np.ndarray, quality: int = 92) -> bytes:
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return buf.tobytes()


@pytest.fixture(scope="session")
def photo_paths() -> list[Path]:
    paths = sorted(PHOTOS.glob("*.jpg"))
    if not paths:
        pytest.skip(f"no photos in {PHOTOS}")
    return paths


@pytest.fixture(scope="session")
def face_photo(photo_paths) -> np.ndarray:
    """A real news photo in which the detector finds exactly one face."""
    from service.detection import DlibHogDetector

    detector = DlibHogDetector()
    for path in photo_paths:
        image = cv2.imread(str(path))
        if len(detector.detect(image)) == 1:
            return image
    pytest.fail("no single-face photo found")


@pytest.fixture(scope="session")
def happy_face_bytes(fer_root) -> bytes:
    """A FER2013 val crop labelled happy (the class the model is most reliable on)."""
    return (fer_root / "val" / "happy" / sorted(p.name for p in (fer_root / "val" / "happy").iterdir())[0]).read_bytes()


@pytest.fixture
def png_bytes() -> Callable[[np.ndarray], bytes]:
    def encode(image: np.ndarray) -> bytes:
        ok, buf = cv2.imencode(".png", image)
        assert ok
        return buf.tobytes()

    return encode


def wait_ready(client: TestClient, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if client.get("/health/ready").status_code == 200:
            return
        time.sleep(0.05)
    raise AssertionError(f"service not ready: {client.get('/health/ready').json()}")


@pytest.fixture
def make_client() -> Iterator[Callable[..., TestClient]]:
    """Factory: ``make_client(**settings)`` -> a started TestClient (lifespan run), closed after the test."""
    opened: list[TestClient] = []

    def factory(ready: bool = True, **overrides) -> TestClient:
        settings = Settings(_env_file=None, **overrides)
        client = TestClient(create_app(settings))
        client.__enter__()
        opened.append(client)
        if ready:
            wait_ready(client)
        return client

    yield factory
    for client in opened:
        client.__exit__(None, None, None)


@pytest.fixture(scope="module")
def client() -> Iterator[TestClient]:
    """The service on the shipped store and default model, ready."""
    with TestClient(create_app(Settings(_env_file=None))) as c:
        wait_ready(c)
        yield c


@pytest.fixture
def store_copy(tmp_path: Path, default_entry) -> Path:
    """A writable store holding a copy of the default model."""
    root = tmp_path / "store"
    dst = root / default_entry.manifest.name / default_entry.manifest.version
    shutil.copytree(default_entry.folder, dst)
    return root


def metric(text: str, prefix: str) -> float:
    """The value of the first Prometheus sample line starting with ``prefix``."""
    return float(next(line.split()[-1] for line in text.splitlines() if line.startswith(prefix)))


def upload(data: bytes, name: str = "file.jpg", content_type: str = "image/jpeg") -> dict:
    return {"file": (name, io.BytesIO(data), content_type)}
