"""Live run progress.

Events are derived from the run's rows, not kept beside them: a listener reads the run, waits
for a change, reads it again and reports the difference. So a listener sees the same story
whichever process runs the run; inside one process `RunNotifier` wakes it at once, across
processes the wait times out and it reads again.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

from cog.domain import RunStatus, StepStatus


class RunNotifier:
    """In-process wake-ups, keyed by run id."""

    def __init__(self) -> None:
        self._events: defaultdict[uuid.UUID, set[asyncio.Event]] = defaultdict(set)

    def notify(self, run_id: uuid.UUID) -> None:
        for event in self._events.get(run_id, ()):
            event.set()

    @contextlib.contextmanager
    def subscribe(self, run_id: uuid.UUID) -> Iterator[asyncio.Event]:
        """An event set by every notify of the run while subscribed. Clear it, read, then
        wait on it: a notify that lands between the read and the wait is not lost."""
        event = asyncio.Event()
        self._events[run_id].add(event)
        try:
            yield event
        finally:
            self._events[run_id].discard(event)
            if not self._events[run_id]:
                del self._events[run_id]

    async def wait(self, run_id: uuid.UUID, seconds: float) -> None:
        """Wait for the next notify of the run, or `seconds`."""
        with self.subscribe(run_id) as event:
            await wait_for(event, seconds)


async def wait_for(event: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await event.wait()


@dataclass(frozen=True)
class Event:
    name: str
    data: dict[str, Any]


Snapshot = dict[str, Any]


def diff(before: Snapshot | None, after: Snapshot) -> list[Event]:
    """The events that lead from one snapshot of a run (as the API shows it) to the next."""
    events: list[Event] = []
    run_id = after["id"]
    if (before is None or before["status"] == RunStatus.queued) and after[
        "status"
    ] != RunStatus.queued:
        events.append(Event("run_started", {"run_id": run_id, "status": after["status"]}))
    old_steps = {s["position"]: s for s in (before or {"steps": []})["steps"]}
    for step in after["steps"]:
        old = old_steps.get(step["position"], {"status": StepStatus.pending, "image_ids": []})
        base = {"run_id": run_id, "position": step["position"]}
        # A step that started and ended between two reads is still announced as started, so
        # every `step_finished` of a step that ran follows its `step_started`.
        began = step["status"] == StepStatus.running or (
            old["status"] == StepStatus.pending and step.get("started_at") is not None
        )
        if old["status"] != step["status"] and began:
            events.append(Event("step_started", {**base, "kind": step["kind"]}))
        for image_id in step["image_ids"]:
            if image_id not in old["image_ids"]:
                events.append(Event("image_stored", {**base, "image_id": image_id}))
        # A turn of a loop that ended (an llm step's turns store no image to say so).
        was = {it["index"]: it["status"] for it in old.get("iterations") or []}
        for iteration in step.get("iterations") or []:
            ended = iteration["status"] not in (StepStatus.pending, StepStatus.running)
            if ended and was.get(iteration["index"]) != iteration["status"]:
                events.append(Event("iteration_finished", {**base, **iteration}))
        if old["status"] != step["status"] and step["status"] not in (
            StepStatus.pending,
            StepStatus.running,
        ):
            events.append(Event("step_finished", {**base, **step}))
    if RunStatus(after["status"]).is_final and (
        before is None or not RunStatus(before["status"]).is_final
    ):
        events.append(Event("run_finished", after))
    return events


async def follow(
    run_id: uuid.UUID,
    read: Callable[[], Awaitable[Snapshot | None]],
    notifier: RunNotifier,
    *,
    poll_s: float = 1.0,
) -> AsyncIterator[Event]:
    """Events of one run until it ends. The first event is `snapshot` (the whole run as it is
    now), so a listener that joins late, or reconnects, starts from the truth."""
    with notifier.subscribe(run_id) as changed:
        current = await read()
        if current is None:
            return
        yield Event("snapshot", current)
        if RunStatus(current["status"]).is_final:
            yield Event("run_finished", current)
            return
        while True:
            await wait_for(changed, poll_s)
            changed.clear()
            latest = await read()
            if latest is None:  # the job was deleted under the run
                yield Event("run_finished", {**current, "status": "cancelled", "error": "deleted"})
                return
            for event in diff(current, latest):
                yield event
            current = latest
            if RunStatus(current["status"]).is_final:
                return
