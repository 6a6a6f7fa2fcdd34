"""The RetinaFace backend: its pure geometry (priors, decoding, HOG-like boxes), the weights read from the model
store (and the error for a bad entry), real detections beside HOG's, its smallest face, and the service answering
with ``EMOTION_DETECTOR__BACKEND=retinaface``."""

from __future__ import annotations

import math
import shutil

import cv2
import numpy as np
import pytest

from model_store import find
from service.config import DetectorSettings, Settings
from service.detection import DETECTORS, DlibHogDetector, create_detector
from service.detection.base import Detection
from service.detection.retinaface import (
    RETINA_WINDOW,
    RetinaFaceDetector,
    RetinaFaceSettings,
    anchors,
    decode,
    hog_like,
    load_weights,
    without_small_face_level,
)
from service.video.regions import FrameDetector
from tests.conftest import jpeg, upload
from tests.test_detection_backends import face_on_canvas, iou
from tests.test_tracking import options


@pytest.fixture(scope="module")
def retina() -> RetinaFaceDetector:
    return RetinaFaceDetector()


def test_priors_cover_every_stride_with_the_sizes_varying_fastest():
    priors = anchors(64, 96)  # 8x12 cells at stride 8, 4x6 at 16, 2x3 at 32; two sizes per cell
    assert priors.shape == (2 * (96 + 24 + 6), 4)
    assert priors[:2].tolist() == [[4, 4, 16, 16], [4, 4, 32, 32]]
    assert priors[2].tolist() == [12, 4, 16, 16]  # x moves first
    assert priors[2 * 96].tolist() == [8, 8, 64, 64] and priors[-1].tolist() == [80, 48, 512, 512]


def test_decoding_zero_offsets_gives_the_prior_box():
    priors = np.array([[50, 40, 20, 10]], np.float32)
    assert decode(np.zeros((1, 4), np.float32), priors).tolist() == [[40, 35, 60, 45]]
    moved = decode(np.array([[1.0, 0.0, 0.0, 0.0]], np.float32), priors)  # 0.1 of the prior's width to the right
    assert moved[0, 0] == pytest.approx(42.0)


def test_hog_like_boxes_are_square_a_little_lower_and_keep_the_area_scale():
    ((x0, y0, x1, y1),) = hog_like(np.array([[100, 100, 200, 240]], np.float32))
    assert x1 - x0 == pytest.approx(y1 - y0) == pytest.approx(0.94 * np.sqrt(100 * 140), rel=1e-4)
    assert (x0 + x1) / 2 == pytest.approx(150 - 1.5) and (y0 + y1) / 2 == pytest.approx(170 + 0.032 * 140)


def test_registry_and_settings_from_the_environment(monkeypatch):
    assert DETECTORS["retinaface"] is RetinaFaceDetector
    monkeypatch.setenv("EMOTION_DETECTOR__BACKEND", "retinaface")
    monkeypatch.setenv("EMOTION_DETECTOR__RETINAFACE__THRESHOLD", "0.6")
    detector = Settings(_env_file=None).detector
    assert detector.backend_settings() == detector.retinaface and detector.retinaface.threshold == 0.6
    with pytest.raises(ValueError, match="nms"):
        RetinaFaceSettings(nms=0)


def test_weights_come_from_the_store_entry_with_its_checksum_and_terms(tmp_path):
    entry = find("retinaface")
    assert entry.manifest.task == "face-detection" and entry.manifest.kind.component
    assert "MIT" in entry.manifest.license and "WIDER FACE" in entry.manifest.dataset["name"]
    assert (entry.folder / "LICENSE").is_file()
    assert load_weights()[:2] == b"\x08\x06"  # an ONNX ModelProto (ir_version field first), checksum verified
    # a corrupted copy of the entry is refused with a message naming the entry and the fix
    store = tmp_path / "store"
    shutil.copytree(entry.folder, store / "retinaface" / "1.0.0")
    (store / "retinaface" / "1.0.0" / "model.onnx").write_bytes(b"\x08\x06 not a graph")
    with pytest.raises(RuntimeError, match=r"retinaface:1.0.0: checksum mismatch.*reinstall"):
        create_detector(DetectorSettings(backend="retinaface", retinaface={"store_path": store}))
    with pytest.raises(RuntimeError, match=r"no model 'retinaface' version '9.9'"):
        create_detector(DetectorSettings(backend="retinaface", retinaface={"version": "9.9"}))


def test_the_detector_entry_is_never_served_as_a_model(client, face_photo):
    names = {m["name"] for m in client.get("/models").json()["models"]}
    assert "retinaface" not in names and "emotion_transfer" in names
    assert client.post("/predict/face?model=retinaface", files=upload(jpeg(face_photo))).status_code == 404


def test_finds_the_face_hog_finds_in_a_real_photo_in_its_geometry(retina, face_photo):
    (face,), (hog,) = retina.detect(face_photo), DlibHogDetector().detect(face_photo)
    h, w = face_photo.shape[:2]
    assert iou(face, hog) > 0.6 and face.score > 0.9
    assert face.x + face.width <= w and face.y + face.height <= h
    raw = RetinaFaceDetector(RetinaFaceSettings(hog_like=False)).detect(face_photo)[0]
    assert iou(raw, hog) < iou(face, hog)


