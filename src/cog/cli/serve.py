"""`cog serve` and `cog db`."""

from __future__ import annotations

import asyncio
import gc
import sys
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cog.cli.common import err, escape, fail, out
from cog.config import Settings, is_loopback, load_settings
from cog.db import migrate
from cog.db import queue as queue_db
from cog.db.session import make_engine
from cog.errors import CogError, SchemaOutOfDate

if TYPE_CHECKING:
    from fastapi import FastAPI

db_app = typer.Typer(help="Database schema.", no_args_is_help=True)


def serve(
    host: Annotated[
        str | None, typer.Option(help="Address to listen on. [default: 127.0.0.1]")
    ] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on. [default: 8000]")] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            min=1, max=64, help="Processes that answer requests (COG_WEB_WORKERS). [default: 1]"
        ),
    ] = None,
    access_log: Annotated[
        bool | None,
        typer.Option(
            "--access-log/--no-access-log",
            help="Log a line for every request (COG_ACCESS_LOG). [default: off]",
        ),
    ] = None,
) -> None:
    """Start the web app and the API (http://127.0.0.1:8000/cog)."""
    import uvicorn

    overrides: dict[str, Any] = {}
    if host is not None:
        overrides["host"] = host
    if port is not None:
        overrides["port"] = port
    if workers is not None:
        overrides["web_workers"] = workers
    if access_log is not None:
        overrides["access_log"] = access_log
    settings = load_settings(**overrides)
    refuse_queue_on_sqlite(settings)
    if not is_loopback(settings.host) and settings.token is None:
        fail(
            f"refusing to listen on {settings.host} without a token: "
            "set COG_API_TOKEN, or listen on 127.0.0.1.",
            2,
        )
    try:
        # Before uvicorn starts: a failure in its lifespan would be logged as a traceback.
        asyncio.run(_prepare_database(settings))
        application = None if settings.web_workers > 1 else serving_app(settings)
    except CogError as exc:
        fail(exc.message, 1)
    data_dir = escape(str(settings.data_dir))
    processes = f", {settings.web_workers} processes" if settings.web_workers > 1 else ""
    # One line however long the path: it is often read from a log, where nothing wraps.
    err.print(
        f"Cog on http://{settings.host}:{settings.port}/cog  (data: {data_dir}{processes})",
        soft_wrap=True,
    )
    if application is None:
        # Each worker process builds its app from the same environment (and `.env`); the
        # address comes from here. Every process runs an embedded executor: runs are claimed
        # in the database, so none runs twice, and the concurrency limits hold per process.
        uvicorn.run(
            "cog.cli.serve:serving_app",
            factory=True,
            host=settings.host,
            port=settings.port,
            workers=settings.web_workers,
            log_level="info",
            access_log=settings.access_log,
        )
        return
    config = uvicorn.Config(
        application,
        host=settings.host,
        port=settings.port,
        log_level="info",
        access_log=settings.access_log,
    )
    server = uvicorn.Server(config)
    server.run()
    if not server.started:
        raise typer.Exit(1)


def serving_app(settings: Settings | None = None) -> FastAPI:
    """The app one serving process answers with (each worker process calls this itself)."""
    from cog.web.app import create_app

    application = create_app(settings or load_settings())
    # What the process keeps until it ends (modules, the app, its schemas) is set aside from the
    # garbage collector, so a full collection walks only what was made since. Under load, a
    # full collection of it all stopped every request for 100 ms and more every few seconds.
    gc.collect()
    gc.freeze()
    return application


def refuse_queue_on_sqlite(settings: Settings) -> None:
    if settings.uses_queue and settings.is_sqlite:
        fail(
            "COG_EXECUTOR=queue needs PostgreSQL (the queue lives in it): set COG_DATABASE_URL "
            "to a postgresql+asyncpg:// URL, or use COG_EXECUTOR=embedded with SQLite.",
            2,
        )


async def _prepare_database(settings: Settings) -> None:
    """Migrate the embedded database; refuse a shared one whose schema is behind."""
    engine = make_engine(settings.database_url)
    try:
        await migrate.ensure_schema(engine, auto_upgrade=settings.is_sqlite)
        if settings.uses_queue and not await queue_db.has_schema(engine):
            raise SchemaOutOfDate(
                "The database has no queue yet (COG_EXECUTOR=queue): run `cog db upgrade`."
            )
    finally:
        await engine.dispose()


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Bring the database schema up to date."""
    settings = load_settings()

    async def main() -> tuple[str | None, str | None, bool]:
        engine = make_engine(settings.database_url)
        try:
            before = await migrate.current_revision(engine)
            await migrate.upgrade(engine)
            # PostgreSQL also gets the queue `cog worker` takes runs from (procrastinate's).
            queued = not settings.is_sqlite and await queue_db.install_schema(engine)
            return before, await migrate.current_revision(engine), queued
        finally:
            await engine.dispose()

    before, after, queued = asyncio.run(main())
    if before == after:
        out.print(f"The schema is up to date (revision {after}).")
    else:
        out.print(f"Upgraded the schema from {before or 'empty'} to {after}.")
    if queued:
        out.print("Installed the run queue (procrastinate's tables) for `cog worker`.")


@db_app.command("sql")
def db_sql(
    queue: Annotated[
        bool, typer.Option("--queue", help="Print the run queue's schema (procrastinate's).")
    ] = False,
) -> None:
    """Print the whole schema as SQL for PostgreSQL (what schema.sql holds); with --queue, the
    schema of the queue `cog worker` needs (COG_EXECUTOR=queue), to apply after it."""
    sys.stdout.write(queue_db.schema_sql() if queue else migrate.offline_sql())
