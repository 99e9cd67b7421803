"""Queries on runs and their steps: creation, claims, heartbeats, status changes.

The status transitions themselves are decided in `cog.engine.runner`; this module only writes
what it is told, with the guards that keep two executors from holding one run.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from cog.db.base import utcnow
from cog.db.models import Image, Job, JobRun, StepRun
from cog.db.pages import Page, newest_first
from cog.domain import RunStatus, StepStatus


async def get(session: AsyncSession, run_id: uuid.UUID) -> JobRun | None:
    return await session.get(JobRun, run_id, populate_existing=True)


async def step_runs(session: AsyncSession, run_id: uuid.UUID) -> list[StepRun]:
    rows = await session.execute(
        sa.select(StepRun)
        .where(StepRun.run_id == run_id)
        .order_by(StepRun.position)
        .execution_options(populate_existing=True)
    )
    return list(rows.scalars())


async def step_runs_of(
    session: AsyncSession, run_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, list[StepRun]]:
    out: dict[uuid.UUID, list[StepRun]] = {run_id: [] for run_id in run_ids}
    if not run_ids:
        return out
    rows = await session.execute(
        sa.select(StepRun).where(StepRun.run_id.in_(run_ids)).order_by(StepRun.position)
    )
    for step in rows.scalars():
        out[step.run_id].append(step)
    return out


async def create(session: AsyncSession, job: Job, snapshot: list[dict[str, Any]]) -> JobRun:
    """A queued run with one pending step run per step of the snapshot. The caller commits."""
    run = JobRun(
        id=uuid.uuid4(),
        job_id=job.id,
        status=RunStatus.queued,
        steps_snapshot=snapshot,
        base_prompt=job.base_prompt,
        cancel_requested=False,
        attempts=0,
    )
    session.add(run)
    session.add_all(
        StepRun(
            run_id=run.id,
            position=position,
            kind=step["kind"],
            model=step.get("model"),
            status=StepStatus.pending,
            image_ids=[],
            attempt_log=[],
            usage={},
            attempts=0,
        )
        for position, step in enumerate(snapshot)
    )
    await session.flush()
    return run


async def page_of_job(
    session: AsyncSession, job_id: uuid.UUID, *, limit: int, cursor: str | None
) -> Page[JobRun]:
    query = sa.select(JobRun).where(JobRun.job_id == job_id)
    return await newest_first(session, query, JobRun, limit=limit, cursor=cursor)


async def claim(session: AsyncSession, run_id: uuid.UUID, worker: str) -> bool:
    """Take a queued run for `worker`. Only one claimer can win: the update is guarded."""
    now = utcnow()
    result = await session.execute(
        sa.update(JobRun)
        .where(JobRun.id == run_id, JobRun.status == RunStatus.queued)
        .values(
            status=RunStatus.running,
            claimed_by=worker,
            heartbeat_at=now,
            started_at=sa.func.coalesce(JobRun.started_at, now),
            attempts=JobRun.attempts + 1,
        )
    )
    await session.commit()
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def queued(session: AsyncSession, limit: int) -> list[uuid.UUID]:
    rows = await session.execute(
        sa.select(JobRun.id)
        .where(JobRun.status == RunStatus.queued)
        .order_by(JobRun.created_at)
        .limit(limit)
    )
    return list(rows.scalars())


async def heartbeat(
    session: AsyncSession, run_id: uuid.UUID, worker: str, *, renew: bool = True
) -> tuple[bool, bool]:
    """Refresh the claim (unless `renew` is false: only look). Answers (still ours, cancel
    requested)."""
    if renew:
        await session.execute(
            sa.update(JobRun)
            .where(JobRun.id == run_id, JobRun.claimed_by == worker)
            .values(heartbeat_at=utcnow())
        )
        await session.commit()
    row = (
        await session.execute(
            sa.select(JobRun.claimed_by, JobRun.status, JobRun.cancel_requested).where(
                JobRun.id == run_id
            )
        )
    ).first()
    if row is None:
        return False, True
    ours = row.claimed_by == worker and row.status == RunStatus.running
    return ours, bool(row.cancel_requested)


async def stale(session: AsyncSession, older_than: dt.datetime) -> list[JobRun]:
    """Runs marked running whose executor has stopped saying so."""
    rows = await session.execute(
        sa.select(JobRun).where(
            JobRun.status == RunStatus.running,
            sa.or_(JobRun.heartbeat_at.is_(None), JobRun.heartbeat_at < older_than),
        )
    )
    return list(rows.scalars())


async def unfinished_count(session: AsyncSession) -> int:
    """Runs queued or running."""
    count = await session.scalar(
        sa.select(sa.func.count())
        .select_from(JobRun)
        .where(JobRun.status.in_([RunStatus.queued, RunStatus.running]))
    )
    return int(count or 0)


async def release(session: AsyncSession, run_id: uuid.UUID, worker: str | None) -> bool:
    """Put a running run back in the queue (its executor stopped); resumes where it was."""
    query = sa.update(JobRun).where(JobRun.id == run_id, JobRun.status == RunStatus.running)
    if worker is not None:
        query = query.where(JobRun.claimed_by == worker)
    result = await session.execute(
        query.values(status=RunStatus.queued, claimed_by=None, heartbeat_at=None)
    )
    await session.execute(
        sa.update(StepRun)
        .where(StepRun.run_id == run_id, StepRun.status == StepStatus.running)
        .values(status=StepStatus.pending)
    )
    await session.commit()
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def request_cancel(session: AsyncSession, run_id: uuid.UUID) -> None:
    await session.execute(
        sa.update(JobRun).where(JobRun.id == run_id).values(cancel_requested=True)
    )


async def finish_queued_as_cancelled(session: AsyncSession, run_id: uuid.UUID) -> bool:
    """A run nobody has started yet is cancelled at once."""
    now = utcnow()
    result = await session.execute(
        sa.update(JobRun)
        .where(JobRun.id == run_id, JobRun.status == RunStatus.queued)
        .values(status=RunStatus.cancelled, finished_at=now, error="Cancelled before it started.")
    )
    if result.rowcount:  # type: ignore[attr-defined]
        await session.execute(
            sa.update(StepRun)
            .where(StepRun.run_id == run_id, StepRun.status == StepStatus.pending)
            .values(status=StepStatus.cancelled)
        )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def images_of_step(session: AsyncSession, step_run_id: uuid.UUID) -> list[uuid.UUID]:
    # An image of a step carries the step's run too, and `run_id` is indexed (`step_id` is not):
    # without the run, this would read every image in the database.
    run_of_step = sa.select(StepRun.run_id).where(StepRun.id == step_run_id).scalar_subquery()
    rows = await session.execute(
        sa.select(Image.id)
        .where(Image.run_id == run_of_step, Image.step_id == step_run_id)
        .order_by(Image.created_at)
    )
    return list(rows.scalars())


async def active_for_job(session: AsyncSession, job_id: uuid.UUID) -> list[uuid.UUID]:
    rows = await session.execute(
        sa.select(JobRun.id).where(
            JobRun.job_id == job_id, JobRun.status.in_([RunStatus.queued, RunStatus.running])
        )
    )
    return list(rows.scalars())