def test_boxes_are_in_the_callers_pixels_and_grayscale_works(retina, face_photo):
    big = cv2.resize(face_photo, None, fx=3, fy=3)  # scanned at 320 px: boxes must come back x3
    (large,), (small,) = retina.detect(cv2.cvtColor(big, cv2.COLOR_BGR2GRAY)), retina.detect(face_photo)
    assert 2.7 * small.width < large.width < 3.3 * small.width
    assert abs(large.x - 3 * small.x) < 0.1 * large.width


def test_one_channel_and_bgra_images_find_what_bgr_finds(retina, face_photo):
    """Gray as ``HxW`` or ``HxWx1`` and BGRA all reach the graph as the three channels it reads."""
    gray = cv2.cvtColor(face_photo, cv2.COLOR_BGR2GRAY)
    expected = [d.box for d in retina.detect(gray)]
    assert expected and [d.box for d in retina.detect(gray[:, :, None])] == expected
    bgra = cv2.cvtColor(face_photo, cv2.COLOR_BGR2BGRA)
    assert [d.box for d in retina.detect(bgra)] == [d.box for d in retina.detect(face_photo)]


def test_smallest_face_is_truthful(retina, face_photo):
    (face,) = retina.detect(face_photo)
    assert retina.smallest_face() == RETINA_WINDOW and retina.smallest_face(2.0) == RETINA_WINDOW / 2
    assert len(retina.detect(face_on_canvas(face_photo, face, round(1.2 * RETINA_WINDOW)))) == 1


def test_large_scans_run_on_their_own_session_with_the_same_answer(retina, face_photo):
    big = cv2.resize(face_photo, (700, 700))
    both = RetinaFaceDetector(RetinaFaceSettings(max_side=700, large_scan_pixels=0))  # every scan counts as large
    assert both._sessions[True, True] is not both._sessions[True, False]
    assert both.detect(big) == RetinaFaceDetector(RetinaFaceSettings(max_side=700, large_scan_threads=1)).detect(big)
    same = RetinaFaceDetector(RetinaFaceSettings(large_scan_threads=1))
    assert sorted(same._sessions) == [(False, False), (True, False)]  # one thread for both: a session per graph


def test_a_lone_photo_scans_on_two_threads_and_concurrent_scans_or_regions_on_one(retina):
    """A 640x480 photo scans at 320x240 (77k pixels): the large-scan session while no other scan runs, the
    one-thread session while another does; a video's 211-px region takes one thread either way, its 640x360
    full-frame pass two either way."""
    assert retina.scale_for(480, 640) == 0.5
    photo = 320 * 240
    assert retina._session(photo, True, alone=True)[0] is retina._sessions[True, True]
    assert retina._session(photo, True, alone=False)[0] is retina._sessions[True, False]
    assert retina._session(211 * 211, False, alone=True)[0] is retina._sessions[False, False]
    assert retina._session(640 * 360, False, alone=False)[0] is retina._sessions[False, True]
    with retina._counted() as first, retina._counted() as second:
        assert first and not second
    with retina._counted() as again:
        assert again  # the count went back to zero


def test_the_graph_without_its_small_face_level_gives_the_other_levels_rows_unchanged(retina):
    """The cut graph's outputs are the whole graph's rows past the stride-8 level's, to the bit, and its priors
    are the whole graph's past that level: the same boxes for every face the other levels find."""
    h, w = 200, 328
    x = (np.random.default_rng(0).random((1, 3, h, w), np.float32) * 255 - 120).astype(np.float32)
    whole = retina._sessions[True, False].run(None, {"input": x})
    cut = retina._sessions[False, False].run(None, {"input": x})
    stride_8_rows = 2 * math.ceil(h / 8) * math.ceil(w / 8)
    for full_rows, cut_rows in zip(whole, cut, strict=True):
        assert cut_rows.shape[1] == full_rows.shape[1] - stride_8_rows
        np.testing.assert_array_equal(cut_rows, full_rows[:, stride_8_rows:])
    np.testing.assert_array_equal(anchors(h, w, small_faces=False), anchors(h, w)[stride_8_rows:])
    with pytest.raises(ValueError, match="levels"):  # a graph of another shape is refused, not cut blindly
        without_small_face_level(without_small_face_level(load_weights()))


def levels_run(detector: RetinaFaceDetector, monkeypatch) -> list[bool]:
    """Whether each scan from now on ran the small-face level."""
    ran, choose = [], detector._session

    def spy(pixels: int, small_faces: bool, alone: bool = True):
        session, small = choose(pixels, small_faces, alone)
        ran.append(small)
        return session, small

    monkeypatch.setattr(detector, "_session", spy)
    return ran


