"""Following faces from one sampled frame to the next: the per-frame work that ``/predict/video`` (``FaceStep``) and
a live ``WS /stream`` session share, so both run the same shot-cut rule, detection cadence, tracker and cropping.

A frame in, its faces out: each with a track id, its box, the face cut as the model expects (framing, margin,
alignment) and its picture quality. No model call, no timeline: what happens to the faces is the caller's.

With ``opts.steady_boxes`` the face is cut from its track's smoothed box (``BoxSmoother``), not the detector's box of
the sample: the detector's box of a still face moves by a few percent from sample to sample, and the label moved with
the crop (issue 30; ``docs/stability.md``). The detector's box is still what the face reports.

With ``opts.find_bars`` faces are found and cut inside the frames' flat bars (letterbox, pillarbox, a plain
background: ``service.detection.bars``), as photos are; boxes stay in the frame's pixels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from model_store import InputSpec, to_uint8_face
from service.detection import Detection, FaceDetector
from service.detection.bars import Picture, picture_box
from service.options import Options
from service.quality import PictureQuality, picture_quality
from service.tracking import Box, IouTracker
from service.video.boxes import BoxSmoother
from service.video.quiet import QuietWatch
from service.video.regions import ROI_CONTEXT, FrameDetector
from service.video.shots import PictureContinuity, ShotDetector

BARS_EVERY = 25  # samples between looks for flat bars (5 s at 5 samples a second); also at every cut

if TYPE_CHECKING:  # a type only: importing service.pipelines here would import the video pipeline back
    from service.pipelines.face import Cropper


@dataclass(frozen=True)
class TrackedFace:
    """One face of a followed frame: where it is, whose track it extends, the model-sized crop and its picture."""

    detection: Detection
    track_id: int
    face: np.ndarray  # uint8, the model's input size and channels; as cut (a copy) for a follower without resize
    picture: PictureQuality
    crop_box: Box  # the box ``face`` was cut from: the track's smoothed box, or ``detection.box``


class FaceFollower:
    """Detect and track the faces of successive sampled frames, cut each as the model expects. A track is one
    person: a hard cut before the frame (``ShotDetector``) first ends every track, and a face replaced in place by
    another (``PictureContinuity``) starts a new one (both off with ``opts.cut_threshold`` None).

    ``keep_finished=False`` (a live stream, which may run for hours) drops ended tracks instead of keeping them."""

    def __init__(
        self,
        detector: FaceDetector,
        cropper: Cropper,
        spec: InputSpec,
        opts: Options,
        keep_finished: bool = True,
        resize: bool = True,
    ) -> None:
        """``resize=False`` hands faces over as cut, for the model's worker thread to resize: a video's scan thread
        is its critical path, and the resize was a sixth of it for the default."""
        self.finder, self.cropper, self.spec, self.resize = FrameDetector(detector, opts), cropper, spec, resize
        self.shots = ShotDetector(opts.cut_threshold)
        self.continuity = None if opts.cut_threshold is None else PictureContinuity(self.shots)
        self.tracker = IouTracker(identity=self.continuity, keep_finished=keep_finished)
        self.smoother = BoxSmoother() if opts.steady_boxes else None
        # a still picture's whole-frame passes put off (needs the shot detector's thumbnails)
        self.watch = QuietWatch(ROI_CONTEXT) if opts.quiet_passes and opts.cut_threshold is not None else None
        self.frames = 0  # frames followed so far (the cadence counts them)
        self.size: tuple[int, ...] | None = None  # the last frame's height and width
        self.find_bars = opts.find_bars
        self.bars: tuple[tuple[int, ...], Box] | None = None  # the frame size it was looked for at, the picture

    def follow(self, frame: np.ndarray, t: float, every: int | None = None) -> list[TrackedFace]:
        """The faces of the next sampled frame, at time ``t`` (seconds); ``every``: a full-frame pass every that many
        frames (default: the options' ``full_detect_every``). Faces are found and cut inside the frame's flat bars
        (``opts.find_bars``), their boxes kept in the frame's pixels."""
        # a stream's frames change size when a phone turns: old boxes mean nothing in the new ones, as after a cut
        resized = self.size is not None and frame.shape[:2] != self.size
        self.size = frame.shape[:2]
        cut = self.shots.is_cut(frame, compare=bool(self.tracker.live), blocks=self.watch is not None) or resized
        if cut:
            self.tracker.cut()  # nothing is live now: the frame gets a whole-frame pass
        picture, live = self._picture(frame, cut), self.tracker.live
        # a track whose picture changed is searched, not carried forward (a carried box would be no face, or another)
        previous = [None if self._changed(tr.track_id, frame, tr.box) else tr.previous for tr in live]
        in_view = [None if box is None else picture.to_view(box) for box in previous]
        boxes, quiet = [picture.to_view(tr.box) for tr in live], self._quiet(frame, cut, live, every)
        found = self.finder.detect(picture.view, self.frames, boxes, in_view, every, quiet)
        if self.watch is not None and self.finder.full_pass:
            self.watch.passed()
        found = [picture.to_image(d) for d in found]
        self.frames += 1
        ids = self.tracker.update(t, [d.box for d in found], frame)
        if self.smoother is not None:
            self.smoother.retain(tr.track_id for tr in self.tracker.live)  # ended tracks are forgotten
        return [self._face(picture, t, det, track_id) for det, track_id in zip(found, ids, strict=True)]

    def _quiet(self, frame: np.ndarray, cut: bool, live: list, every: int | None) -> bool:
        """Whether a whole-frame pass due on this frame may be put off (``service.video.quiet``). Never for frames
        small enough to be taken whole for a face crop (their pass is cheap, and its fallback is the answer)."""
        if self.watch is None:
            return False
        self.watch.observe(None if cut else self.shots.changed, [tr.box for tr in live], frame.shape)
        opts = self.finder.opts
        if max(frame.shape[:2]) <= opts.whole_image_fallback_max_side:
            return False
        return self.watch.quiet((every or opts.full_detect_every) * opts.quiet_passes)

    def _picture(self, frame: np.ndarray, cut: bool) -> Picture:
        """The frame inside its bars: looked for on the first frame, at each cut and every ``BARS_EVERY`` samples
        (a letterbox rarely changes within a shot), and when the frame's size changes."""
        if not self.find_bars:
            return Picture.of(frame, find_bars=False)
        if cut or self.bars is None or self.bars[0] != frame.shape or self.frames % BARS_EVERY == 0:
            self.bars = frame.shape, picture_box(frame)
        return Picture(frame, *self.bars[1])

    def _face(self, picture: Picture, t: float, det: Detection, track_id: int) -> TrackedFace:
        """One face of the frame, cut from its track's smoothed box (or the detector's, without a smoother)."""
        box = tuple(det.box) if self.smoother is None else self.smoother.update(track_id, t, det.box)
        crop = self.cropper.crop(picture.view, picture.to_view(box), self.spec)
        face = to_uint8_face(crop, self.spec) if self.resize else np.array(crop)  # a copy: a view holds the frame
        picture_of_face = picture_quality(picture.image, det.box, det.landmarks, det.score)
        return TrackedFace(det, track_id, face, picture_of_face, box)

    def _changed(self, track_id: int, frame: np.ndarray, box: tuple[int, int, int, int]) -> bool:
        return self.continuity is not None and self.continuity.changed(track_id, frame, box)

    @property
    def counts(self) -> dict[str, int]:
        """How the cadence played out, and the cuts and replaced faces."""
        replaced = 0 if self.continuity is None else self.continuity.replaced
        return {**self.finder.counts, "shot_cuts": self.shots.cuts, "faces_replaced": replaced}
