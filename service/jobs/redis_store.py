"""Job records in Redis, for API replicas and workers on any host: one JSON value per job, a creation index,
one index per status (counts and filtered pages without reading every job) and an expiry index. Uploads and
results stay files in the shared jobs folder."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from redis.asyncio import Redis
from redis.exceptions import WatchError

from service.jobs.errors import JobNotFound
from service.jobs.model import STATUSES, Job
from service.jobs.store import Change, Folders, updated


class RedisJobStore(Folders):
    def __init__(self, redis: Redis, root: Path, prefix: str) -> None:
        super().__init__(root)
        self.redis, self.prefix = redis, prefix
        self.index, self.expiry = f"{prefix}:jobs", f"{prefix}:expiry"

    def key(self, job_id: str) -> str:
        self.folder(job_id)  # validates the id
        return f"{self.prefix}:job:{job_id}"

    def status_index(self, status: str) -> str:
        return f"{self.prefix}:status:{status}"

    async def create(self, job: Job) -> None:
        score = job.created.timestamp()
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(self.key(job.id), job.model_dump_json())
            pipe.zadd(self.index, {job.id: score})
            pipe.zadd(self.status_index(job.status), {job.id: score})
            await pipe.execute()

    async def get(self, job_id: str) -> Job:
        raw = await self.redis.get(self.key(job_id))
        if raw is None:
            raise JobNotFound(f"no job {job_id!r}")
        return Job.model_validate_json(raw)

    async def modify(self, job_id: str, change: Change) -> Job | None:
        """Optimistic: WATCH the job, compute the change, write it in MULTI; again if someone wrote meanwhile."""
        key = self.key(job_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            while True:
                try:
                    await pipe.watch(key)
                    raw = await pipe.get(key)
                    if raw is None:
                        raise JobNotFound(f"no job {job_id!r}")
                    job = Job.model_validate_json(raw)
                    fields = change(job)
                    if fields is None:
                        await pipe.unwatch()
                        return None
                    new = updated(job, fields)
                    pipe.multi()
                    self._write(pipe, job, new)
                    await pipe.execute()
                    return new
                except WatchError:
                    continue

    def _write(self, pipe, old: Job, new: Job) -> None:
        pipe.set(self.key(new.id), new.model_dump_json())
        if new.status != old.status:
            pipe.zrem(self.status_index(old.status), new.id)
            pipe.zadd(self.status_index(new.status), {new.id: new.created.timestamp()})
        if new.expires is not None:
            pipe.zadd(self.expiry, {new.id: new.expires.timestamp()})

    async def page(self, offset: int, limit: int, status: str | None = None) -> tuple[list[Job], int]:
        index = self.index if status is None else self.status_index(status)
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.zrevrange(index, offset, offset + limit - 1)
            pipe.zcard(index)
            ids, total = await pipe.execute()
        ids = [i.decode() if isinstance(i, bytes) else i for i in ids]
        raws = await self.redis.mget([self.key(i) for i in ids]) if ids else []
        return [Job.model_validate_json(raw) for raw in raws if raw is not None], total

    async def counts(self) -> dict[str, int]:
        async with self.redis.pipeline(transaction=False) as pipe:
            for status in STATUSES:
                pipe.zcard(self.status_index(status))
            return dict(zip(STATUSES, await pipe.execute(), strict=True))

    async def expired(self, now: datetime) -> list[str]:
        ids = await self.redis.zrangebyscore(self.expiry, "-inf", now.timestamp())
        return [i.decode() if isinstance(i, bytes) else i for i in ids]

    async def delete(self, job_id: str) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.delete(self.key(job_id))
            pipe.zrem(self.index, job_id)
            pipe.zrem(self.expiry, job_id)
            for status in STATUSES:
                pipe.zrem(self.status_index(status), job_id)
            await pipe.execute()
        self.remove_folder(job_id)

    async def close(self) -> None:
        pass  # the client belongs to whoever made it
