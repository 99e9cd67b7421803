"""The `cog` command as a person runs it: real subprocesses on a data dir under tmp_path.

Commands run as `python -m cog` with the test's interpreter (the same program as the `cog`
script, without uv's start-up). Data a test only needs to exist is made in-process through the
services, which is faster than a command per row; what a test is about runs as a command.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import signal
import time
import uuid
from collections.abc import Callable

import asyncpg
import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from cog.db.migrate import head_revision
from cog.db.models import Image
from cog.services import series as series_service
from cog.storage import ObjectStore
from tests.conftest import PG_HOST, PG_PORT, PG_USER, free_port, pg_url
from tests.e2e.cli import (
    MISSING,
    Cli,
    CliServer,
    Result,
    add_image,
    add_series,
    seed_data,
    stored_files,
)
from tests.factories import image_bytes

pytestmark = pytest.mark.slow

# --- series -------------------------------------------------------------------------------------


def test_series_create_with_tags_and_parent_then_show(cli: Cli) -> None:
    parent_id = seed_data(cli, lambda session, _store: add_series(session, "Trips"))
    child = cli(
        "series", "create", "Rome", "--parent", parent_id, "--tag", "Italy", "-t", " italy ",
        "-d", "Places I went",
    )  # fmt: skip
    assert child.code == 0, child
    assert "Created series Rome" in child.stdout
    child_id = child.stdout.split()[-1]
    uuid.UUID(child_id)

    shown, plain, children = cli.many(
        ("series", "show", child_id, "--json"),
        ("series", "show", child_id),
        ("series", "list", "--parent", parent_id, "--json"),
    )
    assert shown.code == plain.code == children.code == 0
    assert [s["id"] for s in children.json()] == [child_id]
    body = shown.json()
    assert body["id"] == child_id
    assert body["parent_id"] == parent_id
    assert body["title"] == "Rome"
    assert body["description"] == "Places I went"
    assert body["tags"] == ["italy"]  # trimmed, lower case, once
    assert body["ancestors"] == [{"id": parent_id, "title": "Trips"}]
    assert (body["image_count"], body["child_count"]) == (0, 0)
    assert "Trips / Rome" in plain.stdout  # the breadcrumbs
    assert "tags: italy" in plain.stdout


def test_series_list_as_a_table_as_json_by_tag_and_by_text(cli: Cli) -> None:
    async def work(session: AsyncSession, _store: ObjectStore) -> dict[str, str]:
        trips = await add_series(session, "Trips", tags=["travel"])
        rome = await add_series(
            session, "Rome", parent_id=uuid.UUID(trips), tags=["italy"], description="Pasta!"
        )
        work_ = await add_series(session, "Work", description="Slides")
        return {"trips": trips, "rome": rome, "work": work_}

    ids = seed_data(cli, work)
    table, listed, by_tag, by_text = cli.many(
        ("series", "list"),
        ("series", "list", "--json"),
        ("series", "list", "--tag", "ITALY", "--json"),
        ("series", "list", "-q", "pasta", "--json"),
    )
    assert all(r.code == 0 for r in (table, listed, by_tag, by_text))
    # Top level only, ordered by title, with counts.
    assert [r["title"] for r in listed.json()] == ["Trips", "Work"]
    assert listed.json()[0]["child_count"] == 1
    for title in ("Trips", "Work", ids["trips"], "travel"):
        assert title in table.stdout
    assert "Rome" not in table.stdout
    # Tag and text filters search the whole tree.
    assert [r["id"] for r in by_tag.json()] == [ids["rome"]]
    assert [r["id"] for r in by_text.json()] == [ids["rome"]]


def test_series_rm_refuses_a_non_empty_series_and_removes_it_recursively(cli: Cli) -> None:
    settings = cli.settings()

    async def work(session: AsyncSession, store: ObjectStore) -> dict[str, str]:
        top = await add_series(session, "Top")
        sub = await add_series(session, "Sub", parent_id=uuid.UUID(top))
        empty = await add_series(session, "Empty")
        image = await add_image(session, store, settings, sub, "leaf.png")
        return {"top": top, "sub": sub, "empty": empty, "image": image}

    ids = seed_data(cli, work)
    assert len(stored_files(cli.storage_dir)) == 2  # the image and its thumbnail

    refused, removed_empty = cli.many(("series", "rm", ids["top"]), ("series", "rm", ids["empty"]))
    assert refused.code == 1, refused
    assert "1 image(s) and 1 sub-series" in refused.said
    assert "--recursive" in refused.said
    assert removed_empty.code == 0, removed_empty
    assert f"Deleted series {ids['empty']}." in removed_empty.said

    async def remaining(session: AsyncSession, _store: ObjectStore) -> list[str]:
        page, _ = await series_service.listing(session, limit=10)
        return [s.title for s in page.items]

    assert seed_data(cli, remaining) == ["Top"]
    assert len(stored_files(cli.storage_dir)) == 2

    gone = cli("series", "rm", ids["top"], "--recursive")
    assert gone.code == 0, gone
    assert f"Deleted series {ids['top']} and 1 image(s)." in gone.said
    assert seed_data(cli, remaining) == []
    assert stored_files(cli.storage_dir) == {}


# --- images -------------------------------------------------------------------------------------


def test_images_upload_keeps_the_images_and_names_the_refused_file(cli: Cli) -> None:
    series_id = seed_data(cli, lambda session, _store: add_series(session, "Uploads"))
    files = {
        "a.png": image_bytes(40, 30, "PNG"),
        "b.jpg": image_bytes(50, 20, "JPEG", color=(10, 200, 10)),
        "notes.txt": b"not an image, just some notes\n",
    }
    for name, data in files.items():
        (cli.tmp_path / name).write_bytes(data)

    upload = cli("images", "upload", series_id, "a.png", "b.jpg", "notes.txt")
    assert upload.code == 1, upload
    assert "Uploaded 2 image(s)." in upload.stdout
    assert "refused notes.txt: This is not an image" in upload.said
    assert "PNG, JPEG" in upload.said  # and why: what it accepts
    # The progress bar went to stderr, and finished.
    assert "Uploading" in upload.stderr
    assert "3/3" in upload.stderr
    assert "━" in upload.stderr

    listed, table = cli.many(("images", "list", series_id, "--json"), ("images", "list", series_id))
    assert listed.code == table.code == 0, (listed, table)
    assert "a.png" in table.stdout and "b.jpg" in table.stdout and "40x30" in table.stdout
    images = {i["original_filename"]: i for i in listed.json()}
    assert set(images) == {"a.png", "b.jpg"}
    assert images["a.png"]["mime_type"] == "image/png"
    assert (images["a.png"]["width"], images["a.png"]["height"]) == (40, 30)
    assert images["b.jpg"]["mime_type"] == "image/jpeg"
    for name, image in images.items():
        assert image["sha256"] == hashlib.sha256(files[name]).hexdigest()
        assert image["size_bytes"] == len(files[name])
    # The bytes are on disk under the data dir's storage, under keys Cog made.
    on_disk = stored_files(cli.storage_dir)
    originals = {k: v for k, v in on_disk.items() if k.startswith("images/")}
    assert sorted(originals.values()) == sorted([files["a.png"], files["b.jpg"]])
    key = re.compile(r"(images|thumbs)/[0-9a-f]{2}/[0-9a-f-]{36}\.(png|jpg|webp)")
    assert all(key.fullmatch(k) for k in on_disk), on_disk  # no part of a key is a file name
    assert len([k for k in on_disk if k.startswith("thumbs/")]) == 2


def test_images_rm_removes_the_row_and_the_files(cli: Cli) -> None:
    settings = cli.settings()

    async def work(session: AsyncSession, store: ObjectStore) -> tuple[str, str, str]:
        series_id = await add_series(session, "Few")
        kept = await add_image(session, store, settings, series_id, "[red]kept.png")
        gone = await add_image(session, store, settings, series_id, "gone.png")
        return series_id, kept, gone

    series_id, kept, gone = seed_data(cli, work)
    before = stored_files(cli.storage_dir)
    assert len(before) == 4  # two originals, two thumbnails
    removed = cli("images", "rm", gone)
    assert removed.code == 0, removed
    assert f"Deleted image {gone}." in removed.stdout
    after = stored_files(cli.storage_dir)
    assert len(after) == 2
    assert all(kept in key for key in after)

    again, table = cli.many(("images", "rm", gone), ("images", "list", series_id))
    assert again.code == 1
    assert f"There is no image {gone}." in again.said
    assert table.code == 0, table
    assert kept in table.stdout and gone not in table.stdout
    assert "[red]kept.png" in table.stdout  # a name is shown as it is, never read as markup


def test_ids_in_tables_are_never_cut_short_on_a_narrow_terminal(cli: Cli) -> None:
    settings = cli.settings()

    async def work(session: AsyncSession, store: ObjectStore) -> tuple[str, list[str]]:
        series_id = await add_series(session, "A series with a rather long title", tags=["dusk"])
        name = "a-file-name-long-enough-to-need-wrapping.png"
        images = [await add_image(session, store, settings, series_id, name) for _ in range(2)]
        return series_id, images

    series_id, images = seed_data(cli, work)
    narrow = {"COLUMNS": "80"}
    listed = cli.many(("images", "list", series_id), ("series", "list"), env=narrow)
    assert all(r.code == 0 for r in listed), listed
    tables = [r.stdout for r in listed]
    for table, ids in zip(tables, (images, [series_id]), strict=True):
        assert all(len(line) <= 80 for line in table.splitlines()), table
        for found in ids:
            assert any(f"│ {found} │" in line for line in table.splitlines()), (found, table)


def test_text_that_looks_like_markup_is_printed_as_it_is(cli: Cli) -> None:
    made = cli("series", "create", "a [/x] b", "--tag", "[bold]t")
    assert made.code == 0, made
    assert "Created series a [/x] b" in made.said
    series_id = made.stdout.split()[-1]
    table, shown = cli.many(("series", "list"), ("series", "show", series_id))
    assert table.code == shown.code == 0, (table, shown)
    assert "a [/x] b" in table.stdout and "[bold]t" in table.stdout
    assert "a [/x] b" in shown.stdout


def test_help_shows_each_summary_as_one_paragraph_and_the_defaults_it_names(cli: Cli) -> None:
    jobs, worker, serve = cli.many(("jobs", "--help"), ("worker", "--help"), ("serve", "--help"))
    assert jobs.code == worker.code == serve.code == 0, (jobs, worker, serve)
    # Wide enough (COLUMNS=200) for each summary to fit on one line: the docstrings' own line
    # breaks are not kept.
    lines = [" ".join(line.strip("│ ").split()) for line in jobs.stdout.splitlines()]
    assert any(
        line.startswith("edit Edit the steps in $EDITOR.") and line.endswith("stay as they were.")
        for line in lines
    ), jobs.stdout
    assert any(
        line.startswith("run Run the job.") and line.endswith("that shares this database.")
        for line in lines
    ), jobs.stdout
    # Square brackets in help text are text, not markup that swallows them.
    assert "[default: COG_RUN_CONCURRENCY]" in worker.said
    assert "[default: 127.0.0.1]" in serve.said


def assert_not_found(results: list[Result], what: str) -> None:
    for result in results:
        assert result.code == 1, result
        assert f"error: There is no {what} {MISSING}." in result.said, result


def test_unknown_series_ids_exit_1_with_a_message(cli: Cli) -> None:
    (cli.tmp_path / "a.png").write_bytes(image_bytes())
    results = cli.many(
        ("series", "show", MISSING),
        ("series", "create", "Orphan", "--parent", MISSING),
        ("images", "upload", MISSING, "a.png"),
    )
    assert_not_found(results, "series")
    assert stored_files(cli.storage_dir) == {}


def test_unknown_ids_for_list_and_rm_exit_1_with_a_message(cli: Cli) -> None:
    assert_not_found(cli.many(("images", "rm", MISSING)), "image")
    assert_not_found(cli.many(("images", "list", MISSING), ("series", "rm", MISSING)), "series")


def test_malformed_ids_exit_2_with_a_message(cli: Cli) -> None:
    results = cli.many(
        ("series", "show", "nope"),
        ("series", "create", "X", "--parent", "12"),
        ("images", "rm", "[/x]"),
    )
    for result in results:
        assert result.code == 2, result
        assert "is not a" in result.said and "id." in result.said, result
    assert "'[/x]' is not a image id." in results[2].said


# --- cog doctor ---------------------------------------------------------------------------------


def test_doctor_reports_what_was_broken_and_fix_repairs_it(cli: Cli) -> None:
    settings = cli.settings()

    async def work(session: AsyncSession, store: ObjectStore) -> dict[str, str]:
        series_id = await add_series(session, "Checked")
        names = ("lost.png", "thumbless.png", "damaged.png", "fine.png")
        return {n: await add_image(session, store, settings, series_id, n) for n in names}

    ids = seed_data(cli, work)
    root = cli.storage_dir
    original = {k: root / f"images/{i[:2]}/{i}.png" for k, i in ids.items()}
    thumbs = {k: root / f"thumbs/{i[:2]}/{i}.webp" for k, i in ids.items()}
    good_bytes = original["damaged.png"].read_bytes()
    original["lost.png"].unlink()
    thumbs["thumbless.png"].unlink()
    original["damaged.png"].write_bytes(good_bytes[:-8] + b"\x00" * 8)
    stray = root / "images/ab/stray.png"
    stray.parent.mkdir(parents=True)
    stray.write_bytes(b"left behind")
    two_hours_ago = time.time() - 7200
    os.utime(stray, (two_hours_ago, two_hours_ago))

    as_json, table, misused = cli.many(
        ("doctor", "--json"), ("doctor",), ("doctor", "--drop-missing")
    )
    assert as_json.code == table.code == 1, (as_json, table)
    found = {(f["kind"], f["image_id"] or f["key"]) for f in as_json.json()["findings"]}
    assert found == {
        ("file_missing", ids["lost.png"]),
        ("thumbnail_missing", ids["thumbless.png"]),
        ("file_changed", ids["damaged.png"]),
        ("file_without_row", "images/ab/stray.png"),
    }
    assert as_json.stderr == ""  # no progress bar in the way of a machine
    for words in ("Images whose file is missing", "Files no image refers to", "3 problem(s)"):
        assert words in table.said, table
    assert "Reading files" in table.stderr  # the progress bar
    assert misused.code == 2 and "--drop-missing only works with --fix" in misused.said

    fixed = cli("doctor", "--fix", "--drop-missing")
    assert fixed.code == 1, fixed  # the changed file is left for a person to restore
    assert "1 problem(s) left" in fixed.said
    assert not stray.exists()
    (kept,) = (root / "quarantine").rglob("stray.png")
    assert kept.read_bytes() == b"left behind"
    assert thumbs["thumbless.png"].exists()
    assert original["damaged.png"].read_bytes() == good_bytes[:-8] + b"\x00" * 8

    original["damaged.png"].write_bytes(good_bytes)  # restored from a backup
    healthy = cli("doctor")
    assert healthy.code == 0, healthy
    assert "No problem found." in healthy.said

    async def remaining(session: AsyncSession, _store: ObjectStore) -> set[str]:
        return {str(i) for i in (await session.scalars(sa.select(Image.id))).all()}

    # Only the image whose file was gone lost its row.
    assert seed_data(cli, remaining) == set(ids.values()) - {ids["lost.png"]}


# --- the database -------------------------------------------------------------------------------


async def _tables(database: str) -> set[str]:
    conn = await asyncpg.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, database=database)
    try:
        rows = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        return {row["tablename"] for row in rows}
    finally:
        await conn.close()


@pytest.mark.postgres
def test_db_upgrade_on_an_empty_postgres_database(cli: Cli, empty_pg_database: str) -> None:
    env = {"COG_DATABASE_URL": pg_url(empty_pg_database)}
    first = cli("db", "upgrade", env=env)
    assert first.code == 0, first
    assert f"Upgraded the schema from empty to {head_revision()}." in first.said
    assert {"cog_series", "cog_images", "cog_jobs", "cog_job_runs"} <= asyncio.run(
        _tables(empty_pg_database)
    )
    second, made = cli.many(("db", "upgrade"), ("series", "create", "On Postgres"), env=env)
    assert second.code == 0, second
    assert f"The schema is up to date (revision {head_revision()})." in second.said
    assert made.code == 0, made
    assert not (cli.data_dir / "cog.db").exists()  # nothing went to the embedded database


# --- cog serve ----------------------------------------------------------------------------------


def test_serve_migrates_a_fresh_data_dir_and_answers_over_http(
    cli: Cli, cog_serve: Callable[..., CliServer]
) -> None:
    assert not cli.data_dir.exists()
    server = cog_serve()
    assert (cli.data_dir / "cog.db").exists()
    with httpx.Client(base_url=server.base_url, timeout=5) as http:
        page = http.get("/cog")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert http.get("/", follow_redirects=False).headers["location"] == "/cog"
        created = http.post("/api/series", json={"title": "Over HTTP", "tags": ["Live"]})
        assert created.status_code == 201, created.text
        assert created.json()["tags"] == ["live"]
        listed = http.get("/api/series").json()["items"]
        assert [s["title"] for s in listed] == ["Over HTTP"]
    server.proc.terminate()
    # uvicorn shuts down gracefully, then re-raises the signal so the exit status tells of it.
    assert server.proc.wait(timeout=10) in (0, -signal.SIGTERM)
    assert "Application shutdown complete" in server.output()
    assert "GET /api/series" not in server.output()  # no line per request unless asked


@pytest.mark.postgres
def test_serve_refuses_an_empty_postgres_database(cli: Cli, empty_pg_database: str) -> None:
    port = str(free_port())
    env = {"COG_DATABASE_URL": pg_url(empty_pg_database)}
    refused = cli("serve", "--port", port, env=env, timeout=20)  # killed should it start
    assert refused.code == 1, refused
    assert "Run `cog db upgrade`" in refused.said
    assert "none (empty database)" in refused.said
    assert asyncio.run(_tables(empty_pg_database)) == set()  # it changed nothing


def test_serve_off_loopback_needs_a_token(cli: Cli, cog_serve: Callable[..., CliServer]) -> None:
    refused = cli("serve", "--host", "0.0.0.0", "--port", str(free_port()), timeout=20)
    assert refused.code != 0, refused
    assert "refusing to listen on 0.0.0.0 without a token" in refused.said
    assert "COG_API_TOKEN" in refused.said

    server = cog_serve("--host", "0.0.0.0", "--access-log", env={"COG_API_TOKEN": "s3cret"})
    with httpx.Client(base_url=server.base_url, timeout=5) as http:
        assert http.get("/api/series").status_code == 401
        assert '"GET /api/series HTTP/1.1" 401' in server.output()  # logged, as asked
        assert http.get("/cog", headers={"Accept": "text/html"}).status_code == 303
        authed = http.get("/api/series", headers={"Authorization": "Bearer s3cret"})
        assert authed.status_code == 200
