"""The pure parts of background jobs: ids, the job record, progress and cancellation of a running analysis, the
job caps in ``resolve_options``, and the store contract, checked on both stores (files, and a real Redis)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
from datetime import timedelta

import pytest

pytest.register_assert_rewrite("tests.jobs_support")

from service.config import Settings, jobs_folder  # noqa: E402
from service.jobs.errors import JobCancelled, JobNotFound, QueueUnavailable  # noqa: E402
from service.jobs.model import STATUSES, Job, new_id, utcnow, valid_id  # noqa: E402
from service.jobs.redis_queue import LeasedWorker, build_worker, connect, shown_url  # noqa: E402
from service.jobs.redis_store import RedisJobStore  # noqa: E402
from service.jobs.runner import Tracker  # noqa: E402
from service.jobs.store import FileJobStore  # noqa: E402
from service.metrics import Metrics  # noqa: E402
from service.options import Requested, VideoCaps, resolve_options  # noqa: E402
from tests.conftest import ROOT  # noqa: E402
from tests.live import clean_env  # noqa: E402

pytest_plugins = ("tests.jobs_support",)


def test_ids_sort_by_creation_and_nothing_else_is_an_id():
    first = new_id()
    time.sleep(0.002)
    second = new_id()
    assert valid_id(first) and valid_id(second) and first < second and len({new_id() for _ in range(1000)}) == 1000
    for bad in ("", "../" + first[3:], first.upper(), first + "0", first[:-1], "x" * 32, f"{first[:-1]}/"):
        assert not valid_id(bad), bad


def test_tracker_reports_progress_within_the_asked_span_and_stops_once_cancelled():
    tracker = Tracker(start=10.0, span=20.0, cancel=threading.Event())
    tracker(10.0)
    assert tracker.progress == 0.0
    tracker(20.0)
    assert tracker.progress == 0.5
    tracker(99.0)
    assert tracker.progress == 0.99  # 1.0 only once the result is stored
    tracker.cancel.set()
    with pytest.raises(JobCancelled):
        tracker(21.0)
    unknown = Tracker(0.0, 0.0, threading.Event())
    unknown(5.0)
    assert unknown.progress == 0.0


def test_jobs_get_their_own_caps():
    s = Settings(_env_file=None, video={"max_frames": 10, "max_duration_s": 5}, queue={"max_frames": 900})
    ask = Requested(max_frames=500)
    assert (resolve_options(s, ask).max_frames, resolve_options(s, ask).max_duration) == (10, 5.0)
    job = resolve_options(s, ask, caps=VideoCaps.job(s))
    assert (job.max_frames, job.max_duration) == (500, s.queue.max_duration_s)
    assert resolve_options(s, Requested(), caps=VideoCaps.job(s)).max_frames == 900


def test_job_record_round_trips_and_ends_with_an_expiry():
    job = Job(id=new_id(), model="m", version="1", options={"sample_fps": 2.0, "start": 1.0}, duration=3.5)
    assert Job.model_validate_json(job.model_dump_json()) == job
    assert job.requested() == Requested(sample_fps=2.0, start=1.0)
    ended = job.ended("failed", 60, error="why")
    assert ended["status"] == "failed" and ended["expires"] - ended["finished"] == timedelta(seconds=60)


def test_the_default_jobs_folder_outlives_a_restart_and_is_the_deployments_own(monkeypatch, tmp_path):
    monkeypatch.delenv("EMOTION_QUEUE__NAMESPACE")  # the suite's own namespace (conftest) aside: the real default
    s = Settings(_env_file=None, port=8000)
    folder = jobs_folder(s)
    assert folder.parent.name == "emotion-jobs" and s.queue.jobs_dir is None
    assert jobs_folder(Settings(_env_file=None, port=8000)) == folder  # a restart finds its jobs again
    assert jobs_folder(Settings(_env_file=None, port=8001)) != folder  # another service on the host does not
    other_store = tmp_path / "store"
    other_store.mkdir()
    assert jobs_folder(Settings(_env_file=None, port=8000, store_path=other_store)) != folder
    assert jobs_folder(Settings(_env_file=None, port=8000, queue={"namespace": "blue"})).name == "blue"
    # With Redis, the API and a worker on the host (which has no port) agree; another queue name does not.
    redis = {"url": "redis://127.0.0.1:6379/0"}
    assert jobs_folder(Settings(_env_file=None, port=8000, queue=redis)) == jobs_folder(
        Settings(_env_file=None, queue=redis)
    )
    assert jobs_folder(Settings(_env_file=None, queue=redis)) != jobs_folder(
        Settings(_env_file=None, queue={**redis, "name": "b"})
    )
    assert jobs_folder(Settings(_env_file=None, jobs_dir="/srv/jobs")).as_posix() == "/srv/jobs"


def test_a_worker_holds_a_job_for_its_lease_not_for_the_job_timeout(redis_url):
    settings = Settings(_env_file=None, queue={"url": redis_url, "lease_s": 7, "job_timeout_s": 36000})
    worker = build_worker(settings, Metrics())
    try:
        assert isinstance(worker, LeasedWorker) and worker.in_progress_timeout_s == 7
        assert worker.functions["video_job"].timeout_s > 36000 and worker.max_tries > settings.queue.max_tries
    finally:
        worker.loop.close()  # arq made an event loop (with signal handlers) for the worker to run on
        asyncio.set_event_loop(None)


def test_metrics_observe_job_counts_and_ends():
    m = Metrics()
    m.observe_jobs({"queued": 3, "running": 1, "succeeded": 0, "failed": 0, "cancelled": 2}, workers=4)
    m.observe_job_finished("succeeded", 12.0)
    m.observe_job_finished("cancelled")
    get = m.registry.get_sample_value
    assert get("emotion_job_queue_depth") == 3 and get("emotion_job_workers") == 4
    assert get("emotion_jobs", {"status": "cancelled"}) == 2
    assert get("emotion_jobs_finished_total", {"status": "cancelled"}) == 1
    assert get("emotion_job_duration_seconds_count") == 1 and get("emotion_job_duration_seconds_sum") == 12.0


# --- the store contract, on both stores ------------------------------------------------------------------------


@pytest.fixture(params=["files", "redis"])
def make_store(request, tmp_path):
    """``make_store()`` -> (store, close) inside the test's event loop."""

    async def make():
        if request.param == "files":
            return FileJobStore(tmp_path / "jobs")
        from redis.asyncio import Redis

        name = request.getfixturevalue("queue_name")
        client = Redis.from_url(request.getfixturevalue("redis_url"))
        store = RedisJobStore(client, tmp_path / "jobs", name)
        store.close = client.aclose  # type: ignore[method-assign]
        return store

    return make


