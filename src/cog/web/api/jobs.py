"""/api/series/{id}/jobs, /api/jobs and /api/runs"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Response, status
from fastapi.sse import EventSourceResponse, ServerSentEvent
from sqlalchemy.ext.asyncio import AsyncSession

from cog.db import jobs as jobs_db
from cog.db.models import Job
from cog.engine.events import follow
from cog.errors import Invalid
from cog.services import jobs as jobs_service
from cog.services import runs as runs_service
from cog.web.deps import SessionDep, StateDep, StoreDep
from cog.web.schemas import (
    JobCreate,
    JobList,
    JobOut,
    JobUpdate,
    RunList,
    RunOut,
    RunSummary,
    StepChange,
    StepOut,
    StepsReplace,
    error_responses,
    json_error_responses,
)

router = APIRouter(prefix="/api", tags=["jobs"], responses=error_responses(401, 404, 422))


async def job_out(session: AsyncSession, job: Job) -> JobOut:
    steps = await jobs_service.steps(session, job.id)
    last = (await jobs_db.last_runs(session, [job.id])).get(job.id)
    return JobOut(
        id=job.id,
        series_id=job.series_id,
        title=job.title,
        base_prompt=job.base_prompt,
        status=job.status,
        style_series_id=job.style_series_id,
        style_image_ids=[uuid.UUID(i) for i in job.style_image_ids],
        style_image_count=job.style_image_count,
        steps=[
            StepOut(
                id=s.id,
                position=s.position,
                kind=s.kind,
                prompt=s.prompt,
                model=s.model,
                config=s.config,
                when=s.condition,
                for_each=s.for_each,
            )
            for s in steps
        ],
        last_run=None
        if last is None
        else RunSummary(
            id=last.id, status=last.status, created_at=last.created_at, finished_at=last.finished_at
        ),
        created_at=job.created_at,
        updated_at=job.updated_at,
    )


@router.get("/series/{series_id}/jobs", response_model=JobList)
async def list_jobs(
    series_id: uuid.UUID,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    cursor: str | None = None,
) -> JobList:
    """The series' jobs, newest first, each with its steps and last run."""
    page = await jobs_service.listing(session, series_id, limit=limit, cursor=cursor)
    return JobList(
        items=[await job_out(session, job) for job in page.items], next_cursor=page.next_cursor
    )


@router.post(
    "/series/{series_id}/jobs",
    response_model=JobOut,
    status_code=201,
    responses=error_responses(400),
)
async def create_job(series_id: uuid.UUID, body: JobCreate, session: SessionDep) -> JobOut:
    """A new job. A style source (`style_series_id`, with `style_image_ids` or
    `style_image_count`) may come with it; a series or image that does not exist, or images
    of another series, are a 422."""
    style = {
        field: getattr(body, field)
        for field in ("style_series_id", "style_image_ids", "style_image_count")
        if field in body.model_fields_set
    }
    for field, value in style.items():
        if value is None and field != "style_series_id":
            raise Invalid(f"`{field}` cannot be null.")
    job = await jobs_service.create(
        session, series_id, title=body.title, base_prompt=body.base_prompt, **style
    )
    return await job_out(session, job)


@router.get("/jobs/{job_id}", response_model=JobOut)
async def get_job(job_id: uuid.UUID, session: SessionDep) -> JobOut:
    return await job_out(session, await jobs_service.require(session, job_id))


@router.patch("/jobs/{job_id}", response_model=JobOut, responses=error_responses(400))
async def update_job(job_id: uuid.UUID, body: JobUpdate, session: SessionDep) -> JobOut:
    """Change the fields sent. `style_series_id` sets the style source (null: none; choosing
    another series drops the images picked from the one before unless `style_image_ids` come
    too). The style images and a step's own references must fit one request (14)."""
    changes = {field: getattr(body, field) for field in body.model_fields_set}
    for field, value in changes.items():
        if value is None and field != "style_series_id":
            raise Invalid(f"`{field}` cannot be null.")
    return await job_out(session, await jobs_service.update(session, job_id, **changes))


