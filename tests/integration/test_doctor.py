"""`cog doctor`'s checks and repairs, on the two deployments: SQLite with a folder store, and
PostgreSQL with the S3 store. Each test breaks things on purpose, checks that the report names
exactly those, repairs, and checks the stored bytes and rows that are left."""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from PIL import Image as PILImage

from cog.config import Settings
from cog.db import images as images_db
from cog.db import queue as queue_db
from cog.db import runs as runs_db
from cog.db.base import utcnow
from cog.db.models import Image, JobRun
from cog.domain import RunStatus
from cog.imaging import thumbnail_fits
from cog.runtime import Runtime
from cog.services import doctor
from cog.services import images as images_service
from cog.services import jobs as jobs_service
from cog.services import runs as runs_service
from cog.services import series as series_service
from cog.services import versions as versions_service
from cog.services.doctor import Kind, Options, Outcome, Report
from cog.services.image_commits import ImageCommits
from cog.storage import StoredObjectMissing
from cog.storage.keys import thumbnail_key
from tests.conftest import make_settings, pg_url
from tests.factories import image_bytes

NOW = Options(grace=dt.timedelta(0))  # files without a row count at once: no upload is running


@pytest.fixture
def doctor_settings(
    tmp_path: Path, dialect: str, database_url: str, request: pytest.FixtureRequest
) -> Settings:
    """SQLite with a folder store, PostgreSQL with the S3 store (moto, on loopback)."""
    if dialect == "postgres":
        storage: dict[str, str] = request.getfixturevalue("s3_storage")
    else:
        storage = {"storage_url": (tmp_path / "storage").as_uri()}
    return make_settings(tmp_path, database_url=database_url, **storage)


@pytest.fixture
async def cog(doctor_settings: Settings) -> AsyncIterator[Runtime]:
    runtime = Runtime.build(doctor_settings)
    try:
        yield runtime
    finally:
        await runtime.stop()


async def check(cog: Runtime, options: Options = NOW, settings: Settings | None = None) -> Report:
    return await doctor.check(cog.sessions, cog.store, settings or cog.settings, options)


async def repair(cog: Runtime, report: Report, options: Options = NOW) -> Report:
    await doctor.repair(cog.sessions, cog.store, cog.settings, report, options)
    return report


def named(report: Report) -> set[tuple[Kind, str]]:
    return {(f.kind, f.subject) for f in report.findings}


async def add_images(cog: Runtime, *sizes: tuple[int, int]) -> list[Image]:
    async with cog.sessions() as session:
        series = await series_service.create(session, title="Doctor")
        files = [
            images_service.IncomingFile(f"{i}.png", io.BytesIO(image_bytes(w, h, color=(i, 9, 9))))
            for i, (w, h) in enumerate(sizes)
        ]
        return await images_service.upload(session, cog.store, cog.settings, series.id, files)


async def image_ids(cog: Runtime) -> set[uuid.UUID]:
    async with cog.sessions() as session:
        return set((await session.scalars(sa.select(Image.id))).all())


async def stored(cog: Runtime, key: str) -> bytes | None:
    try:
        return await cog.store.get(key)
    except StoredObjectMissing:
        return None


async def all_keys(cog: Runtime) -> set[str]:
    return {key async for key in cog.store.list_keys()}


async def add_run(cog: Runtime, *, heartbeat_ago_s: float, attempts: int = 1) -> uuid.UUID:
    """A run claimed by an executor that has not checked in for `heartbeat_ago_s`."""
    async with cog.sessions() as session:
        series = await series_service.create(session, title="Runs")
        job = await jobs_service.create(session, series.id, title="", base_prompt="a fox")
        await jobs_service.replace_steps(session, job.id, [{"kind": "llm", "prompt": "hi"}])
        run = await runs_service.start(session, job.id)
        assert await runs_db.claim(session, run.id, "embedded:gone:1:abc", batch_limit=1)
        await session.execute(
            sa.update(JobRun)
            .where(JobRun.id == run.id)
            .values(
                heartbeat_at=utcnow() - dt.timedelta(seconds=heartbeat_ago_s), attempts=attempts
            )
        )
        await session.commit()
        return run.id