def run(coro):
    return asyncio.run(coro)


def test_store_creates_changes_pages_counts_and_deletes(make_store):
    async def scenario():
        store = await make_store()
        try:
            jobs = []
            for _ in range(5):
                job = Job(id=new_id(), model="m", version="1", upload="clip.bin")
                store.folder(job.id).mkdir()
                await store.create(job)
                jobs.append(job)
                await asyncio.sleep(0.002)
            assert (await store.get(jobs[0].id)) == jobs[0]
            claimed = await store.modify(jobs[1].id, lambda j: {"status": "running", "tries": j.tries + 1})
            assert claimed is not None and (claimed.status, claimed.tries) == ("running", 1)
            assert await store.modify(jobs[1].id, lambda j: None) is None
            page, total = await store.page(0, 2)
            assert total == 5 and [j.id for j in page] == [jobs[4].id, jobs[3].id]
            page, total = await store.page(4, 2)
            assert total == 5 and [j.id for j in page] == [jobs[0].id]
            running, n = await store.page(0, 10, "running")
            assert n == 1 and [j.id for j in running] == [jobs[1].id]
            assert await store.counts() == dict.fromkeys(STATUSES, 0) | {"queued": 4, "running": 1}
            await store.modify(jobs[2].id, lambda j: j.ended("succeeded", -1))
            await store.modify(jobs[3].id, lambda j: j.ended("cancelled", 3600))
            assert await store.expired(utcnow()) == [jobs[2].id]
            store.write_result(jobs[2].id, '{"ok": 1}')
            assert store.read_result(jobs[2].id) == '{"ok": 1}'
            await store.delete(jobs[2].id)
            assert not store.folder(jobs[2].id).exists() and await store.expired(utcnow()) == []
            with pytest.raises(JobNotFound):
                await store.get(jobs[2].id)
            with pytest.raises(JobNotFound):
                await store.modify(jobs[2].id, lambda j: {})
            with pytest.raises(JobNotFound):
                await store.get("../../etc/passwd")
            assert (await store.counts())["succeeded"] == 0 and (await store.page(0, 10))[1] == 4
        finally:
            await store.close()

    run(scenario())


