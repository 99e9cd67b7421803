"""Retrying provider calls, with every attempt recorded.

Cog retries here rather than in the SDK so that each try shows up in a step's history (its
status, duration and error); the SDK's own retries stay off.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar, cast

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt
from tenacity.wait import wait_base

from cog.errors import ProviderError
from cog.providers.base import Attempt

R = TypeVar("R")

# The jitter of every retry. Seeding a generator reads the OS's entropy, which costs more than
# the call it would serve: one generator is made once, not one per call.
_JITTER = random.Random()


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently a failed provider call is tried again.

    The wait before try n+1 is `initial_delay_s * 2**(n-1)` plus up to `jitter_s` of random
    jitter, at most `max_delay_s`. When the provider says how long to wait (Gemini's
    `RetryInfo.retryDelay`), that delay replaces the backoff, still capped at `max_delay_s` so a
    daily-quota answer cannot park a run for hours.
    """

    max_attempts: int = 4
    initial_delay_s: float = 1.0
    max_delay_s: float = 30.0
    jitter_s: float = 0.5

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if min(self.initial_delay_s, self.max_delay_s, self.jitter_s) < 0:
            raise ValueError("delays must not be negative")

    def delay_s(self, attempt_number: int, server_delay_s: float | None, jitter: float) -> float:
        """The wait after failed attempt `attempt_number` (1-based); `jitter` is in [0, 1)."""
        base = (
            server_delay_s
            if server_delay_s is not None
            else self.initial_delay_s * 2 ** (attempt_number - 1)
        )
        return min(base + jitter * self.jitter_s, self.max_delay_s)


def is_retryable(exc: BaseException) -> bool:
    return isinstance(exc, ProviderError) and exc.retryable


class _PolicyWait(wait_base):
    def __init__(self, policy: RetryPolicy, rng: random.Random) -> None:
        self._policy = policy
        self._rng = rng

    def __call__(self, retry_state: RetryCallState) -> float:
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        server_delay = exc.extra.get("retry_after_s") if isinstance(exc, ProviderError) else None
        return self._policy.delay_s(
            retry_state.attempt_number,
            float(server_delay) if server_delay is not None else None,
            self._rng.random(),
        )


def _gave_up(exc: ProviderError, tries: int) -> str:
    return f"{exc.message} (gave up after {tries} attempts)"


async def call_with_retry(
    call: Callable[[], Awaitable[R]],
    policy: RetryPolicy,
    *,
    describe_exhausted: Callable[[ProviderError, int], str] = _gave_up,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    rng: random.Random | None = None,
) -> tuple[R, tuple[Attempt, ...]]:
    """Run `call` until it succeeds, fails for good, or the policy runs out of attempts.

    Only `ProviderError(retryable=True)` is retried. Returns the result and every attempt. The
    error raised at the end is a `ProviderError` whose `extra["attempts"]` holds them all; when
    retryable errors used up every attempt, its message comes from `describe_exhausted`.
    Anything other than a `ProviderError` is a bug and propagates at once, unrecorded.
    """
    attempts: list[Attempt] = []

    async def attempt_once() -> R:
        started_at = datetime.now(UTC)
        start = time.perf_counter()
        try:
            result = await call()
        except ProviderError as exc:
            attempts.append(_attempt(len(attempts) + 1, started_at, start, exc))
            raise
        attempts.append(_attempt(len(attempts) + 1, started_at, start, None))
        return result

    retrying = AsyncRetrying(
        stop=stop_after_attempt(policy.max_attempts),
        wait=_PolicyWait(policy, rng or _JITTER),
        retry=retry_if_exception(is_retryable),
        sleep=sleep,
        reraise=True,
    )
    try:
        result = cast(R, await retrying(attempt_once))
    except ProviderError as exc:
        tried = tuple(attempts)
        message = (
            describe_exhausted(exc, len(tried)) if exc.retryable and len(tried) > 1 else exc.message
        )
        extra = {**exc.extra, "attempts": tried}
        raise ProviderError(message, retryable=exc.retryable, **extra) from exc
    return result, tuple(attempts)


def _attempt(number: int, started_at: datetime, start: float, exc: ProviderError | None) -> Attempt:
    status = exc.extra.get("status_code") if exc else None
    return Attempt(
        number=number,
        started_at=started_at,
        duration_ms=(time.perf_counter() - start) * 1000,
        error=exc.message if exc else None,
        status_code=status if isinstance(status, int) else None,
    )
