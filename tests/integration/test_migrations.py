"""The embedded database migrates itself; a shared PostgreSQL one must be upgraded on purpose."""

from __future__ import annotations

from pathlib import Path

import pytest

from cog.db.migrate import current_revision, ensure_schema, head_revision
from cog.db.session import make_engine
from cog.errors import SchemaOutOfDate
from cog.web.app import create_app
from tests.conftest import make_settings, open_client, pg_url


async def test_sqlite_data_dir_is_created_and_migrated_on_start(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "fresh")
    async for client in open_client(create_app(settings)):
        assert (await client.get("/api/series")).status_code == 200
    assert (tmp_path / "fresh" / "data" / "cog.db").exists()
    engine = make_engine(settings.database_url)
    try:
        assert await current_revision(engine) == head_revision()
    finally:
        await engine.dispose()


@pytest.mark.postgres
async def test_postgres_on_an_old_schema_refuses_to_start(
    empty_pg_database: str, tmp_path: Path
) -> None:
    settings = make_settings(tmp_path, database_url=pg_url(empty_pg_database))
    app = create_app(settings)
    with pytest.raises(SchemaOutOfDate, match="cog db upgrade"):
        async with app.router.lifespan_context(app):
            pass
    engine = make_engine(settings.database_url)
    try:
        # Nothing was created behind the person's back.
        assert await current_revision(engine) is None
        await ensure_schema(engine, auto_upgrade=True)
        assert await current_revision(engine) == head_revision()
    finally:
        await engine.dispose()


def test_two_processes_migrating_a_fresh_sqlite_database_take_turns(tmp_path: Path) -> None:
    """Two CLI commands started at once on a new data dir both migrate it; neither fails."""
    import asyncio
    import threading

    url = f"sqlite+aiosqlite:///{tmp_path / 'cog.db'}"
    errors: list[BaseException] = []

    async def migrate_once() -> None:
        engine = make_engine(url)
        try:
            await ensure_schema(engine, auto_upgrade=True)
        finally:
            await engine.dispose()

    def worker() -> None:
        try:
            asyncio.run(migrate_once())
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []

    async def revision() -> str | None:
        engine = make_engine(url)
        try:
            return await current_revision(engine)
        finally:
            await engine.dispose()

    assert asyncio.run(revision()) == head_revision()
