"""Queries on runs and their steps: creation, claims, heartbeats, status changes.

The status transitions themselves are decided in `cog.engine.runner`; this module only writes
what it is told, with the guards that keep two executors from holding one run.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Collection, Mapping, Sequence
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from cog.db import batches as batches_db
from cog.db.base import utcnow
from cog.db.models import Image, Job, JobRun, StepRun
from cog.db.pages import Page, newest_first
from cog.domain import RunStatus, StepStatus


async def get(session: AsyncSession, run_id: uuid.UUID) -> JobRun | None:
    return await session.get(JobRun, run_id, populate_existing=True)


async def with_job(session: AsyncSession, run_id: uuid.UUID) -> tuple[JobRun, Job] | None:
    """The run, read afresh, with its job."""
    row = (
        await session.execute(
            sa.select(JobRun, Job)
            .join(Job, Job.id == JobRun.job_id)
            .where(JobRun.id == run_id)
            .execution_options(populate_existing=True)
        )
    ).first()
    return None if row is None else (row[0], row[1])


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


async def create(
    session: AsyncSession,
    job: Job,
    snapshot: list[dict[str, Any]],
    *,
    batch_id: uuid.UUID | None = None,
    input_image_id: uuid.UUID | None = None,
    style: dict[str, Any] | None = None,
    flush: bool = True,
) -> tuple[JobRun, list[StepRun]]:
    """A queued run with one pending step run per step of the snapshot. The caller commits
    (and flushes, when it adds many runs with `flush=False`)."""
    run = JobRun(
        id=uuid.uuid4(),
        job_id=job.id,
        status=RunStatus.queued,
        steps_snapshot=snapshot,
        base_prompt=job.base_prompt,
        cancel_requested=False,
        attempts=0,
        batch_id=batch_id,
        input_image_id=input_image_id,
        style=style,
    )
    steps = [
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
    ]
    session.add(run)
    session.add_all(steps)
    if flush:
        await session.flush()
    return run, steps


async def page_of_job(
    session: AsyncSession,
    job_id: uuid.UUID,
    *,
    limit: int,
    cursor: str | None,
    with_batches: bool = True,
) -> Page[JobRun]:
    query = sa.select(JobRun).where(JobRun.job_id == job_id)
    if not with_batches:
        query = query.where(JobRun.batch_id.is_(None))
    return await newest_first(session, query, JobRun, limit=limit, cursor=cursor)


_STEP_RUNS = cast(sa.Table, StepRun.__table__)
_JOB_RUNS = cast(sa.Table, JobRun.__table__)
# The columns to set come from execute's parameters, so this one statement serves every write
# (compiled once per set of columns): building `.values(...)` anew for each write cost more
# than running it.
_UPDATE_STEP = sa.update(_STEP_RUNS).where(_STEP_RUNS.c.id == sa.bindparam("step_run_id"))


async def update_step(session: AsyncSession, step_id: uuid.UUID, values: Mapping[str, Any]) -> None:
    """Write the given columns of one step run."""
    await session.execute(_UPDATE_STEP, {**values, "step_run_id": step_id})


async def batch_of(session: AsyncSession, run_id: uuid.UUID) -> uuid.UUID | None:
    found: uuid.UUID | None = await session.scalar(
        sa.select(JobRun.batch_id).where(JobRun.id == run_id)
    )
    return found


# Built once, as `_UPDATE_STEP` is: a claim starts every run. A run of a batch is claimed only
# while fewer than `batch_limit` runs of its batch are running.
_OTHER_RUNS = _JOB_RUNS.alias("other")
_CLAIM = (
    sa.update(_JOB_RUNS)
    .where(
        _JOB_RUNS.c.id == sa.bindparam("run_id"),
        _JOB_RUNS.c.status == RunStatus.queued,
        sa.or_(
            _JOB_RUNS.c.batch_id.is_(None),
            sa.select(sa.func.count())
            .select_from(_OTHER_RUNS)
            .where(
                _OTHER_RUNS.c.batch_id == _JOB_RUNS.c.batch_id,
                _OTHER_RUNS.c.status == RunStatus.running,
            )
            .scalar_subquery()
            < sa.bindparam("batch_limit"),
        ),
    )
    .values(
        status=RunStatus.running,
        claimed_by=sa.bindparam("worker"),
        heartbeat_at=sa.bindparam("now", type_=_JOB_RUNS.c.heartbeat_at.type),
        started_at=sa.func.coalesce(
            _JOB_RUNS.c.started_at, sa.bindparam("now", type_=_JOB_RUNS.c.started_at.type)
        ),
        attempts=_JOB_RUNS.c.attempts + 1,
    )
)


async def claim(session: AsyncSession, run_id: uuid.UUID, worker: str, *, batch_limit: int) -> bool:
    """Take a queued run for `worker`. Only one claimer can win: the update is guarded. A run
    of a batch that has `batch_limit` runs running already is left queued.

    On PostgreSQL the batch's row is held first, so two claimers of runs of one batch count
    its running runs one after the other; on SQLite the update is one statement under the
    database's write lock."""
    await batches_db.lock_of_run(session, run_id)
    result = await session.execute(
        _CLAIM,
        {"run_id": run_id, "worker": worker, "now": utcnow(), "batch_limit": batch_limit},
    )
    await session.commit()
    return bool(result.rowcount)  # type: ignore[attr-defined]


