"""Job records -> the job API's response models (defined with the other response models in
``emotion_client.schemas``, which the Python client reads too)."""

from __future__ import annotations

from emotion_client.schemas import ErrorDetail, JobAccepted, JobInfo, JobPage
from emotion_client.schemas import Job as JobView
from service.jobs.model import Job
from service.schemas import ModelRef, VideoPredictionResponse

__all__ = ["JobAccepted", "JobInfo", "JobPage", "JobView", "job_info", "job_page", "job_view"]


def job_info(job: Job) -> JobInfo:
    return JobInfo(
        id=job.id,
        status=job.status,
        progress=job.progress,
        created=job.created,
        started=job.started,
        finished=job.finished,
        expires=job.expires,
        tries=job.tries,
        model=ModelRef(name=job.model, version=job.version),
        error=ErrorDetail(detail=job.error) if job.status == "failed" and job.error else None,
    )


def job_view(job: Job, result: str | None) -> JobView:
    body = VideoPredictionResponse.model_validate_json(result) if result else None
    return JobView(**job_info(job).model_dump(), result=body)


def job_page(jobs: list[Job], total: int, offset: int, limit: int) -> JobPage:
    after = offset + len(jobs)
    return JobPage(
        jobs=[job_info(j) for j in jobs],
        total=total,
        offset=offset,
        limit=limit,
        next_offset=after if after < total else None,
    )
