"""Putting off whole-frame passes over a still picture (``service.video.quiet``): block coverage and the watch's rule,
on hand-made block grids (no model, no files)."""

from __future__ import annotations

import numpy as np
import pytest

from service.video.quiet import QuietWatch, coverage

FRAME = (480, 640, 3)  # a 6 x 8 grid of 80 x 80 blocks
GRID = (6, 8)
CONTEXT = 0.6


def blocks(*cells: tuple[int, int]) -> np.ndarray:
    new = np.zeros(GRID, bool)
    for row, col in cells:
        new[row, col] = True
    return new


def test_coverage_is_the_share_of_each_block_inside_the_regions():
    share = coverage(GRID, [(0, 0, 80, 80), (160, 0, 40, 80)], FRAME)
    assert share[0, 0] == 1.0 and share[0, 2] == pytest.approx(0.5) and share[0, 1] == 0.0
    assert share.sum() == pytest.approx(1.5)
    assert coverage(GRID, [(0, 0, 80, 80)] * 3, FRAME)[0, 0] == 1.0  # overlapping regions: capped
    assert coverage(GRID, [], FRAME).sum() == 0.0


def watch_after_a_pass() -> QuietWatch:
    watch = QuietWatch(CONTEXT)
    watch.passed()
    return watch


def test_a_new_watch_and_an_unknown_sample_are_not_quiet():
    watch = QuietWatch(CONTEXT)
    assert not watch.quiet(15)  # no pass yet
    watch = watch_after_a_pass()
    watch.observe(None, [], FRAME)  # the first sample, a cut, a size change
    assert not watch.quiet(15)


def test_a_still_picture_stays_quiet_until_the_longest_gap():
    watch = watch_after_a_pass()
    for sample in range(1, 15):
        watch.observe(blocks(), [], FRAME)
        assert watch.quiet(15), sample
    watch.observe(blocks(), [], FRAME)
    assert not watch.quiet(15)  # 15 samples since the pass: it runs
    assert not watch_after_a_pass().quiet(0)  # 0: never put off


def test_change_outside_the_tracks_regions_wakes_it_until_the_next_pass():
    watch = watch_after_a_pass()
    face = (280, 200, 80, 80)  # its region, grown 0.6 per side: (232, 152, 176, 176), wholly over rows 2-3, cols 3-4
    watch.observe(blocks((3, 4)), [face], FRAME)  # change under the face: searched anyway
    assert watch.quiet(15)
    watch.observe(blocks((0, 7)), [face], FRAME)  # change in a corner nobody searches
    watch.observe(blocks(), [face], FRAME)
    assert not watch.quiet(15)  # remembered until a pass
    watch.passed()
    watch.observe(blocks(), [face], FRAME)
    assert watch.quiet(15)


def test_a_block_mostly_outside_the_regions_wakes_it():
    face = (280, 200, 80, 80)  # region (232, 152, 176, 176): block (1, 2), y 80-160 and x 160-240, is 1% inside
    watch = watch_after_a_pass()
    watch.observe(blocks((1, 2)), [face], FRAME)
    assert not watch.quiet(15)
    watch = watch_after_a_pass()
    watch.observe(blocks((2, 3)), [face], FRAME)  # y 160-240, x 240-320: wholly inside
    assert watch.quiet(15)


def test_with_nothing_tracked_any_change_wakes_it():
    watch = watch_after_a_pass()
    watch.observe(blocks((3, 4)), [], FRAME)
    assert not watch.quiet(15)
