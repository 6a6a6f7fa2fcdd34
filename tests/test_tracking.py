"""Boxes over time without a detector: IoU and centroid matching, the tracker's ids across gaps and crossings,
detection boxes mapped between regions and frames, and the video's detection cadence (``FrameDetector``) driven
by a fake detector that records what it is asked."""

from __future__ import annotations

import threading
from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest
from pydantic import BaseModel

from service.config import DetectorSettings
from service.detection import DETECTORS, Detection, close_up_faces, create_detector, whole_image_if_small
from service.options import Options
from service.tracking import AnyFace, IouTracker, centroid_distance, iou
from service.video.regions import FrameDetector, dedupe

# --- iou and centroid distance --------------------------------------------------------------------------------


def test_iou_of_identical_disjoint_and_half_shifted_boxes():
    assert iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert iou((0, 0, 10, 10), (10, 0, 10, 10)) == 0.0  # touching edges share no area
    assert iou((0, 0, 10, 10), (5, 0, 10, 10)) == pytest.approx(50 / 150)
    assert iou((0, 0, 10, 10), (2, 2, 4, 4)) == pytest.approx(16 / 100)  # contained


def test_iou_of_empty_boxes_is_zero():
    assert iou((0, 0, 0, 0), (0, 0, 0, 0)) == 0.0


def test_centroid_distance_is_in_units_of_the_larger_side():
    assert centroid_distance((0, 0, 10, 10), (30, 40, 10, 10)) == pytest.approx(5.0)
    assert centroid_distance((0, 0, 10, 10), (-5, -5, 20, 20)) == 0.0
    assert centroid_distance((0, 0, 10, 10), (20, -5, 20, 20)) == pytest.approx(25 / 20)


# --- IouTracker -----------------------------------------------------------------------------------------------


def test_tracker_gives_new_faces_new_ids_in_box_order():
    tracker = IouTracker()
    assert tracker.update(0.0, [(0, 0, 50, 50), (200, 0, 50, 50)]) == [1, 2]
    assert tracker.update(0.2, [(300, 300, 50, 50)]) == [3]
    assert tracker.update(0.4, []) == []


def test_tracker_keeps_the_id_across_a_short_gap():
    tracker = IouTracker(max_gap_s=1.5)
    first = tracker.update(0.0, [(100, 100, 50, 50)])
    assert tracker.update(0.6, [(104, 102, 50, 50)]) == first
    assert tracker.live[0].last_t == 0.6 and tracker.finished == []


def test_tracker_keeps_the_id_at_exactly_max_gap():
    tracker = IouTracker(max_gap_s=1.5)
    assert tracker.update(0.5, [(100, 100, 50, 50)]) == tracker.update(2.0, [(100, 100, 50, 50)]) == [1]


def test_tracker_gives_a_new_id_after_a_gap_over_max_gap():
    tracker = IouTracker(max_gap_s=1.5)
    assert tracker.update(0.0, [(100, 100, 50, 50)]) == [1]
    for t in (0.4, 0.8, 1.2):  # samples without the face
        assert tracker.update(t, []) == []
    assert tracker.update(1.6, [(100, 100, 50, 50)]) == [2]
    assert [t.track_id for t in tracker.finished] == [1]
    assert [t.track_id for t in tracker.live] == [2]


def test_at_a_low_sample_rate_consecutive_samples_continue_a_track_and_a_missed_one_ends_it():
    tracker = IouTracker(max_gap_s=1.5)  # samples 2 s apart: every gap is over max_gap_s
    assert [tracker.update(t, [(100, 100, 50, 50)]) for t in (0.0, 2.0, 4.0)] == [[1], [1], [1]]
    assert tracker.update(6.0, []) == []  # missed once: 4 s since the face, 3 s allowed (1.5 samples)
    assert tracker.update(8.0, [(100, 100, 50, 50)]) == [2]
    assert [t.track_id for t in tracker.finished] == [1]