async def run_row(cog: Runtime, run_id: uuid.UUID) -> JobRun:
    async with cog.sessions() as session:
        run = await runs_db.get(session, run_id)
        assert run is not None
        return run


# --- a healthy store ----------------------------------------------------------------------------


async def test_a_healthy_store_has_no_problem(cog: Runtime) -> None:
    images = await add_images(cog, (64, 48), (40, 30))
    generated = await images_service.store_generated(
        cog.store,
        cog.settings,
        ImageCommits(cog.sessions, cog.store),
        series_id=images[0].series_id,
        data=image_bytes(32, 32),
        prompt="a fox",
        model="preview",
        provider="preview",
        metadata={},
    )
    await add_run(cog, heartbeat_ago_s=1)  # an executor looks after it

    report = await check(cog)
    # An image a model made gets its thumbnail when first shown: a notice, not a problem.
    assert named(report) == {(Kind.thumbnail_missing, str(generated["id"]))}
    assert report.healthy and not report.problems
    assert (report.images, report.objects, report.files_read, report.runs) == (3, 5, 3, 1)
    assert report.bytes_read == sum(i.size_bytes for i in images) + generated["size_bytes"]
    body = report.to_dict()
    assert body["healthy"] is True
    assert body["counts"]["thumbnail_missing"] == {"found": 1, "open": 0}
    assert body["counts"]["file_missing"] == {"found": 0, "open": 0}
    assert "run_lost" not in body["counts"]  # the embedded executor has no queue to check

    await repair(cog, report)
    thumb = await stored(cog, thumbnail_key(generated["id"]))
    assert thumb is not None and thumbnail_fits(thumb, cog.settings.thumbnail_px, 32, 32)
    assert (await check(cog)).findings == []


# --- everything broken at once ------------------------------------------------------------------


