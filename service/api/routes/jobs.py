"""Background video jobs: submit a clip (checked like ``/predict/video`` before anything is queued), poll it,
cancel it, list jobs. Which backend runs them (in-process or Redis workers) is the ``JobService``'s business."""

from __future__ import annotations

from pathlib import Path as FilePath
from typing import Annotated

from fastapi import APIRouter, Path, Query, Response, UploadFile

from service.api.deps import ApiKeyDep, JobsDep, ModelName, ModelVersion, RegistryDep, SettingsDep, VideoRequestDep
from service.api.routes.predict import ERRORS
from service.api.uploads import spool_upload
from service.errors import WrongModelKind
from service.jobs.model import Status
from service.jobs.schemas import JobAccepted, JobInfo, JobPage, JobView, job_info, job_page, job_view
from service.options import VideoCaps, resolve_options
from service.registry import KIND_HINTS
from service.schemas import ErrorDetail

router = APIRouter(prefix="/jobs", tags=["jobs"], dependencies=[ApiKeyDep])
LOCATION = {"Location": {"description": "the job's URL: /jobs/{id}", "schema": {"type": "string"}}}


def errors(**codes: str) -> dict:
    return {int(code[1:]): {"description": text, "model": ErrorDetail} for code, text in codes.items()}


NOT_FOUND = errors(_401="missing or wrong API key", _404="no such job (never created, or expired)")
JobId = Annotated[str, Path(description="the id `POST /jobs/video` returned")]


@router.post(
    "/video",
    status_code=202,
    response_model=JobAccepted,
    responses={
        202: {"headers": LOCATION},
        **ERRORS,
        **errors(
            _503="the queue is full (max_queued) or unreachable; see Retry-After", _507="the disk is (nearly) full"
        ),
    },
)
async def submit_video_job(
    file: UploadFile,
    response: Response,
    jobs: JobsDep,
    registry: RegistryDep,
    settings: SettingsDep,
    requested: VideoRequestDep,
    model: ModelName = None,
    version: ModelVersion = None,
) -> JobAccepted:
    """Queue a video for analysis; it may be longer and larger than `/predict/video` accepts (up to the job
    limits). The same options; the same 4xx answers for a bad upload, before anything is queued."""
    manifest = registry.resolve(model, version).entry.manifest
    if manifest.kind.input == "features":  # what VideoPipeline.analyse would refuse, refused before queueing
        raise WrongModelKind(f"model {manifest.name!r} {KIND_HINTS['features']}")
    resolve_options(settings, requested, caps=VideoCaps.job(settings))  # 422 on contradicting options
    await jobs.admit()  # 503 with the queue full, 507 with the disk nearly full: before the upload is kept
    job_id, folder = jobs.new_folder()
    try:
        path = await spool_upload(file, settings.queue.max_bytes, folder)
        job = await jobs.submit(job_id, FilePath(path), manifest.name, manifest.version, requested)
    except BaseException:
        jobs.discard_folder(job_id)
        raise
    response.headers["Location"] = f"/jobs/{job.id}"
    return JobAccepted(id=job.id, created=job.created)


@router.get("/{id}", response_model=JobView, responses=NOT_FOUND)
async def get_job(id: JobId, jobs: JobsDep) -> JobView:
    """The job's status and progress; its result (the `/predict/video` response) once succeeded, the reason
    once failed."""
    job, result = await jobs.get(id)
    return job_view(job, result)


@router.delete(
    "/{id}",
    response_model=JobInfo,
    responses={**NOT_FOUND, **errors(_409="cancelled while running, its worker still stopping; see Retry-After")},
)
async def end_job(id: JobId, jobs: JobsDep) -> JobInfo:
    """Cancel a queued or running job (a running one stops within a second; its clip is deleted), or delete an
    ended one with its result and files (then `GET` answers 404). The answer is the job's last state."""
    return job_info(await jobs.end(id))


@router.get("", response_model=JobPage, responses=errors(_401="missing or wrong API key"))
async def list_jobs(
    jobs: JobsDep,
    limit: Annotated[int, Query(ge=1, le=100, description="jobs per page")] = 20,
    offset: Annotated[int, Query(ge=0, le=1_000_000_000, description="jobs to skip (newest first)")] = 0,
    status: Annotated[Status | None, Query(description="only jobs with this status")] = None,
) -> JobPage:
    """Recent jobs, newest first, without their results."""
    found, total = await jobs.page(offset, limit, status)
    return job_page(found, total, offset, limit)
