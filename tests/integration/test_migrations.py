"""The embedded database migrates itself; a shared PostgreSQL one must be upgraded on purpose."""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from cog.db.base import Base, UTCDateTime
from cog.db.migrate import current_revision, ensure_schema, head_revision, upgrade
from cog.db.models import Image, ImageVersion, Job, JobRun, JobStep, Series, StepRun
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


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def empty_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'cog.db'}"
    return pg_url(request.getfixturevalue("empty_pg_database"))


def _as_of(model: type[Base], *names: str) -> sa.TableClause:
    """The table with only the columns an older revision had: inserts through the models
    would fill in columns (their Python defaults) that a later migration adds."""
    columns = model.__table__.c
    return sa.table(model.__tablename__, *(sa.column(n, columns[n].type) for n in names))


async def insert_job_with_a_run(
    conn: AsyncConnection,
    series: uuid.UUID,
    job: uuid.UUID,
    run: uuid.UUID,
    step: uuid.UUID,
    now: dt.datetime,
) -> None:
    """A series, a job with one step, a run of it and its step run, as revision 0001 has them."""
    await conn.execute(
        sa.insert(_as_of(Series, "id", "title", "tags", "created_at", "updated_at")).values(
            id=series, title="S", tags=[], created_at=now, updated_at=now
        )
    )
    await conn.execute(
        sa.insert(
            _as_of(Job, "id", "series_id", "title", "base_prompt", "created_at", "updated_at")
        ).values(
            id=job, series_id=series, title="J", base_prompt="p", created_at=now, updated_at=now
        )
    )
    await conn.execute(
        sa.insert(_as_of(JobStep, "id", "job_id", "position", "kind", "prompt", "config")).values(
            id=uuid.uuid4(), job_id=job, position=0, kind="image", prompt="p", config={}
        )
    )
    await conn.execute(
        sa.insert(_as_of(JobRun, "id", "job_id", "created_at", "steps_snapshot")).values(
            id=run, job_id=job, created_at=now, steps_snapshot=[]
        )
    )
    await conn.execute(
        sa.insert(
            _as_of(StepRun, "id", "run_id", "position", "kind", "image_ids", "attempt_log", "usage")
        ).values(
            id=step, run_id=run, position=0, kind="image", image_ids=[], attempt_log=[], usage={}
        )
    )


async def test_0002_keeps_every_row_and_gives_each_image_its_first_version(
    empty_database_url: str,
) -> None:
    """A database with a run and its image at 0001 is upgraded in place: the step runs survive
    (SQLite must not rebuild cog_job_runs, which would cascade), the image becomes its own
    version 1 and is found by search."""
    kind = sa.make_url(empty_database_url).get_backend_name()
    engine = make_engine(empty_database_url)
    series, job, run, step, image = (uuid.uuid4() for _ in range(5))
    now = dt.datetime(2026, 1, 2, tzinfo=dt.UTC)
    try:
        await upgrade(engine, "0001")
        async with engine.begin() as conn:
            await insert_job_with_a_run(conn, series, job, run, step, now)
            await conn.execute(
                sa.text(
                    "INSERT INTO cog_images (id, series_id, source, storage_path, mime_type, "
                    "width, height, size_bytes, sha256, prompt, metadata, job_id, run_id, "
                    "step_id, created_at) VALUES (:id, :series, 'generated', 'images/x.png', "
                    "'image/png', 4, 3, 10, 'ab', 'a red fox in snow', '{}', :job, :run, :step, "
                    ":now)"
                ).bindparams(
                    sa.bindparam("id", image, sa.Uuid()),
                    sa.bindparam("series", series, sa.Uuid()),
                    sa.bindparam("job", job, sa.Uuid()),
                    sa.bindparam("run", run, sa.Uuid()),
                    sa.bindparam("step", step, sa.Uuid()),
                    sa.bindparam("now", now, UTCDateTime()),
                )
            )
        await upgrade(engine)
        async with engine.connect() as conn:
            assert await conn.scalar(sa.select(sa.func.count()).select_from(StepRun)) == 1
            row = (await conn.execute(sa.select(Image.run_id, Image.tags, Image.version))).one()
            assert tuple(row) == (run, [], 1)
            version = (await conn.execute(sa.select(ImageVersion))).one()
            assert (version.id, version.image_id, version.number) == (image, image, 1)
            assert (version.source, version.storage_path, version.prompt) == (
                "generated",
                "images/x.png",
                "a red fox in snow",
            )
            assert (version.run_id, version.step_id) == (run, step)
            if kind == "sqlite":
                found = await conn.scalar(
                    sa.text("SELECT count(*) FROM cog_images_fts WHERE cog_images_fts MATCH 'fox'")
                )
            else:
                found = await conn.scalar(
                    sa.text(
                        "SELECT count(*) FROM cog_images WHERE to_tsvector('simple'::regconfig, "
                        "coalesce(prompt, '') || ' ' || coalesce(original_filename, '')) "
                        "@@ plainto_tsquery('simple', 'fox')"
                    )
                )
            assert found == 1
    finally:
        await engine.dispose()


async def test_0003_keeps_jobs_steps_and_runs(empty_database_url: str) -> None:
    """0003 adds columns to jobs, steps, series and step runs in place: on SQLite nothing is
    rebuilt that would cascade, so a job keeps its steps and its runs, with the new defaults."""
    engine = make_engine(empty_database_url)
    series, job, run, step = (uuid.uuid4() for _ in range(4))
    now = dt.datetime(2026, 1, 2, tzinfo=dt.UTC)
    try:
        await upgrade(engine, "0002")
        async with engine.begin() as conn:
            await insert_job_with_a_run(conn, series, job, run, step, now)
        await upgrade(engine)
        async with engine.connect() as conn:
            assert await conn.scalar(sa.select(sa.func.count()).select_from(JobStep)) == 1
            got = (await conn.execute(sa.select(StepRun.iterations, StepRun.skip_reason))).one()
            assert tuple(got) == ([], None)
            kept = await conn.execute(
                sa.select(Job.style_series_id, Job.style_image_ids, Job.style_image_count)
            )
            assert tuple(kept.one()) == (None, [], 3)
            context = await conn.execute(sa.select(Series.inherit_context, Series.style_profile))
            assert tuple(context.one()) == (True, "")
    finally:
        await engine.dispose()
