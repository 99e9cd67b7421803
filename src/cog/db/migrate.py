"""Alembic, driven from code: upgrade, check the revision, and render the schema as SQL."""

from __future__ import annotations

import io
from pathlib import Path

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


async def upgrade(engine: AsyncEngine, revision: str = "head") -> None:
    def run(connection: Connection) -> None:
        cfg = alembic_config()
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, revision)

    async with engine.begin() as conn:
        await conn.run_sync(run)


async def ensure_schema(engine: AsyncEngine, *, auto_upgrade: bool) -> None:
    """Migrate the embedded database by itself; refuse to run on an old shared one."""
    current = await current_revision(engine)
    head = head_revision()
    if current == head:
        return
    if auto_upgrade:
        await upgrade(engine)
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
