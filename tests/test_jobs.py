"""Background video jobs end to end, on real parts: the shipped model, generated clips, real files, a real Redis
and real ``python -m service.worker`` processes (one of them SIGKILLed mid-job)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time

import pytest
import redis

pytest.register_assert_rewrite("tests.jobs_support")

from tests.conftest import metric, upload  # noqa: E402
from tests.jobs_support import (  # noqa: E402
    FINAL,
    answers,
    free_port,
    same_analysis,
    submit,
    wait_job,
    wait_until,
)

pytest_plugins = ("tests.jobs_support",)  # fixtures: redis_url, queue_name, clips, workers

LONG = "sample_fps=15"  # a 20 s 720p clip at 15 samples per second: a few seconds of analysis


def predict(client, clip, query: str = "") -> dict:
    response = client.post(f"/predict/video?{query}", files=upload(clip.read_bytes(), clip.name, "video/mp4"))
    assert response.status_code == 200, response.text
    return response.json()


def job_folders(root) -> list[str]:
    return sorted(p.name for p in root.iterdir() if not p.name.startswith(".")) if root.exists() else []


# --- embedded backend (no EMOTION_QUEUE_URL) ----------------------------------------------------------------------


def test_embedded_job_matches_predict_video_and_moves_the_metrics(make_client, clips, tmp_path):
    client = make_client(jobs_dir=tmp_path / "jobs")
    clip = clips("short", 3.0)
    response = client.post("/jobs/video?sample_fps=8", files=upload(clip.read_bytes(), clip.name, "video/mp4"))
    assert response.status_code == 202, response.text
    accepted = response.json()
    assert set(accepted) == {"id", "status", "created"} and accepted["status"] == "queued"
    assert response.headers["location"] == f"/jobs/{accepted['id']}"

    job = wait_job(client, accepted["id"])
    assert job["status"] == "succeeded" and job["progress"] == 1.0 and job["tries"] == 1, job
    assert job["error"] is None and job["created"] <= job["started"] <= job["finished"] < job["expires"]
    same_analysis(job["result"], predict(client, clip, "sample_fps=8"))
    folder = tmp_path / "jobs" / accepted["id"]
    assert sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) == ["job.json", "result.json"]

    listed = client.get("/jobs").json()
    assert listed["total"] == 1 and listed["jobs"][0]["id"] == accepted["id"] and "result" not in listed["jobs"][0]
    assert client.get("/jobs?status=queued").json()["total"] == 0
    assert client.get("/jobs?status=succeeded").json()["total"] == 1

    def metrics_seen():
        text = client.get("/metrics").text
        return text if metric(text, 'emotion_jobs{status="succeeded"}') == 1 else None

    text = wait_until(metrics_seen, 10, "the jobs gauge never counted the job")
    assert metric(text, 'emotion_jobs_finished_total{status="succeeded"}') == 1
    assert metric(text, "emotion_job_duration_seconds_count") == 1
    assert metric(text, "emotion_job_queue_depth") == 0 and metric(text, "emotion_job_workers") == 1

    # its owner deletes it (a result describes people): record, result and folder go at once
    deleted = client.delete(f"/jobs/{accepted['id']}")
    assert deleted.status_code == 200 and deleted.json()["status"] == "succeeded", deleted.text
    assert client.get(f"/jobs/{accepted['id']}").status_code == 404 and not folder.exists()
    assert client.get("/jobs").json()["total"] == 0
    assert client.delete(f"/jobs/{accepted['id']}").status_code == 404


@pytest.mark.parametrize(
    ("data", "status", "fragment"),
    [
        (b"", 422, "empty"),
        (b"just some text, not a video at all", 415, "unsupported video container"),
        (b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 4000, 422, "could not be opened"),
        (b"\x1a\x45\xdf\xa3" + b"\x13" * 4000, 422, "could not be opened"),
    ],
)
def test_bad_uploads_get_the_synchronous_answers_before_anything_is_queued(
    make_client, tmp_path, data, status, fragment
):
    client = make_client(jobs_dir=tmp_path / "jobs")
    sync = client.post("/predict/video", files=upload(data, "v.mp4", "video/mp4"))
    job = client.post("/jobs/video", files=upload(data, "v.mp4", "video/mp4"))
    assert job.status_code == sync.status_code == status and fragment in job.json()["detail"]
    assert job.json() == sync.json()
    assert client.get("/jobs").json()["total"] == 0 and job_folders(tmp_path / "jobs") == []


def test_job_limits_options_and_models_are_checked_before_queueing(make_client, clips, tmp_path):
    clip = clips("short", 3.0)
    jobs = tmp_path / "jobs"
    too_long = make_client(jobs_dir=jobs, queue={"max_duration_s": 1.0}, max_video_duration_s=1.0)
    answer = too_long.post("/jobs/video", files=upload(clip.read_bytes(), clip.name, "video/mp4"))
    assert answer.status_code == 413 and "limit" in answer.json()["detail"]
    too_big = make_client(jobs_dir=jobs, queue={"max_bytes": 2048})
    assert too_big.post("/jobs/video", files=upload(clip.read_bytes(), clip.name, "video/mp4")).status_code == 413
    for query, code in [("model=nope", 404), ("version=9.9.9", 404), ("start=2&end=1", 422), ("sample_fps=0", 422)]:
        response = too_big.post(f"/jobs/video?{query}", files=upload(b"x" * 100, "v.mp4", "video/mp4"))
        assert response.status_code == code, (query, response.text)
    assert job_folders(jobs) == []
    # Longer than /predict/video accepts, within the job limit: accepted.
    lenient = make_client(jobs_dir=tmp_path / "lenient", max_video_duration_s=1.0)
    assert predict_status(lenient, clip) == 413
    assert wait_job(lenient, submit(lenient, clip))["status"] == "succeeded"


def predict_status(client, clip) -> int:
    return client.post("/predict/video", files=upload(clip.read_bytes(), clip.name, "video/mp4")).status_code


def test_a_disk_under_min_free_bytes_refuses_new_jobs_with_507(make_client, clips, tmp_path):
    """A full disk fails every job and the API's own uploads; a hostile client could fill it with 4 GB clips."""
    clip = clips("short", 3.0)
    client = make_client(jobs_dir=tmp_path / "jobs", queue={"min_free_bytes": 1 << 60})
    answer = client.post("/jobs/video", files=upload(clip.read_bytes(), clip.name, "video/mp4"))
    assert answer.status_code == 507 and "min_free_bytes" in answer.json()["detail"]
    assert job_folders(tmp_path / "jobs") == []