async def test_doctor_names_what_was_broken_and_repairs_what_is_safe(cog: Runtime) -> None:
    lost, stray_thumb_of, thumbless, damaged, *fine = await add_images(
        cog, (64, 48), (50, 40), (40, 40), (30, 60), (20, 20)
    )
    original = await cog.store.get(damaged.storage_path)
    thumb_of_damaged = await cog.store.get(thumbnail_key(damaged.id))
    # A file with no row, a thumbnail of an image deleted long ago, a lost file, a lost
    # thumbnail, bytes flipped in place, and a run whose executor died.
    await cog.store.delete(lost.storage_path)
    await cog.store.put("images/ab/not-from-cog.png", image_bytes(10, 10))
    gone_image = uuid.uuid4()
    gone_thumb = thumbnail_key(gone_image)
    await cog.store.put(gone_thumb, await cog.store.get(thumbnail_key(stray_thumb_of.id)))
    await cog.store.delete(thumbnail_key(thumbless.id))
    flipped = bytearray(original)
    flipped[len(flipped) // 2] ^= 0xFF
    await cog.store.put(damaged.storage_path, bytes(flipped))
    run_id = await add_run(cog, heartbeat_ago_s=600)
    before = await image_ids(cog)

    report = await check(cog)
    assert named(report) == {
        (Kind.file_missing, str(lost.id)),
        (Kind.file_without_row, "images/ab/not-from-cog.png"),
        (Kind.thumbnail_without_image, gone_thumb),
        (Kind.thumbnail_missing, str(thumbless.id)),
        (Kind.file_changed, str(damaged.id)),
        (Kind.run_stale, str(run_id)),
    }
    assert not report.healthy
    assert {f.subject for f in report.problems} == {
        str(lost.id),
        "images/ab/not-from-cog.png",
        gone_thumb,
        str(damaged.id),
        str(run_id),
    }
    (changed,) = report.of(Kind.file_changed)
    assert changed.key == damaged.storage_path
    assert damaged.sha256 in changed.detail
    assert hashlib.sha256(flipped).hexdigest() in changed.detail
    assert "no longer reads as an image" in changed.detail
    (stale,) = report.of(Kind.run_stale)
    assert "embedded:gone:1:abc" in stale.detail and "10 min ago" in stale.detail
    assert "Queued again" in stale.remedy
    (missing,) = report.of(Kind.file_missing)
    assert missing.key == lost.storage_path and "thumbnail is still there" in missing.detail
    # Checking changed nothing.
    assert await image_ids(cog) == before
    assert await stored(cog, "images/ab/not-from-cog.png") is not None

    await repair(cog, report)
    outcomes = {f.subject: f.outcome for f in report.findings}
    assert outcomes == {
        str(lost.id): Outcome.left,  # not without --drop-missing
        "images/ab/not-from-cog.png": Outcome.fixed,
        gone_thumb: Outcome.fixed,
        str(thumbless.id): Outcome.fixed,
        str(damaged.id): Outcome.left,
        str(run_id): Outcome.fixed,
    }
    assert {f.subject for f in report.problems} == {str(lost.id), str(damaged.id)}
    # The stray file is kept under quarantine/, the thumbnail of no image is gone.
    (moved,) = [k for k in await all_keys(cog) if k.startswith("quarantine/")]
    assert moved.endswith("/images/ab/not-from-cog.png")
    assert await stored(cog, moved) == image_bytes(10, 10)
    assert await stored(cog, "images/ab/not-from-cog.png") is None
    assert await stored(cog, gone_thumb) is None
    remade = await stored(cog, thumbnail_key(thumbless.id))
    assert remade is not None and thumbnail_fits(remade, cog.settings.thumbnail_px, 40, 40)
    # The changed file and its thumbnail are as they were: nothing hides the damage.
    assert await stored(cog, damaged.storage_path) == bytes(flipped)
    assert await stored(cog, thumbnail_key(damaged.id)) == thumb_of_damaged
    # The run is back in the queue, to resume from its last finished step.
    run = await run_row(cog, run_id)
    assert (run.status, run.claimed_by, run.heartbeat_at) == (RunStatus.queued, None, None)
    # No image row went: not even the one whose file is missing.
    assert await image_ids(cog) == before

    again = await check(cog)
    assert named(again) == {(Kind.file_missing, str(lost.id)), (Kind.file_changed, str(damaged.id))}

    dropping = Options(grace=dt.timedelta(0), drop_missing=True)
    await repair(cog, again, dropping)
    assert {f.subject: f.outcome for f in again.findings} == {
        str(lost.id): Outcome.fixed,
        str(damaged.id): Outcome.left,
    }
    assert await image_ids(cog) == before - {lost.id}
    assert await stored(cog, thumbnail_key(lost.id)) is None
    for image in [stray_thumb_of, thumbless, damaged, *fine]:  # every file still there
        assert await stored(cog, image.storage_path) is not None

    third = await check(cog)
    assert named(third) == {(Kind.file_changed, str(damaged.id))}
    await cog.store.put(damaged.storage_path, original)  # restored from a backup
    last = await check(cog)
    assert last.findings == [] and last.healthy


async def test_a_file_that_still_decodes_is_told_apart(cog: Runtime) -> None:
    (image,) = await add_images(cog, (30, 20))
    await cog.store.put(image.storage_path, image_bytes(30, 20, color=(1, 2, 3)))
    (finding,) = (await check(cog)).findings
    assert finding.kind is Kind.file_changed
    assert "still reads as an image, but not the one that was stored" in finding.detail


# --- what is never touched ----------------------------------------------------------------------


async def test_young_files_without_a_row_are_left_alone(cog: Runtime) -> None:
    """A file an upload wrote moments ago, whose row is not committed yet."""
    await add_images(cog, (20, 20))
    key = f"images/{uuid.uuid4().hex[:2]}/{uuid.uuid4()}.png"
    await cog.store.put(key, image_bytes(12, 12))

    report = await check(cog, Options())  # the default grace: an hour
    assert named(report) == {(Kind.recent_file_without_row, key)}
    assert report.healthy  # a notice
    await repair(cog, report, Options())
    assert report.findings[0].outcome is Outcome.left
    assert await stored(cog, key) == image_bytes(12, 12)
    assert not [k for k in await all_keys(cog) if k.startswith("quarantine/")]


async def test_drop_missing_deletes_no_row_when_every_file_is_missing(cog: Runtime) -> None:
    """What a wrong COG_STORAGE_URL looks like: no image's file anywhere."""
    images = await add_images(cog, (20, 20), (21, 21))
    for image in images:
        await cog.store.delete(image.storage_path)
    report = await check(cog)
    assert named(report) == {(Kind.file_missing, str(i.id)) for i in images}
    await repair(cog, report, Options(drop_missing=True))
    assert {f.outcome for f in report.findings} == {Outcome.left}
    assert "COG_STORAGE_URL" in report.findings[0].note
    assert await image_ids(cog) == {i.id for i in images}


async def test_a_file_that_comes_back_keeps_its_row(cog: Runtime) -> None:
    kept, other = await add_images(cog, (20, 20), (22, 22))
    data = await cog.store.get(kept.storage_path)
    await cog.store.delete(kept.storage_path)
    report = await check(cog)
    assert named(report) == {(Kind.file_missing, str(kept.id))}
    await cog.store.put(kept.storage_path, data)  # restored between the check and the repair
    await repair(cog, report, Options(drop_missing=True))
    assert report.findings[0].outcome is Outcome.gone
    assert await image_ids(cog) == {kept.id, other.id}
    assert (await check(cog)).findings == []


async def test_a_file_a_row_refers_to_by_repair_time_stays(cog: Runtime) -> None:
    (image,) = await add_images(cog, (20, 20))
    data = await cog.store.get(image.storage_path)
    async with cog.sessions() as session:
        await session.execute(sa.delete(Image).where(Image.id == image.id))
        await session.commit()
    report = await check(cog)
    assert {f.kind for f in report.findings} == {
        Kind.file_without_row,
        Kind.thumbnail_without_image,
    }
    async with cog.sessions() as session:  # the row is back (a restore, a slow commit)
        back = Image(**{a.key: getattr(image, a.key) for a in sa.inspect(Image).column_attrs})
        session.add_all([back, images_service.first_version(back)])
        await session.commit()
    await repair(cog, report)
    assert {f.outcome for f in report.findings} == {Outcome.gone}
    assert await stored(cog, image.storage_path) == data
    assert (await check(cog)).findings == []


# --- sizes, thumbnails --------------------------------------------------------------------------


async def test_quick_compares_sizes_and_reads_no_file(cog: Runtime) -> None:
    truncated, flipped = await add_images(cog, (40, 30), (30, 40))
    data = await cog.store.get(truncated.storage_path)
    await cog.store.put(truncated.storage_path, data[: len(data) // 2])
    same_size = bytearray(await cog.store.get(flipped.storage_path))
    same_size[-20] ^= 0x01
    await cog.store.put(flipped.storage_path, bytes(same_size))

    quick = await check(cog, Options(quick=True))
    assert named(quick) == {(Kind.file_changed, str(truncated.id))}
    assert f"holds {len(data) // 2:,} bytes" in quick.findings[0].detail
    assert (quick.files_read, quick.bytes_read) == (0, 0)
    assert Kind.thumbnail_outdated not in quick.kinds()

    full = await check(cog)
    assert named(full) == {
        (Kind.file_changed, str(truncated.id)),
        (Kind.file_changed, str(flipped.id)),
    }


async def test_damaged_and_outdated_thumbnails_are_made_again(
    cog: Runtime, doctor_settings: Settings
) -> None:
    damaged, resized = await add_images(cog, (300, 200), (200, 300))
    damaged_key = thumbnail_key(damaged.id)
    await cog.store.put(damaged_key, b"RIFF\x00\x00\x00\x00WEBPnot really")
    assert named(await check(cog)) == {(Kind.thumbnail_outdated, str(damaged.id))}

    # COG_THUMBNAIL_PX changed since the thumbnails were made: every one is outdated.
    smaller = doctor_settings.model_copy(update={"thumbnail_px": 128})
    cog.settings = smaller
    report = await check(cog)
    assert named(report) == {
        (Kind.thumbnail_outdated, str(damaged.id)),
        (Kind.thumbnail_outdated, str(resized.id)),
    }
    assert report.healthy  # notices
    await repair(cog, report)
    assert {f.outcome for f in report.findings} == {Outcome.fixed}
    for image in (damaged, resized):
        thumb = await cog.store.get(thumbnail_key(image.id))
        with PILImage.open(io.BytesIO(thumb)) as opened:
            assert max(opened.size) == 128
    assert (await check(cog)).findings == []


# --- runs ---------------------------------------------------------------------------------------


async def test_runs_left_running_are_resumed_or_failed_by_the_recovery(cog: Runtime) -> None:
    resumable = await add_run(cog, heartbeat_ago_s=120, attempts=1)
    spent = await add_run(cog, heartbeat_ago_s=7200, attempts=cog.settings.run_max_attempts)
    alive = await add_run(cog, heartbeat_ago_s=2)

    report = await check(cog)
    assert named(report) == {(Kind.run_stale, str(resumable)), (Kind.run_stale, str(spent))}
    remedies = {f.subject: f.remedy for f in report.findings}
    assert "start 2 of at most 3" in remedies[str(resumable)]
    assert "Failed" in remedies[str(spent)] and "COG_RUN_MAX_ATTEMPTS" in remedies[str(spent)]
    assert report.runs == 3

    await repair(cog, report)
    assert {f.outcome for f in report.findings} == {Outcome.fixed}
    assert (await run_row(cog, resumable)).status == RunStatus.queued
    failed = await run_row(cog, spent)
    assert failed.status == RunStatus.failed and failed.finished_at is not None
    assert failed.error is not None and "stopped 3 time(s)" in failed.error
    steps = await _step_statuses(cog, spent)
    assert steps == [RunStatus.failed.value]
    live = await run_row(cog, alive)
    assert (live.status, live.claimed_by) == (RunStatus.running, "embedded:gone:1:abc")
    assert (await check(cog)).findings == []


async def _step_statuses(cog: Runtime, run_id: uuid.UUID) -> list[str]:
    async with cog.sessions() as session:
        return [s.status for s in await runs_db.step_runs(session, run_id)]


@pytest.mark.postgres
async def test_queued_runs_no_worker_will_take_get_a_new_job(
    tmp_path: Path, pg_database: str
) -> None:
    settings = make_settings(
        tmp_path, database_url=pg_url(pg_database), executor="queue", run_stale_after_s=5
    )
    cog = Runtime.build(settings)
    try:
        await queue_db.install_schema(cog.engine)
        stale = await add_run(cog, heartbeat_ago_s=60)
        async with cog.sessions() as session:  # queued, with no queue job (a lost delivery)
            job_id = (await run_row(cog, stale)).job_id
            lost = await runs_service.start(session, job_id)
            waiting = await runs_service.start(session, job_id, enqueue=True)

        report = await check(cog)
        assert report.queue
        assert named(report) == {(Kind.run_stale, str(stale)), (Kind.run_lost, str(lost.id))}
        assert "a `cog worker` resumes it" in report.of(Kind.run_stale)[0].remedy
        await repair(cog, report)
        assert {f.outcome for f in report.findings} == {Outcome.fixed}
        async with cog.sessions() as session:
            assert await queue_db.orphans(session, alive_within_s=5, batch_concurrency=2) == []
            jobs = await session.execute(
                sa.text("SELECT args ->> 'run_id' FROM procrastinate_jobs WHERE status = 'todo'")
            )
            assert sorted(jobs.scalars()) == sorted(str(r) for r in (stale, lost.id, waiting.id))
        assert (await check(cog)).findings == []
    finally:
        await cog.stop()


async def test_earlier_versions_are_history_not_strays(cog: Runtime) -> None:
    """An image replaced twice keeps three files and thumbnails; doctor finds nothing to move,
    and checks the current version's bytes and thumbnail."""
    (image,) = await add_images(cog, (20, 20))
    for shade in (40, 80):
        async with cog.sessions() as session:
            incoming = images_service.IncomingFile(
                "again.png", io.BytesIO(image_bytes(24, 16, color=(shade, 9, 9)))
            )
            await versions_service.replace(session, cog.store, cog.settings, image.id, incoming)
    keys = await all_keys(cog)
    assert len([k for k in keys if k.startswith("images/")]) == 3
    assert (await check(cog)).findings == []

    async with cog.sessions() as session:
        current = await images_db.get(session, image.id)
        assert current is not None and current.version == 3
        path = current.storage_path
    await cog.store.put(path, b"not the picture any more")
    assert named(await check(cog)) == {(Kind.file_changed, str(image.id))}
