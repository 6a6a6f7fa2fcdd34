"""The Redis backend's queue, on arq: the API enqueues a job id (the clip stays in the shared jobs folder) and
``python -m service.worker`` processes run the jobs, each loading its models once.

arq keeps a job in its queue until it ends and claims it with an ``in-progress`` key, so a job whose worker dies
is started again by another one once that key expires. arq sets that expiry to the longest job timeout (hours
here: python-arq/arq#402, #407); ``LeasedWorker`` sets it to ``lease_s`` instead, and a running job renews it every
half second (``JobRunner``'s monitor), so a killed worker's job is taken over ``lease_s`` later. Tries are counted
by the job store (``JobRunner``), arq's own limit is set out of reach.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from arq import ArqRedis, Retry, create_pool
from arq.connections import RedisSettings
from arq.constants import in_progress_key_prefix, job_key_prefix, retry_key_prefix
from arq.worker import Worker, func
from redis.exceptions import RedisError

from service.config import Settings, jobs_folder
from service.jobs.errors import QueueUnavailable
from service.jobs.model import FINAL, worker_id
from service.jobs.redis_store import RedisJobStore
from service.jobs.runner import JobRunner
from service.metrics import Metrics
from service.pipelines import build_pipelines
from service.registry import ModelRegistry

log = logging.getLogger("service.jobs")
FUNCTION = "video_job"
WORKER_BEAT_S = 5.0  # a worker marks itself alive this often; one silent for 3 beats is counted out
QUEUED_FOR_AT_MOST = timedelta(days=30)  # arq drops a job not started by then; far past any real backlog
ARQ_MAX_TRIES = 1000  # the store counts tries (JobRunner); arq's own count must never end a job first


def queue_name(settings: Settings) -> str:
    return f"{settings.queue.name}:queue"


def workers_key(settings: Settings) -> str:
    return f"{settings.queue.name}:workers"


async def connect(settings: Settings) -> ArqRedis:
    """The queue's Redis, after arq's retries; QueueUnavailable says what to fix when it does not answer (a
    traceback from deep in redis-py did not)."""
    url = settings.queue.url
    assert url is not None
    try:
        return await create_pool(RedisSettings.from_dsn(url), default_queue_name=queue_name(settings))
    except RedisError as exc:
        raise QueueUnavailable(
            f"{unanswered(url, exc)}, or leave EMOTION_QUEUE_URL unset to run jobs in this process"
        ) from exc


def unanswered(url: str, exc: Exception) -> str:
    """What to fix when the queue's Redis does not answer at start (the API's and the worker's words)."""
    return f"EMOTION_QUEUE_URL={shown_url(url)}: Redis did not answer ({exc}); start it or correct the URL"


def shown_url(url: str) -> str:
    """``url`` with its password replaced, for messages and logs."""
    parts = urlsplit(url)
    if not parts.password:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    user = f"{parts.username}:" if parts.username else ":"
    return urlunsplit(parts._replace(netloc=f"{user}***@{host}"))


class RedisQueue:
    """The API's side: enqueue, take a queued job back out, count live workers."""

    def __init__(self, settings: Settings, redis: ArqRedis) -> None:
        self.settings, self.redis = settings, redis

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        await self.redis.aclose()

    async def enqueue(self, job_id: str) -> None:
        await self.redis.enqueue_job(FUNCTION, job_id, _job_id=job_id, _expires=QUEUED_FOR_AT_MOST)

    async def discard(self, job_id: str) -> None:
        """Remove arq's keys of a cancelled or expired job; one a worker holds is dropped when it ends."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.zrem(queue_name(self.settings), job_id)
            pipe.delete(job_key_prefix + job_id, retry_key_prefix + job_id)
            await pipe.execute()

    async def workers_alive(self) -> int:
        key, cutoff = workers_key(self.settings), time.time() - 3 * WORKER_BEAT_S
        await self.redis.zremrangebyscore(key, "-inf", cutoff)
        return await self.redis.zcard(key)


# --- the worker process --------------------------------------------------------------------------------------


class LeasedWorker(Worker):
    """An arq worker whose claim on a running job lasts ``lease_s`` unless renewed (see the module docstring)."""

    def __init__(self, *args: Any, lease_s: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.in_progress_timeout_s = lease_s


async def video_job(ctx: dict[str, Any], job_id: str) -> str:
    """The one arq function: run the job; ``Retry`` after an unexpected error with tries left."""
    runner: JobRunner = ctx["runner"]
    redis: ArqRedis = ctx["redis"]
    lease_ms = int(runner.queue.lease_s * 1000)
    outcome = await runner.run(job_id, renew=lambda: redis.pexpire(in_progress_key_prefix + job_id, lease_ms))
    if outcome == "retry":
        raise Retry(defer=timedelta(seconds=(await runner.store.get(job_id)).tries))
    return outcome


def build_worker(settings: Settings, metrics: Metrics, burst: bool = False) -> LeasedWorker:
    """An arq worker running ``video_job`` with models loaded once, at start (the default one warmed up)."""
    me, queue = worker_id(), settings.queue
    metrics.known_job_statuses((), sorted(FINAL))

    async def startup(ctx: dict[str, Any]) -> None:
        registry = ModelRegistry(settings, metrics)
        metrics.known_models((r.entry.manifest.key, r.entry.manifest.labels) for r in registry.all_records())
        await registry.get()
        store = RedisJobStore(ctx["redis"], jobs_folder(settings), queue.name)
        ctx["registry"] = registry
        ctx["runner"] = JobRunner(settings, store, registry, build_pipelines(settings, metrics), metrics, me)
        ctx["beat"] = asyncio.create_task(_beat(ctx["redis"], workers_key(settings), me))
        log.info("worker %s ready: queue %s, jobs folder %s", me, queue_name(settings), jobs_folder(settings))

    async def shutdown(ctx: dict[str, Any]) -> None:
        ctx["beat"].cancel()
        with contextlib.suppress(Exception):
            await ctx["redis"].zrem(workers_key(settings), me)
        await ctx["registry"].close()

    return LeasedWorker(
        functions=[func(video_job, name=FUNCTION, timeout=queue.job_timeout_s + 60, max_tries=ARQ_MAX_TRIES)],
        redis_settings=RedisSettings.from_dsn(queue.url or ""),
        queue_name=queue_name(settings),
        max_jobs=queue.worker_jobs,
        job_timeout=queue.job_timeout_s + 60,
        keep_result=0,
        poll_delay=0.25,
        max_tries=ARQ_MAX_TRIES,
        expires_extra_ms=int(QUEUED_FOR_AT_MOST.total_seconds() * 1000),
        on_startup=startup,
        on_shutdown=shutdown,
        burst=burst,
        lease_s=queue.lease_s,
    )


async def _beat(redis: ArqRedis, key: str, me: str) -> None:
    while True:
        with contextlib.suppress(Exception):
            await redis.zadd(key, {me: time.time()})
        await asyncio.sleep(WORKER_BEAT_S)
