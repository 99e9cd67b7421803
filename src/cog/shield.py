"""Work that must run to its end even when the task awaiting it is cancelled.

`anyio.CancelScope(shield=True)` shields from anyio's cancel scopes only: a `Task.cancel()`
(asyncio's TaskGroup, `wait_for`, `Task.cancel` by hand, as the run executor uses) still cuts
the shielded work short, and a second one does so even while the first is being cleaned up
after. Cleanup such as deleting a file whose row was not committed goes through `to_the_end`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


async def to_the_end(work: Awaitable[T]) -> T:
    """Await `work` in a task of its own to its end, however often this task is cancelled
    meanwhile; a cancellation that came is raised once the work has ended (its result, or its
    error, is then dropped: the cancellation wins)."""
    task = asyncio.ensure_future(work)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        while not task.done():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait([task])
        if not task.cancelled():
            task.exception()  # seen: the cancellation is what goes on
        raise
