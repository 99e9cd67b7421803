"""Queries on batches: a job run once per image of a selection, each run pointing at its batch.

A batch's progress is counted from its runs. Its status is settled in the transaction that ends
its last active run, whichever process ran it: `lock` first (PostgreSQL holds the batch row, so
two runs ending at once settle it one after the other, each seeing the other's end), then the
run's own change, then `settle`.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from cog.db.base import utcnow
from cog.db.models import Batch, Image, JobRun, Series, StepRun
from cog.db.pages import Page, newest_first
from cog.domain import BatchStatus, RunStatus, StepStatus

ACTIVE = (RunStatus.queued, RunStatus.running)


async def get(session: AsyncSession, batch_id: uuid.UUID) -> Batch | None:
    return await session.get(Batch, batch_id, populate_existing=True)


async def create(session: AsyncSession, job_id: uuid.UUID, total: int) -> Batch:
    batch = Batch(
        id=uuid.uuid4(),
        job_id=job_id,
        status=BatchStatus.running,
        total=total,
        cancel_requested=False,
    )
    session.add(batch)
    await session.flush()
    return batch


async def page_of_job(
    session: AsyncSession, job_id: uuid.UUID, *, limit: int, cursor: str | None
) -> Page[Batch]:
    query = sa.select(Batch).where(Batch.job_id == job_id)
    return await newest_first(session, query, Batch, limit=limit, cursor=cursor)


async def counts(
    session: AsyncSession, batch_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, dict[str, int]]:
    """How many runs of each batch are in each status."""
    out: dict[uuid.UUID, dict[str, int]] = {
        batch_id: dict.fromkeys(RunStatus, 0) for batch_id in batch_ids
    }
    if not batch_ids:
        return out
    rows = await session.execute(
        sa.select(JobRun.batch_id, JobRun.status, sa.func.count())
        .where(JobRun.batch_id.in_(batch_ids))
        .group_by(JobRun.batch_id, JobRun.status)
    )
    for batch_id, status, n in rows:
        if batch_id is not None:
            out[batch_id][RunStatus(status)] = n
    return out


async def runs_of(
    session: AsyncSession, batch_id: uuid.UUID, *, limit: int | None = None
) -> list[JobRun]:
    """The batch's runs in the order of its images (the first `limit`, when given)."""
    query = (
        sa.select(JobRun)
        .where(JobRun.batch_id == batch_id)
        .order_by(JobRun.created_at, JobRun.id)
        .execution_options(populate_existing=True)
    )
    if limit is not None:
        query = query.limit(limit)
    return list((await session.execute(query)).scalars())


async def queued_runs(session: AsyncSession, batch_id: uuid.UUID, limit: int) -> list[uuid.UUID]:
    rows = await session.execute(
        sa.select(JobRun.id)
        .where(JobRun.batch_id == batch_id, JobRun.status == RunStatus.queued)
        .order_by(JobRun.created_at, JobRun.id)
        .limit(limit)
    )
    return list(rows.scalars())


async def images_made(
    session: AsyncSession, run_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, list[str]]:
    """The images each run made so far, step by step."""
    out: dict[uuid.UUID, list[str]] = {run_id: [] for run_id in run_ids}
    if not run_ids:
        return out
    rows = await session.execute(
        sa.select(StepRun.run_id, StepRun.image_ids)
        .where(StepRun.run_id.in_(run_ids))
        .order_by(StepRun.run_id, StepRun.position)
    )
    for run_id, image_ids in rows:
        out[run_id] += [str(i) for i in image_ids]
    return out


async def lock(session: AsyncSession, batch_id: uuid.UUID) -> None:
    """Hold the batch's row until the transaction ends (PostgreSQL). On SQLite the writes that
    follow take the database's one write lock, which serializes them as well."""
    if session.get_bind().dialect.name == "postgresql":
        # NO KEY UPDATE: the foreign keys of new runs pointing here (KEY SHARE) do not wait.
        await session.execute(
            sa.select(Batch.id).where(Batch.id == batch_id).with_for_update(key_share=True)
        )


async def lock_of_run(session: AsyncSession, run_id: uuid.UUID) -> None:
    """`lock` the batch of a run, if it has one, in one statement."""
    if session.get_bind().dialect.name == "postgresql":
        batch_of_run = sa.select(JobRun.batch_id).where(JobRun.id == run_id).scalar_subquery()
        await session.execute(
            sa.select(Batch.id).where(Batch.id == batch_of_run).with_for_update(key_share=True)
        )


