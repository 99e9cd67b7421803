"""An image step that reads nothing of the steps before it starts as soon as the image step
before it has its images back: its calls go out while those images are checked, stored and
committed. Its own writes wait for that step to end, and when that step fails, its calls are
stopped and nothing of it is kept. A step that reads the one before it waits for it to end.

The run's store here holds every write at a gate, so what goes out while the step before is
still keeping its images is seen at the fake Gemini server."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from cog.config import Settings
from cog.db import runs as runs_db
from cog.db.models import Image, JobRun
from cog.domain import RunStatus, StepStatus
from cog.engine.runner import Runner
from cog.errors import StoreError
from cog.runtime import Runtime
from cog.storage import ObjectStore
from tests.conftest import stored_keys
from tests.integration.test_takeover import claimed_run, job_of_one_image_step


class GatedStore:
    """The run's store, whose writes wait at a gate; once it opens they go through, or fail
    (`fail`) as a full disk would."""

    def __init__(self, store: ObjectStore) -> None:
        self._store = store
        self.gate = asyncio.Event()
        self.fail = False

    async def put(self, key: str, data: Any) -> None:
        await self.gate.wait()
        if self.fail:
            raise StoreError("The image store refused the write: the disk is full.")
        await self._store.put(key, data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


async def prompts_seen(gemini: Any, ending: str, count: int) -> None:
    """Wait until the fake server has received `count` calls whose prompt ends so."""
    for _ in range(500):
        if sum(r.prompt.endswith(ending) for r in gemini.requests) >= count:
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"the server saw {[r.prompt for r in gemini.requests]}")


INDEPENDENT = ("{{ base_prompt }} first", "{{ base_prompt }} second")


@contextlib.asynccontextmanager
async def running(
    settings: Settings, prompts: tuple[str, ...]
) -> AsyncIterator[tuple[Runtime, uuid.UUID, GatedStore, asyncio.Task[Any]]]:
    """A run of image steps of 2 images, one per prompt, under way on a gated store."""
    job_id = await job_of_one_image_step(settings, count=2, prompts=prompts)
    cog = Runtime.build(settings)
    try:
        run_id = await claimed_run(cog, job_id, "here")
        store = GatedStore(cog.store)
        deps = dataclasses.replace(cog.runner_deps(), store=store)  # type: ignore[arg-type]
        task = asyncio.create_task(Runner(deps, run_id, claim="here").execute())
        yield cog, run_id, store, task
    finally:
        await cog.stop()


async def steps_of(cog: Runtime, run_id: uuid.UUID) -> list[Any]:
    async with cog.sessions() as session:
        return list(await runs_db.step_runs(session, run_id))


async def images_by_step(cog: Runtime) -> dict[uuid.UUID | None, list[str]]:
    async with cog.sessions() as session:
        rows = (await session.execute(sa.select(Image.step_id, Image.prompt))).all()
    found: dict[uuid.UUID | None, list[str]] = {}
    for step_id, prompt in rows:
        found.setdefault(step_id, []).append(prompt)
    return found


async def test_the_next_step_sends_its_calls_while_the_step_before_keeps_its_images(
    gemini_settings: Settings, gemini: Any, tmp_path: Path
) -> None:
    async with running(gemini_settings, INDEPENDENT) as (cog, run_id, store, run):
        await prompts_seen(gemini, "second", 2)  # while no image of the first step is stored
        first, second = await steps_of(cog, run_id)
        assert (first.status, first.image_ids) == (StepStatus.running, [])
        assert second.status == StepStatus.pending  # marked running once the first has ended
        assert await images_by_step(cog) == {}

        store.gate.set()
        assert await asyncio.wait_for(run, timeout=30) is RunStatus.succeeded
        first, second = await steps_of(cog, run_id)
        assert [first.status, second.status] == [StepStatus.succeeded, StepStatus.succeeded]
        assert first.finished_at is not None and second.finished_at is not None
        assert first.finished_at <= second.finished_at
        made = await images_by_step(cog)
        assert made == {
            first.id: [first.rendered_prompt] * 2,
            second.id: [second.rendered_prompt] * 2,
        }
        assert second.rendered_prompt.endswith("second")
        files = [k for k in stored_keys(tmp_path / "storage") if k.startswith("images/")]
        assert sorted(f.split("/")[-1].split(".")[0] for f in files) == sorted(
            first.image_ids + second.image_ids
        )


async def test_a_step_that_reads_the_step_before_waits_for_it_to_end(
    gemini_settings: Settings, gemini: Any
) -> None:
    prompts = ("{{ base_prompt }} first", "{{ base_prompt }}, as in {{ previous }}, second")
    async with running(gemini_settings, prompts) as (cog, run_id, store, run):
        await prompts_seen(gemini, "first", 2)
        await asyncio.sleep(0.3)  # time enough for a call to go out, were one to
        assert not [r for r in gemini.requests if r.prompt.endswith("second")]

        store.gate.set()
        assert await asyncio.wait_for(run, timeout=30) is RunStatus.succeeded
        first, second = await steps_of(cog, run_id)
        assert first.text and first.text in second.rendered_prompt
        assert sum(r.prompt.endswith("second") for r in gemini.requests) == 2


async def test_when_the_step_before_fails_to_keep_its_images_the_next_keeps_nothing(
    gemini_settings: Settings, gemini: Any, tmp_path: Path
) -> None:
    """The run fails with the first step's error; the second step's calls, already out, are
    stopped rather than waited for, and it never counts as started."""
    async with running(gemini_settings, INDEPENDENT) as (cog, run_id, store, run):
        await prompts_seen(gemini, "first", 2)
        gemini.latency_s = 60.0  # the second step's calls take long: they must be stopped
        await prompts_seen(gemini, "second", 2)
        store.fail = True
        store.gate.set()
        assert await asyncio.wait_for(run, timeout=30) is RunStatus.failed

        async with cog.sessions() as session:
            failed = await session.get(JobRun, run_id)
            assert failed is not None
        assert failed.status == RunStatus.failed
        assert failed.error is not None and failed.error.startswith("Step 0 failed:")
        assert "disk is full" in failed.error
        first, second = await steps_of(cog, run_id)
        assert first.status == StepStatus.failed
        assert (second.status, second.rendered_prompt, second.image_ids) == (
            StepStatus.skipped,
            None,
            [],
        )
        assert await images_by_step(cog) == {}
        assert [k for k in stored_keys(tmp_path / "storage") if k.startswith("images/")] == []
