"""Batches: run a job once for each image of a selection or a series, follow them, cancel them.

Each image gets a run of its own (the `input` of the job's templates, and the `"input"`
reference of its steps); the batch counts how they went. All the runs are created, and queued
for the workers, in the transaction that creates the batch.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from cog.db import batches as batches_db
from cog.db import images as images_db
from cog.db import jobs as jobs_db
from cog.db import queue as queue_db
from cog.db import runs as runs_db
from cog.db.base import utcnow
from cog.db.images import ImageFilter
from cog.db.models import Batch, Job, Series
from cog.db.pages import Page, check_limit
from cog.domain import MAX_BATCH_IMAGES, BatchStatus, RunStatus
from cog.engine.steps import parse_steps, uses_input
from cog.errors import Conflict, Invalid, NotFound
from cog.services import jobs as jobs_service
from cog.services import runs as runs_service
from cog.services import series as series_service
from cog.services import style as style_service

# The unknown ids a refusal names; the rest are counted.
NAMED_UNKNOWN = 10
# The jobs a gallery selection is offered to run through.
JOBS_OFFERED = 1000


async def require(session: AsyncSession, batch_id: uuid.UUID) -> Batch:
    found = await batches_db.get(session, batch_id)
    if found is None:
        raise NotFound(f"There is no batch {batch_id}.")
    return found


async def selection_of_series(
    session: AsyncSession,
    series_id: uuid.UUID,
    *,
    include_subseries: bool,
    tag: str | None = None,
) -> list[uuid.UUID]:
    """The images of a series (and of its sub-series), only those tagged `tag` when one is
    given, oldest first."""
    await series_service.require(session, series_id)
    clean = series_service.normalize_tag(tag)
    if tag is not None and clean is None:
        raise Invalid("The `tag` is empty.")
    where = ImageFilter(series_id, include_subseries, clean)
    count, _ = await images_db.count_matching(session, where)
    place = "the series and its sub-series" if include_subseries else "the series"
    what = f"images tagged “{where.tag}”" if where.tag else "images"
    if count == 0:
        raise Invalid(f"There are no {what} in {place} to run the job for.")
    if count > MAX_BATCH_IMAGES:
        raise Invalid(
            f"{place.capitalize()} hold {count} {what}; a batch runs for at most "
            f"{MAX_BATCH_IMAGES}. Choose a sub-series, a tag or a selection of images."
        )
    return await images_db.ids_matching(session, where, oldest_first=True, limit=MAX_BATCH_IMAGES)


def check_source(
    image_ids: Sequence[uuid.UUID] | None, series_id: uuid.UUID | None, tag: str | None
) -> None:
    """A batch is for a list of images or for a series (narrowed by a tag), never both."""
    if tag is not None and series_id is None:
        raise Invalid("A `tag` narrows the images of `series_id`: give the series too.")
    if (image_ids is None) == (series_id is None):
        raise Invalid("Give either `image_ids` (a selection) or `series_id` (a whole series).")


async def check_selection(session: AsyncSession, image_ids: Sequence[uuid.UUID]) -> list[uuid.UUID]:
    """The chosen images, each once, in the order given; `Invalid` naming the unknown ones."""
    ids = list(dict.fromkeys(image_ids))
    if not ids:
        raise Invalid("Choose at least one image to run the job for.")
    if len(ids) > MAX_BATCH_IMAGES:
        raise Invalid(
            f"A batch runs for at most {MAX_BATCH_IMAGES} images; {len(ids)} were chosen."
        )
    found = await batches_db.existing_images(session, ids)
    unknown = [i for i in ids if i not in found]
    if unknown:
        named = ", ".join(str(i) for i in unknown[:NAMED_UNKNOWN])
        more = len(unknown) - NAMED_UNKNOWN
        raise Invalid(
            f"{'This image does' if len(unknown) == 1 else 'These images do'} not exist: {named}"
            + (f" and {more} more" if more > 0 else "")
            + ". Nothing was started.",
            unknown_image_ids=[str(i) for i in unknown],
        )
    return ids


async def start(
    session: AsyncSession,
    job_id: uuid.UUID,
    *,
    image_ids: Sequence[uuid.UUID] | None = None,
    series_id: uuid.UUID | None = None,
    include_subseries: bool = False,
    tag: str | None = None,
    concurrency: int,
    enqueue: bool = False,
) -> Batch:
    """Start a batch: one queued run of the job's current steps for each image, from a list
    of image ids (any images) or from a series (its images tagged `tag`, when given). With
    `enqueue` (the queue executor), the runs' jobs are committed with them, each batch's spread
    over `concurrency` queue locks."""
    check_source(image_ids, series_id, tag)
    job, specs = await runs_service.runnable_steps(session, job_id)
    if not uses_input(specs):
        raise Invalid(
            "None of the job's steps uses the image each run is for. Put `{{ input.prompt }}` "
            "(or `.filename`, `.tags`, `.width`…) in a prompt, or choose “input” among a "
            "step's input images, then run it for each image."
        )
    if series_id is not None:
        ids = await selection_of_series(
            session, series_id, include_subseries=include_subseries, tag=tag
        )
    else:
        ids = await check_selection(session, image_ids or [])
    # One style snapshot for the whole batch: every image gets the same style references.
    style = await style_service.snapshot(session, job)
    batch = await batches_db.create(session, job.id, len(ids))
    snapshot = jobs_service.dump_steps(specs)
    # The runs are ordered by (created_at, id) everywhere: a microsecond apart, they keep the
    # order of the images.
    first = utcnow()
    runs = []
    for place, image_id in enumerate(ids):
        run, _ = await runs_db.create(
            session,
            job,
            snapshot,
            batch_id=batch.id,
            input_image_id=image_id,
            style=style,
            flush=False,
        )
        run.created_at = first + dt.timedelta(microseconds=place)
        runs.append(run)
    await session.flush()
    if enqueue:
        await queue_db.enqueue_many(
            session,
            [
                (run.id, queue_db.batch_lock(batch.id, place, concurrency))
                for place, run in enumerate(runs)
            ],
        )
    await session.commit()
    return batch


def _view(batch: Batch, counts: dict[str, int]) -> dict[str, Any]:
    done = sum(counts[s] for s in (RunStatus.succeeded, RunStatus.failed, RunStatus.cancelled))
    return {
        "id": str(batch.id),
        "job_id": str(batch.job_id),
        "status": batch.status,
        "total": batch.total,
        "done": done,
        "succeeded": counts[RunStatus.succeeded],
        "failed": counts[RunStatus.failed],
        "cancelled": counts[RunStatus.cancelled],
        "running": counts[RunStatus.running],
        "queued": counts[RunStatus.queued],
        "cancel_requested": batch.cancel_requested,
        "created_at": batch.created_at.isoformat(),
        "finished_at": batch.finished_at.isoformat() if batch.finished_at else None,
    }


async def view(session: AsyncSession, batch_id: uuid.UUID) -> dict[str, Any]:
    """The batch with its progress (JSON-ready)."""
    batch = await require(session, batch_id)
    return _view(batch, (await batches_db.counts(session, [batch.id]))[batch.id])


async def detail(
    session: AsyncSession, batch_id: uuid.UUID, *, runs_limit: int | None = None
) -> dict[str, Any]:
    """The batch with its runs in the order of its images: every run (a batch has at most
    MAX_BATCH_IMAGES), or the first `runs_limit`."""
    batch = await require(session, batch_id)
    runs = await batches_db.runs_of(session, batch.id, limit=runs_limit)
    made = await batches_db.images_made(session, [r.id for r in runs])
    counts = (await batches_db.counts(session, [batch.id]))[batch.id]
    return {
        **_view(batch, counts),
        "runs": [
            {
                "id": str(run.id),
                "status": run.status,
                "input_image_id": str(run.input_image_id) if run.input_image_id else None,
                "image_ids": made[run.id],
                "error": run.error,
                "started_at": run.started_at.isoformat() if run.started_at else None,
                "finished_at": run.finished_at.isoformat() if run.finished_at else None,
            }
            for run in runs
        ],
    }


async def listing(
    session: AsyncSession, job_id: uuid.UUID, *, limit: int = 20, cursor: str | None = None
) -> Page[dict[str, Any]]:
    """The job's batches, newest first, each with its progress."""
    check_limit(limit)
    await jobs_service.require(session, job_id)
    page = await batches_db.page_of_job(session, job_id, limit=limit, cursor=cursor)
    counts = await batches_db.counts(session, [b.id for b in page.items])
    return Page([_view(b, counts[b.id]) for b in page.items], page.next_cursor)