def test_unknown_and_malformed_ids_are_404(make_client, tmp_path):
    client = make_client(jobs_dir=tmp_path / "jobs")
    for job_id in ("0" * 32, "01a20e4a50793f34165c41d7b5156608", "01A20E4A50793F34165C41D7B5156608", "x", "%2e%2e"):
        for method in ("GET", "DELETE"):
            response = client.request(method, f"/jobs/{job_id}")
            assert response.status_code == 404 and "no job" in response.json()["detail"], (method, job_id)


def test_cancelling_queued_and_running_jobs(make_client, clips, tmp_path):
    client = make_client(jobs_dir=tmp_path / "jobs", queue={"embedded_workers": 1, "max_queued": 1})
    long_clip, short_clip = clips("long", 20.0, size=(1280, 720)), clips("short", 3.0)
    running, queued = submit(client, long_clip, LONG), submit(client, short_clip)
    wait_until(lambda: client.get(f"/jobs/{running}").json()["progress"] > 0, 30, "the long job never progressed")
    assert client.get(f"/jobs/{queued}").json()["status"] == "queued"
    full = client.post("/jobs/video", files=upload(short_clip.read_bytes(), short_clip.name, "video/mp4"))
    assert full.status_code == 503 and full.headers["Retry-After"] == "60" and "max_queued" in full.json()["detail"]
    assert job_folders(tmp_path / "jobs") == sorted([running, queued])  # the refused upload was not kept

    cancelled = client.delete(f"/jobs/{queued}")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled", cancelled.text
    assert job_files(tmp_path / "jobs" / queued) == ["job.json"]  # the clip went at once
    stopped = client.delete(f"/jobs/{running}").json()
    assert stopped["status"] == "cancelled" and stopped["finished"] is not None
    # The worker stops within a second (or, were its scan over, as it comes to store the result): its clip is
    # deleted, no result, and the pool runs the next job at once.
    folder = tmp_path / "jobs" / running
    try:
        wait_until(lambda: job_files(folder) == ["job.json"], 5, "the running job was not stopped")
    except AssertionError as exc:
        raise AssertionError(f"{exc}: {job_files(folder)} left, {client.get(f'/jobs/{running}').json()}") from None
    after = submit(client, short_clip)
    assert wait_job(client, after, timeout=15)["status"] == "succeeded"
    final = client.get(f"/jobs/{running}").json()
    assert final["status"] == "cancelled" and final["result"] is None and final["progress"] < 1
    assert client.get(f"/jobs/{queued}").json()["status"] == "cancelled"
    assert metric(client.get("/metrics").text, 'emotion_jobs_finished_total{status="cancelled"}') == 2
    # once ended, DELETE deletes: the record and its folder go, and nothing counts a second cancellation
    deleted = client.delete(f"/jobs/{running}")
    assert deleted.status_code == 200 and deleted.json()["status"] == "cancelled", deleted.text
    assert client.get(f"/jobs/{running}").status_code == 404 and not (tmp_path / "jobs" / running).exists()
    assert metric(client.get("/metrics").text, 'emotion_jobs_finished_total{status="cancelled"}') == 2