def test_tracker_matches_by_centroid_when_iou_is_below_threshold():
    tracker = IouTracker(iou_threshold=0.3, max_centroid_distance=0.6)
    tracker.update(0.0, [(0, 0, 50, 50)])
    assert iou((0, 0, 50, 50), (20, 20, 50, 50)) < 0.3  # 0.22
    assert centroid_distance((0, 0, 50, 50), (20, 20, 50, 50)) < 0.6  # 0.57
    assert tracker.update(0.2, [(20, 20, 50, 50)]) == [1]
    assert tracker.update(0.4, [(60, 60, 50, 50)]) == [2]  # 1.13 box sides away: a new face


def test_tracker_two_crossing_faces_keep_their_ids():
    tracker = IouTracker()
    ids = []
    for step in range(11):  # a walks right, b walks left, a little lower; they overlap in the middle
        a, b = (10 * step, 0, 50, 50), (100 - 10 * step, 15, 50, 50)
        ids.append(tracker.update(step * 0.2, [b, a]))
    assert ids == [[1, 2]] * 11
    assert tracker.live[1].box == (100, 0, 50, 50) and tracker.live[0].box == (0, 15, 50, 50)


def test_tracker_one_track_is_matched_to_one_box_only():
    tracker = IouTracker()
    tracker.update(0.0, [(100, 100, 50, 50)])
    assert tracker.update(0.2, [(120, 100, 50, 50), (102, 100, 50, 50)]) == [2, 1]  # the better IoU keeps it


def test_a_cut_ends_every_live_track_and_the_same_boxes_get_new_ids():
    tracker = IouTracker()
    assert tracker.update(0.0, [(100, 100, 50, 50), (300, 100, 50, 50)]) == [1, 2]
    assert tracker.update(0.2, [(102, 100, 50, 50), (300, 100, 50, 50)]) == [1, 2]
    tracker.cut()
    assert tracker.live == [] and [t.track_id for t in tracker.finished] == [1, 2]
    assert tracker.update(0.4, [(102, 100, 50, 50), (300, 100, 50, 50)]) == [3, 4]  # same place, another shot
    assert tracker.update(0.6, [(104, 100, 50, 50)]) == [3]
    tracker.cut()
    tracker.cut()  # nothing live: a no-op
    assert [t.track_id for t in tracker.finished] == [1, 2, 3, 4] and tracker.update(0.8, []) == []


class Ledger:
    """An identity check that says track 1 is never the face at ``stranger``, and records what it is told."""

    def __init__(self, stranger: tuple[int, int, int, int]) -> None:
        self.stranger = stranger
        self.asked: list[tuple[int, object]] = []
        self.seen: list[tuple[int, tuple[int, int, int, int]]] = []
        self.ended_ids: list[int] = []

    def same_person(self, track_id, frame, box) -> bool:
        self.asked.append((track_id, frame))
        return not (track_id == 1 and box == self.stranger)

    def observed(self, track_id, frame, box) -> None:
        self.seen.append((track_id, box))

    def ended(self, track_ids) -> None:
        self.ended_ids += track_ids


def test_an_identity_check_vetoes_a_match_so_the_box_starts_a_new_track():
    check = Ledger(stranger=(101, 100, 50, 50))
    tracker = IouTracker(identity=check, max_gap_s=0.5)
    frame = np.zeros((4, 4), np.uint8)
    assert tracker.update(0.0, [(100, 100, 50, 50)], frame) == [1]
    assert check.asked == []  # nothing to match yet; the new track is reported
    assert tracker.update(0.2, [(101, 100, 50, 50)], frame) == [2]  # overlaps track 1, but is someone else
    assert check.asked == [(1, frame)]
    assert [t.track_id for t in tracker.live] == [2] and check.ended_ids == [1]  # track 1's place is someone else's
    assert tracker.update(0.4, [(102, 100, 50, 50)], frame) == [2]
    assert check.seen == [(1, (100, 100, 50, 50)), (2, (101, 100, 50, 50)), (2, (102, 100, 50, 50))]
    tracker.cut()
    assert check.ended_ids == [1, 2]


