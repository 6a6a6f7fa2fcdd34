"""How stable the served label is when the face does not change (issue 30): re-encodes, resizes, canvases, the
detector's own box noise, and still clips through the video pipeline.

Runs the model as the service does: the service's detector and face pipeline (``FacePipeline.find``: the padded
second scan and the whole-image fallback), ``FaceCropper`` with the manifest's framing and margin, and the model the
registry loads (``ModelRegistry.get``: the service's backend, mirror TTA as served). Data:

* photos: a seeded ``--limit`` of the 900 shared photos, the largest face of each (the face ``/predict/image`` lists
  first); in a perturbed copy, the detected face overlapping it most (IoU >= 0.3, else the face is "lost").
* RAF-DB val (the seeded, stratified 10% of ``rafdb/train``, ``training.make_manifest.split_source`` as in
  training) and FER2013 val (its PublicTest folder): a seeded ``--val-limit`` of each. They are face crops, as sent to
  ``/predict/face``: their box is the crop less the model's margin, cut from a copy padded by repeating the border,
  so that jitter and other margins have pixels to take (unjittered at the model's margin: the crop itself).

Steps:

1. Detector noise: each photo re-encoded (JPEG 60, 90), resized (360, 160 px), on a plain 640 x 480 canvas at 360 px
   (and shifted by a few pixels, at 300 and 420 px, through an mp4 round trip), detected again, the box mapped back.
   Reported: centre shift (in box sizes) and log size ratio against the per-face median box (the noise) and against
   the photo's own box (what a re-detection moves it by: the pool jitter is drawn from), and the IoU with it.
2. Stills: agreement of the label with the unperturbed face's, the mean total-variation distance between the two
   probability vectors, per label (the unperturbed face's) and per margin band (its top-1 minus top-2), for JPEG 60,
   360 px, 160 px, canvas (PNG), canvas + mp4, jitter (the photo's own box moved by a drawn deviation) and canvas +
   jitter; the val sets also get their accuracy (and balanced accuracy: the mean recall over labels with at least
   ``BALANCED_MIN`` faces). The photos are also cut as served before the square crop (cut off at the photo's edge,
   ``Served.crop``'s ``clipped``), so the crop shapes' accuracy and canvas agreement are compared in one run.
3. Margins: the same for face margins about the manifest's; test-time averaging over 3 crops (the box, and the box
   moved and scaled by one standard deviation of the noise each way) with its model cost per face.
4. Still clips: each of ``--clips`` photos on the canvas for 3 s at 25 fps (mp4), through ``VideoPipeline.analyse``
   at 5 samples a second: label flips per 10 samples and the majority label against the photo's own, as served;
   then the track's raw boxes re-cut from the decoded frames as they are and after ``service.video.boxes`` (with the
   EMA over probabilities off and on): what the steady boxes the pipeline cuts from (``EMOTION_VIDEO__STEADY_BOXES``,
   on by default) buy over each detection's raw box.

    python -m benchmarks.stability [--limit 300 --val-limit 300 --clips 60] [--output DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from benchmarks import add_model_argument, find_entry, service_settings
from benchmarks.eval_photos import read_photos
from model_store import InputSpec, crop_face, expand_box, to_uint8_face
from service.config import Settings
from service.detection.bars import Picture
from service.imaging import decode_image
from service.metrics import Metrics
from service.options import resolve_options
from service.pipelines import build_pipelines
from service.pipelines.video import VideoPipeline
from service.quality import certainty
from service.registry import LoadedModel, ModelRegistry
from service.video.boxes import smooth_boxes
from service.video.timeline import smooth
from training.make_manifest import split_source

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
VAL_SETS = {"rafdb_val": DATA / "rafdb", "fer2013_val": DATA / "fer2013"}
CANVAS, CANVAS_SIDE, PLAIN = (640, 480), 360, 127
BANDS = [(0.0, 0.1), (0.1, 0.3), (0.3, 0.5), (0.5, 1.01)]
BALANCED_MIN = 20  # faces with a target label for its recall to count in the balanced accuracy
SPLITS = {"box_iou": 0.9, "crop_outside_photo": 0.1}  # a fact per compared face and where agreement is split on it
STILLS = ("jpeg60", "size360", "size160", "canvas", "canvas_mp4")  # each photo, detected again
NOISE_ONLY = ("jpeg90", "canvas_shift_a", "canvas_shift_b", "canvas_300", "canvas_420")
VAL_STILLS = ("jpeg60", "size360", "size160")
CLIP_SECONDS, CLIP_FPS = 3.0, 25.0
Box = tuple[int, int, int, int]


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--output", type=Path, help="default: the model's reports/stability folder")
    add_model_argument(p)
    p.add_argument("--version", help="model version (default: the newest, what the service serves)")
    p.add_argument("--limit", type=int, default=300, help="photos (a seeded sample of the 900)")
    p.add_argument("--val-limit", type=int, default=300, help="faces per val set (a seeded sample)")
    p.add_argument("--clips", type=int, default=60, help="still clips through the video pipeline")
    p.add_argument("--draws", type=int, default=2, help="jitter draws per face")
    p.add_argument(
        "--margins", type=float, nargs="*", default=[-0.1, -0.05, 0.05, 0.1], help="offsets from the model's"
    )
    p.add_argument("--seed", type=int, default=0)
    return p


# --- geometry -----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Placement:
    """Where an image went in a perturbed copy: ``copy = offset + scale * original`` (per axis)."""

    sx: float = 1.0
    sy: float = 1.0
    x: float = 0.0
    y: float = 0.0

    def to_copy(self, box) -> Box:
        x, y, w, h = box
        return round(self.x + x * self.sx), round(self.y + y * self.sy), round(w * self.sx), round(h * self.sy)

    def to_original(self, box) -> tuple[float, float, float, float]:
        x, y, w, h = box
        return (x - self.x) / self.sx, (y - self.y) / self.sy, w / self.sx, h / self.sy


def iou(a, b) -> float:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    w = max(0.0, min(ax + aw, bx + bw) - max(ax, bx))
    h = max(0.0, min(ay + ah, by + bh) - max(ay, by))
    inter = w * h
    return inter / (aw * ah + bw * bh - inter) if inter > 0 else 0.0


def deviation(box, ref) -> np.ndarray:
    """Centre shift in units of ``ref``'s width and height, and log width and height ratios."""
    x, y, w, h = box
    rx, ry, rw, rh = ref
    return np.array([(x + w / 2 - rx - rw / 2) / rw, (y + h / 2 - ry - rh / 2) / rh, np.log(w / rw), np.log(h / rh)])


