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
