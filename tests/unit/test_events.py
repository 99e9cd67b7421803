"""Live run events: `diff` between two snapshots of a run, `follow` and `RunNotifier`."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any, Literal

import pytest

from cog.engine.events import Event, RunNotifier, diff, follow

RUN_ID = uuid.UUID("44444444-4444-4444-8444-444444444444")


def step(position: int, kind: str = "image", **fields: Any) -> dict[str, Any]:
    return {
        "position": position,
        "kind": kind,
        "status": "pending",
        "image_ids": [],
        "text": None,
        "error": None,
        "started_at": None,
        "finished_at": None,
        **fields,
    }


def run(status: str = "queued", *steps: dict[str, Any], **fields: Any) -> dict[str, Any]:
    return {
        "id": str(RUN_ID),
        "status": status,
        "error": None,
        "steps": list(steps) or [step(0, "llm"), step(1)],
        **fields,
    }


def names(events: list[Event]) -> list[str]:
    return [event.name for event in events]


T = "2026-01-01T00:00:00+00:00"


# --- diff ---------------------------------------------------------------------------------------


def test_nothing_changed_is_no_event() -> None:
    assert diff(run(), run()) == []
    running = run("running", step(0, "llm", status="running", started_at=T), step(1))
    assert diff(running, copy.deepcopy(running)) == []


def test_a_queued_run_seen_first_is_no_event() -> None:
    assert diff(None, run()) == []


def test_the_run_starts() -> None:
    events = diff(run(), run("running"))
    assert names(events) == ["run_started"]
    assert events[0].data == {"run_id": str(RUN_ID), "status": "running"}


def test_a_step_starts_then_finishes_with_its_text() -> None:
    before = run("running")
    started = run("running", step(0, "llm", status="running", started_at=T), step(1))
    events = diff(before, started)
    assert names(events) == ["step_started"]
    assert events[0].data == {"run_id": str(RUN_ID), "position": 0, "kind": "llm"}
    done = run(
        "running",
        step(0, "llm", status="succeeded", text="A fox.", started_at=T, finished_at=T),
        step(1),
    )
    events = diff(started, done)
    assert names(events) == ["step_finished"]
    assert events[0].data["position"] == 0 and events[0].data["run_id"] == str(RUN_ID)
    assert events[0].data["text"] == "A fox." and events[0].data["status"] == "succeeded"


def test_images_are_announced_one_by_one_and_once() -> None:
    running = run("running", step(0, status="running", started_at=T))
    one = run("running", step(0, status="running", started_at=T, image_ids=["a"]))
    two = run("running", step(0, status="running", started_at=T, image_ids=["a", "b"]))
    assert [(e.name, e.data["image_id"]) for e in diff(running, one)] == [("image_stored", "a")]
    assert [(e.name, e.data["image_id"]) for e in diff(one, two)] == [("image_stored", "b")]
    assert [e.data["image_id"] for e in diff(running, two)] == ["a", "b"]
    assert diff(two, two) == []


def test_a_whole_run_seen_at_once_tells_the_whole_story_in_order() -> None:
    """A listener that reads a queued run and then a finished one (everything happened
    between two reads) still hears every step start, every image and every ending."""
    done = run(
        "succeeded",
        step(0, "llm", status="succeeded", text="t", started_at=T, finished_at=T),
        step(1, status="succeeded", image_ids=["a", "b"], started_at=T, finished_at=T),
    )
    events = diff(run(), done)
    assert names(events) == [
        "run_started",
        "step_started",
        "step_finished",
        "step_started",
        "image_stored",
        "image_stored",
        "step_finished",
        "run_finished",
    ]
    assert [e.data.get("position") for e in events[1:7]] == [0, 0, 1, 1, 1, 1]
    assert events[-1].data == done
    assert names(diff(None, done)) == names(events)


def test_a_step_that_started_and_failed_between_reads_is_announced_as_started() -> None:
    before = run("running")
    after = run(
        "failed",
        step(0, "llm", status="failed", error="blocked", started_at=T, finished_at=T),
        step(1, status="skipped"),
        error="Step 0 failed: blocked",
    )
    events = diff(before, after)
    assert names(events) == [
        "step_started",
        "step_finished",
        "step_finished",
        "run_finished",
    ]
    assert events[1].data["error"] == "blocked"
    assert events[2].data["position"] == 1 and events[2].data["status"] == "skipped"
    assert events[-1].data["error"] == "Step 0 failed: blocked"


def test_a_cancel_ends_the_step_in_flight_and_those_after_it() -> None:
    before = run(
        "running",
        step(0, status="succeeded", image_ids=["a"], started_at=T, finished_at=T),
        step(1, status="running", started_at=T),
        step(2),
    )
    after = run(
        "cancelled",
        step(0, status="succeeded", image_ids=["a"], started_at=T, finished_at=T),
        step(1, status="cancelled", started_at=T),
        step(2, status="cancelled"),
    )
    events = diff(before, after)
    assert [(e.name, e.data.get("position")) for e in events] == [
        ("step_finished", 1),
        ("step_finished", 2),
        ("run_finished", None),
    ]
    assert events[-1].data["status"] == "cancelled"


def test_a_step_given_up_before_it_started_never_started() -> None:
    before = run("running", step(0, status="running", started_at=T), step(1))
    after = run(
        "failed",
        step(0, status="failed", started_at=T, error="stopped"),
        step(1, status="failed", error="stopped"),
    )
    events = diff(before, after)
    assert [(e.name, e.data.get("position")) for e in events] == [
        ("step_finished", 0),
        ("step_finished", 1),
        ("run_finished", None),
    ]


def test_a_run_handed_back_and_resumed_starts_again() -> None:
    """A process stopped: the run goes back to the queue (its step to pending) and an executor
    resumes it; the listener hears it start again, and only the new images."""
    running = run(
        "running",
        step(0, status="succeeded", image_ids=["a"], started_at=T),
        step(1, status="running", started_at=T, image_ids=["b"]),
    )
    handed_back = run(
        "queued",
        step(0, status="succeeded", image_ids=["a"], started_at=T),
        step(1, status="pending", started_at=T, image_ids=["b"]),
    )
    assert diff(running, handed_back) == []
    resumed = run(
        "running",
        step(0, status="succeeded", image_ids=["a"], started_at=T),
        step(1, status="running", started_at=T, image_ids=["b", "c"]),
    )
    events = diff(handed_back, resumed)
    assert [(e.name, e.data.get("position"), e.data.get("image_id")) for e in events] == [
        ("run_started", None, None),
        ("step_started", 1, None),
        ("image_stored", 1, "c"),
    ]


def test_run_finished_is_said_once() -> None:
    done = run("succeeded", step(0, status="succeeded", started_at=T))
    assert names(diff(run("running", step(0, status="running")), done))[-1] == "run_finished"
    assert diff(done, copy.deepcopy(done)) == []


# --- follow -------------------------------------------------------------------------------------


class Script:
    """A reader answering scripted snapshots in turn (the last one again when it runs out)."""

    def __init__(self, *snapshots: dict[str, Any] | None) -> None:
        self.snapshots = list(snapshots)
        self.reads = 0

    async def __call__(self) -> dict[str, Any] | None:
        self.reads += 1
        if len(self.snapshots) > 1:
            return self.snapshots.pop(0)
        return self.snapshots[0]


class _AlwaysSet(asyncio.Event):
    """An event that is always set, and counts the waits on it."""

    def __init__(self, waits: list[tuple[uuid.UUID, float]], run_id: uuid.UUID) -> None:
        super().__init__()
        self._waits = waits
        self._run_id = run_id
        self.set()

    def clear(self) -> None:
        pass  # stays set: the next wait returns at once

    async def wait(self) -> Literal[True]:
        self._waits.append((self._run_id, 0.0))
        await asyncio.sleep(0)
        return True


class InstantNotifier(RunNotifier):
    """Never waits: every read follows the last at once."""

    def __init__(self) -> None:
        super().__init__()
        self.waits: list[tuple[uuid.UUID, float]] = []

    @contextlib.contextmanager
    def subscribe(self, run_id: uuid.UUID) -> Iterator[asyncio.Event]:
        yield _AlwaysSet(self.waits, run_id)


async def collect(events: AsyncIterator[Event], limit: int = 100) -> list[Event]:
    out: list[Event] = []
    async for event in events:
        out.append(event)
        assert len(out) <= limit, "the stream never closed"
    return out


async def test_follow_starts_with_a_snapshot_and_ends_with_the_run() -> None:
    queued = run()
    running = run("running", step(0, "llm", status="running", started_at=T), step(1))
    llm_done = run(
        "running",
        step(0, "llm", status="succeeded", text="t", started_at=T),
        step(1, status="running", started_at=T),
    )
    one_image = run(
        "running",
        step(0, "llm", status="succeeded", text="t", started_at=T),
        step(1, status="running", started_at=T, image_ids=["a"]),
    )
    done = run(
        "succeeded",
        step(0, "llm", status="succeeded", text="t", started_at=T),
        step(1, status="succeeded", started_at=T, image_ids=["a"]),
    )
    reader = Script(queued, queued, running, llm_done, one_image, one_image, done)
    notifier = InstantNotifier()
    events = await collect(follow(RUN_ID, reader, notifier, poll_s=0.25))
    assert [(e.name, e.data.get("position")) for e in events] == [
        ("snapshot", None),
        ("run_started", None),
        ("step_started", 0),
        ("step_finished", 0),
        ("step_started", 1),
        ("image_stored", 1),
        ("step_finished", 1),
        ("run_finished", None),
    ]
    assert events[0].data == queued and events[-1].data == done
    assert reader.reads == 7
    assert notifier.waits == [(RUN_ID, 0.0)] * 6


async def test_follow_of_a_finished_run_is_its_final_state() -> None:
    done = run("failed", step(0, status="failed", error="no"), error="Step 0 failed: no")
    notifier = InstantNotifier()
    events = await collect(follow(RUN_ID, Script(done), notifier))
    assert [(e.name, e.data) for e in events] == [("snapshot", done), ("run_finished", done)]
    assert notifier.waits == []


async def test_follow_of_a_run_that_does_not_exist_says_nothing() -> None:
    assert await collect(follow(RUN_ID, Script(None), InstantNotifier())) == []


async def test_follow_ends_when_the_run_is_deleted_under_it() -> None:
    running = run("running")
    events = await collect(follow(RUN_ID, Script(running, None), InstantNotifier()))
    assert names(events) == ["snapshot", "run_finished"]
    assert events[-1].data["status"] == "cancelled" and events[-1].data["error"] == "deleted"


async def test_follow_wakes_on_a_notify_without_waiting_for_the_poll() -> None:
    """With a real notifier and a poll of a minute, only a notify can move the stream on."""
    notifier = RunNotifier()
    state = {"now": run("running")}

    async def read() -> dict[str, Any]:
        return copy.deepcopy(state["now"])

    stream = follow(RUN_ID, read, notifier, poll_s=60)
    first = await anext(stream)
    assert first.name == "snapshot"

    async def advance(snapshot: dict[str, Any]) -> Event:
        state["now"] = snapshot
        nxt = asyncio.ensure_future(anext(stream))
        async with asyncio.timeout(2):
            while not nxt.done():  # the reader may not be waiting yet: notify until it wakes
                notifier.notify(RUN_ID)
                await asyncio.sleep(0.01)
        return nxt.result()

    started = await advance(run("running", step(0, "llm", status="running", started_at=T), step(1)))
    assert (started.name, started.data["position"]) == ("step_started", 0)
    finished = await advance(
        run(
            "succeeded",
            step(0, "llm", status="succeeded", started_at=T),
            step(1, status="succeeded", started_at=T),
        )
    )
    assert finished.name == "step_finished"
    rest = await collect(stream)
    assert names(rest) == ["step_started", "step_finished", "run_finished"]


async def test_follow_reads_again_after_the_poll_without_a_notify() -> None:
    """Across processes nobody notifies: the wait times out and the stream reads again."""
    notifier = RunNotifier()
    done = run(
        "succeeded",
        step(0, "llm", status="succeeded", started_at=T),
        step(1, status="succeeded", started_at=T),
    )
    reader = Script(run("running"), done)
    async with asyncio.timeout(2):
        events = await collect(follow(RUN_ID, reader, notifier, poll_s=0.05))
    assert names(events) == [
        "snapshot",
        "step_started",
        "step_finished",
        "step_started",
        "step_finished",
        "run_finished",
    ]


# --- RunNotifier --------------------------------------------------------------------------------


async def test_notify_wakes_every_waiter_of_that_run_only() -> None:
    notifier = RunNotifier()
    other = uuid.uuid4()
    loop = asyncio.get_running_loop()
    waiters = [asyncio.create_task(notifier.wait(RUN_ID, 30)) for _ in range(3)]
    elsewhere = asyncio.create_task(notifier.wait(other, 30))
    await asyncio.sleep(0.01)
    began = loop.time()
    notifier.notify(RUN_ID)
    async with asyncio.timeout(2):
        await asyncio.gather(*waiters)
    assert loop.time() - began < 1
    assert not elsewhere.done()
    notifier.notify(other)
    async with asyncio.timeout(2):
        await elsewhere


async def test_wait_times_out_quietly() -> None:
    notifier = RunNotifier()
    loop = asyncio.get_running_loop()
    began = loop.time()
    await notifier.wait(RUN_ID, 0.05)
    assert 0.04 <= loop.time() - began < 1


async def test_a_notify_with_nobody_waiting_is_harmless_and_not_kept() -> None:
    notifier = RunNotifier()
    notifier.notify(RUN_ID)
    loop = asyncio.get_running_loop()
    began = loop.time()
    await notifier.wait(RUN_ID, 0.05)  # an earlier notify does not end a later wait
    assert loop.time() - began >= 0.04


async def test_a_cancelled_wait_leaves_nothing_behind() -> None:
    notifier = RunNotifier()
    waiter = asyncio.create_task(notifier.wait(RUN_ID, 30))
    await asyncio.sleep(0.01)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    notifier.notify(RUN_ID)  # nobody is waiting any more
    async with asyncio.timeout(1):
        waiter = asyncio.create_task(notifier.wait(RUN_ID, 30))
        await asyncio.sleep(0.01)
        notifier.notify(RUN_ID)
        await waiter


async def test_a_notify_between_a_read_and_the_wait_is_not_lost() -> None:
    """A change that lands while the listener is reading wakes its next wait at once."""
    notifier = RunNotifier()
    running = run("running", step(0, "llm", status="running", started_at=T))
    done = run("succeeded", step(0, "llm", status="succeeded", text="t", started_at=T))
    states = [running, running, done]

    async def read() -> dict[str, Any] | None:
        state = states.pop(0) if len(states) > 1 else states[0]
        notifier.notify(RUN_ID)  # the run changes right after this read
        return state

    loop = asyncio.get_running_loop()
    started = loop.time()
    events = await collect(follow(RUN_ID, read, notifier, poll_s=30))
    assert names(events)[-1] == "run_finished"
    assert loop.time() - started < 5  # woken by the notifies, not by the 30 s poll
