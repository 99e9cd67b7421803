"""`cog serve` and `cog db`."""

from __future__ import annotations

import asyncio
import sys
from typing import Annotated, Any

import typer

from cog.cli.common import err, escape, fail, out
from cog.config import Settings, is_loopback, load_settings
from cog.db import migrate
from cog.db.session import make_engine
from cog.errors import CogError

db_app = typer.Typer(help="Database schema.", no_args_is_help=True)


def serve(
    host: Annotated[
        str | None, typer.Option(help="Address to listen on. [default: 127.0.0.1]")
    ] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on. [default: 8000]")] = None,
) -> None:
    """Start the web app and the API (http://127.0.0.1:8000/cog)."""
    import uvicorn

    from cog.web.app import create_app

    overrides: dict[str, Any] = {}
    if host is not None:
        overrides["host"] = host
    if port is not None:
        overrides["port"] = port
    settings = load_settings(**overrides)
    if not is_loopback(settings.host) and settings.token is None:
        fail(
            f"refusing to listen on {settings.host} without a token: "
            "set COG_API_TOKEN, or listen on 127.0.0.1.",
            2,
        )
    try:
        # Before uvicorn starts: a failure in its lifespan would be logged as a traceback.
        asyncio.run(_prepare_database(settings))
        application = create_app(settings)
    except CogError as exc:
        fail(exc.message, 1)
    data_dir = escape(str(settings.data_dir))
    err.print(f"Cog on http://{settings.host}:{settings.port}/cog  (data: {data_dir})")
    config = uvicorn.Config(application, host=settings.host, port=settings.port, log_level="info")
    server = uvicorn.Server(config)
    server.run()
    if not server.started:
        raise typer.Exit(1)


async def _prepare_database(settings: Settings) -> None:
    """Migrate the embedded database; refuse a shared one whose schema is behind."""
    engine = make_engine(settings.database_url)
    try:
        await migrate.ensure_schema(engine, auto_upgrade=settings.is_sqlite)
    finally:
        await engine.dispose()


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Bring the database schema up to date."""
    settings = load_settings()

    async def main() -> tuple[str | None, str | None]:
        engine = make_engine(settings.database_url)
        try:
            before = await migrate.current_revision(engine)
            await migrate.upgrade(engine)
            return before, await migrate.current_revision(engine)
        finally:
            await engine.dispose()

    before, after = asyncio.run(main())
    if before == after:
        out.print(f"The schema is up to date (revision {after}).")
    else:
        out.print(f"Upgraded the schema from {before or 'empty'} to {after}.")


@db_app.command("sql")
def db_sql() -> None:
    """Print the whole schema as SQL for PostgreSQL (what schema.sql holds)."""
    sys.stdout.write(migrate.offline_sql())
