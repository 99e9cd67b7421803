"""`cog jobs ...` and `cog runs ...` as a person runs them: real `python -m cog` subprocesses.

The preview provider (no API key) makes the images unless a test points Cog at the fake Gemini
server, which runs in this process on loopback: real HTTP, so a subprocess can call it. Data a
test only needs to exist is made in-process through the services; what a test is about runs as
a command. Each command costs a few seconds of start-up, so independent ones run side by side.
"""

from __future__ import annotations

import contextlib
import json
import os
import pty
import re
import signal
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from cog.runtime import Runtime
from cog.services import images as images_service
from cog.services import jobs as jobs_service
from cog.services import series as series_service
from cog.testing.gemini_server import GeminiTestServer
from tests.conftest import make_settings, pg_url
from tests.e2e.cli import (
    MARKUP,
    MISSING,
    TWO_STEPS,
    UUID,
    Call,
    Cli,
    add_job,
    editor,
    flat,
    gemini_env,
    job_runs,
    run_here,
    run_line,
    saved_steps,
    seed,
    seen,
    stored_files,
)

pytestmark = pytest.mark.slow

# --- the whole story, with the preview provider --------------------------------------------------


def test_create_draft_run_show_and_list_with_the_preview_provider(cli: Cli) -> None:
    made = cli("series", "create", "Harbours")
    assert made.code == 0, made
    series_id = made.stdout.split()[-1]

    created = cli(
        "jobs", "create", series_id, "--prompt", f"a boat {MARKUP} at dawn", "--title",
        f"Boats {MARKUP}",
    )  # fmt: skip
    assert created.code == 0, created
    found = re.search(rf"Created job Boats \[/x\] \[bold\] ({UUID})", created.said)
    assert found, created  # the title as it was typed, then the id
    job_id = found[1]
    assert f"Next: `cog jobs draft {job_id}` to let the model write the steps" in created.said

    drafted = cli("jobs", "draft", job_id)
    assert drafted.code == 0, drafted
    assert f"base prompt: a boat {MARKUP} at dawn" in drafted.said
    assert "image" in drafted.stdout and "llm" in drafted.stdout  # the steps' table

    shown, ran = cli.many(("jobs", "show", job_id, "--json"), ("jobs", "run", job_id, "--wait"))
    assert shown.code == 0, shown
    job = shown.json()
    assert (job["id"], job["series_id"], job["status"]) == (job_id, series_id, "ready")
    assert job["title"] == f"Boats {MARKUP}"
    assert len(job["steps"]) >= 2
    assert [s["position"] for s in job["steps"]] == list(range(len(job["steps"])))
    assert "image" in {s["kind"] for s in job["steps"]}
    wanted = sum(s["config"]["count"] for s in job["steps"] if s["kind"] == "image")

    assert ran.code == 0, ran
    run_id, status, images = run_line(ran)
    assert (status, images) == ("succeeded", wanted)
    # The live display went to stderr and shows where the run ended, step by step.
    progress = flat(ran.stderr)
    assert f"run {run_id[:8]} succeeded" in progress
    assert progress.count("succeeded") == 1 + len(job["steps"])
    assert f"{wanted}/{wanted}" in progress
    assert "boat [/x] [bold] at dawn" in progress  # a step's text, as it is

    listed, run_json, run_table, jobs = cli.many(
        ("images", "list", series_id, "--json"),
        ("runs", "show", run_id, "--json"),
        ("runs", "show", run_id),
        ("jobs", "list", series_id),
    )
    assert all(r.code == 0 for r in (listed, run_json, run_table, jobs))
    stored = listed.json()
    assert len(stored) == wanted
    for image in stored:
        assert (image["source"], image["provider"]) == ("generated", "preview")
        assert (image["job_id"], image["run_id"]) == (job_id, run_id)
        assert image["mime_type"] == "image/png" and image["prompt"]
    run = run_json.json()
    assert (run["id"], run["job_id"], run["status"], run["error"]) == (
        run_id, job_id, "succeeded", None,
    )  # fmt: skip
    assert [s["status"] for s in run["steps"]] == ["succeeded"] * len(job["steps"])
    made_ids = [i for s in run["steps"] for i in s["image_ids"]]
    assert sorted(made_ids) == sorted(i["id"] for i in stored)
    assert flat(run_table.stdout).startswith(f"run {run_id[:8]} succeeded")
    assert "boat [/x] [bold] at dawn" in run_table.stdout
    assert job_id in jobs.stdout and f"Boats {MARKUP}" in jobs.stdout
    assert "succeeded" in jobs.stdout  # its last run


