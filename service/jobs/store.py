"""Where job records live. One protocol, two stores: files in the jobs folder (the embedded backend, one API
process) and Redis (any number of API replicas and workers). Both keep uploads and results as files in the
shared jobs folder, never in Redis; ``modify`` is each store's one atomic read-modify-write."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import shutil
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from service.files import atomic_write
from service.jobs.errors import JobNotFound
from service.jobs.model import RESULT_FILE, STATUSES, Job, valid_id

Change = Callable[[Job], dict[str, Any] | None]  # the fields to set, or None to leave the job as it is


class JobStore(Protocol):
    """Records (``create`` .. ``delete``) and files (``folder`` .. ``remove_folder``, from ``Folders``)."""

    root: Path

    def folder(self, job_id: str) -> Path: ...
    def write_result(self, job_id: str, body: str) -> None: ...
    def read_result(self, job_id: str) -> str | None: ...
    def remove_file(self, job_id: str, name: str | None) -> None: ...
    def remove_folder(self, job_id: str) -> None: ...
    async def create(self, job: Job) -> None: ...
    async def get(self, job_id: str) -> Job: ...
    async def modify(self, job_id: str, change: Change) -> Job | None: ...
    async def page(self, offset: int, limit: int, status: str | None = None) -> tuple[list[Job], int]: ...
    async def counts(self) -> dict[str, int]: ...
    async def expired(self, now: datetime) -> list[str]: ...
    async def delete(self, job_id: str) -> None: ...
    async def close(self) -> None: ...


class Folders:
    """A job's folder under the jobs root: its upload while it waits or runs, then its result."""

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)

    def folder(self, job_id: str) -> Path:
        if not valid_id(job_id):
            raise JobNotFound(f"no job {job_id[:40]!r}")
        return self.root / job_id

    def write_result(self, job_id: str, body: str) -> None:
        atomic_write(self.folder(job_id) / RESULT_FILE, body)

    def read_result(self, job_id: str) -> str | None:
        try:
            return (self.folder(job_id) / RESULT_FILE).read_text()
        except FileNotFoundError:
            return None

    def remove_file(self, job_id: str, name: str | None) -> None:
        if name:
            with contextlib.suppress(FileNotFoundError):
                (self.folder(job_id) / name).unlink()

    def remove_folder(self, job_id: str) -> None:
        shutil.rmtree(self.folder(job_id), ignore_errors=True)


def updated(job: Job, fields: dict[str, Any]) -> Job:
    return Job.model_validate({**job.model_dump(), **fields})


class FileJobStore(Folders):
    """``<root>/<id>/job.json``, changed under an exclusive ``flock`` so processes sharing the folder agree."""

    JOB_FILE, LOCK_FILE = "job.json", ".lock"

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        # what full scans (counts, expiry, listing by status) parsed, by job: the record file's identity then
        # (inode, mtime, size) and the job; a scan re-reads only records changed since (any process's write
        # replaces the file), so housekeeping over 10,000 kept jobs is a stat each, not a parse each
        self._scanned: dict[str, tuple[tuple[int, int, int], Job]] = {}

    async def create(self, job: Job) -> None:
        folder = self.folder(job.id)
        folder.mkdir(exist_ok=True)
        atomic_write(folder / self.JOB_FILE, job.model_dump_json())

    def _read(self, job_id: str) -> Job:
        try:
            return Job.model_validate_json((self.folder(job_id) / self.JOB_FILE).read_text())
        except (FileNotFoundError, NotADirectoryError):
            raise JobNotFound(f"no job {job_id!r}") from None

    async def get(self, job_id: str) -> Job:
        return self._read(job_id)

    @contextlib.contextmanager
    def _locked(self, job_id: str) -> Iterator[None]:
        try:
            fd = os.open(self.folder(job_id) / self.LOCK_FILE, os.O_CREAT | os.O_RDWR, 0o644)
        except (FileNotFoundError, NotADirectoryError):
            raise JobNotFound(f"no job {job_id!r}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    async def modify(self, job_id: str, change: Change) -> Job | None:
        with self._locked(job_id):
            job = self._read(job_id)
            fields = change(job)
            if fields is None:
                return None
            new = updated(job, fields)
            atomic_write(self.folder(job_id) / self.JOB_FILE, new.model_dump_json())
            return new

    def _ids(self) -> list[str]:
        """Every job, newest first (ids sort by creation time)."""
        with contextlib.suppress(FileNotFoundError):
            names = [e.name for e in os.scandir(self.root) if e.is_dir() and valid_id(e.name)]
            return sorted(names, reverse=True)
        return []

    def _jobs(self) -> Iterator[Job]:
        ids = self._ids()
        for job_id in ids:
            with contextlib.suppress(JobNotFound, ValueError):  # removed meanwhile, or not written yet
                yield self._scan(job_id)
        for gone in set(self._scanned) - set(ids):
            self._scanned.pop(gone, None)

    def _scan(self, job_id: str) -> Job:
        """``_read`` for full scans of ids ``_ids`` gave: the record parsed when it last changed (a string path:
        building 10,000 ``Path`` objects cost more than their stats)."""
        try:
            st = os.stat(os.path.join(self.root, job_id, self.JOB_FILE))
        except (FileNotFoundError, NotADirectoryError):
            raise JobNotFound(f"no job {job_id!r}") from None
        key = (st.st_ino, st.st_mtime_ns, st.st_size)
        seen = self._scanned.get(job_id)
        if seen is not None and seen[0] == key:
            return seen[1]
        job = self._read(job_id)
        self._scanned[job_id] = key, job
        return job

    def _page(self, offset: int, limit: int, status: str | None) -> tuple[list[Job], int]:
        if status is None:
            ids = self._ids()
            jobs = [job for job_id in ids[offset : offset + limit] if (job := self._maybe(job_id))]
            return jobs, len(ids)
        matching = [job for job in self._jobs() if job.status == status]
        return matching[offset : offset + limit], len(matching)

    def _maybe(self, job_id: str) -> Job | None:
        try:
            return self._read(job_id)
        except (JobNotFound, ValueError):
            return None

    async def page(self, offset: int, limit: int, status: str | None = None) -> tuple[list[Job], int]:
        return await asyncio.to_thread(self._page, offset, limit, status)

    def _counts(self) -> dict[str, int]:
        counts = dict.fromkeys(STATUSES, 0)
        for job in self._jobs():
            counts[job.status] += 1
        return counts

    async def counts(self) -> dict[str, int]:
        return await asyncio.to_thread(self._counts)

    async def expired(self, now: datetime) -> list[str]:
        jobs = await asyncio.to_thread(lambda: list(self._jobs()))
        return [job.id for job in jobs if job.expires is not None and job.expires <= now]

    async def delete(self, job_id: str) -> None:
        await asyncio.to_thread(self.remove_folder, job_id)

    async def close(self) -> None:
        pass