def test_store_changes_are_atomic_under_concurrent_writers(make_store):
    """Five threads, each with its own event loop and store (as separate processes would have), bump one job."""
    job = Job(id=new_id(), model="m", version="1")

    async def create():
        store = await make_store()
        store.folder(job.id).mkdir()
        await store.create(job)
        await store.close()

    async def bump():
        store = await make_store()
        for _ in range(20):
            await store.modify(job.id, lambda j: {"tries": j.tries + 1})
        await store.close()

    async def read():
        store = await make_store()
        try:
            return (await store.get(job.id)).tries
        finally:
            await store.close()

    run(create())
    threads = [threading.Thread(target=run, args=(bump(),)) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert run(read()) == 100


def test_file_store_scans_see_every_change_another_process_writes(tmp_path):
    """Full scans keep what they parsed until a record's file changes: a second store on the same folder (another
    process) changes, adds and removes jobs, and the first one's scans see each change."""

    async def scenario():
        mine, theirs = FileJobStore(tmp_path / "jobs"), FileJobStore(tmp_path / "jobs")
        jobs = [Job(id=new_id(), model="m", version="1") for _ in range(3)]
        for job in jobs:
            await theirs.create(job)
            await asyncio.sleep(0.002)
        assert (await mine.counts())["queued"] == 3
        await theirs.modify(jobs[0].id, lambda j: {"status": "running", "progress": 0.25})
        await theirs.modify(jobs[1].id, lambda j: {"status": "succeeded"})
        counts = await mine.counts()
        assert (counts["queued"], counts["running"], counts["succeeded"]) == (1, 1, 1)
        await theirs.modify(jobs[0].id, lambda j: {"progress": 0.75})  # the same size: a new file all the same
        page, _ = await mine.page(0, 10, "running")
        assert [j.progress for j in page] == [0.75]
        await theirs.delete(jobs[2].id)
        assert sum((await mine.counts()).values()) == 2 and set(mine._scanned) == {jobs[0].id, jobs[1].id}

    run(scenario())


class NoQueue:
    """The queue side of ``JobService`` for tests of its store side: records what it was asked to discard."""

    def __init__(self) -> None:
        self.discarded: list[str] = []

    async def discard(self, job_id: str) -> None:
        self.discarded.append(job_id)


def test_delete_cancels_a_live_job_and_deletes_an_ended_one_once_its_worker_stopped(make_store, tmp_path):
    """DELETE: a queued job is cancelled (its clip deleted); an ended one is deleted with its folder; one cancelled
    while it ran waits (JobStopping) while its clip is there and its claim fresh, then goes too."""
    from service.jobs.errors import JobStopping
    from service.jobs.service import JobService

    async def scenario():
        store = await make_store()
        queue = NoQueue()
        jobs = JobService(Settings(_env_file=None, jobs_dir=tmp_path / "jobs"), store, queue, Metrics())

        async def make(**fields) -> Job:
            job = Job(id=new_id(), model="m", version="1", upload="clip.bin", **fields)
            store.folder(job.id).mkdir()
            (store.folder(job.id) / "clip.bin").write_bytes(b"x")
            await store.create(job)
            return job

        try:
            queued = await make()
            assert (await jobs.end(queued.id)).status == "cancelled"
            assert not (store.folder(queued.id) / "clip.bin").exists() and (await store.get(queued.id)).final
            assert (await jobs.end(queued.id)).status == "cancelled"  # again: now it is deleted
            with pytest.raises(JobNotFound):
                await store.get(queued.id)
            assert not store.folder(queued.id).exists() and queue.discarded == [queued.id, queued.id]

            done = await make(status="succeeded", finished=utcnow())
            store.write_result(done.id, "{}")
            assert (await jobs.end(done.id)).status == "succeeded"
            assert not store.folder(done.id).exists()
            with pytest.raises(JobNotFound):
                await jobs.get(done.id)

            running = await make(status="running", worker="w1")
            assert (await jobs.end(running.id)).status == "cancelled"  # the worker deletes the clip as it stops
            with pytest.raises(JobStopping):
                await jobs.end(running.id)
            assert (await store.get(running.id)).status == "cancelled"
            (store.folder(running.id) / "clip.bin").unlink()  # the worker stopped
            await jobs.end(running.id)
            with pytest.raises(JobNotFound):
                await store.get(running.id)

            lapsed = await make(status="cancelled", worker="w2", finished=utcnow() - timedelta(minutes=5))
            await jobs.end(lapsed.id)  # a worker that died: its clip is no reason to wait
            assert not store.folder(lapsed.id).exists()
        finally:
            await store.close()

    run(scenario())


def test_every_job_error_has_a_status():
    import inspect

    from service.api.errors import status_of
    from service.errors import ServiceError
    from service.jobs import errors

    expected = {
        "JobNotFound": (404, {}),
        "JobStopping": (409, {"Retry-After": "1"}),
        "QueueUnavailable": (503, {"Retry-After": "5"}),
        "QueueFull": (503, {"Retry-After": "60"}),
    }
    domain = {n: c for n, c in inspect.getmembers(errors, inspect.isclass) if issubclass(c, ServiceError)}
    assert {n: status_of(c("x")) for n, c in domain.items() if c is not ServiceError} == expected
    assert not issubclass(errors.JobCancelled, ServiceError)  # a signal inside the runner, never an answer


UNREACHABLE = "redis://:s3cret@127.0.0.1:1/0"  # port 1 refuses at once; arq still retries for about 5 s


def test_a_url_is_shown_without_its_password():
    assert shown_url("redis://:s3cret@redis:6379/0") == "redis://:***@redis:6379/0"
    assert shown_url("redis://user:pw@h/1") == "redis://user:***@h/1"
    assert shown_url("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"


def test_an_unreachable_redis_says_what_to_fix_and_hides_the_password():
    """It was redis-py's ConnectionError deep in a traceback, with the API's startup failing."""
    settings = Settings(_env_file=None, queue={"url": UNREACHABLE})
    with pytest.raises(QueueUnavailable) as raised:
        asyncio.run(connect(settings))
    message = str(raised.value)
    assert "EMOTION_QUEUE_URL=redis://:***@127.0.0.1:1/0" in message and "s3cret" not in message
    assert "Redis did not answer" in message and "unset" in message


def test_a_worker_without_its_redis_exits_with_the_fix(tmp_path):
    done = subprocess.run(
        [sys.executable, "-m", "service.worker"],
        env=clean_env(EMOTION_QUEUE_URL=UNREACHABLE),
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    last = done.stderr.strip().splitlines()[-1]
    assert done.returncode == 1 and last.startswith("EMOTION_QUEUE_URL=redis://:***@") and "s3cret" not in done.stderr


def test_a_full_disk_while_spooling_is_storage_full_and_leaves_no_file(tmp_path, monkeypatch):
    """ENOSPC while an upload was copied in was an OSError, a 500; now 507 with the partial file removed."""
    import errno
    import io
    import os

    from fastapi import UploadFile

    import service.api.uploads as uploads
    from service.errors import StorageFull

    opened = os.fdopen

    class FullDisk(io.RawIOBase):
        def __init__(self, fd: int, mode: str) -> None:
            self.file = opened(fd, mode)

        def write(self, data) -> int:
            raise OSError(errno.ENOSPC, "No space left on device")

        def close(self) -> None:
            self.file.close()

    monkeypatch.setattr(uploads.os, "fdopen", FullDisk)
    clip = UploadFile(io.BytesIO(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 5000), filename="v.mp4")
    with pytest.raises(StorageFull, match="disk is full"):
        asyncio.run(uploads.spool_upload(clip, 1 << 20, tmp_path))
    assert list(tmp_path.iterdir()) == []
