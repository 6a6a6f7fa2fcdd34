"""benchmarks.bench_video on a short clip: the request, the decoder's own ceiling and the naive baseline each run,
and the ceiling bounds the request (no speed asserted: speed figures belong to the script)."""

from __future__ import annotations

import json

import pytest

from benchmarks import bench_video

pytestmark = pytest.mark.usefixtures("photo_paths")  # the clip is made of the shared photos


def test_a_short_run_reports_the_request_under_the_decoders_ceiling(tmp_path, capsys):
    out = tmp_path / "bench_video.json"
    result = bench_video.main(bench_video.get_args_parser().parse_args(["--seconds", "3", "--json", str(out)]))
    assert result["frames_analyzed"] == 15 and result["timings"]["frames_decoded"] == 90
    assert 0 < result["decoder_alone_s"] < result["wall_s"]  # decoding alone is part of what a request does
    assert result["decoder_alone_cpu_s"] > 0 and result["cpu_s"] > result["decoder_alone_cpu_s"]
    assert result["realtime_factor"] < result["decoder_ceiling"] == pytest.approx(3.0 / result["decoder_alone_s"])
    assert json.loads(out.read_text())["decoder_ceiling"] == pytest.approx(result["decoder_ceiling"])
    assert "decoder alone:" in capsys.readouterr().out


def test_the_quiet_passes_benchmark_compares_the_setting_with_every_pass_run(tmp_path, capsys):
    from benchmarks import quiet_passes

    args = quiet_passes.get_args_parser().parse_args(["--seconds", "6", "--rounds", "1", "--output", str(tmp_path)])
    result = quiet_passes.main(args)
    off, on = result["sparse"]["off"], result["sparse"]["quiet_passes=3"]
    assert off["detection"]["full_frame_passes_put_off"] == 0 and on["detection"]["full_frame_passes_put_off"] > 10
    assert on["faces_found_as_off"] == 1.0 and on["tracks"] == [1, 1]  # the one face, on every sample off finds it
    assert result["pan"]["quiet_passes=3"]["detection"]["full_frame_passes_put_off"] == 0  # nothing still in a pan
    assert json.loads((tmp_path / "quiet_passes.json").read_text())["sparse"]["off"]["tracks"] == [1, 1]
    assert (tmp_path / "quiet_passes.png").exists() and "labels" in capsys.readouterr().out
