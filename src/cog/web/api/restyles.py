"""/api/restyles: images re-rendered in the style of another series, as a batch."""

from __future__ import annotations

from fastapi import APIRouter

from cog.services import batches as batches_service
from cog.services import restyle as restyle_service
from cog.web.deps import SessionDep, StateDep
from cog.web.schemas import BatchOut, RestyleCreate, error_responses

router = APIRouter(prefix="/api", tags=["batches"], responses=error_responses(401, 404, 422))


@router.post(
    "/restyles",
    response_model=BatchOut,
    status_code=202,
    responses=error_responses(400, 401, 404, 422),
)
async def start_restyle(body: RestyleCreate, session: SessionDep, state: StateDep) -> BatchOut:
    """Re-render each image (of `image_ids`, any series; or of the series `series_id`, only
    those tagged `tag` when given) in the style of `style_series_id`, into `target_series_id`
    (or a new top-level series titled `target_title`). It starts a batch of a job kept in the
    target series (made the first time, then reused for the same style): the job has the
    style series as its style source, and its one image step sends the image (the `input`
    reference) with the style images (`style_image_ids`, else a sample of
    `style_image_count`), marked as style references in the prompt, with `prompt` added.
    Each image made records its source image (`input`) and the style images (`style`) in its
    lineage, and the style series in its metadata (`style`). Follow it as any batch
    (`GET /api/batches/{id}`; its `job_id` is the restyle job).

    A 404 when a series does not exist; a 422 when an image does not exist (named in
    `unknown_image_ids`), a picked style image is not of the style series, or the style series
    has neither images nor a style profile. Nothing starts or changes then."""
    settings = state.settings
    batch = await restyle_service.start(
        session,
        style_series_id=body.style_series_id,
        target_series_id=body.target_series_id,
        target_title=body.target_title,
        image_ids=body.image_ids,
        series_id=body.series_id,
        include_subseries=body.include_subseries,
        tag=body.tag,
        prompt=body.prompt,
        style_image_ids=body.style_image_ids,
        style_image_count=body.style_image_count,
        concurrency=settings.batch_concurrency,
        enqueue=settings.uses_queue,
    )
    state.executor_wake()
    return BatchOut.model_validate(await batches_service.view(session, batch.id))
