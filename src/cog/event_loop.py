"""The event loop Cog's long-lived processes run on.

`cog serve` gets uvloop from uvicorn whenever it is installed (uvicorn's standard extras bring
it); `cog worker`, the CLI and the benchmarks run on the same loop, so a run behaves and costs
the same wherever it executes. Where uvloop is not available (it does not support Windows),
asyncio's own loop serves.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    """What makes the loop: uvloop's, as uvicorn picks it, or asyncio's."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is installed wherever it can be
        return asyncio.new_event_loop
    return uvloop.new_event_loop


def run(main: Coroutine[Any, Any, T]) -> T:
    """Run `main` to its end on a new loop, as `asyncio.run` does."""
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(main)