def moved(box, dev) -> Box:
    """``box`` moved by a ``deviation`` (the inverse of ``deviation``)."""
    x, y, w, h = box
    nw, nh = w * np.exp(dev[2]), h * np.exp(dev[3])
    cx, cy = x + w / 2 + dev[0] * w, y + h / 2 + dev[1] * h
    return round(cx - nw / 2), round(cy - nh / 2), max(1, round(nw)), max(1, round(nh))


# --- perturbed copies ---------------------------------------------------------------------------------------------


def round_trip(image: np.ndarray, ext: str, params: list[int] | None = None) -> np.ndarray:
    """Encoded and decoded as an upload is (``service.imaging.decode_image``)."""
    return decode_image(cv2.imencode(ext, image, params or [])[1].tobytes(), 10**9)


def resized(image: np.ndarray, side: int) -> tuple[np.ndarray, Placement]:
    """The longest side to ``side`` px, kept as PNG (lossless: the resize alone)."""
    h, w = image.shape[:2]
    scale = side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    out = cv2.resize(image, size, interpolation=interp)
    return round_trip(out, ".png"), Placement(size[0] / w, size[1] / h)


def on_canvas(image: np.ndarray, side: int = CANVAS_SIDE, shift=(0, 0)) -> tuple[np.ndarray, Placement]:
    """Resized to ``side`` px and placed (centred, then shifted) on a plain 640 x 480 canvas, as PNG."""
    small, placed = resized(image, side)
    h, w = small.shape[:2]
    x, y = (CANVAS[0] - w) // 2 + shift[0], (CANVAS[1] - h) // 2 + shift[1]
    canvas = np.full((CANVAS[1], CANVAS[0], 3), PLAIN, np.uint8)
    canvas[y : y + h, x : x + w] = small
    return round_trip(canvas, ".png"), Placement(placed.sx, placed.sy, x, y)


def mp4_round_trip(frame: np.ndarray, frames: int = 5, keep: int = 2) -> np.ndarray:
    """``frame`` written ``frames`` times as mp4 (OpenCV's mp4v) and frame ``keep`` read back."""
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "still.mp4")
        write_still(path, frame, frames)
        cap = cv2.VideoCapture(path)
        for _ in range(keep + 1):
            ok, out = cap.read()
        cap.release()
    if not ok:
        raise RuntimeError("OpenCV could not read back its own mp4")
    return out


def write_still(path: str, frame: np.ndarray, frames: int) -> None:
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"mp4v"), CLIP_FPS, (frame.shape[1], frame.shape[0]))
    for _ in range(frames):
        writer.write(frame)
    writer.release()


def copy_of(name: str, image: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, Placement]:
    """The perturbed copy ``name`` of a photo and where the photo went in it."""
    if name.startswith("jpeg"):
        return round_trip(image, ".jpg", [cv2.IMWRITE_JPEG_QUALITY, int(name[4:])]), Placement()
    if name.startswith("size"):
        return resized(image, int(name[4:]))
    if name == "canvas_mp4":
        canvas, placed = on_canvas(image)
        return mp4_round_trip(canvas), placed
    if name.startswith("canvas_shift"):
        return on_canvas(image, shift=tuple(int(v) for v in rng.integers(-8, 9, 2)))
    if name.startswith("canvas_"):
        return on_canvas(image, int(name[7:]))
    if name == "canvas":
        return on_canvas(image)
    raise ValueError(f"unknown copy {name!r}")


# --- the service, in-process --------------------------------------------------------------------------------------