def test_a_job_cancelled_after_its_scan_leaves_no_clip_and_no_result(make_client, clips, tmp_path, monkeypatch):
    """Past its last sampled frame no progress call can stop a job: the runner, finding it cancelled when it
    comes to store the result, deletes the result and the clip instead."""
    import asyncio
    import threading

    from service.pipelines.video import VideoPipeline

    scanned, cancelled = threading.Event(), threading.Event()
    predict = VideoPipeline.predict

    async def slow_predict(self, *args, **kwargs):
        scanned.set()
        await asyncio.to_thread(cancelled.wait, 10)
        return await predict(self, *args, **kwargs)

    monkeypatch.setattr(VideoPipeline, "predict", slow_predict)
    client = make_client(jobs_dir=tmp_path / "jobs")
    job_id = submit(client, clips("short", 3.0))
    wait_until(scanned.is_set, 30, "the job never finished its scan")
    assert client.delete(f"/jobs/{job_id}").json()["status"] == "cancelled"
    cancelled.set()
    wait_until(lambda: job_files(tmp_path / "jobs" / job_id) == ["job.json"], 10, "the clip or a result stayed")
    time.sleep(0.5)  # nothing comes back later
    job = client.get(f"/jobs/{job_id}").json()
    assert job["status"] == "cancelled" and job["result"] is None, job
    assert job_files(tmp_path / "jobs" / job_id) == ["job.json"]


def job_files(folder) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))


def test_expired_jobs_are_deleted_with_their_files(make_client, clips, tmp_path):
    client = make_client(jobs_dir=tmp_path / "jobs", job_ttl_s=1.0)
    done = submit(client, clips("short", 3.0))
    assert wait_job(client, done)["status"] == "succeeded"

    def gone() -> bool:  # the record (job.json) can vanish a moment before the rest of its folder is removed
        return client.get(f"/jobs/{done}").status_code == 404 and job_folders(tmp_path / "jobs") == []

    wait_until(gone, 10, "the job and its files never expired")
    assert client.get("/jobs").json()["total"] == 0


