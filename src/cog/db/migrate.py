"""Alembic, driven from code: upgrade, check the revision, and render the schema as SQL."""

from __future__ import annotations

import contextlib
import fcntl
import io
from collections.abc import Iterator
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from cog.errors import SchemaOutOfDate

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# Namespaced so Cog can share a database (a Supabase project) with other applications.
VERSION_TABLE = "cog_alembic_version"


def alembic_config(url: str | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url:
        cfg.set_main_option("sqlalchemy.url", url)
    return cfg


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None, "no migrations found"
    return head


def _current(connection: Connection) -> str | None:
    return MigrationContext.configure(
        connection, opts={"version_table": VERSION_TABLE}
    ).get_current_revision()


async def current_revision(engine: AsyncEngine) -> str | None:
    async with engine.connect() as conn:
        return await conn.run_sync(_current)


# Any fixed number: the key of the PostgreSQL advisory lock that serializes migrations.
MIGRATION_LOCK_KEY = 0x0C06_0001


async def upgrade(engine: AsyncEngine, revision: str = "head") -> None:
    """Migrate; two processes doing it at once (two CLI commands on a fresh data dir, two
    `cog db upgrade`) take turns, and the second finds nothing left to do."""
    with _file_lock(_lock_path(engine)):
        await _upgrade(engine, revision)


async def _upgrade(engine: AsyncEngine, revision: str) -> None:
    def run(connection: Connection) -> None:
        if connection.dialect.name == "postgresql":
            connection.execute(sa.text(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK_KEY})"))
        cfg = alembic_config()
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, revision)

    async with engine.begin() as conn:
        await conn.run_sync(run)


def _lock_path(engine: AsyncEngine) -> Path | None:
    database = engine.url.database if engine.url.get_backend_name() == "sqlite" else None
    return Path(f"{database}.migrate-lock") if database and database != ":memory:" else None


@contextlib.contextmanager
def _file_lock(path: Path | None) -> Iterator[None]:
    """An exclusive lock on a file beside the SQLite database (SQLite's DDL is not guarded
    against two migrators otherwise). Blocking is fine: migrating takes a moment, once."""
    if path is None:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


async def ensure_schema(engine: AsyncEngine, *, auto_upgrade: bool) -> None:
    """Migrate the embedded database by itself; refuse to run on an old shared one."""
    # Under the lock from the first connection on: a new SQLite file is switched to WAL by
    # that connection, and SQLite answers "database is locked" at once, without waiting, to a
    # second process switching it at the same moment.
    with _file_lock(_lock_path(engine) if auto_upgrade else None):
        current = await current_revision(engine)
        head = head_revision()
        if current == head:
            return
        if auto_upgrade:
            await _upgrade(engine, "head")
            return
    raise SchemaOutOfDate(
        f"The database schema is at revision {current or 'none (empty database)'}, "
        f"but this Cog needs {head}. Run `cog db upgrade` (or apply schema.sql to a new "
        "database) and start again."
    )


def offline_sql(dialect_url: str = "postgresql+asyncpg://") -> str:
    """The whole schema as plain SQL for PostgreSQL: what `schema.sql` holds."""
    buffer = io.StringIO()
    cfg = alembic_config(dialect_url)
    cfg.output_buffer = buffer
    command.upgrade(cfg, "head", sql=True)
    return buffer.getvalue()