def test_a_vetoed_track_matched_to_another_box_lives_on():
    check = Ledger(stranger=(101, 100, 50, 50))
    tracker = IouTracker(identity=check)
    tracker.update(0.0, [(100, 100, 50, 50)])
    assert tracker.update(0.2, [(101, 100, 50, 50), (110, 100, 50, 50)]) == [2, 1]  # its best box vetoed, not this
    assert [t.track_id for t in tracker.live] == [1, 2] and check.ended_ids == []


def test_the_default_identity_check_lets_every_match_stand():
    tracker = IouTracker(identity=AnyFace())
    assert [tracker.update(t * 0.2, [(100 + t, 100, 50, 50)]) for t in range(3)] == [[1]] * 3


def test_tracker_records_last_box_and_time():
    tracker = IouTracker()
    tracker.update(0.0, [(0, 0, 40, 40)])
    tracker.update(0.4, [(4, 0, 40, 40)])
    track = tracker.live[0]
    assert (track.track_id, track.box, track.last_t) == (1, (4, 0, 40, 40), 0.4)


# --- detection boxes ------------------------------------------------------------------------------------------


def test_detection_moved_scales_back_and_offsets_into_the_frame():
    det = Detection(10, 20, 30, 40, 0.7)
    assert det.moved(100, 200, 0.5) == Detection(120, 240, 60, 80, 0.7)
    assert det.moved(5, 6, 1.0) == Detection(15, 26, 30, 40, 0.7)
    assert (det.box, det.area) == ((10, 20, 30, 40), 1200)


def test_whole_image_if_small_only_when_nothing_found_in_a_small_image():
    small, large = np.zeros((60, 80, 3), np.uint8), np.zeros((300, 400, 3), np.uint8)
    face = Detection(1, 2, 30, 30, 0.9)
    assert whole_image_if_small(small, [], 256) == [Detection(0, 0, 80, 60, 0.0)]
    assert whole_image_if_small(small, [face], 256) == [face]
    assert whole_image_if_small(large, [], 256) == []
    assert whole_image_if_small(small, [], 0) == []  # 0 = off


class BorderSeeing:
    """A stand-in detector that sees a face only in a padded canvas: one box straddling the top-left border."""

    def __init__(self) -> None:
        self.seen: list[tuple[int, ...]] = []

    def detect(self, image, min_face=None):
        self.seen.append(image.shape)
        return [Detection(10, 20, 60, 50, 0.8)] if image[0, 0].mean() == 128 else []


def test_close_up_scan_maps_boxes_back_and_clips_them_to_the_photo():
    image = np.zeros((100, 80, 3), np.uint8)
    detector = BorderSeeing()
    (face,) = close_up_faces(detector, image, 0.25)
    assert detector.seen == [(150, 130, 3)]  # a 25-pixel border on every side (0.25 of the longest side)
    assert face == Detection(0, 0, 45, 45, 0.8)  # (10 - 25, 20 - 25) clipped to the photo's corner
    assert close_up_faces(detector, image[:, :, 0], 0.25)[0] == face  # gray photos too
    assert close_up_faces(detector, image, 0.0) == [] and len(detector.seen) == 2  # 0 = off, nothing scanned


def test_a_large_photos_close_up_scan_borders_a_shrunk_copy_and_maps_boxes_back():
    class LargeBox(BorderSeeing):
        def detect(self, image, min_face=None):
            self.asked = min_face
            return [replace(face, x=200, y=250, width=300, height=280) for face in super().detect(image)]

    image = np.zeros((3000, 4096, 3), np.uint8)  # 4 times CLOSE_UP_SIDE: bordered at 750 x 1024
    detector = LargeBox()
    (face,) = close_up_faces(detector, image, 0.25, min_face=400)
    assert detector.seen == [(1262, 1536, 3)] and detector.asked == 100  # a 256-pixel border; 400 px is 100 there
    assert face == Detection(0, 0, 976, 1096, 0.8)  # ((200 - 256) * 4, (250 - 256) * 4), 1200 x 1120, clipped


