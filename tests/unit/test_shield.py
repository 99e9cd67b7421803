"""`to_the_end`: cleanup that a cancelled task still sees to its end."""

from __future__ import annotations

import asyncio

import pytest

from cog.shield import to_the_end


async def test_it_answers_what_the_work_answers_and_raises_what_it_raises() -> None:
    async def answer() -> int:
        await asyncio.sleep(0)
        return 42

    async def fail() -> None:
        await asyncio.sleep(0)
        raise ValueError("no")

    assert await to_the_end(answer()) == 42
    with pytest.raises(ValueError, match="no"):
        await to_the_end(fail())


@pytest.mark.parametrize("cancels", [1, 2, 5])
async def test_the_work_ends_however_often_its_waiter_is_cancelled(cancels: int) -> None:
    """`Task.cancel()` again and again while the work runs (as a TaskGroup, then whoever
    stops the group, do): the work still ends, and the waiter ends cancelled after it."""
    steps: list[str] = []
    started = asyncio.Event()

    async def cleanup() -> None:
        started.set()
        for n in range(3):
            await asyncio.sleep(0.01)
            steps.append(f"step {n}")

    async def waiter() -> None:
        await to_the_end(cleanup())
        steps.append("after")  # not reached: the cancellation goes on

    task = asyncio.create_task(waiter())
    await started.wait()
    for _ in range(cancels):
        task.cancel()
        await asyncio.sleep(0.005)
    with pytest.raises(asyncio.CancelledError):
        await task
    assert steps == ["step 0", "step 1", "step 2"]
