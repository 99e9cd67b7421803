"""`cog worker`: executes runs that `cog serve` queued, on procrastinate, on any machine.

A run reaches a worker as a procrastinate job carrying its id. The job's task claims the run
(the claim is guarded in Cog's table, so a run executes in one worker at a time whatever the
queue delivers) and executes it with `RunExecutor`, which renews the run's heartbeat and notices
a cancel asked for anywhere. Beside the procrastinate worker, an upkeep loop does on every tick
what a crash leaves undone:

1. jobs held by a procrastinate worker that stopped beating are removed;
2. runs whose heartbeat stopped (their worker died) go back to the queue, or fail when out of
   attempts (`cog.engine.recovery`);
3. queued runs with no job that will reach a worker get a new job (a run of a batch keeps its
   slot among the batch's locks, see `cog.db.queue`).

So a run whose worker was SIGKILLed is resumed by another worker (from its last finished step)
within `run_stale_after_s` plus a tick. On SIGTERM the worker takes no new job, waits up to
`worker_shutdown_grace_s` for its runs to end, and hands back those still running. When the
database goes away, the procrastinate worker stops; it is started again until it stays up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import uuid
from typing import Any

import sqlalchemy as sa
from procrastinate import App, PsycopgConnector

from cog.db import queue as queue_db
from cog.db import runs as runs_db
from cog.engine.events import wait_for
from cog.engine.executor import RunExecutor, worker_name
from cog.engine.recovery import recover_stale_runs
from cog.runtime import Runtime

log = logging.getLogger(__name__)

# Only Cog's own connection settings reach libpq; driver options of asyncpg stay behind.
_LIBPQ_OPTIONS = {
    "sslmode",
    "sslrootcert",
    "sslcert",
    "sslkey",
    "connect_timeout",
    "application_name",
    "options",
    "target_session_attrs",
}


def libpq_url(database_url: str) -> str:
    """The SQLAlchemy URL of the database as a plain `postgresql://` URL for psycopg."""
    url = sa.make_url(database_url)
    query = {k: v for k, v in url.query.items() if k in _LIBPQ_OPTIONS}
    return url.set(drivername="postgresql", query=query).render_as_string(hide_password=False)


class QueueWorker:
    def __init__(
        self,
        runtime: Runtime,
        *,
        concurrency: int,
        poll_s: float = 1.0,
        name: str | None = None,
    ) -> None:
        settings = runtime.settings
        self.runtime = runtime
        self.concurrency = concurrency
        self.poll_s = poll_s
        self.stale_after_s = settings.run_stale_after_s
        self.executor = RunExecutor(
            runtime.runner_deps(),
            stale_after_s=settings.run_stale_after_s,
            name=name or worker_name("worker"),
        )
        self.name = self.executor.name
        self._stopping = asyncio.Event()
        self._worker_task: asyncio.Task[None] | None = None

    # --- life cycle ---------------------------------------------------------------------------

    def stop(self) -> None:
        """Take no new run; let those in flight end, or hand them back after the grace time."""
        if self._stopping.is_set():
            return
        log.info("worker %s stopping", self.name)
        self._stopping.set()
        if self._worker_task is not None:
            self._worker_task.cancel()  # procrastinate then shuts down gracefully

    async def run(self) -> None:
        """Work until `stop()` (SIGTERM or SIGINT)."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop)
        upkeep = asyncio.create_task(self._upkeep(), name="cog-worker-upkeep")
        log.info("worker %s started (concurrency %s)", self.name, self.concurrency)
        try:
            backoff = self.poll_s
            while not self._stopping.is_set():
                try:
                    await self._work()
                    backoff = self.poll_s
                except asyncio.CancelledError:
                    if not self._stopping.is_set():
                        raise
                except Exception as exc:  # the database went away; try again
                    log.warning("queue connection lost (%s); retrying in %.1f s", exc, backoff)
                    backoff = min(backoff * 2, 10.0)
                if not self._stopping.is_set():
                    await wait_for(self._stopping, backoff)
        finally:
            upkeep.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await upkeep
            await self.executor.stop()  # anything still held goes back to the queue
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
            log.info("worker %s stopped", self.name)

    def _app(self) -> App:
        connector = PsycopgConnector(
            conninfo=libpq_url(self.runtime.settings.database_url),
            min_size=1,
            max_size=4,
        )
        app = App(connector=connector)

        @app.task(name=queue_db.RUN_TASK, queue=queue_db.QUEUE)
        async def run_job(run_id: str) -> None:
            await self.execute(uuid.UUID(run_id))

        return app

    async def _work(self) -> None:
        app = self._app()
        async with app.open_async():
            options: dict[str, Any] = {
                "queues": [queue_db.QUEUE],
                "name": self.name,
                "concurrency": self.concurrency,
                # procrastinate's listener does not come back after the database was away, so
                # a short poll is what brings new runs then.
                "fetch_job_polling_interval": self.poll_s,
                "abort_job_polling_interval": max(self.poll_s * 5, 1.0),
                "shutdown_graceful_timeout": self.runtime.settings.worker_shutdown_grace_s,
                "listen_notify": True,
                "delete_jobs": "always",  # Cog's runs are the history; jobs only deliver them
                "install_signal_handlers": False,
                "update_heartbeat_interval": max(self.stale_after_s / 4, 0.1),
                "stalled_worker_timeout": self.stale_after_s,
            }
            self._worker_task = asyncio.create_task(app.run_worker_async(**options))
            try:
                await self._worker_task
            finally:
                self._worker_task = None

    # --- work ---------------------------------------------------------------------------------

    async def execute(self, run_id: uuid.UUID) -> None:
        """The task of a job: claim the run, execute it here. A run that is no longer queued
        (another worker has it, or it ended or was cancelled) needs nothing from this job."""
        async with self.runtime.sessions() as session:
            claimed = await runs_db.claim(
                session, run_id, self.name, batch_limit=self.runtime.settings.batch_concurrency
            )
            if not claimed:
                # Upkeep queues a job for it again if it is still queued (its batch was full).
                log.info("run %s is not queued, or its batch is at its limit; not now", run_id)
                return
        claimed_at = asyncio.get_running_loop().time()
        log.info("run %s claimed by %s", run_id, self.name)
        status = await self.executor.run_claimed(run_id, claimed_at)
        if status is None:
            log.info("run %s left %s unfinished; it resumes later", run_id, self.name)
        else:
            log.info("run %s ended %s on %s", run_id, status, self.name)

    async def _upkeep(self) -> None:
        while True:
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database may be away for a moment
                log.warning("upkeep failed (%s); trying again", exc)
            await asyncio.sleep(self.poll_s)

    async def tick(self) -> None:
        """One round of upkeep (see the module's docstring)."""
        await self._drop_stalled_jobs()
        settings = self.runtime.settings
        await recover_stale_runs(
            self.runtime.sessions,
            stale_after_s=settings.run_stale_after_s,
            max_attempts=settings.run_max_attempts,
            alive=self.executor.in_flight(),
        )
        async with self.runtime.sessions() as session:
            lost = await queue_db.requeue_orphans(
                session,
                alive_within_s=self.stale_after_s,
                batch_concurrency=settings.batch_concurrency,
            )
        for run_id in lost or []:
            log.info("run %s queued again", run_id)

    async def _drop_stalled_jobs(self) -> None:
        async with self.runtime.sessions() as session:
            await session.execute(
                sa.text(
                    """
                    DELETE FROM procrastinate_jobs j
                    WHERE j.task_name = :task AND j.status = 'doing' AND (
                        j.worker_id IS NULL OR j.worker_id IN (
                            SELECT id FROM procrastinate_workers
                            WHERE last_heartbeat < now() - make_interval(secs => :stale)))
                    """
                ),
                {"task": queue_db.RUN_TASK, "stale": self.stale_after_s},
            )
            await session.commit()
