"""training.recipe and training.release: each shipped model's recipe runs end to end in smoke mode into a scratch
store and serves; ``--print`` is what a run executes and what the model card records; a failed release step says
which step and why."""

from __future__ import annotations

import argparse
import importlib
import json
import re
import shlex
import subprocess
import sys

import cv2
import numpy as np
import pytest

from model_store import Predictor, find
from tests.conftest import ROOT, SHARED
from training import release
from training.recipes import RECIPES

SHIPPED = ("fer_emotion_cnn", "emotion_transfer")  # in the order a full reproduction runs them
CARD = re.compile(r"<!-- recipe:start -->\n(?:```bash\n)?(.*?)(?:```\n)?<!-- recipe:end -->", re.S)


def recipe(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "training.recipe", *argv], cwd=ROOT, capture_output=True, text=True, check=False
    )


def commands(text: str) -> list[str]:
    return [line for line in text.splitlines() if line and not line.startswith("#")]


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> dict:
    """Both recipes in smoke mode, the fast model first (the default's first member is read from the store)."""
    if not all((SHARED / name).is_dir() for name in ("fer2013", "rafdb")):
        pytest.skip(f"FER2013 and RAF-DB not found in {SHARED} (the shared data sets sit beside the checkout)")
    tmp = tmp_path_factory.mktemp("recipes")
    out = {"store": tmp / "store", "work": {}}
    for name in SHIPPED:
        work = tmp / name
        args = (name, "--smoke", "--data", str(SHARED), "--work", str(work), "--store", str(out["store"]))
        done = recipe(*args)
        assert done.returncode == 0, done.stderr[-3000:]
        out["work"][name] = (work, args)
    return out


@pytest.mark.parametrize("name", SHIPPED)
def test_the_smoke_run_publishes_an_entry_that_predicts(smoke, name):
    version = RECIPES[name].version
    entry = find(name, version, root=smoke["store"])
    rng = np.random.default_rng(0)
    crops = [rng.integers(0, 256, (60, 60, 3), dtype=np.uint8), rng.integers(0, 256, (48, 48), dtype=np.uint8)]
    for backend in ("onnx", "onnx-int8"):
        probs = Predictor.load(entry, backend=backend).predict(crops).probabilities
        assert probs.shape == (2, 7) and np.isfinite(probs).all()
        assert np.allclose(probs.sum(1), 1, atol=1e-4)
    assert entry.manifest.labels == find(name).manifest.labels  # the shipped entry's
    assert entry.manifest.input.face_margin == find(name).manifest.input.face_margin


@pytest.mark.parametrize("name", SHIPPED)
def test_print_is_what_the_run_executed(smoke, name):
    """The stamp each step leaves holds the command it ran: in order, they are ``--print``'s lines."""
    work, args = smoke["work"][name]
    printed = recipe(*args, "--print")
    assert printed.returncode == 0, printed.stderr
    ran = [(work / ".done" / step.name).read_text() for step in RECIPES[name].steps]
    assert commands(printed.stdout) == ran


@pytest.mark.parametrize("name", SHIPPED)
def test_a_second_run_skips_every_step(smoke, name):
    _, args = smoke["work"][name]
    again = recipe(*args)
    assert again.returncode == 0, again.stderr[-2000:]
    assert again.stderr.count(" INFO skip ") == len(RECIPES[name].steps)
    assert " INFO run " not in again.stderr


@pytest.mark.parametrize("name", [*SHIPPED, "dlib_face_descriptor"])
def test_every_printed_command_parses_with_its_module(name):
    """The full recipe's commands are valid command lines of the modules they call (no stale flag)."""
    printed = recipe(name, "--print")
    assert printed.returncode == 0, printed.stderr
    lines = commands(printed.stdout)
    assert len(lines) == len(RECIPES[name].steps)
    for line in lines:
        words = shlex.split(line)
        assert words[:2] == ["python", "-m"]
        module = importlib.import_module(words[2])
        module.get_args_parser().parse_args(words[3:])
    assert not any(re.search(r"--epochs 1( |$)", line) for line in lines)  # no smoke setting in the full recipe


@pytest.mark.parametrize("name", [*SHIPPED, "dlib_face_descriptor", "retinaface"])
def test_the_model_card_records_the_full_recipe(name):
    card = ROOT / "docs" / "models" / f"{name}.md"
    if not card.is_file():
        pytest.skip(f"{card} not written yet (the docs site's model card)")
    found = CARD.search(card.read_text())
    assert found, f"{card} has no <!-- recipe:start --> ... <!-- recipe:end --> block"
    printed = recipe(name, "--print")
    assert found.group(1) == printed.stdout


def test_the_default_recipe_names_what_it_needs(tmp_path):
    """Without fer_emotion_cnn 1.3.0 in the store, the default's recipe stops before its first step and says how."""
    done = recipe("emotion_transfer", "--work", str(tmp_path / "w"), "--store", str(tmp_path / "empty"))
    assert done.returncode != 0 and "fer_emotion_cnn/1.3.0" in done.stderr
    assert "python -m training.recipe fer_emotion_cnn" in done.stderr
    assert not (tmp_path / "w" / ".done").exists()


def test_an_imported_model_has_no_recipe():
    done = recipe("retinaface")
    assert done.returncode != 0 and "no training recipe" in done.stderr
    printed = recipe("retinaface", "--print")
    assert printed.returncode == 0 and printed.stdout.startswith("# retinaface 1.0.0: imported")
    assert commands(printed.stdout) == []  # nothing to run
    assert "no recipe 'nope'" in recipe("nope").stderr


def test_a_failing_release_step_is_named(tmp_path):
    args = release.get_args_parser().parse_args([str(tmp_path), "--name", "x", "--version", "1.0.0"])
    with pytest.raises(SystemExit, match="not a run folder"):
        release.main(args)
    config = json.loads((ROOT / "model_store/fer_emotion_cnn/1.3.0/reports/config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps(config))  # a run folder without its weights
    args = argparse.Namespace(**{**vars(args), "store": tmp_path / "store"})
    with pytest.raises(SystemExit, match=r"x:1\.0\.0: export_slim failed: .*best\.pt"):
        release.main(args)
    assert not (tmp_path / "store").exists()


def test_the_descriptor_recipe_publishes_a_component_the_service_loads(tmp_path):
    """The face-embedding component's recipe (dlib's weights converted, quantised, checked against dlib) in smoke mode:
    the entry it publishes describes an aligned chip as the shipped one does, closely (int8 on 16 calibration chips)."""
    if not (SHARED / "photos" / "images").is_dir():
        pytest.skip(f"the shared photos are not in {SHARED}")
    from service.identity import FaceDescriber

    store = tmp_path / "store"
    args = ("dlib_face_descriptor", "--smoke", "--data", str(SHARED), "--work", str(tmp_path / "w"))
    done = recipe(*args, "--store", str(store))
    assert done.returncode == 0, done.stderr[-3000:]
    photos = sorted((SHARED / "photos" / "images").glob("*.jpg"))
    chips = np.stack([cv2.resize(cv2.imread(str(photos[i]))[50:200, 50:200], (150, 150))[..., ::-1] for i in (0, 400)])
    rebuilt, shipped = FaceDescriber(root=store).describe(chips), FaceDescriber().describe(chips)
    assert rebuilt.shape == (2, 128)
    assert np.linalg.norm(rebuilt - shipped, axis=1).max() < 0.15  # two people's photos: 0.66 apart
    assert np.linalg.norm(shipped[0] - shipped[1]) > 0.3