def test_scripting_with_json_from_the_series_to_the_run(cli: Cli) -> None:
    series = cli("series", "create", "Scripted", "--tag", "ink", "--json")
    assert series.code == 0, series
    assert (series.json()["title"], series.json()["tags"]) == ("Scripted", ["ink"])
    series_id = series.json()["id"]

    created = cli("jobs", "create", series_id, "--prompt", "a kite", "--json")
    assert created.code == 0, created
    job = created.json()
    assert (job["series_id"], job["base_prompt"], job["steps"]) == (series_id, "a kite", [])

    drafted = cli("jobs", "draft", job["id"], "--json")
    assert drafted.code == 0, drafted
    steps = drafted.json()["steps"]
    assert len(steps) >= 2 and "image" in {s["kind"] for s in steps}

    queued, ran = cli.many(
        ("jobs", "run", job["id"], "--json"), ("jobs", "run", job["id"], "--wait", "--json")
    )
    assert queued.code == 0, queued
    assert queued.json()["status"] == "queued" and queued.json()["job_id"] == job["id"]
    assert ran.code == 0, ran
    run = ran.json()  # stdout holds the JSON alone; the live progress went to stderr
    assert run["status"] == "succeeded" and run["id"] != queued.json()["id"]
    assert [s["status"] for s in run["steps"]] == ["succeeded"] * len(steps)
    assert "succeeded" in ran.stderr


def test_run_progress_fits_a_narrow_terminal(cli: Cli) -> None:
    series_id = cli("series", "create", "Narrow").stdout.split()[-1]
    created = cli("jobs", "create", series_id, "--prompt", "a long harbour " * 12)
    job_id = re.findall(UUID, created.stdout)[-1]
    assert cli("jobs", "draft", job_id).code == 0
    narrow = {"COLUMNS": "80"}
    ran = cli("jobs", "run", job_id, "--wait", env=narrow)
    assert ran.code == 0, ran
    run_id = run_line(ran)[0]
    shown = cli("runs", "show", run_id, env=narrow)
    assert shown.code == 0, shown
    for table in (ran.stderr, shown.stdout):
        rows = [line for line in table.splitlines() if line.startswith("│")]
        assert rows, table
        assert all(len(line) <= 80 for line in table.splitlines()), table
        for row in rows:  # the short columns whole, the output cut short
            position, kind, status, images, output = (c.strip() for c in row.split("│")[1:-1])
            assert position.isdigit() and images in ("", "1/1", "2/2", "3/3", "4/4"), row
            assert kind in ("llm", "image") and status == "succeeded", row
            assert output.endswith("…"), row


@pytest.mark.postgres
def test_run_wait_on_postgres(cli: Cli, pg_database: str) -> None:
    url = pg_url(pg_database)
    settings = make_settings(cli.tmp_path, database_url=url, provider="preview")

    async def work(_runtime: Runtime, session: AsyncSession) -> tuple[str, str]:
        series = await series_service.create(session, title="On Postgres")
        return str(series.id), await add_job(session, series.id)

    series_id, job_id = seed(settings, work)
    ran = cli("jobs", "run", job_id, "--wait", env={"COG_DATABASE_URL": url})
    assert ran.code == 0, ran
    run_id, status, images = run_line(ran)
    assert (status, images) == ("succeeded", 2)
    assert f"run {run_id[:8]} succeeded" in flat(ran.stderr)

    async def check(_runtime: Runtime, session: AsyncSession) -> None:
        (run,) = await job_runs(session, job_id)
        assert run["id"] == run_id
        assert [s["status"] for s in run["steps"]] == ["succeeded", "succeeded"]
        page = await images_service.listing(session, uuid.UUID(series_id), limit=10)
        assert sorted(str(i.id) for i in page.items) == sorted(run["steps"][1]["image_ids"])
        assert {i.provider for i in page.items} == {"preview"}

    seed(settings, check)
    assert not (cli.data_dir / "cog.db").exists()  # all of it went to PostgreSQL


