"""How ``benchmarks/reliability.py --choose`` picks the service's thresholds: the targets a candidate must meet,
the lowest margin meeting them, the evidence per picture gate (pure arithmetic on made-up faces)."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.reliability import (
    ISSUE_GAIN,
    MIN_COVERAGE,
    TARGET_GAIN,
    FaceSet,
    gain_interval,
    gate_table,
    margin_search,
    meets,
)
from service.quality import PictureQuality


def faces(name: str, margins: np.ndarray, correct: np.ndarray, face_px: np.ndarray | None = None) -> FaceSet:
    """Faces with the given top-1 margins (label 3 predicted), right where ``correct``, of ``face_px`` (100 px)."""
    probs = np.zeros((len(margins), 7))
    probs[:, 3], probs[:, 6] = 0.5 + margins / 2, 0.5 - margins / 2
    sizes = np.full(len(margins), 100) if face_px is None else face_px
    pictures = [PictureQuality(int(px), 500.0, None, None) for px in sizes]
    return FaceSet(name, pictures, probs, np.where(correct, 3, 6))


def outcome(coverage: float, gain: float, low: float | None = None) -> dict:
    return {"coverage": coverage, "gain_points": gain} | ({} if low is None else {"gain_ci90": [low, gain + 1]})


def test_meets_asks_raf_coverage_both_gains_and_a_low_end_at_the_issues_target():
    assert MIN_COVERAGE["rafdb_val"] >= 0.75 and TARGET_GAIN["rafdb_val"] > ISSUE_GAIN["rafdb_val"]
    good = {"rafdb_val": outcome(0.80, 6.0, 5.1), "photos": outcome(0.40, 20.0, 15.0)}
    assert meets(good), "the photos need the gain only, not a coverage"
    assert not meets(good | {"rafdb_val": outcome(0.76, 6.0, 5.1)})  # under the coverage asked (with headroom)
    assert not meets(good | {"rafdb_val": outcome(0.80, 5.4, 5.1)})  # under the gain asked
    assert not meets(good | {"rafdb_val": outcome(0.80, 6.0, 4.9)})  # another draw may miss the issue's +5
    assert not meets(good | {"photos": outcome(0.90, 2.0)})
    assert meets({"rafdb_val": outcome(0.80, 6.0), "photos": outcome(0.90, 3.0)}), "no interval: gains alone"


def test_margin_search_chooses_the_lowest_margin_meeting_the_targets():
    rng = np.random.default_rng(0)
    margins = rng.random(4000)
    raf = faces("rafdb_val", margins, rng.random(4000) < 0.3 + 0.7 * margins)  # right more often when surer
    photos = faces("photos", margins, rng.random(4000) < 0.3 + 0.6 * margins)
    rows = margin_search([raf, photos], {"min_face_px": 0})
    chosen = [r for r in rows if r["chosen"]]
    assert len(chosen) == 1 and chosen[0]["min_margin"] > 0
    pick = rows.index(chosen[0])
    assert meets(chosen[0]) and not any(r["meets"] for r in rows[:pick])
    assert chosen[0]["rafdb_val"]["gain_ci90"][0] >= ISSUE_GAIN["rafdb_val"]
    flat = faces("rafdb_val", margins, rng.random(4000) < 0.8)  # the margin tells nothing: no margin meets
    assert not any(r["chosen"] for r in margin_search([flat, photos], {"min_face_px": 0}))


def test_gate_table_counts_the_reliable_faces_a_gate_takes_out():
    margins = np.array([0.9, 0.9, 0.9, 0.9, 0.1])
    small = faces("photos", margins, np.array([0, 1, 1, 1, 0], bool), np.array([20, 100, 100, 100, 20]))
    row = next(r for r in gate_table([small], 0.5) if r["gate"] == "min_face_px" and r["value"] == 32)
    assert row["photos"]["removed"] == 1 and row["photos"]["removed_accuracy"] == 0.0  # the low-margin one not counted
    assert row["photos"]["kept_accuracy"] == 1.0 and row["photos"]["coverage"] == 0.6


def test_gain_interval_brackets_the_measured_gain():
    rng = np.random.default_rng(1)
    correct, reliable = rng.random(2000) < 0.8, rng.random(2000) < 0.8
    correct[reliable] |= rng.random(reliable.sum()) < 0.5  # the reliable faces are right more often
    gain = 100 * (correct[reliable].mean() - correct.mean())
    low, high = gain_interval(correct, reliable)
    assert low < gain < high and high - low < 5
    assert gain_interval(correct, np.ones(2000, bool)) == pytest.approx([0.0, 0.0], abs=1e-9)