def test_close_up_scan_drops_a_box_wholly_in_the_border():
    class InBorder(BorderSeeing):
        def detect(self, image, min_face=None):
            return [Detection(0, 0, 20, 20, 0.9)]

    assert close_up_faces(InBorder(), np.zeros((100, 100, 3), np.uint8), 0.25) == []


def test_detector_registry_names_match_and_each_has_a_settings_group():
    assert "dlib-hog" in DETECTORS
    for name, cls in DETECTORS.items():
        assert cls.name == name and issubclass(cls.Settings, BaseModel)
        assert name.replace("-", "_") in DetectorSettings.model_fields
    settings = DetectorSettings()
    assert settings.backend_settings() is settings.retinaface  # the default backend


def test_create_detector_refuses_an_unknown_backend_naming_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown face detector 'nope'; available: .*dlib-hog"):
        create_detector(SimpleNamespace(backend="nope"))


# --- dedupe ---------------------------------------------------------------------------------------------------


def test_dedupe_keeps_the_best_of_overlapping_boxes_largest_first():
    a, a_again, b = Detection(0, 0, 50, 50, 0.9), Detection(2, 2, 50, 50, 0.95), Detection(100, 100, 80, 80, 0.5)
    assert dedupe([a, b, a_again]) == [b, a_again]


def test_dedupe_keeps_boxes_that_overlap_less_than_the_threshold():
    a, b = Detection(0, 0, 10, 10, 0.9), Detection(5, 0, 10, 10, 0.8)  # IoU 1/3
    assert dedupe([a, b]) == [a, b]
    assert dedupe([a, b], overlap=0.3) == [a]


# --- FrameDetector --------------------------------------------------------------------------------------------


class FakeDetector:
    """Records ``(image shape, min_face)`` per call. Answers ``found`` when given, else the bounding box of the
    image's bright pixels (a painted face), in the pixels of the image it was passed."""

    name = "fake"

    def __init__(self, smallest: float = 20.0, found: list[Detection] | None = None) -> None:
        self.smallest, self.found = smallest, found
        self.calls: list[tuple[tuple[int, ...], int | None]] = []

    def smallest_face(self, scale: float = 1.0) -> float:
        return self.smallest / scale

    def detect(self, image: np.ndarray, min_face: int | None = None) -> list[Detection]:
        self.calls.append((image.shape[:2], min_face))
        if self.found is not None:
            return list(self.found)
        ys, xs = np.nonzero(image > 127)
        if not len(xs):
            return []
        return [Detection(int(xs.min()), int(ys.min()), int(np.ptp(xs)) + 1, int(np.ptp(ys)) + 1, 0.9)]


def options(**overrides) -> Options:
    fields = {"max_faces": 20, "min_face_size": None, "whole_image_fallback_max_side": 0, "full_detect_every": 3}
    return Options(**{**fields, **overrides})


FRAME = np.zeros((300, 400), np.uint8)
LIVE = (100, 100, 50, 50)  # its region: grown 0.6 per side -> (70, 70, 110, 110)


def test_full_frame_every_n_samples_or_when_nothing_is_live():
    fake = FakeDetector()
    finder = FrameDetector(fake, options(full_detect_every=3))
    live = {0: [], 4: []}
    for sample in range(7):
        finder.detect(FRAME, sample, live.get(sample, [LIVE]))
    kinds = ["full" if shape == FRAME.shape else "region" for shape, _ in fake.calls]
    assert kinds == ["full", "region", "region", "full", "full", "region", "full"]
    assert finder.counts == {
        "full_frame_passes": 4,
        "regions_searched": 3,
        "regions_with_a_face": 0,
        "regions_carried_forward": 0,
        "full_frame_passes_put_off": 0,
    }