async def request_cancel(session: AsyncSession, batch_id: uuid.UUID) -> list[uuid.UUID]:
    """Cancel a batch: its queued runs at once, its running ones by request (their executors
    stop them within about a second). Answers the runs that are running."""
    batch = await require(session, batch_id)
    if BatchStatus(batch.status).is_final:
        raise Conflict(f"The batch has already ended ({batch.status}); there is nothing to cancel.")
    await batches_db.lock(session, batch.id)
    running = await batches_db.request_cancel(session, batch.id)
    await batches_db.settle(session, batch.id)
    await session.commit()
    return running


@dataclass(frozen=True)
class SeriesChoice:
    """A series a batch can be run over: the job's series or one under it."""

    series: Series
    depth: int  # below the job's series
    images: int  # its own
    with_subseries: int  # its own and those of every series under it


async def series_choices(session: AsyncSession, root_id: uuid.UUID) -> list[SeriesChoice]:
    """The series and everything under it, depth first, each level by title, with counts."""
    tree = await batches_db.subtree(session, root_id)
    counts = await batches_db.image_counts(session, [s.id for s in tree])
    children: dict[uuid.UUID | None, list[Series]] = {}
    for s in tree:
        children.setdefault(s.parent_id, []).append(s)
    out: list[SeriesChoice] = []

    def walk(series: Series, depth: int) -> int:
        index = len(out)
        out.append(SeriesChoice(series, depth, counts.get(series.id, 0), 0))
        total = counts.get(series.id, 0)
        for child in sorted(children.get(series.id, []), key=lambda s: (s.title, s.id)):
            total += walk(child, depth + 1)
        out[index] = SeriesChoice(series, depth, counts.get(series.id, 0), total)
        return total

    root = next((s for s in tree if s.id == root_id), None)
    if root is not None:
        walk(root, 0)
    return out


