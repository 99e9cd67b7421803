"""`cog worker`: execute queued runs (COG_EXECUTOR=queue), on this machine or any other."""

from __future__ import annotations

import logging
from typing import Annotated

import typer

from cog import event_loop
from cog.cli.common import err, fail
from cog.config import load_settings
from cog.db import migrate
from cog.db import queue as queue_db
from cog.errors import CogError, SchemaOutOfDate
from cog.runtime import Runtime


def worker(
    concurrency: Annotated[
        int | None,
        typer.Option(
            min=1, max=64, help="Runs executed at the same time. [default: COG_RUN_CONCURRENCY]"
        ),
    ] = None,
) -> None:
    """Execute the runs `cog serve` queues (COG_EXECUTOR=queue, PostgreSQL). Start as many as
    you like, on any machine that reaches the database and the store. SIGTERM stops it
    gracefully: its runs finish, or go back to the queue after COG_WORKER_SHUTDOWN_GRACE_S."""
    from cog.engine.worker import QueueWorker

    settings = load_settings()
    if settings.is_sqlite:
        fail(
            "cog worker needs PostgreSQL (the run queue lives in it): set COG_DATABASE_URL to "
            "a postgresql+asyncpg:// URL and COG_EXECUTOR=queue.",
            2,
        )
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("procrastinate").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)

    async def main() -> None:
        runtime = Runtime.build(settings)
        try:
            await migrate.ensure_schema(runtime.engine, auto_upgrade=False)
            if not await queue_db.has_schema(runtime.engine):
                raise SchemaOutOfDate("The database has no run queue yet: run `cog db upgrade`.")
            queue_worker = QueueWorker(runtime, concurrency=concurrency or settings.run_concurrency)
            err.print(f"Cog worker {queue_worker.name} (concurrency {queue_worker.concurrency})")
            await queue_worker.run()
        finally:
            await runtime.stop()

    try:
        event_loop.run(main())
    except CogError as exc:
        fail(exc.message, 1)