@dataclass
class Served:
    """The service's detector, pipelines and loaded model, with the request options of a default request."""

    settings: Settings
    loaded: LoadedModel
    pipelines: object
    video: VideoPipeline

    @classmethod
    def build(cls, settings: Settings, loaded: LoadedModel) -> Served:
        pipelines = build_pipelines(settings)
        # the video route's pipeline, without linking tracks into persons (it changes no track's labels)
        video = VideoPipeline(pipelines.detector, None, pipelines.face.cropper, settings.quality)
        return cls(settings, loaded, pipelines, video)

    @property
    def spec(self) -> InputSpec:
        return self.loaded.predictor.image_spec

    def find(self, image: np.ndarray) -> list:
        """Faces as ``/predict/image`` finds them, largest first."""
        return self.pipelines.face.find(image, resolve_options(self.settings))

    def crop(self, image: np.ndarray, box, offset: float = 0.0, clipped: bool = False, bars: bool = True) -> np.ndarray:
        """The face cut as served, its margin moved by ``offset``; ``clipped``: as served before the square crop
        (``model_store.crop_face`` now fills what lies outside the image from its border; this cuts it off, so the
        crop is no longer square and the resize stretches it); ``bars``: inside the image's flat bars, as the photo
        path cuts (off for the val sets' padded copies: the benchmark's own, where a flat edge line repeated by the
        padding would read as a bar, and the service never cuts a face crop)."""
        spec = self.spec
        if offset:
            spec = spec.model_copy(update={"face_margin": round(spec.face_margin + offset, 4)})
        if clipped:  # the crop as served before the square crop (and before bars)
            x, y, w, h = expand_box(box, spec.face_margin, (image.shape[1], image.shape[0]))
            return image[y : y + h, x : x + w]
        face = self.pipelines.face
        # faces are cut inside the picture's flat bars, as served
        picture = Picture.of(image, bars and resolve_options(self.settings).find_bars)
        image, box = picture.view, picture.to_view(box)
        if spec.framing == "box" and not face.cropper.level:  # float boxes (jitter, val crops): rounded by crop_face
            return crop_face(image, box, spec)
        return face.cropper.crop(image, tuple(round(v) for v in box), spec)


class Classifier:
    """Crops -> probabilities by key, classified in chunks as model-sized faces (the model's own resize)."""

    def __init__(self, served: Served, chunk: int = 128) -> None:
        self.predictor, self.spec, self.chunk = served.loaded.predictor, served.spec, chunk
        self.keys: list[tuple] = []
        self.faces: list[np.ndarray] = []
        self.probs: dict[tuple, np.ndarray] = {}

    def add(self, key: tuple, crop: np.ndarray) -> None:
        self.keys.append(key)
        self.faces.append(to_uint8_face(crop, self.spec))
        if len(self.faces) >= self.chunk:
            self.flush()

    def flush(self) -> None:
        if self.faces:
            probs = self.predictor.predict_faces(np.stack(self.faces)).probabilities
            self.probs.update(zip(self.keys, probs, strict=True))
            self.keys, self.faces = [], []

    def get(self, key: tuple) -> np.ndarray | None:
        return self.probs.get(key)


# --- faces --------------------------------------------------------------------------------------------------------


@dataclass
class PhotoFace:
    """A photo's largest face and, per perturbed copy, the box found for it there (None: lost) and the placement."""

    index: int
    label: str
    box: Box
    copies: dict[str, tuple[Box | None, Placement]] = field(default_factory=dict)


@dataclass
class ValFace:
    """A val-set face crop, padded; ``box`` is the crop less the model's margin, in the padded image."""

    label: int
    crop: np.ndarray


def pick(found: list, expected: Box) -> Box | None:
    """The detection overlapping ``expected`` most (IoU >= 0.3), or None."""
    scored = [(iou(f.box, expected), f.box) for f in found]
    best = max(scored, default=(0.0, None))
    return tuple(best[1]) if best[0] >= 0.3 else None


def detect_photos(served: Served, limit: int, seed: int) -> tuple[list[PhotoFace], dict[int, np.ndarray], int]:
    """Each sampled photo's largest face and its box in every perturbed copy; the photos; photos without a face."""
    photos, labels = read_photos()
    chosen = sorted(np.random.default_rng(seed).permutation(len(photos))[:limit].tolist())
    faces, images, missed = [], {}, 0
    for i in tqdm(chosen, desc="photos: detect", unit="photo", leave=False):
        found = served.find(photos[i])
        if not found:
            missed += 1
            continue
        face = PhotoFace(i, labels[i], tuple(found[0].box))
        rng = np.random.default_rng([seed, i])
        for name in STILLS + NOISE_ONLY:
            copy, placed = copy_of(name, photos[i], rng)
            face.copies[name] = (pick(served.find(copy), placed.to_copy(face.box)), placed)
        faces.append(face)
        images[i] = photos[i]
    return faces, images, missed


def val_faces(name: str, root: Path, limit: int, seed: int, labels: list[str]) -> list[ValFace]:
    """A seeded sample of a val set's face crops (RAF-DB: training's seeded 10% of train; FER2013: its val)."""
    samples = split_source(root, 0.1, 0)["val"]
    chosen = sorted(np.random.default_rng(seed).permutation(len(samples))[:limit].tolist())
    return [ValFace(labels.index(samples[i].label), cv2.imread(str(samples[i].path), cv2.IMREAD_COLOR)) for i in chosen]


def padded(image: np.ndarray, margin: float) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """The crop padded by half its size (border repeated) and its face box there (the crop less ``margin``)."""
    h, w = image.shape[:2]
    pad = max(h, w) // 2
    big = cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
    bw, bh = w / (1 + 2 * margin), h / (1 + 2 * margin)
    return big, (pad + (w - bw) / 2, pad + (h - bh) / 2, bw, bh)


# --- detector noise -----------------------------------------------------------------------------------------------


def median_box(boxes: list) -> tuple[float, float, float, float]:
    """The per-coordinate median of boxes' centres and sizes, as a box."""
    a = np.array(boxes, float)
    cx, cy = np.median(a[:, 0] + a[:, 2] / 2), np.median(a[:, 1] + a[:, 3] / 2)
    w, h = np.median(a[:, 2]), np.median(a[:, 3])
    return cx - w / 2, cy - h / 2, w, h


