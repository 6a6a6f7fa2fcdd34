"""The client as its own distribution (``clients/python``, ``emotion-client``): its wheel depends on httpx, pydantic
and tqdm alone, importing it loads nothing of the server, and the installed wheel analyses a photo and a video
against a live server with every server-side package made unimportable. The server's wheel carries the same
package and the ``emotion`` command, with no dependency on a distribution no index has."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import cv2
import httpx
import pytest
from packaging.requirements import Requirement

from benchmarks.synth import Appearance, write_clip
from tests.conftest import ROOT
from tests.live import clean_env, serve

CLIENT = ROOT / "clients" / "python"
CLIENT_DEPS = {"httpx", "pydantic", "tqdm", "websockets"}
WATCH_EXTRA = {"opencv-python-headless", "numpy"}  # `emotion watch` only: pip install "emotion-client[watch]"
# what the client must never load: the server, its models and the heavy libraries only the server needs
SERVER_SIDE = {
    "fastapi", "starlette", "uvicorn", "numpy", "cv2", "PIL", "onnxruntime", "dlib", "arq", "redis", "torch",
    "prometheus_client", "multipart", "model_store", "service", "training", "benchmarks",
}  # fmt: skip
# Imported first in a subprocess: any import of a server-side package fails, as where none is installed.
BLOCK = f"""
import sys
class Blocked:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {sorted(SERVER_SIDE)!r}:
            raise ImportError(f"{{name}} is not installed with the client")
sys.meta_path.insert(0, Blocked())
"""


def wheel(source: Path, out: Path) -> zipfile.ZipFile:
    """``pip wheel`` of ``source``, offline (no build isolation, no dependencies)."""
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(out), str(source)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    (built,) = out.glob("*.whl")
    return zipfile.ZipFile(built)


def dist_file(whl: zipfile.ZipFile, name: str) -> str:
    (path,) = [n for n in whl.namelist() if n.endswith(f".dist-info/{name}")]
    return whl.read(path).decode()


def requires(whl: zipfile.ZipFile) -> list[Requirement]:
    lines = dist_file(whl, "METADATA").splitlines()
    return [Requirement(line.removeprefix("Requires-Dist: ")) for line in lines if line.startswith("Requires-Dist:")]


def modules(whl: zipfile.ZipFile, package: str) -> set[str]:
    return {n for n in whl.namelist() if n.startswith(f"{package}/")}


@pytest.fixture(scope="module")
def client_wheel(tmp_path_factory) -> zipfile.ZipFile:
    """Built from a copy of clients/python, so the build leaves nothing in the checkout."""
    source = tmp_path_factory.mktemp("client-src") / "python"
    shutil.copytree(CLIENT, source, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    return wheel(source, tmp_path_factory.mktemp("client-wheel"))


def test_client_wheel_requires_httpx_pydantic_tqdm_and_websockets_only(client_wheel):
    deps = [d for d in requires(client_wheel) if not d.marker]
    extra = {d.name for d in requires(client_wheel) if d.marker and d.marker.evaluate({"extra": "watch"})}
    assert {d.name for d in deps} == CLIENT_DEPS and len(deps) == len(CLIENT_DEPS) and extra == WATCH_EXTRA
    assert all(d.specifier and not d.marker and not d.extras for d in deps)  # a lower bound each, unconditional
    assert "Name: emotion-client" in dist_file(client_wheel, "METADATA")
    packages = {n.split("/")[0] for n in client_wheel.namelist() if not n.split("/")[0].endswith(".dist-info")}
    assert packages == {"emotion_client"}
    assert "emotion = emotion_client.cli:main" in dist_file(client_wheel, "entry_points.txt")


def test_server_wheel_carries_the_client_package_and_command(client_wheel, tmp_path):
    """The root distribution, built from links to the checkout's parts (its build files land in tmp_path)."""
    for part in ("service", "training", "model_store", "clients"):
        (tmp_path / "src" / part).parent.mkdir(exist_ok=True)
        (tmp_path / "src" / part).symlink_to(ROOT / part, target_is_directory=True)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, tmp_path / "src" / name)
    server = wheel(tmp_path / "src", tmp_path / "wheel")
    assert modules(server, "emotion_client") == modules(client_wheel, "emotion_client")
    assert "emotion = emotion_client.cli:main" in dist_file(server, "entry_points.txt")
    deps = requires(server)
    assert {d.name for d in deps if not d.marker} >= CLIENT_DEPS  # what the carried package needs, unconditionally
    assert "emotion-client" not in {d.name for d in deps}  # the same package, not a dependency on it (no index has it)


def test_importing_the_client_loads_nothing_of_the_server():
    """In the full environment, where every server-side package could be imported."""
    code = (
        "import sys, emotion_client, emotion_client.cli; emotion_client.EmotionClient('http://127.0.0.1:9').close(); "
        "emotion_client.cli.build_parser().parse_args(['video', 'clip.mp4', '--wait']); "
        f"print(sorted(m for m in sys.modules if m.split('.')[0] in {sorted(SERVER_SIDE)!r}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True).stdout
    assert out.strip() == "[]"


# --- the installed wheel against a live server ----------------------------------------------------------------


@pytest.fixture(scope="module")
def installed(client_wheel, tmp_path_factory) -> Path:
    target = tmp_path_factory.mktemp("site")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), client_wheel.filename],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    return target


def emotion(installed: Path, *args: str) -> subprocess.CompletedProcess:
    """``python -m emotion_client`` from the installed wheel, with the server-side packages blocked."""
    code = BLOCK + (
        "import runpy, emotion_client\n"
        f"assert emotion_client.__file__.startswith({str(installed)!r}), emotion_client.__file__\n"
        f"sys.argv = ['emotion', *{list(args)!r}]\n"
        "runpy.run_module('emotion_client', run_name='__main__')\n"
    )
    env = clean_env(PYTHONPATH=str(installed), PYTHONDONTWRITEBYTECODE="1")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180, env=env,
                          cwd=installed.parent)  # fmt: skip


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    with serve() as url:
        yield url


def test_blocked_packages_really_cannot_be_imported(installed):
    result = subprocess.run([sys.executable, "-c", BLOCK + "import numpy"], capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(installed)})  # fmt: skip
    assert result.returncode == 1 and "numpy is not installed with the client" in result.stderr


def test_installed_client_analyses_a_photo_and_a_video(installed, server, photo_paths, tmp_path):
    answers = {p: httpx.post(f"{server}/predict/image", files={"file": (p.name, p.read_bytes(), "image/jpeg")},
                             timeout=120).json() for p in photo_paths[:20]}  # fmt: skip
    photo = next(p for p, a in answers.items() if a.get("faces"))
    result = emotion(installed, "predict", str(photo), "--json", "--url", server)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == answers[photo]

    clip = write_clip(tmp_path / "walk.mp4", [Appearance(cv2.imread(str(photo)), 0, 2.0, (10, 10), (20, 0))], 2.0,
                      fps=10, size=(480, 360))  # fmt: skip
    video = emotion(installed, "video", str(clip), "--sample-fps", "4", "--url", server)
    assert video.returncode == 0, video.stderr
    assert f"{clip}: 2.0 s, 480x360, 8 frames analysed at 4 fps, 1 face track(s)" in video.stdout
    waited = emotion(installed, "video", str(clip), "--wait", "--json", "--sample-fps", "4", "--url", server)
    assert waited.returncode == 0, waited.stderr
    assert json.loads(waited.stdout)["frames_analyzed"] == 8 and "100%" in waited.stderr
