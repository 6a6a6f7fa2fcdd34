"""Background video jobs: a job store, a queue and a runner, behind one ``JobService``.

With no ``EMOTION_QUEUE_URL`` jobs run on a small pool inside the API process, their state in files under the jobs
folder (embedded); with one, the API only enqueues on Redis (arq) and ``python -m service.worker`` processes run
them. Both share ``JobRunner``, which calls the same video pipeline as ``POST /predict/video``.
"""

from __future__ import annotations

import logging

from service.config import Settings, jobs_folder
from service.jobs.embedded import EmbeddedQueue
from service.jobs.errors import JobCancelled, JobNotFound, JobStopping
from service.jobs.model import FINAL, STATUSES, Job, Status, worker_id
from service.jobs.redis_queue import RedisQueue, connect
from service.jobs.redis_store import RedisJobStore
from service.jobs.runner import JobRunner
from service.jobs.service import JobService
from service.jobs.store import FileJobStore
from service.metrics import Metrics
from service.pipelines import Pipelines
from service.registry import ModelRegistry

log = logging.getLogger("service.jobs")


async def create_jobs(
    settings: Settings, metrics: Metrics, registry: ModelRegistry, pipelines: Pipelines
) -> JobService:
    """The backend the settings ask for, not started yet."""
    queue = settings.queue
    if queue.url:
        redis = await connect(settings)
        store = RedisJobStore(redis, jobs_folder(settings), queue.name)
        return JobService(settings, store, RedisQueue(settings, redis), metrics)
    files = FileJobStore(jobs_folder(settings))
    log.info("jobs run in this process; their folder: %s", files.root)
    runner = JobRunner(settings, files, registry, pipelines, metrics, worker_id())
    return JobService(settings, files, EmbeddedQueue(files, runner, queue.embedded_workers), metrics)


__all__ = [
    "FINAL",
    "STATUSES",
    "Job",
    "JobCancelled",
    "JobNotFound",
    "JobService",
    "JobStopping",
    "Status",
    "create_jobs",
]