def spread(devs: np.ndarray) -> dict:
    """Standard deviations and percentiles of deviations (rows: centre x, y in box sizes; log width, height)."""
    if not len(devs):
        return {"n": 0}
    shift = np.hypot(devs[:, 0], devs[:, 1])
    size = np.exp(np.abs(devs[:, 2:]).max(axis=1))
    r = lambda v: round(float(v), 4)  # noqa: E731
    return {
        "n": len(devs),
        "mean": [r(v) for v in devs.mean(axis=0)],  # a bias (centre x, y, log w, h): a copy framed differently
        "centre_sd": [r(devs[:, 0].std()), r(devs[:, 1].std())],
        "log_size_sd": [r(devs[:, 2].std()), r(devs[:, 3].std())],
        "centre_shift_p50_p90_p99": [r(np.percentile(shift, q)) for q in (50, 90, 99)],
        "size_ratio_p50_p90_p99": [r(np.percentile(size, q)) for q in (50, 90, 99)],
    }


def noise_report(faces: list[PhotoFace]) -> tuple[dict, np.ndarray]:
    """The detector's box noise over the perturbed copies (module doc, step 1), and the pool jitter is drawn from:
    deviations from the photo's own box of the copies' boxes that are the same face (IoU >= 0.5)."""
    around_median, per_copy = [], {}
    for face in faces:
        boxes = {n: placed.to_original(b) for n, (b, placed) in face.copies.items() if b is not None}
        ref = median_box([face.box, *boxes.values()])
        around_median.extend(deviation(b, ref) for b in [face.box, *boxes.values()])
        for name in face.copies:
            per_copy.setdefault(name, []).append(
                (iou(boxes[name], face.box), deviation(boxes[name], face.box)) if name in boxes else None
            )
    copies = {}
    for name, rows in per_copy.items():
        kept = [r for r in rows if r is not None]
        ious = np.array([r[0] for r in kept])
        copies[name] = {
            "lost": len(rows) - len(kept),
            "median_iou": round(float(np.median(ious)), 4) if len(kept) else None,
            "iou_below_0.9": round(float((ious < 0.9).mean()), 4) if len(kept) else None,
            **spread(np.array([r[1] for r in kept if r[0] >= 0.5]).reshape(-1, 4)),
        }
    pool = np.array([r[1] for rows in per_copy.values() for r in rows if r is not None and r[0] >= 0.5])
    report = {
        "around_the_median_box": spread(np.array(around_median)),
        "from_the_photos_box": spread(pool),
        "per_copy": copies,
    }
    return report, pool


# --- stills: views, crops, comparisons ----------------------------------------------------------------------------

MARGIN_VIEWS = ("original", "canvas", "jitter", "canvas_jitter")  # also cut at other margins and averaged (TTA)
JITTERED = ("jitter", "canvas_jitter")
CLIPPED = ("original", "canvas", "canvas_mp4")  # photos: also cut as before the square crop (``Served.crop``)


def base(view: str) -> str:
    return view.split("#")[0]


def photo_views(face: PhotoFace, image: np.ndarray, draws: np.ndarray) -> dict[str, tuple]:
    """View name -> (image, box in it, box in the photo's coordinates) for one photo face."""
    views = {"original": (image, face.box, face.box)}
    for name in STILLS:
        box, placed = face.copies[name]
        if box is not None:
            views[name] = (copy_of(name, image, np.random.default_rng(0))[0], box, placed.to_original(box))
    for k, dev in enumerate(draws):
        views[f"jitter#{k}"] = (image, moved(face.box, dev), moved(face.box, dev))
        if "canvas" in views:
            canvas, box, _ = views["canvas"]
            views[f"canvas_jitter#{k}"] = (
                canvas,
                moved(box, dev),
                face.copies["canvas"][1].to_original(moved(box, dev)),
            )
    return views


def val_views(face: ValFace, margin: float, draws: np.ndarray) -> dict[str, tuple]:
    """View name -> (padded image, box in it) for one val crop (no detection: the crop is the face)."""
    big, box = padded(face.crop, margin)
    views = {"original": (big, box)}
    for name in VAL_STILLS:
        views[name] = padded(copy_of(name, face.crop, np.random.default_rng(0))[0], margin)
    for k, dev in enumerate(draws):
        views[f"jitter#{k}"] = (big, moved(box, dev))
    return views


def classify_views(
    clf: Classifier, served: Served, key: tuple, views: dict, offsets, tta_devs, bars: bool = True
) -> None:
    """Every view cut at the model's margin; the margin views also at ``offsets`` and moved by ``tta_devs``;
    ``bars``: cut inside flat bars (``Served.crop``)."""
    for view, (image, box, *_) in views.items():
        clf.add((*key, view, 0.0, 0), served.crop(image, box, bars=bars))
        if base(view) in MARGIN_VIEWS:
            for offset in offsets:
                clf.add((*key, view, offset, 0), served.crop(image, box, offset, bars=bars))
            for t, dev in enumerate(tta_devs, 1):
                clf.add((*key, view, 0.0, t), served.crop(image, moved(box, dev), bars=bars))


def probs(clf: Classifier, key: tuple, view: str, offset: float = 0.0, tta: bool = False) -> np.ndarray | None:
    """A view's probabilities (averaged over the 3 TTA crops with ``tta``); None when the view was lost."""
    rows = [clf.get((*key, view, offset, t)) for t in ((0, 1, 2) if tta else (0,))]
    return None if any(r is None for r in rows) else np.mean(rows, axis=0)


def r4(v) -> float:
    return round(float(v), 4)


