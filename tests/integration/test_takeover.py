"""A run taken from the executor running it: its heartbeat lapsed (a stalled process, a
database that would not take a write for a while), stale-run recovery put it back in the queue
and another executor claimed it. The first one may still be working; whatever it finishes after
that is dropped, so the run's record is the one executor's that holds it: no image made twice,
no attempt lost from the log, no step written over."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime as dt
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, cast

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from cog.config import Settings
from cog.db import runs as runs_db
from cog.db.base import utcnow
from cog.db.models import Image, JobRun
from cog.domain import RunStatus, StepStatus
from cog.engine.recovery import recover_stale_runs
from cog.engine.runner import Runner, mark_cancelled, taken_over
from cog.runtime import Runtime
from cog.services import runs as runs_service
from cog.web.app import create_app
from tests.api import make_job, put_steps
from tests.conftest import open_client, stored_keys
from tests.factories import make_series


async def job_of_one_image_step(
    settings: Settings, count: int, prompts: tuple[str, ...] = ("{{ base_prompt }}",)
) -> uuid.UUID:
    """A job of image steps of `count` images, one per prompt (one step unless told)."""
    async for client in open_client(create_app(settings)):
        series = await make_series(client, "Taken over")
        job = await make_job(client, series["id"])
        steps = [{"kind": "image", "prompt": p, "config": {"count": count}} for p in prompts]
        assert (await put_steps(client, job["id"], steps)).status_code == 200
        return uuid.UUID(job["id"])
    raise AssertionError("the app did not start")


async def claimed_run(cog: Runtime, job_id: uuid.UUID, holder: str) -> uuid.UUID:
    async with cog.sessions() as session:
        run = await runs_service.start(session, job_id)
        run_id = run.id
        assert await runs_db.claim(session, run_id, holder, batch_limit=2)
    return run_id


async def take_over(cog: Runtime, run_id: uuid.UUID, old: str, new: str) -> None:
    """What recovery in another process and that process's next claim do."""
    async with cog.sessions() as session:
        assert await runs_db.release(session, run_id, old)
        assert await runs_db.claim(session, run_id, new, batch_limit=2)


async def run_taken_over_when(
    cog: Runtime, run_id: uuid.UUID, when: Callable[[], Awaitable[bool]]
) -> None:
    """Execute the run held by "old"; the first session its runner opens once `when()` holds
    is opened after "new" took the run over. The runner stops for that, and the run stays
    with "new"."""
    sessions = cog.sessions
    taken = False

    @contextlib.asynccontextmanager
    async def sessions_taking_over() -> AsyncIterator[AsyncSession]:
        nonlocal taken
        if not taken and await when():
            taken = True
            await take_over(cog, run_id, "old", "new")
        async with sessions() as session:
            yield session

    deps = dataclasses.replace(cog.runner_deps(), sessions=cast(Any, sessions_taking_over))
    with pytest.raises(BaseException) as raised:
        await asyncio.wait_for(Runner(deps, run_id, claim="old").execute(), timeout=30)
    assert taken, "the run was not taken over"
    assert taken_over(raised.value), raised.value
    async with cog.sessions() as session:
        run = await session.get(JobRun, run_id)
        assert run is not None
        assert (run.status, run.claimed_by) == (RunStatus.running, "new")


async def step_status(cog: Runtime, run_id: uuid.UUID) -> str:
    async with cog.sessions() as session:
        (step,) = await runs_db.step_runs(session, run_id)
        return str(step.status)


async def image_ids(cog: Runtime) -> list[uuid.UUID]:
    async with cog.sessions() as session:
        return list((await session.scalars(sa.select(Image.id))).all())


