"""Hard cuts and faces replaced in place, on synthetic frames (no model, no files): another picture is a cut, another
photo under a track's box vetoes the track; the same picture, moved a little, shaken, zoomed or relit, is neither.
Pictures are smooth random textures with a light oval standing in for a face."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from benchmarks.synth import paste
from service.tracking import IouTracker
from service.video.shots import (
    BLOCK,
    DEFAULT_THRESHOLD,
    SEARCH,
    THUMB_SIZE,
    PictureContinuity,
    ShotDetector,
    box_share,
    new_blocks,
    new_share,
    thumbnail,
)

W, H = 640, 480


def background(width: int, height: int, seed: int, grain: int = 40) -> np.ndarray:
    """Smooth random colour texture with features about ``grain`` pixels across (a 64 px thumbnail keeps them)."""
    rng = np.random.default_rng(seed)
    noise = rng.integers(0, 256, (height // grain + 2, width // grain + 2, 3), dtype=np.uint8)
    return cv2.resize(noise, (width, height), interpolation=cv2.INTER_CUBIC)


def picture(seed: int, size: int = 250) -> np.ndarray:
    """A textured square standing in for a photo: its own texture per seed, with a lighter oval in the middle (its
    own shade and eyes per seed: another person)."""
    rng = np.random.default_rng(1000 + seed)
    photo = background(size, size, seed, grain=50)
    centre, shade = (size // 2, size // 2), tuple(int(v) for v in rng.integers(120, 230, 3))
    cv2.ellipse(photo, centre, (size // 4, size // 3), 0, 0, 360, shade, -1)
    for side in (-1, 1):
        eye = (centre[0] + side * int(rng.integers(15, 35)), centre[1] - int(rng.integers(10, 40)))
        cv2.circle(photo, eye, int(rng.integers(6, 12)), (40, 40, 40), -1)
    return photo


def scene(photo: np.ndarray, x: int = 150, y: int = 80, backdrop: int = 100) -> np.ndarray:
    frame = background(W, H, backdrop)
    paste(frame, photo, x, y)
    return frame


def share(before: np.ndarray, after: np.ndarray) -> float:
    return new_share(thumbnail(before), thumbnail(after))


def test_identical_frames_are_not_a_cut():
    frame = scene(picture(1))
    detector = ShotDetector(0.08)
    assert [detector.is_cut(frame) for _ in range(4)] == [False] * 4
    assert detector.last_share == 0.0 and detector.cuts == 0


def test_first_frame_is_never_a_cut_and_another_scene_is():
    detector = ShotDetector()
    assert detector.is_cut(scene(picture(1), backdrop=100)) is False
    assert detector.is_cut(background(W, H, 7)) is True  # a whole new picture
    assert detector.last_share > 0.8 and detector.cuts == 1


@pytest.mark.parametrize("seeds", [(1, 2), (3, 4), (5, 6)])
def test_another_photo_in_the_same_place_on_the_same_backdrop_is_new_in_part_of_the_frame(seeds):
    """Only the photo changes (a fifth of the frame): not a frame-wide cut, but a threshold that low would see it."""
    before, after = scene(picture(seeds[0])), scene(picture(seeds[1]))
    assert 0.08 <= share(before, after) < DEFAULT_THRESHOLD
    detector = ShotDetector(0.08)
    assert [detector.is_cut(before), detector.is_cut(before), detector.is_cut(after)] == [False, False, True]


FACE = (200, 120, 120, 150)  # where the oval of a picture pasted at (150, 80) lies


def tracked(frames, boxes) -> tuple[list[list[int]], PictureContinuity]:
    """Track ids the tracker gives one box per frame, checked by PictureContinuity (as the video pipeline does)."""
    shots = ShotDetector()
    continuity = PictureContinuity(shots)
    tracker = IouTracker(identity=continuity)
    ids = []
    for i, (frame, box) in enumerate(zip(frames, boxes, strict=True)):
        shots.is_cut(frame)
        ids.append(tracker.update(i * 0.2, [] if box is None else [box], frame))
    return ids, continuity


@pytest.mark.parametrize("seeds", [(1, 2), (3, 4), (5, 6)])
def test_a_face_replaced_in_place_starts_a_new_track(seeds):
    before, after = scene(picture(seeds[0])), scene(picture(seeds[1]))
    ids, continuity = tracked([before, before, after, after], [FACE] * 4)
    assert ids == [[1], [1], [2], [2]] and continuity.replaced == 1


def test_a_face_back_after_a_gap_is_compared_with_where_it_was_last_seen():
    """Unseen for two samples (the backdrop showed): the same photo back, moved a little, keeps its track; another
    photo in that place after a gap gets a new one."""
    gone = background(W, H, 100)
    frames = [scene(picture(1)), gone, gone, scene(picture(1), 160, 84)]
    ids, _ = tracked(frames, [FACE, None, None, (210, 124, 120, 150)])
    assert ids == [[1], [], [], [1]]
    ids, continuity = tracked([scene(picture(1)), gone, scene(picture(2))], [FACE, None, FACE])
    assert ids == [[1], [], [2]] and continuity.seen.keys() == {2}  # track 1 ended: its place is someone else's


def test_a_photo_popping_in_beside_a_tracked_face_leaves_its_track_alone():
    alone = scene(picture(1), 40, 60)
    both = alone.copy()
    paste(both, picture(2), 360, 120)
    ids, continuity = tracked([alone, both, both], [(90, 100, 120, 150)] * 3)
    assert ids == [[1], [1], [1]] and continuity.replaced == 0


def test_box_share_weights_blocks_by_the_area_of_the_box_on_them():
    new = np.zeros((6, 8), bool)
    new[0, 0] = True  # the top-left 80 x 80 block of a 640 x 480 frame
    assert box_share(new, (0, 0, 80, 80), (480, 640)) == 1.0
    assert box_share(new, (40, 0, 80, 80), (480, 640)) == pytest.approx(0.5)
    assert box_share(new, (0, 0, 160, 160), (480, 640)) == pytest.approx(0.25)
    assert box_share(new, (200, 200, 50, 50), (480, 640)) == 0.0
    assert box_share(new, (0, 0, 0, 0), (480, 640)) == 0.0


@pytest.mark.parametrize("step", [4, 12, 24, 30])
def test_a_face_moving_up_to_the_search_radius_per_sample_is_neither_a_cut_nor_replaced(step):
    """Up to ~5 % of the frame's width per sample (150 px/s at 5 samples/s on 640 px), over a textured backdrop
    that the face uncovers as it goes."""
    photo, detector = picture(1), ShotDetector(0.08)
    frames = [scene(photo, 100 + step * i, 60 + step // 3 * i) for i in range(6)]
    assert [detector.is_cut(frame) for frame in frames] == [False] * 6
    boxes = [(150 + step * i, 100 + step // 3 * i, 120, 150) for i in range(6)]
    assert tracked(frames, boxes)[0] == [[1]] * 6


def test_camera_shake_and_a_slow_zoom_are_not_cuts():
    frame, detector = scene(picture(1)), ShotDetector(0.08)
    detector.is_cut(frame)
    for dy, dx in [(3, -2), (-4, 4), (2, 3), (0, -4)]:
        assert detector.is_cut(np.roll(frame, (dy, dx), (0, 1))) is False
    for zoom in (1.02, 1.04, 1.06):
        assert detector.is_cut(cv2.resize(frame, None, fx=zoom, fy=zoom)[:H, :W]) is False


def test_a_gradual_brightness_change_is_not_a_cut_even_when_it_adds_up():
    frame, detector = scene(picture(1)).astype(np.float32), ShotDetector(0.08)
    gains = [1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.6, 0.8, 1.0, 1.15]  # a fade to half and back, 10 % per sample
    assert not any(detector.is_cut(np.clip(frame * g + 3, 0, 255).astype(np.uint8)) for g in gains)


def test_compression_noise_is_not_a_cut():
    frame, detector = scene(picture(1)), ShotDetector(0.08)
    detector.is_cut(frame)
    for quality in (90, 60, 30):
        _, jpeg = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, quality])
        assert detector.is_cut(cv2.imdecode(jpeg, cv2.IMREAD_COLOR)) is False


def test_without_comparing_the_frame_is_only_remembered():
    detector = ShotDetector()
    detector.is_cut(background(W, H, 1))
    assert detector.is_cut(background(W, H, 2), compare=False) is False and detector.new is None
    assert detector.is_cut(background(W, H, 2)) is False  # compared with the frame it remembered
    assert detector.is_cut(background(W, H, 3)) is True and detector.cuts == 1


def test_off_never_cuts_and_bad_thresholds_are_refused():
    detector = ShotDetector(None)
    assert [detector.is_cut(background(W, H, seed)) for seed in range(3)] == [False] * 3
    for bad in (0.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="cut threshold"):
            ShotDetector(bad)


def test_the_threshold_is_the_share_of_new_blocks():
    """A new patch covering a known share of the blocks: a cut at or under that share, not over it."""
    before = scene(picture(1))
    after = before.copy()
    after[:240, :320] = background(320, 240, 55)  # the top-left quarter of the frame is new
    measured = share(before, after)
    assert 0.2 <= measured <= 0.35  # a quarter, give or take the blocks at its edge
    assert ShotDetector(measured).is_cut(before) is False
    detector = ShotDetector(measured)
    detector.is_cut(before)
    assert detector.is_cut(after) is True
    detector = ShotDetector(min(1.0, measured + 0.05))
    detector.is_cut(before)
    assert detector.is_cut(after) is False


def test_thumbnail_and_block_grid_shapes_for_colour_gray_and_wide_frames():
    for frame in (
        np.zeros((1080, 1920, 3), np.uint8),
        np.zeros((120, 90), np.uint8),
        np.zeros((720, 1280, 4), np.uint8),
    ):
        thumb = thumbnail(frame)
        assert thumb.shape == (THUMB_SIZE[1], THUMB_SIZE[0]) and thumb.dtype == np.uint8
    grid = new_blocks(thumbnail(np.zeros((480, 640, 3), np.uint8)), thumbnail(np.full((480, 640, 3), 200, np.uint8)))
    assert grid.shape == (THUMB_SIZE[1] // BLOCK, THUMB_SIZE[0] // BLOCK) and not grid.any()  # flat: relit, not new
    assert SEARCH < BLOCK