def test_a_quiet_pass_is_put_off_for_the_regions_or_for_nothing():
    fake = FakeDetector()
    finder = FrameDetector(fake, options(full_detect_every=3))
    assert finder.detect(FRAME, 3, [LIVE], quiet=True) == [] and not finder.full_pass
    assert fake.calls[0][0] != FRAME.shape and len(fake.calls) == 1  # due, put off: only the track's region
    assert finder.detect(FRAME, 4, [], quiet=True) == [] and len(fake.calls) == 1  # nothing live: nothing run
    finder.detect(FRAME, 5, [LIVE], quiet=True)  # not due: the region, as ever, and nothing put off
    finder.detect(FRAME, 6, [LIVE])
    assert finder.full_pass and fake.calls[-1][0] == FRAME.shape
    assert finder.counts["full_frame_passes_put_off"] == 2 and finder.counts["full_frame_passes"] == 1


def test_a_steady_track_is_carried_forward_every_other_sample():
    box, before = (100, 100, 50, 50), (96, 100, 50, 50)  # IoU 0.85: steady, moving 4 px right per sample
    # = box in the region at (70, 70), enlarged 2.4x (110 px to the roi side of 264)
    fake = FakeDetector(smallest=80.0, found=[Detection(72, 72, 120, 120, 0.9)])
    finder = FrameDetector(fake, options(full_detect_every=100))
    (found,) = finder.detect(FRAME, 1, [box], [before])  # steady, but no search found it last: searched
    assert found.box == box and len(fake.calls) == 1
    (carried,) = finder.detect(FRAME, 2, [box], [before])  # steady and found by the last search: carried
    assert carried.box == box and carried.score == 0 and carried.carried and len(fake.calls) == 1
    assert not found.carried
    finder.detect(FRAME, 3, [carried.box], [box])  # carried the sample before: searched now
    assert len(fake.calls) == 2 and finder.counts["regions_carried_forward"] == 1


def test_a_still_track_is_carried_twice_in_a_row_then_searched():
    box, before = (100, 100, 50, 50), (101, 100, 50, 50)  # IoU 0.96: still
    fake = FakeDetector(smallest=80.0, found=[Detection(72, 72, 120, 120, 0.9)])
    finder = FrameDetector(fake, options(full_detect_every=100))
    finder.detect(FRAME, 1, [box], [before])  # searched: not found by a search before
    assert finder.detect(FRAME, 2, [box], [before])[0].carried
    assert finder.detect(FRAME, 3, [box], [box])[0].carried  # carried again: it was still
    assert not finder.detect(FRAME, 4, [box], [box])[0].carried  # two in a row: searched
    assert len(fake.calls) == 2 and finder.counts["regions_carried_forward"] == 2
    assert not finder.detect(FRAME, 5, [box], [None])[0].carried  # its picture changed: searched
    assert len(fake.calls) == 3


def test_a_steady_track_that_moves_is_carried_once():
    box, before = (100, 100, 50, 50), (96, 100, 50, 50)  # IoU 0.85: steady, not still
    fake = FakeDetector(smallest=80.0, found=[Detection(72, 72, 120, 120, 0.9)])
    finder = FrameDetector(fake, options(full_detect_every=100))
    finder.detect(FRAME, 1, [box], [before])
    assert finder.detect(FRAME, 2, [box], [before])[0].carried
    assert not finder.detect(FRAME, 3, [box], [box])[0].carried and len(fake.calls) == 2


def test_a_new_moving_or_missed_track_is_searched():
    fake = FakeDetector(found=[])
    finder = FrameDetector(fake, options(full_detect_every=100))
    assert finder.detect(FRAME, 1, [(100, 100, 50, 50)], [None]) == []  # new
    assert finder.detect(FRAME, 2, [(100, 100, 50, 50)], [(80, 100, 50, 50)]) == []  # moved 20 px: IoU 0.43
    assert finder.detect(FRAME, 3, [(100, 100, 50, 50)], [(98, 100, 50, 50)]) == []  # steady, but missed last time
    assert len(fake.calls) == 3 and finder.counts["regions_carried_forward"] == 0