def part(same: np.ndarray, tv: np.ndarray, mask: np.ndarray) -> dict | None:
    if not mask.any():
        return None
    return {"faces": int(mask.sum()), "agreement": r4(same[mask].mean()), "tv": r4(tv[mask].mean())}


def agreement(p: np.ndarray, q: np.ndarray, labels: list[str], lost: int = 0, facts: dict | None = None) -> dict:
    """Label agreement of ``q`` with ``p`` and their mean total-variation distance, overall, per label of ``p``,
    per margin band of ``p``, and on either side of each ``SPLITS`` threshold of ``facts`` (name -> a value per
    face: the box's IoU with the photo's own box, the share of the served crop outside the photo)."""
    same, tv = p.argmax(1) == q.argmax(1), 0.5 * np.abs(p - q).sum(1)
    margins, top = np.array([certainty(row)[0] for row in p]), p.argmax(1)
    out = {
        "faces": len(p),
        "lost": lost,
        "agreement": r4(same.mean()),
        "tv": r4(tv.mean()),
        "per_label": {label: part(same, tv, top == k) for k, label in enumerate(labels)},
        "per_margin_band": {
            f"{lo}-{min(hi, 1.0)}": part(same, tv, (margins >= lo) & (margins < hi)) for lo, hi in BANDS
        },
    }
    for name, values in (facts or {}).items():
        v, at = np.asarray(values), SPLITS[name]
        out[f"by_{name}"] = {f">={at}": part(same, tv, v >= at), f"<{at}": part(same, tv, v < at)}
    return out


def names_of(view: str, draws: int) -> list[str]:
    return [f"{view}#{k}" for k in range(draws)] if view in JITTERED else [view]


def compare_view(clf, keys, view, labels, draws, offset=0.0, tta=False, facts=None, ref="original") -> dict | None:
    """``view`` against the unperturbed face (``ref``) over ``keys`` (every jitter draw), as ``agreement`` reports
    it; ``facts``: (key..., view) -> {name: value} to split on."""
    p, q, kept, lost = [], [], [], 0
    for key in keys:
        ref_probs = probs(clf, key, ref, offset, tta)
        for name in names_of(view, draws):
            cur = probs(clf, key, name, offset, tta)
            if ref_probs is None or cur is None:
                lost += 1
                continue
            p.append(ref_probs)
            q.append(cur)
            if facts is not None:
                kept.append(facts[(*key, name)])
    if not p:
        return None
    split = {name: [k[name] for k in kept] for name in (kept[0] if kept else {})}
    return agreement(np.array(p), np.array(q), labels, lost, split)


def balanced_accuracy(clf, keys, targets, view="original", min_support: int = BALANCED_MIN) -> float | None:
    """Mean recall of a view over the labels with at least ``min_support`` faces with that target."""
    pairs = [(probs(clf, k, view), t) for k, t in zip(keys, targets, strict=True) if t is not None]
    pairs = [(int(p.argmax()), t) for p, t in pairs if p is not None]
    counts = Counter(t for _, t in pairs)
    recalls = [np.mean([p == t for p, t in pairs if t == k]) for k, n in counts.items() if n >= min_support]
    return r4(np.mean(recalls)) if recalls else None


def accuracy(clf, keys, targets, view="original", offset=0.0, tta=False) -> float | None:
    """Accuracy of a view over the faces with a target in the model's labels."""
    hits = [
        probs(clf, key, view, offset, tta).argmax() == t
        for key, t in zip(keys, targets, strict=True)
        if t is not None and probs(clf, key, view, offset, tta) is not None
    ]
    return r4(np.mean(hits)) if hits else None


def tta_moves(pool: np.ndarray) -> list[np.ndarray]:
    """The two extra crops of test-time averaging: the box moved and scaled by one standard deviation of the
    measured noise, each way."""
    sd = pool.std(axis=0)
    sd[2:] = sd[2:].mean()  # one scale for width and height: the crop is square
    return [sd, -sd]


def jitter_draws(pool: np.ndarray, args, set_no: int, index: int) -> np.ndarray:
    """``args.draws`` deviations drawn from the pool, seeded per face."""
    return pool[np.random.default_rng([args.seed, set_no, index]).integers(0, len(pool), args.draws)]


def outside(box, shape: tuple, margin: float) -> float:
    """The share of the served crop's square (``box`` grown by ``margin``) that lies outside the image."""
    x, y, w, h = box
    side = max(w, h) * (1 + 2 * margin)
    x0, y0 = x + w / 2 - side / 2, y + h / 2 - side / 2
    inside = max(0.0, min(shape[1], x0 + side) - max(0.0, x0)) * max(0.0, min(shape[0], y0 + side) - max(0.0, y0))
    return 1.0 - inside / side**2


def run_photos(clf, served, faces, images, pool, args) -> tuple[list, list, dict]:
    """Every photo face's views classified; the keys, hand-label targets (None: no model label) and per view the
    facts agreement is split on (``SPLITS``)."""
    labels, tta, margin = served.loaded.manifest.labels, tta_moves(pool), served.spec.face_margin
    keys, targets, facts = [], [], {}
    for face in tqdm(faces, desc="photos: classify", unit="photo", leave=False):
        key, image = ("photos", face.index), images[face.index]
        views = photo_views(face, image, jitter_draws(pool, args, 0, face.index))
        classify_views(clf, served, key, views, args.margins, tta)
        for view in CLIPPED:
            if view in views:
                clf.add((*key, f"{view}_clipped", 0.0, 0), served.crop(*views[view][:2], clipped=True))
                views[f"{view}_clipped"] = views[view]
        share = outside(face.box, image.shape, margin)
        for view, (_, _, in_photo) in views.items():
            facts[(*key, view)] = {"box_iou": iou(in_photo, face.box), "crop_outside_photo": share}
        keys.append(key)
        targets.append(labels.index(face.label) if face.label in labels else None)
    return keys, targets, facts