@router.delete("/jobs/{job_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_job(job_id: uuid.UUID, session: SessionDep, state: StateDep) -> Response:
    """Delete the job and its runs. Every image it made stays in the series."""
    for run_id in await jobs_service.delete(session, job_id):
        state.executor_cancel(run_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/jobs/{job_id}/draft", response_model=JobOut, responses=error_responses(502))
async def draft_job(
    job_id: uuid.UUID, session: SessionDep, store: StoreDep, state: StateDep
) -> JobOut:
    """The text model drafts the steps from the base prompt and the series; they are saved."""
    job = await jobs_service.draft(session, store, state.text_provider, job_id)
    return await job_out(session, job)


@router.put("/jobs/{job_id}/steps", response_model=JobOut, responses=error_responses(400))
async def replace_steps(job_id: uuid.UUID, body: StepsReplace, session: SessionDep) -> JobOut:
    """Replace the whole ordered list of steps. A refused list changes nothing."""
    return await job_out(session, await jobs_service.replace_steps(session, job_id, body.steps))


@router.patch(
    "/jobs/{job_id}/steps/{position}", response_model=JobOut, responses=error_responses(400)
)
async def update_step(
    job_id: uuid.UUID, position: int, body: StepChange, session: SessionDep
) -> JobOut:
    """Change one step (the fields sent); the whole list is checked again."""
    return await job_out(session, await jobs_service.update_step(session, job_id, position, body))


@router.post("/jobs/{job_id}/runs", response_model=RunOut, status_code=202)
async def start_run(job_id: uuid.UUID, session: SessionDep, state: StateDep) -> RunOut:
    """Run the job now: its steps are snapshotted and the run is queued for the executor."""
    started = await runs_service.start(session, job_id, enqueue=state.settings.uses_queue)
    state.executor_wake()
    return RunOut.model_validate(started.view())


@router.get("/jobs/{job_id}/runs", response_model=RunList)
async def list_runs(
    job_id: uuid.UUID,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 20,
    cursor: str | None = None,
) -> RunList:
    """The job's runs, newest first, each with the steps it actually ran."""
    page = await runs_service.history(session, job_id, limit=limit, cursor=cursor)
    return RunList(
        items=[RunOut.model_validate(r) for r in page.items], next_cursor=page.next_cursor
    )


@router.get("/runs/{run_id}", response_model=RunOut)
async def get_run(run_id: uuid.UUID, session: SessionDep) -> RunOut:
    return RunOut.model_validate(await runs_service.view(session, run_id))


@router.post("/runs/{run_id}/cancel", response_model=RunOut, responses=error_responses(409))
async def cancel_run(run_id: uuid.UUID, session: SessionDep, state: StateDep) -> RunOut:
    """Stop the run: the step in flight stops, what finished is kept."""
    await runs_service.request_cancel(session, run_id)
    state.executor_cancel(run_id)
    state.notifier.notify(run_id)
    return RunOut.model_validate(await runs_service.view(session, run_id))


async def existing_run(run_id: uuid.UUID, session: SessionDep) -> uuid.UUID:
    """Checked before a stream starts, so an unknown run is a plain 404."""
    await runs_service.require(session, run_id)
    return run_id


@router.get(
    "/runs/{run_id}/events",
    response_class=EventSourceResponse,
    responses=json_error_responses(401, 404, 422),
)
async def run_events(
    run_id: Annotated[uuid.UUID, Depends(existing_run)], state: StateDep
) -> AsyncIterator[ServerSentEvent]:
    """Server-sent events: `snapshot` first, then `run_started`, `step_started`,
    `image_stored`, `iteration_finished` (a turn of a `for_each` loop), `step_finished` and
    `run_finished`; the stream closes when the run ends."""

    async def read() -> dict[str, Any] | None:
        # A session per read: the stream may last minutes and must not hold a connection.
        async with state.sessions() as session:
            return await runs_service.read(session, run_id)

    async for event in follow(run_id, read, state.notifier):
        yield ServerSentEvent(event=event.name, data=event.data)