def test_an_api_restart_loses_no_queued_or_finished_job(make_client, clips, tmp_path):
    settings = {"jobs_dir": tmp_path / "jobs", "queue": {"embedded_workers": 1}}
    first = make_client(**settings)
    finished = submit(first, clips("short", 3.0))
    assert wait_job(first, finished)["status"] == "succeeded"
    running = submit(first, clips("long", 20.0, size=(1280, 720)), LONG)
    queued = submit(first, clips("short", 3.0))
    wait_until(lambda: first.get(f"/jobs/{running}").json()["status"] == "running", 30, "never started")
    first.__exit__(None, None, None)  # the API stops: the running job is handed back, its try not counted

    second = make_client(**settings)
    listed = {j["id"]: j["status"] for j in second.get("/jobs").json()["jobs"]}
    assert listed.keys() == {finished, running, queued} and listed[finished] == "succeeded"
    assert second.get(f"/jobs/{finished}").json()["result"]["tracks"]
    for job_id in (running, queued):
        job = wait_job(second, job_id, timeout=90)
        assert job["status"] == "succeeded" and job["tries"] == 1, job


def test_a_job_that_keeps_crashing_is_failed_after_max_tries(make_client, clips, tmp_path, monkeypatch):
    from service.pipelines.video import VideoPipeline

    async def explode(self, *args, **kwargs):
        raise RuntimeError("decoder exploded")

    monkeypatch.setattr(VideoPipeline, "analyse", explode)
    client = make_client(jobs_dir=tmp_path / "jobs", queue={"max_tries": 2})
    job = wait_job(client, submit(client, clips("short", 3.0)), timeout=30)
    assert job["status"] == "failed" and job["tries"] == 2, job
    assert job["error"]["detail"] == "failed 2 times; last error: RuntimeError: decoder exploded"
    assert job_files(tmp_path / "jobs" / job["id"]) == ["job.json"]  # the clip is gone, no result


def test_the_job_frame_cap_applies_and_input_errors_fail_at_once(make_client, clips, tmp_path, monkeypatch):
    client = make_client(jobs_dir=tmp_path / "jobs", queue={"max_frames": 3})
    clip = clips("short", 3.0)
    job = wait_job(client, submit(client, clip, "start=1&end=2&sample_fps=10"))
    assert job["status"] == "succeeded" and job["result"]["frames_analyzed"] == 3  # the job's own frame cap

    from service.errors import InvalidInput
    from service.pipelines.video import VideoPipeline

    async def corrupt(self, *args, **kwargs):
        raise InvalidInput("no frame of the video could be decoded")

    monkeypatch.setattr(VideoPipeline, "analyse", corrupt)
    failed = wait_job(client, submit(client, clip))
    assert failed["status"] == "failed" and failed["tries"] == 1, failed  # bad input is not retried
    assert failed["error"] == {"detail": "no frame of the video could be decoded"}


# --- Redis backend: the API enqueues, python -m service.worker processes run the jobs ------------------------------


def job_record(redis_url, name, job_id) -> dict:
    return json.loads(redis.Redis.from_url(redis_url).get(f"{name}:job:{job_id}"))