def crop_shape_report(clf, keys, targets, labels, facts) -> dict:
    """The served square crops (what lies outside the photo filled from its border) against the crops cut off at
    the photo's edge (as served before): accuracy, and agreement of the canvas copies with the photo for each."""
    brief = lambda c: c and {k: c[k] for k in ("faces", "lost", "agreement", "tv")}  # noqa: E731
    shares = np.array([facts[(*k, "original")]["crop_outside_photo"] for k in keys])
    served = {v: compare_view(clf, keys, v, labels, 1, facts=facts) for v in CLIPPED[1:]}
    return {
        "crop_outside_photo": {"median": r4(np.median(shares)), "share_over_0.1": r4((shares >= 0.1).mean())},
        "accuracy": {
            "square": accuracy(clf, keys, targets),
            "clipped": accuracy(clf, keys, targets, "original_clipped"),
        },
        "balanced_accuracy": {
            "square": balanced_accuracy(clf, keys, targets),
            "clipped": balanced_accuracy(clf, keys, targets, "original_clipped"),
        },
        "clipped_vs_square_crop": brief(compare_view(clf, keys, "original_clipped", labels, 1)),
        **{f"{v}_square": brief(served[v]) for v in CLIPPED[1:]},
        **{
            f"{v}_clipped": compare_view(clf, keys, f"{v}_clipped", labels, 1, facts=facts, ref="original_clipped")
            for v in CLIPPED[1:]
        },
    }


def run_val(clf, served, name: str, faces: list[ValFace], pool, args, set_no: int) -> tuple[list, list]:
    tta, margin = tta_moves(pool), served.spec.face_margin
    keys = []
    for i, face in enumerate(tqdm(faces, desc=f"{name}: classify", unit="face", leave=False)):
        views = val_views(face, margin, jitter_draws(pool, args, set_no, i))
        classify_views(clf, served, (name, i), views, args.margins, tta, bars=False)
        keys.append((name, i))
    return keys, [f.label for f in faces]


def set_report(clf, keys, targets, views, labels, args, margin, facts=None) -> dict:
    """A set's conditions, margins and test-time averaging (module doc, steps 2 and 3)."""
    draws, margin_views = args.draws, [v for v in views if v in MARGIN_VIEWS]
    accuracies = {"original": accuracy(clf, keys, targets), "balanced": balanced_accuracy(clf, keys, targets)}
    for view in views:
        per = [accuracy(clf, keys, targets, name) for name in names_of(view, draws)]
        accuracies[view] = r4(np.mean([a for a in per if a is not None])) if any(a is not None for a in per) else None
    margins = []
    for offset in sorted({0.0, *args.margins}):
        row = {"margin": round(margin + offset, 4), "accuracy": accuracy(clf, keys, targets, offset=offset)}
        for view in margin_views:
            c = compare_view(clf, keys, view, labels, draws, offset)
            row[view] = c and {"agreement": c["agreement"], "tv": c["tv"]}
        margins.append(row)
    tta = {"accuracy": {"single": accuracies["original"], "averaged": accuracy(clf, keys, targets, tta=True)}}
    for view in margin_views:
        one, three = (compare_view(clf, keys, view, labels, draws, tta=t) for t in (False, True))
        tta[view] = {
            "single": one and {"agreement": one["agreement"], "tv": one["tv"]},
            "averaged": three and {"agreement": three["agreement"], "tv": three["tv"]},
        }
    return {
        "faces": len(keys),
        "accuracy": accuracies,
        "conditions": {v: compare_view(clf, keys, v, labels, draws, facts=facts) for v in views},
        "margins": margins,
        "tta": tta,
    }


def tta_cost(served: Served, faces: list[ValFace], repeats: int = 3) -> dict:
    """Model milliseconds per face for one crop and for three (test-time averaging), interleaved in one run."""
    predictor, spec = served.loaded.predictor, served.spec
    one = np.stack([to_uint8_face(f.crop, spec) for f in faces[:64]])
    three = np.concatenate([one, one, one])
    spent = {"one_crop": 0.0, "three_crops": 0.0}
    for _ in range(repeats):
        for name, batch in (("one_crop", one), ("three_crops", three)):
            started = time.perf_counter()
            predictor.predict_faces(batch)
            spent[name] += time.perf_counter() - started
    ms = {name: round(s / repeats / len(one) * 1000, 3) for name, s in spent.items()}
    return {"faces": len(one), "ms_per_face": ms, "ratio": round(ms["three_crops"] / ms["one_crop"], 2)}


# --- still clips --------------------------------------------------------------------------------------------------


def best_track(tracks: list, expected: Box):
    """The track whose median box overlaps ``expected`` most (IoU >= 0.3), or None."""
    scored = [(iou(median_box([s.box for s in tr.timeline]), expected), tr) for tr in tracks]
    best = max(scored, key=lambda s: s[0], default=(0.0, None))
    return best[1] if best[0] >= 0.3 else None


def frames_at(path: str, indices: set[int]) -> dict[int, np.ndarray]:
    """The decoded frames at ``indices`` (OpenCV, as the pipeline's sampler decodes)."""
    cap, out, i = cv2.VideoCapture(path), {}, 0
    while len(out) < len(indices):
        ok, frame = cap.read()
        if not ok:
            break
        if i in indices:
            out[i] = frame
        i += 1
    cap.release()
    return out


