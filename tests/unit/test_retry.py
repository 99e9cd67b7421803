from __future__ import annotations

import random

import pytest

from cog.errors import ProviderError
from cog.providers.retry import RetryPolicy, call_with_retry


class Script:
    """A call that raises the scripted errors in turn, then answers "ok"."""

    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


class Sleeps:
    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


def busy(retry_after_s: float | None = None) -> ProviderError:
    return ProviderError("busy", retryable=True, status_code=429, retry_after_s=retry_after_s)


NO_JITTER = RetryPolicy(max_attempts=4, initial_delay_s=1.0, max_delay_s=30.0, jitter_s=0.0)


async def test_success_first_time_records_one_attempt() -> None:
    sleeps = Sleeps()
    result, attempts = await call_with_retry(Script(), NO_JITTER, sleep=sleeps)
    assert result == "ok"
    assert len(attempts) == 1
    assert attempts[0].number == 1
    assert attempts[0].error is None
    assert attempts[0].status_code is None
    assert attempts[0].duration_ms >= 0
    assert sleeps.delays == []


async def test_retryable_errors_back_off_exponentially_then_succeed() -> None:
    call, sleeps = Script(busy(), busy(), busy()), Sleeps()
    result, attempts = await call_with_retry(call, NO_JITTER, sleep=sleeps)
    assert result == "ok"
    assert call.calls == 4
    assert sleeps.delays == [1.0, 2.0, 4.0]
    assert [a.number for a in attempts] == [1, 2, 3, 4]
    assert [a.status_code for a in attempts] == [429, 429, 429, None]
    assert [a.error for a in attempts] == ["busy", "busy", "busy", None]
    assert attempts[0].started_at <= attempts[-1].started_at


async def test_backoff_is_capped_at_max_delay() -> None:
    policy = RetryPolicy(max_attempts=4, initial_delay_s=10.0, max_delay_s=15.0, jitter_s=0.0)
    sleeps = Sleeps()
    await call_with_retry(Script(busy(), busy(), busy()), policy, sleep=sleeps)
    assert sleeps.delays == [10.0, 15.0, 15.0]


async def test_server_retry_delay_replaces_backoff_and_is_capped() -> None:
    sleeps = Sleeps()
    await call_with_retry(Script(busy(7.0), busy(0.0), busy(3600.0)), NO_JITTER, sleep=sleeps)
    assert sleeps.delays == [7.0, 0.0, 30.0]


async def test_jitter_stays_within_its_bound() -> None:
    policy = RetryPolicy(max_attempts=4, initial_delay_s=1.0, max_delay_s=30.0, jitter_s=0.5)
    sleeps = Sleeps()
    await call_with_retry(
        Script(busy(), busy(), busy()), policy, sleep=sleeps, rng=random.Random(7)
    )
    for delay, base in zip(sleeps.delays, [1.0, 2.0, 4.0], strict=True):
        assert base <= delay <= base + 0.5
    assert len(set(sleeps.delays) - {1.0, 2.0, 4.0}) == 3  # jitter was really added


async def test_non_retryable_error_fails_at_once_with_its_attempt() -> None:
    call, sleeps = Script(ProviderError("bad request", retryable=False, status_code=400)), Sleeps()
    with pytest.raises(ProviderError) as caught:
        await call_with_retry(call, NO_JITTER, sleep=sleeps)
    assert call.calls == 1
    assert sleeps.delays == []
    assert caught.value.message == "bad request"
    assert caught.value.retryable is False
    assert caught.value.extra["status_code"] == 400
    (attempt,) = caught.value.extra["attempts"]
    assert attempt.status_code == 400
    assert attempt.error == "bad request"


async def test_non_retryable_after_retries_keeps_every_attempt() -> None:
    call = Script(busy(), ProviderError("refused", retryable=False, status_code=400))
    with pytest.raises(ProviderError) as caught:
        await call_with_retry(call, NO_JITTER, sleep=Sleeps())
    assert caught.value.message == "refused"
    assert [a.status_code for a in caught.value.extra["attempts"]] == [429, 400]


async def test_exhausted_retries_raise_retryable_error_with_all_attempts() -> None:
    call, sleeps = Script(*(busy() for _ in range(10))), Sleeps()
    with pytest.raises(ProviderError) as caught:
        await call_with_retry(
            call,
            NO_JITTER,
            sleep=sleeps,
            describe_exhausted=lambda exc, n: f"still {exc.message} after {n}",
        )
    assert call.calls == 4
    assert len(sleeps.delays) == 3
    assert caught.value.retryable is True
    assert caught.value.message == "still busy after 4"
    assert caught.value.extra["status_code"] == 429
    assert len(caught.value.extra["attempts"]) == 4


async def test_default_exhausted_message_says_how_often() -> None:
    with pytest.raises(ProviderError, match=r"^busy \(gave up after 2 attempts\)$"):
        await call_with_retry(
            Script(busy(), busy()),
            RetryPolicy(max_attempts=2, jitter_s=0.0),
            sleep=Sleeps(),
        )


async def test_other_exceptions_are_bugs_and_are_not_retried() -> None:
    call = Script(KeyError("oops"))
    with pytest.raises(KeyError):
        await call_with_retry(call, NO_JITTER, sleep=Sleeps())
    assert call.calls == 1


async def test_real_sleep_is_used_by_default() -> None:
    policy = RetryPolicy(max_attempts=2, initial_delay_s=0.02, max_delay_s=1.0, jitter_s=0.0)
    _, attempts = await call_with_retry(Script(busy()), policy)
    gap = (attempts[1].started_at - attempts[0].started_at).total_seconds()
    assert gap >= 0.02


@pytest.mark.parametrize(
    "kwargs",
    [{"max_attempts": 0}, {"initial_delay_s": -1.0}, {"max_delay_s": -1.0}, {"jitter_s": -0.1}],
)
def test_policy_refuses_nonsense(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]