def test_region_is_scaled_to_the_roi_side_and_boxes_map_back_to_the_frame():
    fake = FakeDetector(smallest=20.0, found=[Detection(6, 12, 30, 30, 0.9)])
    finder = FrameDetector(fake, options())
    assert finder.roi_side == round(2.2 * 1.5 * 20)  # 66: the 110 px region is scanned at 0.6
    found = finder.detect(FRAME, 1, [LIVE])
    assert fake.calls == [((66, 66), 20)]  # scanned as it is, for faces down to the detector's smallest
    assert found == [Detection(70 + 10, 70 + 20, 50, 50, 0.9)]


def test_region_smaller_than_the_roi_side_is_enlarged_to_it_and_finds_the_painted_face():
    """Its track's face reaches ROI_FACE_SCALE detector windows, as in a shrunk region: the scan can seek faces
    from one window up (RetinaFace's cheap graph) whatever the face's size in the frame."""
    frame = FRAME.copy()
    frame[110:160, 120:170] = 255  # a 50 x 50 face at (120, 110)
    fake = FakeDetector(smallest=80.0)  # roi_side 264 > 110: scale 2.4
    ((x, y, w, h),) = [d.box for d in FrameDetector(fake, options()).detect(frame, 1, [LIVE])]
    assert fake.calls == [((264, 264), 80)]
    assert abs(x - 120) <= 1 and abs(y - 110) <= 1 and abs(w - 50) <= 1 and abs(h - 50) <= 1


def test_regions_of_two_live_boxes_finding_the_same_face_give_it_once():
    frame = FRAME.copy()
    frame[110:160, 120:170] = 255
    fake = FakeDetector(smallest=80.0)
    finder = FrameDetector(fake, options())
    found = finder.detect(frame, 1, [LIVE, (130, 120, 50, 50)])
    assert len(fake.calls) == 2 and finder.counts["regions_with_a_face"] == 2
    assert found == [Detection(120, 110, 50, 50, 0.9)]


def test_region_at_the_frame_edge_is_clipped_and_offset_correctly():
    frame = FRAME.copy()
    frame[5:45, 0:40] = 255  # a face in the top-left corner
    fake = FakeDetector(smallest=80.0)
    ((x, y, w, h),) = [d.box for d in FrameDetector(fake, options()).detect(frame, 1, [(0, 0, 40, 40)])]
    assert fake.calls[0][0] == (264, 264)  # (20 - 44, 20 + 44) clipped to 0..64, then enlarged to the roi side
    assert abs(x) <= 1 and abs(y - 5) <= 1 and abs(w - 40) <= 1 and abs(h - 40) <= 1


def test_full_frame_min_face_follows_request_or_detect_max_side():
    fake = FakeDetector(smallest=80.0)
    big, small = np.zeros((720, 1280), np.uint8), np.zeros((480, 640), np.uint8)
    assert FrameDetector(fake, options(detect_max_side=640)).full_frame_min_face(big) == 160  # 80 px at scale 0.5
    assert FrameDetector(fake, options(detect_max_side=640)).full_frame_min_face(small) is None
    assert FrameDetector(fake, options(min_face_size=30, detect_max_side=640)).full_frame_min_face(big) == 30
    FrameDetector(fake, options(detect_max_side=640)).detect(big, 0, [])
    assert fake.calls[-1] == ((720, 1280), 160)


def test_min_face_size_filters_and_max_faces_caps_full_frame_results():
    found = [Detection(0, 0, 60, 60, 0.9), Detection(100, 0, 30, 30, 0.9), Detection(200, 0, 45, 40, 0.9)]
    fake = FakeDetector(found=found)
    assert FrameDetector(fake, options(min_face_size=40)).detect(FRAME, 0, []) == [found[0], found[2]]
    assert fake.calls[-1] == (FRAME.shape, 40)
    assert FrameDetector(fake, options(max_faces=1)).detect(FRAME, 0, []) == [found[0]]
    assert FrameDetector(fake, options(max_faces=2, min_face_size=40)).detect(FRAME, 0, []) == [found[0], found[2]]


