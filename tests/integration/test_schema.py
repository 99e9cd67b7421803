"""schema.sql and the Alembic migrations build the same PostgreSQL schema."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import asyncpg
import pytest

from cog.db.migrate import current_revision, head_revision, offline_sql, upgrade
from cog.db.session import make_engine
from tests.conftest import PG_HOST, PG_PORT, PG_USER, pg_url

pytestmark = pytest.mark.postgres

SCHEMA_SQL = Path(__file__).parents[2] / "schema.sql"

CATALOG_QUERIES = {
    "columns": """
        SELECT table_name, column_name, data_type, udt_name, is_nullable, column_default,
               character_maximum_length
        FROM information_schema.columns WHERE table_schema = 'public'
        ORDER BY table_name, column_name""",
    "constraints": """
        SELECT rel.relname, con.conname, con.contype, pg_get_constraintdef(con.oid)
        FROM pg_constraint con JOIN pg_class rel ON rel.oid = con.conrelid
        JOIN pg_namespace ns ON ns.oid = rel.relnamespace
        WHERE ns.nspname = 'public' ORDER BY rel.relname, con.conname""",
    "indexes": """
        SELECT tablename, indexname, indexdef FROM pg_indexes
        WHERE schemaname = 'public' ORDER BY tablename, indexname""",
    "row_level_security": """
        SELECT relname, relrowsecurity FROM pg_class c
        JOIN pg_namespace ns ON ns.oid = c.relnamespace
        WHERE ns.nspname = 'public' AND c.relkind = 'r' ORDER BY relname""",
}


async def catalog(database: str) -> dict[str, list[tuple[Any, ...]]]:
    conn = await asyncpg.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, database=database)
    try:
        return {
            name: [tuple(row) for row in await conn.fetch(query)]
            for name, query in CATALOG_QUERIES.items()
        }
    finally:
        await conn.close()


async def apply_sql(database: str, sql: str) -> None:
    conn = await asyncpg.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, database=database)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


async def test_schema_sql_matches_alembic_head(empty_pg_database: str, pg_database: str) -> None:
    await apply_sql(empty_pg_database, SCHEMA_SQL.read_text())
    from_sql = await catalog(empty_pg_database)
    from_alembic = await catalog(pg_database)
    assert from_sql["columns"], "schema.sql created no tables"
    for part in CATALOG_QUERIES:
        assert from_sql[part] == from_alembic[part], part


async def test_schema_sql_is_current() -> None:
    """schema.sql is what `cog db sql` prints; a new migration without it fails here."""
    body = SCHEMA_SQL.read_text()
    assert offline_sql() in body


async def test_every_cog_table_has_row_level_security(empty_pg_database: str) -> None:
    await apply_sql(empty_pg_database, SCHEMA_SQL.read_text())
    rows = (await catalog(empty_pg_database))["row_level_security"]
    tables = dict(rows)
    expected = {
        "cog_series",
        "cog_images",
        "cog_jobs",
        "cog_job_steps",
        "cog_job_runs",
        "cog_step_runs",
        "cog_alembic_version",
    }
    assert expected <= set(tables)
    assert all(tables[name] for name in expected), tables


async def test_a_database_made_from_schema_sql_is_at_head(empty_pg_database: str) -> None:
    await apply_sql(empty_pg_database, SCHEMA_SQL.read_text())
    engine = make_engine(pg_url(empty_pg_database))
    try:
        assert await current_revision(engine) == head_revision()
        await upgrade(engine)  # nothing to do, and no error
        assert await current_revision(engine) == head_revision()
    finally:
        await engine.dispose()
