"""The offline scorer: the service's pipeline over local files, with JSON, CSV and PNG per input."""

from __future__ import annotations

import csv
from pathlib import Path

import cv2

from benchmarks.synth import Appearance, write_clip
from service.schemas import ImagePredictionResponse, VideoPredictionResponse
from service.score import get_args_parser, main, output_names


def read_csv(path: Path) -> list[dict]:
    with path.open() as f:
        return list(csv.DictReader(f))


def test_scoring_a_folder_writes_results_per_input_and_reports_bad_files(face_photo, tmp_path):
    inputs, out = tmp_path / "in", tmp_path / "out"
    (inputs / "nested").mkdir(parents=True)
    cv2.imwrite(str(inputs / "photo.jpg"), face_photo)
    write_clip(inputs / "nested" / "clip.mp4", [Appearance(face_photo, 0, 2.0, (100, 60))], 2.0)
    (inputs / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (inputs / "notes.txt").write_text("not scored: no image or video suffix")

    status = main(get_args_parser().parse_args([str(inputs), "--output", str(out), "--sample-fps", "4"]))

    assert status == 1  # one input failed
    summary = {Path(r["file"]).name: r for r in read_csv(out / "summary.csv")}
    assert set(summary) == {"photo.jpg", "clip.mp4", "broken.png"} and summary["broken.png"]["error"]
    image = ImagePredictionResponse.model_validate_json((out / "photo.json").read_text())
    video = VideoPredictionResponse.model_validate_json((out / "clip.json").read_text())
    assert len(image.faces) == 1 and len(read_csv(out / "photo.csv")) == 1
    assert len(video.tracks) == 1 and len(read_csv(out / "clip.csv")) == len(video.tracks[0].timeline) >= 7
    assert (out / "photo.png").stat().st_size > 0 and (out / "clip.png").stat().st_size > 0


def test_inputs_sharing_a_name_get_distinct_outputs():
    assert output_names([Path("a/x.jpg"), Path("b/x.mp4"), Path("y.jpg")]) == ["x", "x-2", "y"]
