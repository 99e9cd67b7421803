"""The run queue in procrastinate's tables: enqueue a run, find queued runs nobody will take,
and install procrastinate's schema.

Cog's own run rows are the truth (status, claim, heartbeat); a procrastinate job only carries a
run id to a worker. A job is inserted with procrastinate's own SQL function, through Cog's
session, so a run and its job are committed in one transaction: either both exist or neither.

The jobs of a batch's runs share `batch_concurrency` procrastinate locks, dealt out in the order
of the runs: jobs with one lock run one after another, so at most that many runs of the batch
are delivered at once, and the rest wait in the queue rather than being taken and refused.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from cog.db.models import JobRun
from cog.domain import RunStatus

QUEUE = "cog"
RUN_TASK = "cog.run"
QUEUE_TABLES = (
    "procrastinate_jobs",
    "procrastinate_events",
    "procrastinate_periodic_defers",
    "procrastinate_workers",
)

# procrastinate_defer_jobs_v1 is the versioned function procrastinate's own `defer` calls; the
# fourth field of its row is the job's lock. All the jobs go in one statement.
_DEFER = sa.text(
    """
    SELECT procrastinate_defer_jobs_v1(ARRAY(
        SELECT ROW(:queue, :task, 0, j.lock, NULL, jsonb_build_object('run_id', j.run_id),
                   NULL)::procrastinate_job_to_defer_v1
        FROM jsonb_to_recordset(CAST(:jobs AS jsonb)) AS j(run_id text, lock text, n int)
        ORDER BY j.n
    ))
    """
)


def batch_lock(batch_id: uuid.UUID, place: int, concurrency: int) -> str:
    """The lock of the job of a batch's run: the run's place in the batch (from 0), dealt
    round the batch's `concurrency` slots."""
    return f"cog-batch-{batch_id}-{place % concurrency}"


async def enqueue(session: AsyncSession, run_id: uuid.UUID, lock: str | None = None) -> None:
    """Queue a job for the run in the session's transaction; the caller commits."""
    await enqueue_many(session, [(run_id, lock)])


async def enqueue_many(session: AsyncSession, jobs: Sequence[tuple[uuid.UUID, str | None]]) -> None:
    """Queue a job for each (run, lock), in this order, in the session's transaction."""
    if not jobs:
        return
    payload = [
        {"run_id": str(run_id), "lock": lock, "n": n} for n, (run_id, lock) in enumerate(jobs)
    ]
    await session.execute(_DEFER, {"queue": QUEUE, "task": RUN_TASK, "jobs": json.dumps(payload)})


async def orphans(
    session: AsyncSession, *, alive_within_s: float, batch_concurrency: int, limit: int = 100
) -> list[tuple[uuid.UUID, str | None]]:
    """Queued runs that no job will bring to a worker: none waiting, none held by a live worker;
    each with the lock its new job takes (a run of a batch keeps the slot of its place).

    A run handed back (a worker stopped, or died and its run went stale) is one of them."""
    rows = await session.execute(
        sa.text(
            """
            SELECT r.id, r.batch_id, (
                SELECT count(*) FROM cog_job_runs o
                WHERE o.batch_id = r.batch_id AND (o.created_at, o.id) < (r.created_at, r.id)
            ) AS place
            FROM cog_job_runs r
            WHERE r.status = :queued AND NOT EXISTS (
                SELECT 1 FROM procrastinate_jobs j
                LEFT JOIN procrastinate_workers w ON w.id = j.worker_id
                WHERE j.task_name = :task AND j.args ->> 'run_id' = r.id::text
                  AND (j.status = 'todo' OR (j.status = 'doing' AND w.last_heartbeat
                       > now() - make_interval(secs => :alive)))
            )
            ORDER BY r.created_at, r.id LIMIT :limit
            """
        ).columns(
            sa.column("id", JobRun.id.type),
            sa.column("batch_id", JobRun.batch_id.type),
            sa.column("place", sa.Integer),
        ),
        {
            "queued": RunStatus.queued.value,
            "task": RUN_TASK,
            "alive": alive_within_s,
            "limit": limit,
        },
    )
    return [
        (
            row.id,
            None
            if row.batch_id is None
            else batch_lock(row.batch_id, row.place, batch_concurrency),
        )
        for row in rows
    ]


async def requeue_orphans(
    session: AsyncSession, *, alive_within_s: float, batch_concurrency: int, limit: int = 100
) -> list[uuid.UUID] | None:
    """Give each orphan (see `orphans`) a new job, and commit. One process at a time does it
    (an advisory lock), so two never queue the same run twice; answers the runs queued, or
    None when another process holds the lock (it is queueing them)."""
    if not await session.scalar(sa.text("SELECT pg_try_advisory_xact_lock(4507319)")):
        await session.rollback()
        return None
    lost = await orphans(
        session, alive_within_s=alive_within_s, batch_concurrency=batch_concurrency, limit=limit
    )
    await enqueue_many(session, lost)
    await session.commit()
    return [run_id for run_id, _lock in lost]


_HAS_SCHEMA = sa.text("SELECT to_regclass('procrastinate_jobs') IS NOT NULL")


async def has_schema(engine: AsyncEngine) -> bool:
    async with engine.connect() as conn:
        found = await conn.scalar(_HAS_SCHEMA)
    return bool(found)


async def installed(session: AsyncSession) -> bool:
    """Whether the session's database has the queue (PostgreSQL with `cog db upgrade` run)."""
    if session.get_bind().dialect.name != "postgresql":
        return False
    return bool(await session.scalar(_HAS_SCHEMA))


def schema_sql() -> str:
    """procrastinate's schema, with row level security on its tables (as on Cog's): on Supabase
    the project's public API keys reach none of them."""
    from procrastinate.schema import SchemaManager

    rls = "".join(f"ALTER TABLE {t} ENABLE ROW LEVEL SECURITY;\n" for t in QUEUE_TABLES)
    return f"{SchemaManager.get_schema()}\n{rls}"


async def install_schema(engine: AsyncEngine) -> bool:
    """Install procrastinate's schema unless it is there; answers whether it installed it."""
    if await has_schema(engine):
        return False
    async with engine.begin() as conn:
        raw = await conn.get_raw_connection()
        # A script of many statements: asyncpg runs it with the simple query protocol.
        await raw.driver_connection.execute(schema_sql())  # type: ignore[union-attr]
    return True