def test_two_workers_finish_three_jobs_though_one_is_killed_mid_job(
    make_client, clips, workers, redis_url, queue_name, tmp_path
):
    jobs_dir = tmp_path / "jobs"
    settings = {"jobs_dir": jobs_dir, "queue": {"url": redis_url, "name": queue_name}}
    pool = workers(jobs_dir, lease_s=3)
    pool.start(2)
    client = make_client(**settings)
    # 20 s clips: a job must outlast a progress write (every 0.5 s) to be seen running, on a fast host too
    clip_set = [clips(f"hd{i}", 20.0, size=(1280, 720), x=60 + 200 * i) for i in range(3)]
    ids = [submit(client, clip, LONG) for clip in clip_set]  # three at once, two workers

    def running_somewhere():
        for job_id in ids:
            record = job_record(redis_url, queue_name, job_id)
            if record["status"] == "running" and record["progress"] > 0:
                return job_id, record["worker"]
        return None

    victim_job, victim = wait_until(running_somewhere, 60, "no job ever ran")
    proc = next(p for p in pool.procs if pool.worker_id(p) == victim)
    os.kill(proc.pid, signal.SIGKILL)
    killed_at = time.monotonic()
    client.__exit__(None, None, None)  # and the API restarts meanwhile
    client = make_client(**settings)

    retaken = wait_until(
        lambda: (r := job_record(redis_url, queue_name, victim_job))["tries"] == 2 and r["status"] != "queued",
        60,
        "the killed worker's job was never taken over",
    )
    assert time.monotonic() - killed_at < 60 and retaken
    results = [wait_job(client, job_id, timeout=120) for job_id in ids]
    assert [r["status"] for r in results] == ["succeeded"] * 3, results
    assert next(r for r in results if r["id"] == victim_job)["tries"] == 2
    for job, clip in zip(results, clip_set, strict=True):
        same_analysis(job["result"], predict(client, clip, LONG))

    survivor = next(p for p in pool.procs if p is not proc)
    worker_text = pool.metrics(survivor)
    assert metric(worker_text, 'emotion_jobs_finished_total{status="succeeded"}') >= 2  # its own and the retaken
    assert metric(worker_text, "emotion_job_duration_seconds_count") >= 2

    def gauges_caught_up():
        text = client.get("/metrics").text
        return text if metric(text, 'emotion_jobs{status="succeeded"}') == 3 else None

    api_text = wait_until(gauges_caught_up, 10, "the API's job gauges never caught up")
    # The killed worker is counted out after three missed beats (15 s); both were alive a moment ago.
    assert metric(api_text, "emotion_job_workers") in (1, 2) and metric(api_text, "emotion_job_queue_depth") == 0


def test_redis_cancellation_of_queued_and_running_jobs(make_client, clips, workers, redis_url, queue_name, tmp_path):
    jobs_dir = tmp_path / "jobs"
    pool = workers(jobs_dir)
    pool.start(1)
    client = make_client(jobs_dir=jobs_dir, queue={"url": redis_url, "name": queue_name})
    r = redis.Redis.from_url(redis_url)
    running = submit(client, clips("long", 20.0, size=(1280, 720)), LONG)
    queued = submit(client, clips("short", 3.0))
    wait_until(lambda: client.get(f"/jobs/{running}").json()["progress"] > 0, 30, "the long job never progressed")

    assert client.delete(f"/jobs/{queued}").json()["status"] == "cancelled"
    assert r.zscore(f"{queue_name}:queue", queued) is None and not r.exists(f"arq:job:{queued}")
    assert job_files(jobs_dir / queued) == []
    assert client.delete(f"/jobs/{running}").json()["status"] == "cancelled"
    wait_until(lambda: job_files(jobs_dir / running) == [], 5, "the worker did not stop the cancelled job")
    after = submit(client, clips("short", 3.0))
    assert wait_job(client, after, timeout=20)["status"] == "succeeded"
    wait_until(lambda: not r.exists(f"arq:in-progress:{running}"), 5, "arq kept the cancelled job")
    assert client.get(f"/jobs/{running}").json()["status"] == "cancelled"
    assert r.zscore(f"{queue_name}:queue", running) is None
    assert client.delete(f"/jobs/{after}").json()["status"] == "succeeded"  # an ended job: deleted, Redis too
    assert client.get(f"/jobs/{after}").status_code == 404 and not list(r.scan_iter(f"*{after}*"))
    assert metric(client.get("/metrics").text, 'emotion_jobs_finished_total{status="cancelled"}') == 2
    assert metric(pool.metrics(pool.procs[0]), 'emotion_jobs_finished_total{status="succeeded"}') == 1

    # SIGTERM (a rolling update, compose down): the worker hands its job back, that try not counted.
    handed_back = submit(client, clips("long", 20.0, size=(1280, 720)), LONG)
    wait_until(lambda: client.get(f"/jobs/{handed_back}").json()["progress"] > 0, 30, "the job never progressed")
    pool.procs[0].send_signal(signal.SIGTERM)
    assert pool.procs[0].wait(timeout=20) == 0
    job = client.get(f"/jobs/{handed_back}").json()
    assert (job["status"], job["tries"]) == ("queued", 0), job
    pool.start(1)
    job = wait_job(client, handed_back, timeout=60)
    assert (job["status"], job["tries"]) == ("succeeded", 1), job