def test_min_face_size_also_filters_region_results():
    fake = FakeDetector(smallest=80.0, found=[Detection(0, 0, 48, 48, 0.9)])  # 20 px in the frame (scanned at 2.4)
    assert FrameDetector(fake, options(min_face_size=30)).detect(FRAME, 1, [LIVE]) == []
    assert FrameDetector(fake, options()).detect(FRAME, 1, [LIVE]) == [Detection(70, 70, 20, 20, 0.9)]


def test_full_frame_pass_falls_back_to_the_whole_small_frame():
    fake = FakeDetector(found=[])
    small = np.zeros((100, 120), np.uint8)
    assert FrameDetector(fake, options(whole_image_fallback_max_side=256)).detect(small, 0, []) == [
        Detection(0, 0, 120, 100, 0.0)
    ]
    assert FrameDetector(fake, options(whole_image_fallback_max_side=256)).detect(small, 1, [(10, 10, 50, 50)]) == []


def test_large_crops_go_to_the_model_in_smaller_chunks(monkeypatch):
    """Crops go as cut (the model's worker resizes them): a 4K close-up's are megabytes each, so a chunk goes once
    STREAM_BYTES of them wait, and the chunks queued at the model stay small."""
    from concurrent.futures import Future

    import service.pipelines.video as video

    sent: list[int] = []

    def submit(crops: list[np.ndarray]) -> Future:
        sent.append(len(crops))
        future: Future = Future()
        future.set_result(len(crops))
        return future

    step = video.FaceStep(FakeDetector(), None, None, options(), submit)  # type: ignore[arg-type]
    scan = video.Scan(info=None)  # type: ignore[arg-type]
    for _ in range(12):
        scan.faces.append(np.zeros((1000, 1000, 3), np.uint8))  # 3 MB each: 16 MB is six of them
        step._send(scan, whole_chunks_only=True)
    assert sent == [6, 6] and scan.faces == [] and scan.submitted == 12
    assert not step.follower.resize  # with a model to send to, faces are handed over as cut


def test_faces_go_to_the_model_in_chunks_with_a_bound_on_those_in_flight(monkeypatch):
    """More than a chunk of faces at once is split; with STREAM_IN_FLIGHT chunks queued the scan waits for one."""
    from concurrent.futures import Future

    import service.pipelines.video as video

    sent: list[int] = []

    def submit(faces: np.ndarray) -> Future:
        sent.append(len(faces))
        future: Future = Future()
        if len(sent) % 2:  # every other chunk is already done; waiting on an unfinished one would hang the test
            future.set_result(len(faces))
        return future

    monkeypatch.setattr(video, "STREAM_IN_FLIGHT", 100)
    step = video.FaceStep(FakeDetector(), None, None, options(), submit)  # type: ignore[arg-type]
    scan = video.Scan(info=None)  # type: ignore[arg-type]
    scan.faces = [np.zeros((2, 2, 1), np.uint8)] * 75
    step._send(scan, whole_chunks_only=True)
    assert sent == [32, 32] and scan.submitted == 64 and len(scan.faces) == 11  # sent faces leave the scan
    step.finish(scan)
    assert sent == [32, 32, 11] and scan.submitted == 75 and len(scan.pending) == 3 and scan.faces == []
    monkeypatch.setattr(video, "STREAM_IN_FLIGHT", 1)
    scan.faces += [np.zeros((2, 2, 1), np.uint8)] * 32
    unfinished = scan.pending[1]  # the scan must wait for it before sending more
    seen_done: list[bool] = []
    step.submit = lambda faces: (seen_done.append(unfinished.done()), submit(faces))[1]
    threading.Timer(0.05, unfinished.set_result, [32]).start()  # "the model" finishes it a moment later
    step._send(scan, whole_chunks_only=True)
    assert sent == [32, 32, 11, 32] and seen_done == [True]
