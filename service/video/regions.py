"""Where to look in each sampled frame: the whole frame every few samples (or with nothing tracked), otherwise only
a region around each live track, scaled so its face has a size the detector finds cheaply."""

from __future__ import annotations

import math

import cv2
import numpy as np

from model_store import expand_box
from service.detection import Detection, FaceDetector, whole_image_if_small
from service.options import Options
from service.tracking import Box, iou

ROI_CONTEXT = 0.6  # a track's search region: its box grown by this per side (2.2x its size)
ROI_FACE_SCALE = 1.5  # the face in a region is scaled to this many times the detector's smallest face
# A track whose last two boxes overlap this much is steady: on the next sample its box is carried forward (kept
# where it is) instead of searched, only after a search found it, so a steady face is searched every other sample
# and a face that is gone is carried at most once.
STEADY_IOU = 0.85
# A track that moved even less between those two boxes is still: carried up to STILL_CARRIES samples in a row, so a
# still face is searched every third sample (its picture changing, as a face leaving does, ends the run at once).
STILL_IOU = 0.95
STILL_CARRIES = 2


def dedupe(found: list[Detection], overlap: float = 0.5) -> list[Detection]:
    """One box per face when regions overlap: the highest-scoring of boxes with IoU >= ``overlap``, largest first."""
    kept: list[Detection] = []
    for det in sorted(found, key=lambda d: d.score, reverse=True):
        if all(iou(det.box, k.box) < overlap for k in kept):
            kept.append(det)
    return sorted(kept, key=lambda d: d.area, reverse=True)


class FrameDetector:
    """Detection with a cadence, for one video or live stream."""

    def __init__(self, detector: FaceDetector, opts: Options) -> None:
        self.detector, self.opts = detector, opts
        # a region's longest side: 2.2 face sizes, the face at ROI_FACE_SCALE x the smallest findable face
        self.roi_side = round((1 + 2 * ROI_CONTEXT) * ROI_FACE_SCALE * detector.smallest_face())
        self.smallest = math.ceil(detector.smallest_face())  # what a region is searched down to
        # how the cadence played out: whole-frame passes, regions searched and regions where a face was found
        self.counts = {
            "full_frame_passes": 0,
            "regions_searched": 0,
            "regions_with_a_face": 0,
            "regions_carried_forward": 0,
            "full_frame_passes_put_off": 0,
        }
        self.full_pass = False  # whether the last sample got a whole-frame pass
        self._confirmed: set[Box] = set()  # boxes a search or a whole-frame pass found on the last sample
        # boxes carried forward on the last sample: (samples carried in a row, the track's move before the first)
        self._carried: dict[Box, tuple[int, float]] = {}
        self._carrying: dict[Box, tuple[int, float]] = {}

    def full_frame_min_face(self, frame: np.ndarray) -> int | None:
        """The face size a full-frame pass searches down to: the request's, or what ``detect_max_side`` allows."""
        side = max(frame.shape[:2])
        if self.opts.min_face_size or side <= self.opts.detect_max_side:
            return self.opts.min_face_size
        return math.ceil(self.detector.smallest_face(self.opts.detect_max_side / side))

    def region(self, frame: np.ndarray, box: Box) -> tuple[np.ndarray, int, int, float]:
        """The region around ``box`` as it is scanned, its top-left corner in the frame and its scale: scaled so the
        track's face is ``ROI_FACE_SCALE`` times the detector's smallest face."""
        h, w = frame.shape[:2]
        x, y, rw, rh = expand_box(box, ROI_CONTEXT, (w, h))
        scale = self.roi_side / max(rw, rh)
        roi = frame[y : y + rh, x : x + rw]
        if scale != 1.0:
            size = (max(1, round(rw * scale)), max(1, round(rh * scale)))
            roi = cv2.resize(roi, size, interpolation=cv2.INTER_LINEAR)
        return roi, x, y, scale

    def near(self, frame: np.ndarray, box: Box) -> list[Detection]:
        """Faces in the region around ``box``, in frame pixels, searched down to the detector's smallest face (which
        lets RetinaFace skip its small-face level)."""
        roi, x, y, scale = self.region(frame, box)
        found = [d.moved(x, y, scale) for d in self.detector.detect(roi, self.smallest)]
        self.counts["regions_searched"] += 1
        self.counts["regions_with_a_face"] += bool(found)
        return found

    def detect(
        self,
        frame: np.ndarray,
        sample: int,
        live: list[Box],
        previous: list[Box | None] | None = None,
        every: int | None = None,
        quiet: bool = False,
    ) -> list[Detection]:
        """Faces of the ``sample``-th analysed frame at least ``min_face_size`` large, at most ``max_faces``.

        ``live``: the live tracks' boxes; ``previous``: each one's box before that (None for a new track), which
        lets a steady track skip a search; ``every``: a whole-frame pass every that many samples (default: the
        options' ``full_detect_every``; a live stream derives it from its frame rate); ``quiet``: a whole-frame pass
        due now is put off (``service.video.quiet``), so only the live tracks are searched around, if any."""
        due = not live or sample % max(1, every or self.opts.full_detect_every) == 0
        self.full_pass = due and not quiet
        self.counts["full_frame_passes_put_off"] += due and quiet
        if self.full_pass:
            self.counts["full_frame_passes"] += 1
            found = self.detector.detect(frame, self.full_frame_min_face(frame))
            found = whole_image_if_small(frame, found, self.opts.whole_image_fallback_max_side)
        else:
            found = self.around(frame, live, previous or [None] * len(live))
        # carried boxes and the whole-image fallback score 0: neither confirms a face
        self._confirmed = {d.box for d in found if d.score > 0}
        self._carried, self._carrying = self._carrying, {}
        smallest = self.opts.min_face_size or 0
        return [d for d in found if min(d.width, d.height) >= smallest][: self.opts.max_faces]

    def around(self, frame: np.ndarray, live: list[Box], previous: list[Box | None]) -> list[Detection]:
        """Each live track searched around, or its box carried forward where it is steady."""
        searched: list[Detection] = []
        carried: list[Detection] = []
        for box, before in zip(live, previous, strict=True):
            ahead = self.carried_forward(box, before)
            if ahead is None:
                searched += self.near(frame, box)
            else:
                carried.append(ahead)
        return dedupe(searched + carried)

    def carried_forward(self, box: Box, before: Box | None) -> Detection | None:
        """A steady track's box kept for this sample (not searched), or None when it must be searched: it is new,
        its picture changed (``before`` None), it moved too much, or it was not found by a search on the last
        sample (missed, or carried forward then, unless it is still and its run is short). Not moved on: after a
        carried sample its last move would be made up. Score 0, so a searched box wins ``dedupe`` and a carried one
        never confirms itself."""
        if before is None:
            return None
        if box in self._confirmed:
            run = (1, iou(before, box))
        elif box in self._carried:
            carried, move = self._carried[box]
            run = (carried + 1, move)
        else:
            return None
        if run[1] < STEADY_IOU or (run[0] > 1 and (run[1] < STILL_IOU or run[0] > STILL_CARRIES)):
            return None
        self._carrying[box] = run
        self.counts["regions_carried_forward"] += 1
        return Detection(*box, 0.0, carried=True)