def clip_track(served: Served, path: str, track, photo_label: int, canvas_label: int, tau: float) -> dict:
    """One still clip's track: label sequences as served, and re-cut from its raw and its steadied boxes (EMA over
    probabilities off and on), and the boxes' deviations from their median."""
    times = np.array([s.t for s in track.timeline])
    raw = [s.box for s in track.timeline]
    steady = smooth_boxes(times.tolist(), raw)
    frames = frames_at(path, {s.frame for s in track.timeline})
    labels = served.loaded.manifest.labels
    out = {
        "photo_label": photo_label,
        "canvas_label": canvas_label,
        "served": [labels.index(s.prediction.dominant) for s in track.timeline],
    }
    for name, boxes in (("raw_boxes", raw), ("steady_boxes", steady)):
        crops = [served.crop(frames[s.frame], box) for s, box in zip(track.timeline, boxes, strict=True)]
        p = served.loaded.predictor.predict(crops).probabilities
        out[f"{name}_ema_off"] = p.argmax(1).tolist()
        out[f"{name}_ema_on"] = smooth(times, p, tau).argmax(1).tolist()
        ref = median_box(boxes)
        out[f"{name}_deviation"] = [deviation(b, ref) for b in boxes]
    return out


async def run_clips(served: Served, faces: list[PhotoFace], images, clf: Classifier, n: int) -> dict:
    """Still clips of the first ``n`` photo faces through the video pipeline (module doc, step 4)."""
    opts, tracks, lost = resolve_options(served.settings), [], 0
    with tempfile.TemporaryDirectory() as tmp:
        for face in tqdm(faces[:n], desc="still clips", unit="clip", leave=False):
            canvas, placed = on_canvas(images[face.index])
            path = str(Path(tmp) / f"{face.index}.mp4")
            write_still(path, canvas, round(CLIP_SECONDS * CLIP_FPS))
            result = await served.video.analyse(path, served.loaded, opts)
            track = best_track(result.tracks, placed.to_copy(face.box))
            if track is None:
                lost += 1
                continue
            label = int(clf.get(("photos", face.index, "original", 0.0, 0)).argmax())
            canvas = clf.get(("photos", face.index, "canvas", 0.0, 0))  # the clip's frame as a still
            canvas_label = -1 if canvas is None else int(canvas.argmax())
            tracks.append(clip_track(served, path, track, label, canvas_label, opts.smoothing))
    return clip_report(tracks, lost, opts.sample_fps, opts.smoothing, opts.steady_boxes)


def sequence_stats(tracks: list[dict], name: str) -> dict:
    """Label flips per 10 samples, clips with a flip, segments per clip, and agreement with the photo's label
    (the majority label per clip, and per sample) and of the majority with the clip's frame as a still."""
    flips = [sum(a != b for a, b in zip(t[name], t[name][1:], strict=False)) for t in tracks]
    steps = sum(len(t[name]) - 1 for t in tracks)
    majority = [Counter(t[name]).most_common(1)[0][0] == t["photo_label"] for t in tracks]
    samples = [x == t["photo_label"] for t in tracks for x in t[name]]
    still = [Counter(t[name]).most_common(1)[0][0] == t["canvas_label"] for t in tracks if t["canvas_label"] >= 0]
    return {
        "flips_per_10_samples": r4(10 * sum(flips) / max(steps, 1)),
        "clips_with_a_flip": r4(np.mean([f > 0 for f in flips])),
        "segments_per_clip": r4(1 + np.mean(flips)),
        "majority_agreement": r4(np.mean(majority)),
        "sample_agreement": r4(np.mean(samples)),
        "majority_agreement_with_the_frame_as_a_still": r4(np.mean(still)) if still else None,
    }


def clip_report(tracks: list[dict], lost: int, fps: float, tau: float, steady: bool) -> dict:
    names = ["served", "raw_boxes_ema_off", "raw_boxes_ema_on", "steady_boxes_ema_off", "steady_boxes_ema_on"]
    if not tracks:
        return {"clips": 0, "lost": lost}
    cut = "steady_boxes_ema_on" if steady else "raw_boxes_ema_on"  # how the pipeline cut them (``steady_boxes``)
    reproduced = np.mean([a == b for t in tracks for a, b in zip(t["served"], t[cut], strict=True)])
    return {
        "clips": len(tracks),
        "lost": lost,
        "seconds": CLIP_SECONDS,
        "sample_fps": fps,
        "ema_tau_s": tau,
        "samples": sum(len(t["served"]) for t in tracks),
        "steady_boxes_served": steady,
        "served_reproduced_share": r4(reproduced),  # the re-cut as served, EMA on, against the served labels
        "labels": {name: sequence_stats(tracks, name) for name in names},
        "box_noise_in_clips": {
            name: spread(np.array([d for t in tracks for d in t[f"{name}_deviation"]]))
            for name in ("raw_boxes", "steady_boxes")
        },
    }


# --- the run ------------------------------------------------------------------------------------------------------


