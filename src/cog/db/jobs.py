"""Queries on jobs and their steps."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from cog.db.models import Job, JobRun, JobStep
from cog.db.pages import Page, newest_first


async def get(session: AsyncSession, job_id: uuid.UUID) -> Job | None:
    return await session.get(Job, job_id)


async def steps(session: AsyncSession, job_id: uuid.UUID) -> list[JobStep]:
    rows = await session.execute(
        sa.select(JobStep).where(JobStep.job_id == job_id).order_by(JobStep.position)
    )
    return list(rows.scalars())


async def everything(session: AsyncSession, limit: int) -> list[Job]:
    """Every job (up to `limit`), by title."""
    rows = await session.execute(sa.select(Job).order_by(Job.title, Job.id).limit(limit))
    return list(rows.scalars())


async def steps_of(
    session: AsyncSession, job_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, list[JobStep]]:
    """The steps of each job, in order."""
    found: dict[uuid.UUID, list[JobStep]] = {job_id: [] for job_id in job_ids}
    if not job_ids:
        return found
    rows = await session.execute(
        sa.select(JobStep)
        .where(JobStep.job_id.in_(job_ids))
        .order_by(JobStep.job_id, JobStep.position)
    )
    for step in rows.scalars():
        found[step.job_id].append(step)
    return found


async def replace_steps(
    session: AsyncSession, job_id: uuid.UUID, specs: Sequence[dict[str, Any]]
) -> list[JobStep]:
    """Swap the whole ordered list; the caller commits, so a failure leaves the old list."""
    await session.execute(sa.delete(JobStep).where(JobStep.job_id == job_id))
    new = [
        JobStep(
            job_id=job_id,
            position=position,
            kind=spec["kind"],
            prompt=spec["prompt"],
            model=spec.get("model"),
            config=spec.get("config", {}),
            condition=spec.get("when"),
            for_each=spec.get("for_each"),
        )
        for position, spec in enumerate(specs)
    ]
    session.add_all(new)
    await session.flush()
    return new


async def page_in_series(
    session: AsyncSession, series_id: uuid.UUID, *, limit: int, cursor: str | None
) -> Page[Job]:
    query = sa.select(Job).where(Job.series_id == series_id)
    return await newest_first(session, query, Job, limit=limit, cursor=cursor)


async def last_runs(session: AsyncSession, job_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, JobRun]:
    """The newest run of each job, for job lists."""
    if not job_ids:
        return {}
    newest = (
        sa.select(JobRun.job_id, sa.func.max(JobRun.created_at).label("at"))
        .where(JobRun.job_id.in_(job_ids))
        .group_by(JobRun.job_id)
        .subquery()
    )
    rows = await session.execute(
        sa.select(JobRun).join(
            newest, sa.and_(JobRun.job_id == newest.c.job_id, JobRun.created_at == newest.c.at)
        )
    )
    return {run.job_id: run for run in rows.scalars()}
