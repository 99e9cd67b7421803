"""Batches on the job's page: the "Run for each image" form, starting a batch, and the batch
cards, which poll for their progress every second until the batch has ended."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse
from sqlalchemy.ext.asyncio import AsyncSession

from cog.db import batches as batches_db
from cog.db.models import Image, Job
from cog.errors import Invalid
from cog.services import batches as batches_service
from cog.services import images as images_service
from cog.services import jobs as jobs_service
from cog.services import series as series_service
from cog.web.deps import SessionDep, StateDep
from cog.web.pages._common import render, same_origin
from cog.web.schemas import BatchDetail

router = APIRouter(include_in_schema=False)
Guarded = [Depends(same_origin)]

BATCHES_PAGE = 5
CARD_RUNS = 48  # the runs a card shows as tiles; the API lists them all
SELECTION_PREVIEW = 12  # thumbnails of a selection the form shows
TAGS_OFFERED = 50  # the most used tags of the chosen images, offered to narrow them


@dataclass
class BatchForm:
    """The "Run for each image" form: a series of the job's (and whether with its sub-series),
    or a selection of images made elsewhere (`?images=` on the job's page)."""

    choices: list[batches_service.SeriesChoice]
    series_id: uuid.UUID | None
    include_subseries: bool
    selection: list[uuid.UUID] | None = None
    preview: list[Image] = field(default_factory=list)
    missing: int = 0  # chosen images that no longer exist
    error: str | None = None
    # The tags of the chosen images, with how many carry each; `tag` narrows them to one.
    tags: list[tuple[str, int]] = field(default_factory=list)
    tag: str | None = None

    @property
    def count(self) -> int:
        if self.selection is not None:
            return len(self.selection)
        if self.tag is not None:
            return dict(self.tags).get(self.tag, 0)
        for choice in self.choices:
            if choice.series.id == self.series_id:
                return choice.with_subseries if self.include_subseries else choice.images
        return 0

    @property
    def has_subseries(self) -> bool:
        return any(c.depth > 0 for c in self.choices)


async def batch_form(
    session: AsyncSession,
    job: Job,
    *,
    series_id: uuid.UUID | None = None,
    include_subseries: bool = False,
    tag: str | None = None,
    image_ids: list[uuid.UUID] | None = None,
    error: str | None = None,
) -> BatchForm:
    choices = await batches_service.series_choices(session, job.series_id)
    if series_id not in {c.series.id for c in choices}:
        series_id = job.series_id
    form = BatchForm(choices, series_id, include_subseries, error=error)
    if image_ids is None:
        form.tags = await images_service.tag_counts(
            session, series_id, include_subseries=include_subseries, limit=TAGS_OFFERED
        )
        clean = series_service.normalize_tag(tag)
        # A tag the chosen images do not carry (another series was chosen since) is let go.
        form.tag = clean if clean in dict(form.tags) else None
    if image_ids is not None:
        wanted = list(dict.fromkeys(image_ids))
        found = await batches_db.existing_images(session, wanted)
        form.selection = [i for i in wanted if i in found]
        form.missing = len(wanted) - len(form.selection)
        shown = await batches_db.images_with_series(session, form.selection[:SELECTION_PREVIEW])
        form.preview = [shown[i][0] for i in form.selection[:SELECTION_PREVIEW] if i in shown]
    return form


def parse_ids(text: str) -> list[uuid.UUID]:
    """Image ids from `?images=a,b,c` (or one form field per id); anything else is a 422."""
    ids = []
    for part in text.replace(" ", ",").split(","):
        if part.strip():
            try:
                ids.append(uuid.UUID(part.strip()))
            except ValueError:
                raise Invalid(f"{part.strip()[:40]!r} is not an image id.") from None
    return ids


async def cards(session: AsyncSession, batch_ids: list[uuid.UUID]) -> list[BatchDetail]:
    return [
        BatchDetail.model_validate(
            await batches_service.detail(session, batch_id, runs_limit=CARD_RUNS)
        )
        for batch_id in batch_ids
    ]


async def newest_cards(
    session: AsyncSession, job_id: uuid.UUID, cursor: str | None = None
) -> tuple[list[BatchDetail], str | None]:
    page = await batches_service.listing(session, job_id, limit=BATCHES_PAGE, cursor=cursor)
    return await cards(session, [uuid.UUID(b["id"]) for b in page.items]), page.next_cursor


@router.get("/cog/jobs/{job_id}/batch-form", response_class=HTMLResponse)
async def form_fragment(
    request: Request,
    job_id: uuid.UUID,
    session: SessionDep,
    state: StateDep,
    series_id: uuid.UUID | None = None,
    include_subseries: bool = False,
    tag: str | None = None,
) -> HTMLResponse:
    """The form again, for another series, with(out) the sub-series or for a tag: the count
    follows."""
    job = await jobs_service.require(session, job_id)
    form = await batch_form(
        session, job, series_id=series_id, include_subseries=include_subseries, tag=tag
    )
    return render(
        request,
        "batches/_form.html",
        job=job,
        batch_form=form,
        batch_concurrency=state.settings.batch_concurrency,
    )


@router.get("/cog/series/{series_id}/run-job", response_class=HTMLResponse)
async def run_job_dialog(
    request: Request,
    series_id: uuid.UUID,
    session: SessionDep,
    state: StateDep,
    image_id: uuid.UUID | None = None,
) -> HTMLResponse:
    """The dialog a gallery selection opens to run a job once for each selected image; with
    `image_id`, the one an image's page opens to run a job for that image."""
    series = await series_service.require(session, series_id)
    image = await images_service.require(session, image_id) if image_id else None
    return render(
        request,
        "series/_run_job_dialog.html",
        series=series,
        image=image,
        groups=await batches_service.job_choices(session),
        batch_concurrency=state.settings.batch_concurrency,
    )


@router.get("/cog/jobs/{job_id}/batches", response_class=HTMLResponse)
async def older_batches(
    request: Request, job_id: uuid.UUID, session: SessionDep, cursor: str | None = None
) -> HTMLResponse:
    found, next_cursor = await newest_cards(session, job_id, cursor)
    return render(
        request, "batches/_list_page.html", job_id=job_id, batches=found, next_cursor=next_cursor
    )


@router.get("/cog/batches/{batch_id}/card", response_class=HTMLResponse)
async def card(request: Request, batch_id: uuid.UUID, session: SessionDep) -> HTMLResponse:
    """The batch's card as it is now: what a running batch's card polls for."""
    (batch,) = await cards(session, [batch_id])
    return render(request, "batches/_card.html", batch=batch)


@router.post("/cog/batches/{batch_id}/cancel", dependencies=Guarded, response_class=HTMLResponse)
async def cancel(
    request: Request, batch_id: uuid.UUID, session: SessionDep, state: StateDep
) -> HTMLResponse:
    """Cancel the batch; answers its card, which goes on polling until the running runs stop."""
    for run_id in await batches_service.request_cancel(session, batch_id):
        state.executor_cancel(run_id)
        state.notifier.notify(run_id)
    (batch,) = await cards(session, [batch_id])
    return render(request, "batches/_card.html", batch=batch)