@dataclass(frozen=True)
class JobChoice:
    """A job a selection of images can be run through."""

    job: Job
    steps: int
    uses_input: bool  # without a step that uses the image each run is for, a batch is refused


@dataclass(frozen=True)
class JobGroup:
    """The jobs of one series, named by its place in the tree."""

    series: Series
    trail: list[str]  # the titles from the root down to it
    jobs: list[JobChoice]


async def job_choices(session: AsyncSession) -> list[JobGroup]:
    """Every job, grouped by series in the tree's order, each by title."""
    jobs = await jobs_db.everything(session, JOBS_OFFERED)
    steps = await jobs_db.steps_of(session, [job.id for job in jobs])
    by_series: dict[uuid.UUID, list[JobChoice]] = {}
    for job in jobs:
        specs, _ = parse_steps([jobs_service.step_dict(row) for row in steps[job.id]])
        choice = JobChoice(job, len(steps[job.id]), uses_input([s for s in specs if s is not None]))
        by_series.setdefault(job.series_id, []).append(choice)
    groups: list[JobGroup] = []
    titles: list[str] = []  # down to the entry's depth
    for entry in await series_service.outline(session):
        del titles[entry.depth :]
        titles.append(entry.series.title)
        if entry.series.id in by_series:
            groups.append(JobGroup(entry.series, list(titles), by_series[entry.series.id]))
    return groups