def test_scans_that_seek_faces_from_the_window_up_skip_the_small_face_level(face_photo, monkeypatch):
    """A min_face (video passes and regions, min_face_size requests) puts it at the window in the scan: the cut
    graph, and the same face as the whole graph finds. Photos without one keep every level, unless turned off."""
    retina = RetinaFaceDetector()
    ran = levels_run(retina, monkeypatch)
    (face,) = retina.detect(face_photo)
    assert retina.detect(face_photo, min_face=face.width // 2) and ran == [True, False]
    whole_only = RetinaFaceDetector()
    whole_only._sessions = {k: v for k, v in whole_only._sessions.items() if k[0]}  # as without the onnx package
    assert retina.detect(face_photo, face.width // 2) == whole_only.detect(face_photo, face.width // 2)
    fast = RetinaFaceDetector(RetinaFaceSettings(small_faces=False))
    ran = levels_run(fast, monkeypatch)
    assert fast.detect(face_photo) == [face] and ran == [False]
    # a scan capped by max_pixels leaves the face under LARGE_LEVELS_FROM: every level runs
    capped = RetinaFaceDetector(max_pixels=20_000)
    ran = levels_run(capped, monkeypatch)
    capped.detect(face_photo, min_face=8)
    assert ran == [True]


def test_a_videos_whole_frame_pass_and_its_regions_run_the_cut_graph(face_photo, monkeypatch):
    """The wiring: a 720p frame's pass (its smallest face from detect_max_side) and the region around the track it
    starts both seek faces from the window up, and find the face."""
    retina = RetinaFaceDetector()
    (face,) = retina.detect(face_photo)
    frame = np.full((720, 1280, 3), 128, np.uint8)
    small = cv2.resize(face_photo, None, fx=200 / face.width, fy=200 / face.width, interpolation=cv2.INTER_AREA)
    h, w = min(small.shape[0], 700), min(small.shape[1], 1000)
    frame[10 : 10 + h, 200 : 200 + w] = small[:h, :w]
    ran = levels_run(retina, monkeypatch)
    finder = FrameDetector(retina, options(detect_max_side=640, full_detect_every=5))
    (whole,) = finder.detect(frame, 0, [])
    (near,) = finder.detect(frame, 1, [whole.box])
    assert ran == [False, False] and finder.counts["regions_searched"] == 1
    assert iou(whole, near) > 0.8


def test_without_the_onnx_package_every_scan_runs_the_whole_graph(face_photo, monkeypatch, caplog):
    import sys

    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx raises ImportError
    with caplog.at_level("INFO", logger="service.detection.retinaface"):
        retina = RetinaFaceDetector(RetinaFaceSettings(small_faces=False))
    assert {small for small, _ in retina._sessions} == {True} and "no onnx package" in caplog.text
    ran = levels_run(retina, monkeypatch)
    assert len(retina.detect(face_photo, min_face=60)) == 1 and ran == [True]


def test_a_graph_laid_out_otherwise_is_served_whole_with_a_warning(monkeypatch, caplog):
    """A store entry whose outputs are not three concatenated levels loads as before, uncut, and says why."""
    import service.detection.retinaface as retinaface

    two_levels = without_small_face_level(load_weights())
    monkeypatch.setattr(retinaface, "load_weights", lambda settings=None: two_levels)
    with caplog.at_level("WARNING", logger="service.detection.retinaface"):
        retina = RetinaFaceDetector()
    assert {small for small, _ in retina._sessions} == {True}
    assert "joins 2 levels, not 3" in caplog.text and "whole graph" in caplog.text


def test_no_face_in_noise_or_a_blank_image(retina):
    noise = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    assert retina.detect(noise) == [] and retina.detect(np.full((200, 300), 90, np.uint8)) == []


def test_service_answers_with_the_retinaface_backend(make_client, face_photo):
    client = make_client(detector={"backend": "retinaface"})
    response = client.post("/predict/image", files=upload(jpeg(face_photo)))
    assert response.status_code == 200 and len(response.json()["faces"]) == 1
    box = response.json()["faces"][0]["box"]
    found = Detection(box["x"], box["y"], box["width"], box["height"], 1.0)
    assert iou(found, DlibHogDetector().detect(face_photo)[0]) > 0.6


def test_the_levels_benchmark_finds_the_same_boxes_and_a_cheaper_scan(tmp_path):
    """``benchmarks.detector_levels`` on a few photos and a short clip: what the docs' figures rest on."""
    from benchmarks import detector_levels

    args = detector_levels.get_args_parser().parse_args(
        ["--output", str(tmp_path), "--limit", "40", "--calls", "3", "--canvas-faces", "1", "--clip-seconds", "5"]
    )
    result = detector_levels.main(args)
    for key in ("photos", "video_passes", "video_regions"):
        assert result[key]["scans_differing"] == 0 and result[key]["worst_iou"] == 1.0
    assert result["video_regions"]["scans"] > 0 and result["photos"]["boxes_whole"] > 0
    assert set(result["canvas"]) == set(detector_levels.SIZES)
    assert (tmp_path / "detector_levels.json").is_file()