# --- Gemini, through the fake server ------------------------------------------------------------


def test_a_safety_block_fails_the_run_and_says_why(cli: Cli, gemini: GeminiTestServer) -> None:
    settings = cli.settings()

    async def work(_runtime: Runtime, session: AsyncSession) -> tuple[str, str]:
        series = await series_service.create(session, title="Blocked")
        one_image = [TWO_STEPS[0], {**TWO_STEPS[1], "config": {}}]  # one image call, blocked
        return str(series.id), await add_job(session, series.id, one_image)

    series_id, job_id = seed(settings, work)
    gemini.block_next("IMAGE_SAFETY", where="finish", kind="image")

    ran = cli("jobs", "run", job_id, "--wait", env=gemini_env(gemini))
    assert ran.code == 1, ran
    run_id, status, images = run_line(ran)
    assert (status, images) == ("failed", 0)
    assert "refused the prompt for safety reasons (IMAGE_SAFETY)" in ran.said
    assert f"run {run_id[:8]} failed" in flat(ran.stderr)

    # The text step ran at the server and kept its output; the image step failed at once.
    assert [r.model for r in gemini.requests] == ["gemini-3.5-flash", "gemini-3-pro-image"]

    async def check(_runtime: Runtime, session: AsyncSession) -> None:
        (run,) = await job_runs(session, job_id)
        assert run["status"] == "failed"
        llm, image = run["steps"]
        assert llm["status"] == "succeeded" and llm["text"]
        assert image["status"] == "failed" and "IMAGE_SAFETY" in image["error"]
        assert image["attempts"] == 1  # a refusal is not retried
        page = await images_service.listing(session, uuid.UUID(series_id), limit=10)
        assert page.items == []

    seed(settings, check)