async def settle(session: AsyncSession, batch_id: uuid.UUID) -> BatchStatus | None:
    """End the batch when none of its runs is queued or running; answers the status it got.

    Cancelled when a cancel was asked for; otherwise failed when any run failed, cancelled when
    a run of it was cancelled, succeeded when every run did. The caller holds `lock` and commits.
    """
    by_status = (await counts(session, [batch_id]))[batch_id]
    if any(by_status[s] for s in ACTIVE):
        return None
    batch = await get(session, batch_id)
    if batch is None or batch.status != BatchStatus.running:
        return None
    if batch.cancel_requested:
        status = BatchStatus.cancelled
    elif by_status[RunStatus.failed]:
        status = BatchStatus.failed
    elif by_status[RunStatus.cancelled]:
        status = BatchStatus.cancelled
    else:
        status = BatchStatus.succeeded
    await session.execute(
        sa.update(Batch)
        .where(Batch.id == batch_id, Batch.status == BatchStatus.running)
        .values(status=status, finished_at=utcnow())
    )
    return status


async def request_cancel(session: AsyncSession, batch_id: uuid.UUID) -> list[uuid.UUID]:
    """Flag the batch and its active runs; its queued runs are cancelled at once. Answers the
    runs that are running (their executors stop them). The caller holds `lock` and commits."""
    await session.execute(
        sa.update(Batch).where(Batch.id == batch_id).values(cancel_requested=True)
    )
    await session.execute(
        sa.update(JobRun)
        .where(JobRun.batch_id == batch_id, JobRun.status.in_(ACTIVE))
        .values(cancel_requested=True)
    )
    queued = sa.select(JobRun.id).where(
        JobRun.batch_id == batch_id, JobRun.status == RunStatus.queued
    )
    await session.execute(
        sa.update(StepRun)
        .where(StepRun.run_id.in_(queued), StepRun.status == StepStatus.pending)
        .values(status=StepStatus.cancelled)
    )
    await session.execute(
        sa.update(JobRun)
        .where(JobRun.batch_id == batch_id, JobRun.status == RunStatus.queued)
        .values(
            status=RunStatus.cancelled, finished_at=utcnow(), error="Cancelled before it started."
        )
    )
    rows = await session.execute(
        sa.select(JobRun.id).where(JobRun.batch_id == batch_id, JobRun.status == RunStatus.running)
    )
    return list(rows.scalars())


async def images_with_series(
    session: AsyncSession, image_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, tuple[Image, str]]:
    """The images that exist among `image_ids`, each with the title of its series."""
    if not image_ids:
        return {}
    rows = await session.execute(
        sa.select(Image, Series.title)
        .join(Series, Series.id == Image.series_id)
        .where(Image.id.in_(image_ids))
    )
    return {image.id: (image, title) for image, title in rows}


async def existing_images(session: AsyncSession, image_ids: Sequence[uuid.UUID]) -> set[uuid.UUID]:
    found: set[uuid.UUID] = set()
    # In slices: a statement has a bounded number of parameters (SQLite's default is 32766).
    for start in range(0, len(image_ids), 500):
        rows = await session.execute(
            sa.select(Image.id).where(Image.id.in_(image_ids[start : start + 500]))
        )
        found.update(rows.scalars())
    return found


async def subtree(session: AsyncSession, root_id: uuid.UUID) -> list[Series]:
    """The series and every series under it (the choices of a batch over a series)."""
    walk = sa.select(Series.id).where(Series.id == root_id).cte("walk", recursive=True)
    walk = walk.union_all(sa.select(Series.id).join(walk, Series.parent_id == walk.c.id))
    rows = await session.execute(sa.select(Series).join(walk, Series.id == walk.c.id))
    return list(rows.scalars())


async def image_counts(
    session: AsyncSession, series_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, int]:
    if not series_ids:
        return {}
    rows = await session.execute(
        sa.select(Image.series_id, sa.func.count())
        .where(Image.series_id.in_(series_ids))
        .group_by(Image.series_id)
    )
    return {row[0]: int(row[1]) for row in rows.all()}
