"""/api/jobs/{id}/batches and /api/batches: a job run once for each image of a selection."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query

from cog.services import batches as batches_service
from cog.web.deps import SessionDep, StateDep
from cog.web.schemas import (
    BatchCreate,
    BatchDetail,
    BatchList,
    BatchOut,
    error_response,
    error_responses,
)

router = APIRouter(prefix="/api", tags=["batches"], responses=error_responses(401, 404, 422))


@router.post(
    "/jobs/{job_id}/batches",
    response_model=BatchOut,
    status_code=202,
    responses=error_responses(400),
)
async def start_batch(
    job_id: uuid.UUID, body: BatchCreate, session: SessionDep, state: StateDep
) -> BatchOut:
    """Run the job once for each image: of `image_ids` (any images, at most 1,000), or of the
    series `series_id` (with its sub-series' images when `include_subseries`; only those tagged
    `tag`, when given). Each run is given
    its image as the template variable `input`, and as the reference `"input"` of a step's
    `input_images`. At most `COG_BATCH_CONCURRENCY` runs of the batch execute at once.

    Refused with a 422 when the job's steps do not use `input`, or when an image does not exist
    (the answer names them; nothing is started)."""
    settings = state.settings
    batch = await batches_service.start(
        session,
        job_id,
        image_ids=body.image_ids,
        series_id=body.series_id,
        include_subseries=body.include_subseries,
        tag=body.tag,
        concurrency=settings.batch_concurrency,
        enqueue=settings.uses_queue,
    )
    state.executor_wake()
    return BatchOut.model_validate(await batches_service.view(session, batch.id))


@router.get("/jobs/{job_id}/batches", response_model=BatchList)
async def list_batches(
    job_id: uuid.UUID,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 20,
    cursor: str | None = None,
) -> BatchList:
    """The job's batches, newest first, each with its progress."""
    page = await batches_service.listing(session, job_id, limit=limit, cursor=cursor)
    return BatchList(
        items=[BatchOut.model_validate(b) for b in page.items], next_cursor=page.next_cursor
    )


@router.get("/batches/{batch_id}", response_model=BatchDetail)
async def get_batch(batch_id: uuid.UUID, session: SessionDep) -> BatchDetail:
    """The batch's progress and each of its runs: status, input image, images made, error."""
    return BatchDetail.model_validate(await batches_service.detail(session, batch_id))


@router.post(
    "/batches/{batch_id}/cancel",
    response_model=BatchOut,
    responses=error_response(409, "The batch has ended already."),
)
async def cancel_batch(batch_id: uuid.UUID, session: SessionDep, state: StateDep) -> BatchOut:
    """Stop the batch: runs not started yet are cancelled at once, running ones stop within
    about a second (what they finished is kept). A batch that has ended is a 409."""
    for run_id in await batches_service.request_cancel(session, batch_id):
        state.executor_cancel(run_id)
        state.notifier.notify(run_id)
    return BatchOut.model_validate(await batches_service.view(session, batch_id))