@contextlib.contextmanager
def sigint_delivered() -> Iterator[None]:
    """Children started here act on SIGINT even when this process ignores it (a shell starts
    background jobs so, and an ignored signal stays ignored across exec)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def test_ctrl_c_cancels_the_run_it_waits_for(cli: Cli, gemini: GeminiTestServer) -> None:
    settings = cli.settings()

    async def work(_runtime: Runtime, session: AsyncSession) -> str:
        series = await series_service.create(session, title="Slow")
        return await add_job(session, series.id, [{"kind": "image", "prompt": "{{ base_prompt }}"}])

    job_id = seed(settings, work)
    gemini.latency_s = 10.0  # the image call is in flight when Ctrl-C comes
    with sigint_delivered():
        proc = cli.start("jobs", "run", job_id, "--wait", env=gemini_env(gemini))
    try:
        deadline = time.monotonic() + 30
        while not gemini.requests:
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, (stdout, stderr)
    assert "Traceback" not in stderr, stderr
    assert re.search(rf"Cancelled run {UUID}; the steps that finished are kept\.", stderr)

    async def check(_runtime: Runtime, session: AsyncSession) -> None:
        # Stopped here and then: not handed back to the queue for some later `cog serve`.
        (run,) = await job_runs(session, job_id)
        assert run["status"] == "cancelled", run
        assert run["steps"][0]["status"] == "cancelled"

    seed(settings, check)


# --- cog jobs edit ------------------------------------------------------------------------------

EDITED: list[dict[str, Any]] = [
    {"kind": "image", "prompt": "A woodcut of {{ base_prompt }}", "config": {"count": 3}},
]
AS_JSON: list[dict[str, Any]] = [
    {"kind": "llm", "prompt": "Name {{ base_prompt }}."},
    {"kind": "image", "prompt": "{{ previous.text }}", "config": {"aspect_ratio": "16:9"}},
]
UNKNOWN_KEY: list[dict[str, Any]] = [
    {"kind": "image", "prompt": "{{ base_prompt }}", "config": {"colour": "red"}},
]


def test_edit_in_yaml_and_json_and_refused_edits_change_nothing(cli: Cli) -> None:
    settings = cli.settings()

    async def work(_runtime: Runtime, session: AsyncSession) -> list[str]:
        series = await series_service.create(session, title="Edits")
        steps = [{"kind": "llm", "prompt": "Line one\nLine two: {{ base_prompt }}"}, TWO_STEPS[1]]
        return [await add_job(session, series.id, steps) for _ in range(7)]

    yaml_job, json_job, refused_job, bad_yaml_job, same_job, failed_job, again_job = seed(
        settings, work
    )
    before = seed(settings, lambda _r, session: saved_steps(session, refused_job))
    tmp = cli.tmp_path
    # stdin is a pipe nobody writes to: a command that asked "Edit again?" would hang on it.
    # One command has a terminal instead, where a person answers "yes" and edits again.
    read_end, write_end = os.pipe()
    terminal, person = pty.openpty()
    os.write(terminal, b"y\n")
    try:
        in_yaml, in_json, refused, bad_yaml, same, failed, again = cli.each(
            Call(("jobs", "edit", yaml_job), editor(tmp, "yaml", EDITED), read_end),
            Call(
                ("jobs", "edit", json_job, "--format", "json"),
                editor(tmp, "json", AS_JSON),
                read_end,
            ),
            Call(("jobs", "edit", refused_job), editor(tmp, "refused", UNKNOWN_KEY), read_end),
            Call(("jobs", "edit", bad_yaml_job), editor(tmp, "bad", "steps: [oops"), read_end),
            Call(("jobs", "edit", same_job), editor(tmp, "same", None), read_end),
            Call(
                ("jobs", "edit", failed_job),
                {"EDITOR": f"{sys.executable} -c 'raise SystemExit(3)'"},
                read_end,
            ),
            Call(("jobs", "edit", again_job), editor(tmp, "again", UNKNOWN_KEY, EDITED), person),
            timeout=40,
        )
    finally:
        for fd in (read_end, write_end, terminal, person):
            os.close(fd)

    assert in_yaml.code == 0, in_yaml
    assert "Saved." in in_yaml.stdout and "A woodcut of {{ base_prompt }}" in in_yaml.stdout
    # The editor was given YAML: a comment naming the fields, prompts of several lines as
    # blocks, every key of the config.
    given = seen(tmp, "yaml", 0)
    assert given.startswith("# Steps of the job")
    assert "  prompt: |-\n    Line one\n    Line two: {{ base_prompt }}\n" in given
    assert "aspect_ratio: null" in given
    assert in_json.code == 0, in_json
    assert json.loads(seen(tmp, "json", 0, ".json"))["steps"][1]["config"]["count"] == 2

    assert refused.code == 1, refused
    assert "error: The steps were not saved: step 0: unknown key `config.colour`." in refused.said
    assert "Nothing was saved; the steps are as they were." in refused.said
    assert "Edit again?" not in refused.said
    assert bad_yaml.code == 1, bad_yaml
    assert "error: The file is not valid YAML" in bad_yaml.said
    assert same.code == 0 and "No changes." in same.stdout, same
    assert failed.code == 1, failed
    assert "exited with status 3; nothing was saved." in failed.said
    # At a terminal: refused, asked, edited again from the refused text, saved.
    assert again.code == 0, again
    assert "unknown key `config.colour`" in again.said and "Edit again?" in again.stderr
    assert "colour: red" in seen(tmp, "again", 1)
    assert "Saved." in again.stdout

    shown_yaml, shown_json = cli.many(
        ("jobs", "show", yaml_job, "--json"), ("jobs", "show", json_job, "--json")
    )
    assert shown_yaml.code == shown_json.code == 0, (shown_yaml, shown_json)
    assert [(s["kind"], s["prompt"], s["config"]["count"]) for s in shown_yaml.json()["steps"]] == [
        ("image", "A woodcut of {{ base_prompt }}", 3)
    ]
    assert [
        (s["kind"], s["prompt"], s["config"]["aspect_ratio"]) for s in shown_json.json()["steps"]
    ] == [("llm", "Name {{ base_prompt }}.", None), ("image", "{{ previous.text }}", "16:9")]

    async def check(_runtime: Runtime, session: AsyncSession) -> None:
        for job_id in (refused_job, bad_yaml_job, same_job, failed_job):
            assert await saved_steps(session, job_id) == before
        assert [s["prompt"] for s in await saved_steps(session, again_job)] == [
            "A woodcut of {{ base_prompt }}"
        ]

    seed(settings, check)


# --- rm, cancel, and ids that are wrong ---------------------------------------------------------


def test_rm_keeps_the_images_cancel_refuses_a_finished_run_and_bad_ids(cli: Cli) -> None:
    settings = make_settings(cli.tmp_path, provider="preview")

    async def work(runtime: Runtime, session: AsyncSession) -> tuple[str, str, str, dict[str, Any]]:
        series = await series_service.create(session, title="Keep")
        kept, removed = await add_job(session, series.id), await add_job(session, series.id)
        finished = await run_here(runtime, kept)
        await run_here(runtime, removed)
        return str(series.id), kept, removed, finished

    series_id, kept_job, removed_job, finished = seed(settings, work)
    files_before = stored_files(cli.storage_dir)
    assert len([k for k in files_before if k.startswith("images/")]) == 4
    opened = cli.tmp_path / "opened"
    never = {"EDITOR": f"{sys.executable} -c 'open({str(opened)!r}, \"w\")'"}

    cancel, rm, *unknown, bad_job, bad_run = cli.each(
        Call(("runs", "cancel", finished["id"]), {}),
        Call(("jobs", "rm", removed_job), {}),
        Call(("jobs", "edit", MISSING), never),
        Call(("jobs", "run", MISSING, "--wait"), {}),
        Call(("runs", "cancel", MISSING), {}),
        Call(("jobs", "create", MISSING, "--prompt", "x"), {}),
        Call(("jobs", "show", "nope"), {}),
        Call(("runs", "cancel", "[/x]"), {}),
    )
    assert cancel.code == 1, cancel
    assert (
        "error: The run has already ended (succeeded); there is nothing to cancel." in cancel.said
    )
    assert rm.code == 0, rm
    assert f"Deleted job {removed_job}; its images stay in the series." in rm.said

    for result, what in zip(unknown, ("job", "job", "run", "series"), strict=True):
        assert result.code == 1, result
        assert f"error: There is no {what} {MISSING}." in result.said, result
    assert not opened.exists()  # no editor for a job that is not there
    assert bad_job.code == 2 and "'nope' is not a job id." in bad_job.said, bad_job
    assert bad_run.code == 2 and "'[/x]' is not a run id." in bad_run.said, bad_run

    async def check(_runtime: Runtime, session: AsyncSession) -> None:
        page = await images_service.listing(session, uuid.UUID(series_id), limit=10)
        assert len(page.items) == 4  # two of each run; the deleted job's stay
        by_job: dict[str | None, int] = {}
        for image in page.items:
            key = str(image.job_id) if image.job_id else None
            by_job[key] = by_job.get(key, 0) + 1
            assert image.prompt and image.provider == "preview"
        assert by_job == {kept_job: 2, None: 2}
        assert [r["status"] for r in await job_runs(session, kept_job)] == ["succeeded"]
        jobs = await jobs_service.listing(session, uuid.UUID(series_id))
        assert [str(j.id) for j in jobs.items] == [kept_job]

    seed(settings, check)
    assert stored_files(cli.storage_dir).keys() >= {
        k for k in files_before if k.startswith("images/")
    }