async def test_images_finished_after_a_takeover_are_dropped_and_made_by_the_new_holder(
    gemini_settings: Settings, gemini: Any, tmp_path: Path
) -> None:
    job_id = await job_of_one_image_step(gemini_settings, count=2)
    cog = Runtime.build(gemini_settings)
    try:
        deps = cog.runner_deps()
        run_id = await claimed_run(cog, job_id, "old")
        gemini.latency_s = 1.0
        first = asyncio.create_task(Runner(deps, run_id, claim="old").execute())
        while await step_status(cog, run_id) != StepStatus.running:
            assert not first.done(), first.result()
            await asyncio.sleep(0.02)
        await take_over(cog, run_id, "old", "new")

        with pytest.raises(BaseException) as raised:
            await first  # its two images arrive after the takeover
        assert taken_over(raised.value), raised.value
        assert await image_ids(cog) == []
        assert stored_keys(tmp_path / "storage") == []
        async with cog.sessions() as session:
            run = await session.get(JobRun, run_id)
            assert run is not None
            assert (run.status, run.claimed_by) == (RunStatus.running, "new")
            (step,) = await runs_db.step_runs(session, run_id)
            assert step.status == StepStatus.pending
            assert (step.image_ids, step.attempt_log) == ([], [])

        gemini.latency_s = 0.0
        assert await Runner(deps, run_id, claim="new").execute() is RunStatus.succeeded
        async with cog.sessions() as session:
            run = await session.get(JobRun, run_id)
            assert run is not None
            assert (run.status, run.claimed_by) == (RunStatus.succeeded, None)
            (step,) = await runs_db.step_runs(session, run_id)
        made = await image_ids(cog)
        assert sorted(step.image_ids) == sorted(str(i) for i in made)
        assert len(made) == 2
        assert [a["error"] for a in step.attempt_log] == [None, None]
        files = [k for k in stored_keys(tmp_path / "storage") if k.startswith("images/")]
        assert sorted(f.split("/")[-1].split(".")[0] for f in files) == sorted(step.image_ids)
    finally:
        await cog.stop()


async def test_a_runner_that_lost_its_run_does_not_end_it(
    gemini_settings: Settings, gemini: Any
) -> None:
    job_id = await job_of_one_image_step(gemini_settings, count=1)
    cog = Runtime.build(gemini_settings)
    try:
        run_id = await claimed_run(cog, job_id, "old")
        await take_over(cog, run_id, "old", "new")
        with pytest.raises(BaseException) as raised:
            await Runner(cog.runner_deps(), run_id, claim="old").execute()
        assert taken_over(raised.value), raised.value
        async with cog.sessions() as session:
            run = await session.get(JobRun, run_id)
            assert run is not None
            assert (run.status, run.claimed_by, run.error) == (RunStatus.running, "new", None)
            assert await step_status(cog, run_id) == StepStatus.pending
        assert gemini.requests == []  # it stopped at its first write, before any call
    finally:
        await cog.stop()


async def test_a_step_whose_run_was_taken_over_as_it_began_stops_its_calls_and_keeps_nothing(
    gemini_settings: Settings, gemini: Any, tmp_path: Path
) -> None:
    """A step that follows one just written sends its calls while it is being marked running.
    The run taken over in between, that write finds it so: the calls are stopped, not waited
    for, and nothing of the step is kept; the step before it stays as it was committed. (The
    second step reads the first, so it starts once the first has ended, and marks itself.)"""
    prompts = ("{{ base_prompt }} first", "{{ base_prompt }} second{{ steps[0].text[:0] }}")
    job_id = await job_of_one_image_step(gemini_settings, count=2, prompts=prompts)
    cog = Runtime.build(gemini_settings)
    try:
        run_id = await claimed_run(cog, job_id, "old")

        async def first_step_written() -> bool:
            async with cog.sessions() as session:
                first = (await runs_db.step_runs(session, run_id))[0]
            if first.status != StepStatus.succeeded:
                return False
            # The second step's calls take long; the runner must not wait for them.
            gemini.latency_s = 60.0
            return True

        await run_taken_over_when(cog, run_id, first_step_written)

        async with cog.sessions() as session:
            first, second = await runs_db.step_runs(session, run_id)
            made = await session.scalars(sa.select(Image).order_by(Image.created_at))
            kept = [(image.step_id, image.prompt) for image in made]
        assert first.status == StepStatus.succeeded and len(first.image_ids) == 2
        assert (second.status, second.image_ids, second.rendered_prompt) == (
            StepStatus.pending,
            [],
            None,
        )
        assert kept == [(first.id, first.rendered_prompt)] * 2
        files = [k for k in stored_keys(tmp_path / "storage") if k.startswith("images/")]
        assert sorted(f.split("/")[-1].split(".")[0] for f in files) == sorted(first.image_ids)
    finally:
        await cog.stop()