def test_redis_restart_and_expiry(make_client, clips, redis_url, queue_name, tmp_path):
    """No workers: queued jobs survive an API restart; expired ones leave no key, index entry or file behind."""
    jobs_dir = tmp_path / "jobs"
    settings = {"jobs_dir": jobs_dir, "job_ttl_s": 1.0, "queue": {"url": redis_url, "name": queue_name}}
    first = make_client(**settings)
    keep, drop = submit(first, clips("short", 3.0)), submit(first, clips("short", 3.0))
    first.__exit__(None, None, None)
    second = make_client(**settings)
    assert {j["id"]: j["status"] for j in second.get("/jobs").json()["jobs"]} == {keep: "queued", drop: "queued"}
    assert second.delete(f"/jobs/{drop}").json()["status"] == "cancelled"
    wait_until(lambda: second.get(f"/jobs/{drop}").status_code == 404, 10, "the cancelled job never expired")
    r = redis.Redis.from_url(redis_url)
    leftovers = [k.decode() for k in r.scan_iter(f"*{drop}*")]
    leftovers += [k for k in ("jobs", "expiry", *(f"status:{s}" for s in FINAL)) if r.zscore(f"{queue_name}:{k}", drop)]
    assert leftovers == [] and not (jobs_dir / drop).exists()
    assert second.get(f"/jobs/{keep}").json()["status"] == "queued"
    assert r.zscore(f"{queue_name}:queue", keep) is not None and (jobs_dir / keep).is_dir()


CRASHING_WORKER = """
import os, signal, runpy
from service.pipelines.video import VideoPipeline

async def die(self, *args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)

VideoPipeline.analyse = die
runpy.run_module("service.worker", run_name="__main__")
"""


def test_a_job_that_kills_its_worker_every_time_is_failed_after_max_tries(
    make_client, clips, workers, redis_url, queue_name, tmp_path
):
    jobs_dir = tmp_path / "jobs"
    pool = workers(jobs_dir, lease_s=1, max_tries=2)
    client = make_client(jobs_dir=jobs_dir, queue={"url": redis_url, "name": queue_name, "max_tries": 2})
    job_id = submit(client, clips("short", 3.0))
    deadline = time.monotonic() + 90
    while client.get(f"/jobs/{job_id}").json()["status"] not in FINAL and time.monotonic() < deadline:
        [proc] = pool.start(1, CRASHING_WORKER, wait=False)  # a supervisor restarting the crashed worker
        while proc.poll() is None and time.monotonic() < deadline:
            if client.get(f"/jobs/{job_id}").json()["status"] in FINAL:
                break
            time.sleep(0.1)
    job = client.get(f"/jobs/{job_id}").json()
    assert job["status"] == "failed" and job["tries"] == 2, job  # two tries that crashed, then a start gave up
    assert job["error"]["detail"].startswith("gave up after 2 tries: its worker stopped while running it")
    assert sum(p.returncode == -signal.SIGKILL for p in pool.procs) == 2


def test_a_redis_outage_is_a_503_not_a_500(make_client, clips, tmp_path):
    port = free_port()
    server = subprocess.Popen(
        [shutil.which("redis-server") or "/usr/bin/redis-server", "--port", str(port), "--save", ""],
        stdout=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    try:
        wait_until(lambda: answers(url), 10, "redis-server did not start")
        client = make_client(jobs_dir=tmp_path / "jobs", queue={"url": url})
        assert client.get("/jobs").status_code == 200
    finally:
        server.terminate()
        server.wait(timeout=10)
    for response in (
        client.get("/jobs"),
        client.get(f"/jobs/{'0' * 32}"),
        client.post("/jobs/video", files=upload(clips("short", 3.0).read_bytes(), "v.mp4", "video/mp4")),
    ):
        assert response.status_code == 503 and response.headers["retry-after"] == "5", response.text
        assert response.json() == {"detail": "the job queue is unreachable; retry later"}
    assert job_folders(tmp_path / "jobs") == []