def measure_stills(served: Served, args) -> tuple[dict, Classifier, list[PhotoFace], dict]:
    """Steps 1-3 of the module doc; the classified crops and the photo faces, for the clips."""
    labels, margin = list(served.loaded.manifest.labels), served.spec.face_margin
    faces, images, missed = detect_photos(served, args.limit, args.seed)
    noise, pool = noise_report(faces)
    clf = Classifier(served)
    keys, targets, facts = run_photos(clf, served, faces, images, pool, args)
    vals = {name: val_faces(name, root, args.val_limit, args.seed, labels) for name, root in VAL_SETS.items()}
    val_keys = {name: run_val(clf, served, name, v, pool, args, n) for n, (name, v) in enumerate(vals.items(), 1)}
    clf.flush()
    sets = {"photos": set_report(clf, keys, targets, [*STILLS, *JITTERED], labels, args, margin, facts)}
    sets["photos"]["photos_without_a_face"] = missed
    sets["photos"]["crop_shapes"] = crop_shape_report(clf, keys, targets, labels, facts)
    for name, (k, t) in val_keys.items():
        sets[name] = set_report(clf, k, t, [*VAL_STILLS, "jitter"], labels, args, margin)
    tta = {"moves": [[r4(v) for v in m] for m in tta_moves(pool)], "cost": tta_cost(served, vals["rafdb_val"])}
    return {"detector_noise": noise, "sets": sets, "tta": tta}, clf, faces, images


async def run(args: argparse.Namespace) -> dict:
    settings, started = service_settings(), time.perf_counter()
    registry = ModelRegistry(settings, Metrics())
    try:
        loaded = await registry.get(args.model, args.version)
        served = Served.build(settings, loaded)
        stills, clf, faces, images = measure_stills(served, args)
        clips = await run_clips(served, faces, images, clf, args.clips)
    finally:
        await registry.close()
    return {
        "model": loaded.manifest.key,
        "labels": list(loaded.manifest.labels),
        "backend": settings.backend,
        "detector": settings.detector.backend,
        "mirror_tta": settings.tta,
        "tta_margin": loaded.predictor.tta_margin,
        "face_margin": served.spec.face_margin,
        "limits": {"photos": args.limit, "val_faces_per_set": args.val_limit, "clips": args.clips, "draws": args.draws},
        **stills,
        "clips": clips,
        "seconds": round(time.perf_counter() - started, 1),
    }


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(13, 9))
    conditions = [*STILLS, *JITTERED]
    for k, (name, s) in enumerate(report["sets"].items()):
        values = [(s["conditions"].get(c) or {}).get("agreement", np.nan) for c in conditions]
        axes[0, 0].bar(np.arange(len(conditions)) + 0.27 * (k - 1), values, 0.27, label=name)
    axes[0, 0].set_xticks(range(len(conditions)), conditions, rotation=20, fontsize=8)
    axes[0, 0].set(ylim=(0.5, 1.0), ylabel="label agreement with the unperturbed face", title="stills")
    photos = report["sets"]["photos"]["conditions"]
    for c in conditions:
        bands = photos[c]["per_margin_band"]
        axes[0, 1].plot(list(bands), [(b or {}).get("agreement", np.nan) for b in bands.values()], "o-", label=c)
    axes[0, 1].set(xlabel="top-1 minus top-2 of the unperturbed face", ylabel="agreement", title="photos by margin")
    for name, s in report["sets"].items():
        view = "canvas_jitter" if name == "photos" else "jitter"
        rows = s["margins"]
        axes[1, 0].plot(
            [r["margin"] for r in rows],
            [(r[view] or {}).get("agreement") for r in rows],
            "o-",
            label=f"{name}: {view} agreement",
        )
        axes[1, 0].plot([r["margin"] for r in rows], [r["accuracy"] for r in rows], "x--", label=f"{name}: accuracy")
    axes[1, 0].set(xlabel="face margin", title=f"margins (served: {report['face_margin']})")
    clips = report["clips"].get("labels", {})
    axes[1, 1].bar(range(len(clips)), [c["flips_per_10_samples"] for c in clips.values()], 0.4, label="flips / 10")
    axes[1, 1].bar(
        np.arange(len(clips)) + 0.4,
        [c["majority_agreement"] for c in clips.values()],
        0.4,
        label="majority = photo's label",
    )
    axes[1, 1].set_xticks(np.arange(len(clips)) + 0.2, list(clips), rotation=20, fontsize=8)
    axes[1, 1].set(title=f"still clips ({report['clips'].get('clips', 0)}): boxes and EMA")
    for ax in axes.ravel():
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def show(report: dict) -> None:
    noise = report["detector_noise"]
    print("detector noise around the median box:", noise["around_the_median_box"])
    print("re-detection from the photo's box:", noise["from_the_photos_box"])
    for name, s in report["sets"].items():
        print(f"{name} ({s['faces']} faces, accuracy {s['accuracy']['original']}):")
        for c, r in s["conditions"].items():
            print(f"  {c:14s} agreement {r['agreement']:.3f}  tv {r['tv']:.3f}  (lost {r['lost']})")
        for row in s["margins"]:
            print("  margin", row)
        print("  tta", s["tta"])
    print("tta cost", report["tta"]["cost"])
    for name, c in report["clips"].get("labels", {}).items():
        print(f"clips {name:22s} {c}")


def main(args: argparse.Namespace) -> dict:
    report = asyncio.run(run(args))
    output = args.output or find_entry(args.model, args.version).folder / "reports" / "stability"
    output.mkdir(parents=True, exist_ok=True)
    (output / "stability.json").write_text(json.dumps(report, indent=1))
    plot(report, output / "stability.png")
    show(report)
    print(f"wrote {output / 'stability.json'} in {report['seconds']} s")
    return report


if __name__ == "__main__":
    main(get_args_parser().parse_args())
