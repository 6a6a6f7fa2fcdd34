"""The per-route measurement of ``benchmarks/reliability.py``: the route test as the model applies it, the
log-odds a route adds at equal margin, and the per-route pair search (pure arithmetic on made-up faces)."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks import service_settings
from benchmarks.reliability import FaceSet, gray_faces, logistic, route_curves, route_effect, route_search
from model_store import Predictor, find
from model_store.routing import gray_rows
from service.config import QualitySettings
from service.quality import PictureQuality

LABELS = ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral"]


def faces(name: str, margins: np.ndarray, correct: np.ndarray, gray: np.ndarray) -> FaceSet:
    """Faces with the given top-1 margins (label 3 predicted), right where ``correct``, passing every picture gate."""
    probs = np.zeros((len(margins), 7))
    probs[:, 3] = 0.5 + margins / 2
    probs[:, 6] = 0.5 - margins / 2
    targets = np.where(correct, 3, 6)
    pictures = [PictureQuality(100, 500.0, None, None)] * len(margins)
    return FaceSet(name, pictures, probs, targets, gray=gray)


def test_logistic_recovers_known_coefficients():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(20000, 2))
    y = (rng.random(20000) < 1 / (1 + np.exp(-(2.0 * x[:, 0] - 1.0 * x[:, 1] + 0.5)))).astype(float)
    assert logistic(x, y) == pytest.approx([2.0, -1.0, 0.5], abs=0.1)


def test_route_effect_tells_agreeing_routes_from_differing_ones():
    rng = np.random.default_rng(1)
    margins, gray = rng.random(3000), rng.random(3000) < 0.5
    same = rng.random(3000) < 0.3 + 0.6 * margins  # accuracy depends on the margin only
    assert route_effect(margins, gray, same)["agree"]
    differing = rng.random(3000) < np.where(gray, 0.9, 0.3)  # gray faces right far more often at any margin
    effect = route_effect(margins, gray, differing)
    assert not effect["agree"] and effect["gray_log_odds"] > 2 and effect["ci95"][0] > 0


def test_route_curves_count_faces_per_route_and_bin():
    margins = np.array([0.05, 0.15, 0.95, 1.0, 0.5])
    gray = np.array([True, True, False, False, False])
    curves = route_curves(faces("x", margins, np.array([1, 0, 1, 1, 0], bool), gray), LABELS)
    assert curves["gray"]["faces"] == 2 and curves["colour"]["faces"] == 3
    assert curves["gray"]["accuracy"] == 0.5 and curves["colour"]["accuracy"] == pytest.approx(0.6667)
    top = curves["colour"]["by_margin"][-1]
    assert top["margin"] == [0.9, 1.0] and top["faces"] == 2 and top["accuracy"] == 1.0  # margin 1.0 counted
    assert curves["colour"]["labels"]["happy"] == 2 and curves["colour"]["labels"]["neutral"] == 1


def test_route_search_keeps_only_pairs_meeting_both_targets():
    # set a: colour faces right only above margin 0.5; set b: gray faces all right, colour faces never
    margins = np.linspace(0, 1, 200)
    a = faces("rafdb_val", margins, margins > 0.5, np.zeros(200, bool))
    gray_b = np.arange(200) % 5 != 0
    b = faces("photos", margins, gray_b, gray_b)
    pairs = route_search([a, b], QualitySettings(min_face_px=0, min_sharpness=0.0, min_frontal=0.0))
    assert pairs, "a pair with a colour margin meets both targets"
    for pair in pairs:
        assert pair["rafdb_val"]["coverage"] >= 0.78 and pair["rafdb_val"]["gain_points"] >= 5.5
        assert pair["photos"]["gain_points"] >= 3
    assert pairs[0]["min_margin_colour"] > 0.0
    assert [p["photos"]["coverage"] for p in pairs] == sorted((p["photos"]["coverage"] for p in pairs), reverse=True)


def test_gray_faces_applies_the_default_models_own_test():
    settings = service_settings()
    predictor = Predictor.load(find("emotion_transfer"), settings.backend, threads=1, tta=False)
    gray = np.full((16, 16, 3), 120, np.uint8)
    tinted = gray.copy()
    tinted[:, :, 2] += 1  # channels differ by 1 level: still gray (under 2)
    colour = gray.copy()
    colour[:, :, 2] += 40
    assert gray_faces(predictor, [gray, tinted, colour]).tolist() == [True, True, False]
    x = np.stack([gray, colour]).transpose(0, 3, 1, 2).astype(np.float32) / 255
    assert gray_rows(x, np.zeros(3), np.ones(3), predictor.runner.routes.spread).tolist() == [True, False]
