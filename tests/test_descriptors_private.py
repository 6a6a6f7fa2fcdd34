"""A face descriptor never leaves the process: a clip with two people (one of them twice) goes through ``POST
/predict/video``, a background job in the API process, a job on Redis run by a real worker, and the offline scorer;
every descriptor the service computed is recorded here, and none of them, nor any long run of numbers or a key
naming one, appears in a response, a job result, a stored file, a Redis value, a log line or the metrics."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
import redis

pytest.register_assert_rewrite("tests.jobs_support")

from benchmarks.synth import Appearance, write_clip  # noqa: E402
from service.identity import FaceDescriber  # noqa: E402
from tests.conftest import upload  # noqa: E402
from tests.jobs_support import submit, wait_job  # noqa: E402

pytest_plugins = ("tests.jobs_support",)  # fixtures: redis_url, queue_name, workers

NUMBER = re.compile(r"-?\d+\.\d+(?:[eE]-?\d+)?")
# 32 or more numbers in a row, separated by commas, spaces or brackets: a vector (a person's CSV row holds 25)
NUMBER_RUN = re.compile(r"(?:-?\d+(?:\.\d+)?(?:[eE]-?\d+)?[\s,;\[\]]+){32,}")


@pytest.fixture
def recorded(monkeypatch) -> list[np.ndarray]:
    """Every descriptor computed in this process from now on."""
    seen: list[np.ndarray] = []
    describe = FaceDescriber.describe

    def recording(self, chips):
        out = describe(self, chips)
        seen.extend(out)
        return out

    monkeypatch.setattr(FaceDescriber, "describe", recording)
    return seen


@pytest.fixture(scope="module")
def two_people(photo_paths, tmp_path_factory) -> Path:
    """Person A, person B, A again in another photo: three tracks, two persons, nine descriptors."""
    by_person: dict[str, list[Path]] = {}
    for path in photo_paths:
        by_person.setdefault(re.sub(r"_\d+$", "", path.stem), []).append(path)
    a = next(n for n, p in sorted(by_person.items()) if len(p) >= 2)
    b = next(n for n in sorted(by_person) if n != a)
    shots = [cv2.resize(cv2.imread(str(p)), (260, 260)) for p in (by_person[a][0], by_person[b][0], by_person[a][1])]
    path = tmp_path_factory.mktemp("private") / "ab.mp4"
    return write_clip(path, [Appearance(s, 2.0 * i, 2.0 * (i + 1), (190, 110)) for i, s in enumerate(shots)], 6.0)


def keys(value) -> list[str]:
    if isinstance(value, dict):
        return [*value, *(k for v in value.values() for k in keys(v))]
    if isinstance(value, list):
        return [k for v in value for k in keys(v)]
    return []


def assert_private(text: str, descriptors: list[np.ndarray], where: str) -> None:
    """No run of 32+ numbers, no descriptor component set (rounded to 5 decimals, 16 of 128 matching by chance is
    out of reach), no key naming a descriptor in JSON."""
    assert not NUMBER_RUN.search(text), f"{where}: a run of numbers: {NUMBER_RUN.search(text).group(0)[:200]}"
    numbers = {round(float(n), 5) for n in NUMBER.findall(text)}
    for d in descriptors:
        hits = sum(round(float(v), 5) in numbers for v in d if abs(v) > 1e-3)
        assert hits < 16, f"{where}: {hits} of a descriptor's values appear"
    try:
        body = json.loads(text)
    except ValueError:
        return
    named = [k for k in keys(body) if re.search("descriptor|embedding|encoding", k, re.I)]
    assert not named, f"{where}: keys {named}"


def test_no_answer_job_file_log_or_metric_carries_a_descriptor(
    make_client, recorded, two_people, caplog, tmp_path, redis_url, queue_name, workers
):
    caplog.set_level(logging.DEBUG)
    client = make_client(jobs_dir=tmp_path / "local-jobs")
    texts: dict[str, str] = {}
    response = client.post("/predict/video?sample_fps=5", files=upload(two_people.read_bytes(), "v.mp4", "video/mp4"))
    assert response.status_code == 200 and len(response.json()["persons"]) == 2, response.text
    texts["/predict/video"] = response.text
    job = wait_job(client, submit(client, two_people, "sample_fps=5"), timeout=120)
    assert job["status"] == "succeeded" and len(job["result"]["persons"]) == 2
    texts["embedded job"] = json.dumps(job)
    texts["/metrics"] = client.get("/metrics").text
    assert len(recorded) >= 6  # three tracks, up to three faces each, twice

    jobs_dir = tmp_path / "jobs"
    pool = workers(jobs_dir)
    pool.start(1)
    queued = make_client(jobs_dir=jobs_dir, queue={"url": redis_url, "name": queue_name})
    job = wait_job(queued, submit(queued, two_people, "sample_fps=5"), timeout=120)
    assert job["status"] == "succeeded" and len(job["result"]["persons"]) == 2
    texts["redis job"] = json.dumps(job)
    r = redis.Redis.from_url(redis_url)
    for key in [*r.scan_iter(f"{queue_name}:*"), *r.scan_iter("arq:*")]:
        if r.type(key) == b"string":
            texts[f"redis {key!r}"] = r.get(key).decode("latin-1")
        elif r.type(key) == b"zset":
            texts[f"redis {key!r}"] = " ".join(m.decode("latin-1") for m in r.zrange(key, 0, -1))
    texts["worker metrics"] = pool.metrics(pool.procs[0])
    texts["worker log"] = pool.log(pool.procs[0])

    from service.score import get_args_parser, main

    out = tmp_path / "scored"
    assert main(get_args_parser().parse_args([str(two_people), "--output", str(out), "--no-plot"])) == 0
    stored = [p for folder in (out, jobs_dir, tmp_path / "local-jobs") for p in folder.rglob("*") if p.is_file()]
    for p in stored:
        try:
            texts[str(p)] = p.read_bytes().decode()
        except UnicodeDecodeError:  # the uploaded clips
            continue
    texts["logs"] = "\n".join(record.getMessage() for record in caplog.records)
    assert (out / "ab.persons.csv").is_file() and any(name.endswith(".json") for name in texts)
    for where, text in texts.items():
        assert_private(text, recorded, where)


def test_the_check_finds_a_descriptor_where_one_is_leaked(recorded, two_people):
    """The assertion above can fail: a descriptor in a JSON body, rounded or not, or as a plain list, is caught."""
    vector = FaceDescriber().describe(np.zeros((1, 150, 150, 3), np.uint8))[0]
    for leak in (
        json.dumps({"tracks": [], "persons": [{"descriptor": vector.tolist()}]}),
        json.dumps({"person": [round(float(v), 5) for v in vector]}),
        "linked " + " ".join(f"{v:.6f}" for v in vector[:40]),
    ):
        with pytest.raises(AssertionError):
            assert_private(leak, recorded, "leak")
