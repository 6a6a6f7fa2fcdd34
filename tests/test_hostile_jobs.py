"""Jobs between neighbours (issues 27 and 28): two services on one host with default settings never see or run each
other's jobs; a worker whose store lacks a job's model fails it with a message that says the fix; any number of
``python -m service.worker`` start on one host (the metrics port moves on when taken), and with one SIGKILLed
mid-job every job still succeeds."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal

import httpx
import pytest
import redis

pytest.register_assert_rewrite("tests.jobs_support")

from tests.conftest import DEFAULT_MODEL, upload  # noqa: E402
from tests.hostile_support import live_service  # noqa: E402
from tests.jobs_support import submit, wait_job, wait_until  # noqa: E402
from tests.live import free_port  # noqa: E402

pytest_plugins = ("tests.jobs_support",)  # fixtures: redis_url, queue_name, clips, workers


def test_two_services_with_default_settings_keep_their_jobs_apart(tmp_path, clips):
    """Same host (one temp dir), same store, default settings, two ports: a job sent to A is A's alone."""
    host_tmp = tmp_path / "host"
    host_tmp.mkdir()
    clip = clips("short", 2.0)
    with (
        live_service(tmp_path / "a.log", TMPDIR=str(host_tmp)) as a,
        live_service(tmp_path / "b.log", TMPDIR=str(host_tmp)) as b,
    ):
        sent = httpx.post(
            f"http://127.0.0.1:{a}/jobs/video?sample_fps=2",
            files=upload(clip.read_bytes(), clip.name, "video/mp4"),
            timeout=60,
        )
        assert sent.status_code == 202, sent.text
        job_id = sent.json()["id"]

        def finished():
            body = httpx.get(f"http://127.0.0.1:{a}/jobs/{job_id}", timeout=10).json()
            return body if body["status"] in ("succeeded", "failed") else None

        job = wait_until(finished, 120, "A never finished its job")
        assert job["status"] == "succeeded", job
        assert httpx.get(f"http://127.0.0.1:{b}/jobs", timeout=10).json()["total"] == 0
        assert httpx.get(f"http://127.0.0.1:{b}/jobs/{job_id}", timeout=10).status_code == 404
    folders = sorted((host_tmp / "emotion-jobs").iterdir())
    assert len(folders) == 2, folders  # one per deployment, side by side under the default parent
    assert [job_id in {p.name for p in f.iterdir()} for f in folders].count(True) == 1
    assert f"job {job_id} succeeded" in (tmp_path / "a.log").read_text()
    assert job_id not in (tmp_path / "b.log").read_text()  # B never touched it


def store_with(tmp_path, default_entry, name: str):
    """A store holding the default model under another ``name`` only."""
    dst = tmp_path / "other-store" / name / default_entry.manifest.version
    shutil.copytree(default_entry.folder, dst)
    manifest = json.loads((dst / "manifest.json").read_text())
    (dst / "manifest.json").write_text(json.dumps({**manifest, "name": name}))
    return tmp_path / "other-store"


def test_a_worker_without_the_jobs_model_fails_it_with_the_fix(
    make_client, clips, workers, redis_url, queue_name, tmp_path, default_entry
):
    jobs_dir = tmp_path / "jobs"
    other = store_with(tmp_path, default_entry, "someone_elses")
    pool = workers(jobs_dir)
    pool.env.update(EMOTION_STORE_PATH=str(other), EMOTION_DEFAULT_MODEL="someone_elses")
    pool.start(1)
    client = make_client(jobs_dir=jobs_dir, queue={"url": redis_url, "name": queue_name})
    job = wait_job(client, submit(client, clips("short", 2.0), "sample_fps=2"), timeout=60)
    assert job["status"] == "failed" and job["tries"] == 1, job
    error = job["error"]["detail"]
    assert f"has no model {DEFAULT_MODEL}:{default_entry.manifest.version}" in error, error
    assert "EMOTION_STORE_PATH" in error and "EMOTION_QUEUE__NAME" in error and str(other) not in error


def test_workers_on_one_host_share_a_metrics_port_setting_and_survive_a_kill(
    make_client, clips, workers, redis_url, queue_name, tmp_path
):
    """Issue 27: the second ``python -m service.worker`` used to die on the taken port. Both start, say where
    their metrics are, both run jobs, and with one SIGKILLed mid-job all jobs succeed."""
    jobs_dir = tmp_path / "jobs"
    port = free_port()
    pool = workers(jobs_dir, lease_s=3, worker_metrics_port=port)
    first = pool.start(1, metrics_port=port)[0]
    second = pool.start(1, metrics_port=port)[0]
    assert first.poll() is None and second.poll() is None
    assert f"worker metrics on port {port}" in pool.log(first)
    moved = wait_until(
        lambda: re.search(r"worker metrics on port (\d+) \((\d+) was taken\)", pool.log(second)), 10, "?"
    )
    assert int(moved.group(1)) > port and int(moved.group(2)) == port
    assert "emotion_jobs_finished_total" in httpx.get(f"http://127.0.0.1:{moved.group(1)}/metrics", timeout=5).text

    client = make_client(jobs_dir=jobs_dir, queue={"url": redis_url, "name": queue_name})
    # 20 s clips: a job must outlast a progress write (every 0.5 s) to be seen running, on a fast host too
    ids = [submit(client, clips(f"hd{i}", 20.0, size=(1280, 720), x=60 + 200 * i), "sample_fps=15") for i in range(3)]
    r = redis.Redis.from_url(redis_url)

    def running():
        for job_id in ids:
            record = json.loads(r.get(f"{queue_name}:job:{job_id}"))
            if record["status"] == "running" and record["progress"] > 0:
                return record["worker"]
        return None

    victim = wait_until(running, 60, "no job ever ran")
    os.kill(next(p for p in (first, second) if pool.worker_id(p) == victim).pid, signal.SIGKILL)
    results = [wait_job(client, job_id, timeout=180) for job_id in ids]
    assert [j["status"] for j in results] == ["succeeded"] * 3, results
    ran_on = {j["id"]: json.loads(r.get(f"{queue_name}:job:{j['id']}"))["tries"] for j in results}
    assert max(ran_on.values()) == 2  # the killed worker's job, taken over