def _queued() -> sa.Select[uuid.UUID]:
    running = (
        sa.select(_JOB_RUNS.c.batch_id, sa.func.count().label("n"))
        .where(_JOB_RUNS.c.status == RunStatus.running, _JOB_RUNS.c.batch_id.is_not(None))
        .group_by(_JOB_RUNS.c.batch_id)
        .subquery("running")
    )
    waiting = (
        sa.select(
            _JOB_RUNS.c.id,
            _JOB_RUNS.c.batch_id,
            _JOB_RUNS.c.created_at,
            sa.func.row_number()
            .over(
                partition_by=_JOB_RUNS.c.batch_id,
                order_by=(_JOB_RUNS.c.created_at, _JOB_RUNS.c.id),
            )
            .label("place"),
        )
        .where(_JOB_RUNS.c.status == RunStatus.queued)
        .subquery("waiting")
    )
    return (
        sa.select(waiting.c.id)
        .outerjoin(running, running.c.batch_id == waiting.c.batch_id)
        .where(
            sa.or_(
                waiting.c.batch_id.is_(None),
                waiting.c.place + sa.func.coalesce(running.c.n, 0) <= sa.bindparam("batch_limit"),
            )
        )
        .order_by(waiting.c.created_at, waiting.c.id)
        .limit(sa.bindparam("limit", type_=sa.Integer))
    )


# Built once: every executor looks for queued runs each time it has a free slot and is woken.
_QUEUED = _queued()


async def queued(session: AsyncSession, limit: int, *, batch_limit: int) -> list[uuid.UUID]:
    """The oldest queued runs an executor may claim now: a batch's runs only as many as it has
    free slots (`batch_limit` less its running runs), so a big batch never keeps the runs
    queued after it waiting."""
    rows = await session.execute(_QUEUED, {"limit": limit, "batch_limit": batch_limit})
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


# Built once, as `_UPDATE_STEP` is: it runs with every write of a step.
_HOLD = (
    sa.update(_JOB_RUNS)
    .where(
        _JOB_RUNS.c.id == sa.bindparam("run_id"),
        _JOB_RUNS.c.claimed_by == sa.bindparam("worker"),
        _JOB_RUNS.c.status == RunStatus.running,
    )
    .values(heartbeat_at=sa.bindparam("now"))
)


async def hold(session: AsyncSession, run_id: uuid.UUID, worker: str) -> bool:
    """In the caller's transaction: answers whether `worker` still holds the running run, and
    renews its heartbeat if so. The row stays locked to the end of the transaction (on
    PostgreSQL; SQLite's write lock does the same), so no one takes the run in between."""
    result = await session.execute(_HOLD, {"run_id": run_id, "worker": worker, "now": utcnow()})
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def stale(
    session: AsyncSession, older_than: dt.datetime, *, alive: Collection[uuid.UUID] = ()
) -> list[JobRun]:
    """Runs marked running whose executor has stopped saying so, but for those the caller
    knows are `alive` (its own, in flight: their heartbeat may only be late)."""
    rows = await session.execute(
        sa.select(JobRun).where(
            JobRun.status == RunStatus.running,
            sa.or_(JobRun.heartbeat_at.is_(None), JobRun.heartbeat_at < older_than),
            JobRun.id.not_in(alive),
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


async def iteration_images(
    session: AsyncSession, step_run_id: uuid.UUID
) -> dict[int, list[uuid.UUID]]:
    """The images of a step with a loop, by the iteration that made each (its metadata says)."""
    run_of_step = sa.select(StepRun.run_id).where(StepRun.id == step_run_id).scalar_subquery()
    rows = await session.execute(
        sa.select(Image.id, Image.meta)
        .where(Image.run_id == run_of_step, Image.step_id == step_run_id)
        .order_by(Image.created_at)
    )
    found: dict[int, list[uuid.UUID]] = {}
    for image_id, meta in rows:
        iteration = (meta or {}).get("iteration")
        if isinstance(iteration, int):
            found.setdefault(iteration, []).append(image_id)
    return found