async def test_a_run_taken_over_while_a_step_keeps_its_images_drops_the_next_steps_start(
    gemini_settings: Settings, gemini: Any, tmp_path: Path
) -> None:
    """The step after one whose calls are back starts at once, and hands the write marking it
    running to that one's closing transaction. The run taken over before that transaction,
    neither step's writes are kept: no image, and the second step never shows as started."""
    prompts = ("{{ base_prompt }} first", "{{ base_prompt }} second")
    job_id = await job_of_one_image_step(gemini_settings, count=2, prompts=prompts)
    cog = Runtime.build(gemini_settings)
    try:
        run_id = await claimed_run(cog, job_id, "old")

        async def first_calls_back() -> bool:
            """Once the first step's calls came back, the next session is the one its images
            are committed in."""
            return len([r for r in gemini.requests if r.prompt.endswith(" first")]) == 2

        await run_taken_over_when(cog, run_id, first_calls_back)

        async with cog.sessions() as session:
            first, second = await runs_db.step_runs(session, run_id)
            kept = list(await session.scalars(sa.select(Image.id)))
        assert first.rendered_prompt == "a fox in a misty forest at dawn first"
        assert (first.status, first.image_ids) == (StepStatus.pending, [])
        assert (second.status, second.started_at, second.rendered_prompt) == (
            StepStatus.pending,
            None,
            None,
        )
        assert kept == []
        assert [k for k in stored_keys(tmp_path / "storage") if k.startswith("images/")] == []
    finally:
        await cog.stop()


async def test_a_run_ends_with_its_last_step_and_a_late_cancel_leaves_it_so(
    gemini_settings: Settings,
) -> None:
    """The run may end in its last step's closing transaction, before its runner returns. A
    cancel landing after that write (the executor records one when its task is cancelled)
    leaves the run as it ended."""
    prompts = ("{{ base_prompt }} first", "{{ base_prompt }} second")
    job_id = await job_of_one_image_step(gemini_settings, count=2, prompts=prompts)
    cog = Runtime.build(gemini_settings)
    try:
        run_id = await claimed_run(cog, job_id, "here")
        deps = cog.runner_deps()
        assert await Runner(deps, run_id, claim="here").execute() is RunStatus.succeeded
        await mark_cancelled(deps, run_id)

        async with cog.sessions() as session:
            run = await session.get(JobRun, run_id)
            assert run is not None
            first, second = await runs_db.step_runs(session, run_id)
        assert (run.status, run.error, run.claimed_by) == (RunStatus.succeeded, None, None)
        assert [first.status, second.status] == [StepStatus.succeeded] * 2
        assert run.finished_at is not None and second.finished_at is not None
        assert run.finished_at >= second.finished_at
        assert len(second.image_ids) == 2
    finally:
        await cog.stop()


async def test_recovery_leaves_the_runs_its_own_process_is_running(
    gemini_settings: Settings,
) -> None:
    job_id = await job_of_one_image_step(gemini_settings, count=1)
    cog = Runtime.build(gemini_settings)
    try:
        mine = await claimed_run(cog, job_id, "here")
        gone = await claimed_run(cog, job_id, "gone")
        async with cog.sessions() as session:
            late = utcnow() - dt.timedelta(seconds=60)
            await session.execute(sa.update(JobRun).values(heartbeat_at=late))
            await session.commit()
        requeued, failed = await recover_stale_runs(
            cog.sessions, stale_after_s=2.0, max_attempts=3, alive={mine}
        )
        assert (requeued, failed) == ([str(gone)], [])
        async with cog.sessions() as session:
            kept = await session.get(JobRun, mine)
            assert kept is not None
            assert (kept.status, kept.claimed_by) == (RunStatus.running, "here")
    finally:
        await cog.stop()
