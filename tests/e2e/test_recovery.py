"""A `cog serve` killed mid-run: the next start resumes the run or fails it, never leaves it
`running` and never makes an image twice.

Everything is real: the fake Gemini server and `cog serve` run as subprocesses, the test talks
to them over HTTP, and the server is stopped with SIGKILL (no shutdown code runs).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from tests.e2e.processes import (
    STALE_AFTER_S,
    Server,
    assert_each_image_once,
    ok,
    rows_of,
    series_images,
    start_run,
    three_image_steps,
    wait_for_end,
    wait_until,
)

pytestmark = pytest.mark.slow

# Once the new server answers, the run ends within this: it is found stale at once (the
# server took longer than STALE_AFTER_S to start) or on the next tick, then needs a few calls.
RESUME_WITHIN_S = 10


# --- the tests ----------------------------------------------------------------------------------


def test_a_run_killed_mid_step_resumes_on_the_next_start(
    serve: Callable[..., Server], server_database_url: str
) -> None:
    first = serve()
    with first.client() as http:
        series_id, run_id = start_run(http, three_image_steps())
        before = wait_until(
            http,
            run_id,
            lambda r: (
                r["steps"][0]["status"] == "succeeded" and r["steps"][1]["status"] == "running"
            ),
            seconds=10,
        )
    first.kill()
    kept = before["steps"][0]["image_ids"]
    assert len(kept) == 2

    second = serve()
    with second.client() as http:
        run = wait_for_end(http, run_id, seconds=RESUME_WITHIN_S)
        assert run["status"] == "succeeded", run
        assert run["error"] is None
        assert run["attempts"] == 2  # the first start, and the resume
        assert [s["status"] for s in run["steps"]] == ["succeeded"] * 3
        assert run["steps"][0]["image_ids"] == kept  # the finished step was not run again
        assert run["steps"][0]["finished_at"] == before["steps"][0]["finished_at"]
        assert_each_image_once(http, server_database_url, series_id, run, count=2)
        assert len(series_images(http, series_id)) == 6


def test_an_image_step_cut_short_makes_only_the_images_it_still_lacks(
    serve: Callable[..., Server], server_database_url: str
) -> None:
    """One image call at a time: the server dies after step 1 has stored one of its images."""
    one_at_a_time = {"COG_IMAGE_CONCURRENCY": "1"}
    first = serve(**one_at_a_time)
    with first.client() as http:
        series_id, run_id = start_run(http, three_image_steps())
        before = wait_until(
            http,
            run_id,
            lambda r: r["steps"][1]["status"] == "running" and len(r["steps"][1]["image_ids"]) == 1,
            seconds=10,
        )
    first.kill()
    kept = before["steps"][0]["image_ids"]
    half = before["steps"][1]["image_ids"]
    # The call that brought the stored image is on record with it.
    (made_before,) = before["steps"][1]["attempt_log"]
    assert before["steps"][1]["attempts"] == 1
    assert before["steps"][1]["usage"]["total_tokens"] > 0

    second = serve(**one_at_a_time)
    with second.client() as http:
        run = wait_for_end(http, run_id, seconds=RESUME_WITHIN_S)
        assert run["status"] == "succeeded", run
        assert run["steps"][0]["image_ids"] == kept
        assert run["steps"][1]["image_ids"][:1] == half  # kept, and one more made
        # Its attempts are those of both calls: the one before the kill, the one after.
        step = run["steps"][1]
        assert step["attempts"] == 2 and step["attempt_log"][0] == made_before
        assert step["attempt_log"][1]["started_at"] > made_before["started_at"]
        assert step["usage"]["total_tokens"] == 2 * before["steps"][1]["usage"]["total_tokens"]
        assert_each_image_once(http, server_database_url, series_id, run, count=2)
        assert len(series_images(http, series_id)) == 6


def test_a_run_out_of_attempts_is_failed_with_the_reason(
    serve: Callable[..., Server], server_database_url: str
) -> None:
    once = {"COG_RUN_MAX_ATTEMPTS": "1"}
    first = serve(**once)
    with first.client() as http:
        series_id, run_id = start_run(http, three_image_steps())
        before = wait_until(
            http,
            run_id,
            lambda r: (
                r["steps"][0]["status"] == "succeeded" and r["steps"][1]["status"] == "running"
            ),
            seconds=10,
        )
    first.kill()

    second = serve(**once)
    with second.client() as http:
        run = wait_for_end(http, run_id, seconds=RESUME_WITHIN_S)
        assert run["status"] == "failed", run
        assert run["attempts"] == 1
        assert "stopped" in run["error"] and "gave up" in run["error"]
        assert run["finished_at"] is not None
        statuses = [s["status"] for s in run["steps"]]
        assert statuses == ["succeeded", "failed", "failed"], run
        assert run["steps"][0]["image_ids"] == before["steps"][0]["image_ids"]
        assert "stopped" in run["steps"][1]["error"]
        # Nothing runs it again: it stays failed, and only what was made before stays.
        time.sleep(STALE_AFTER_S + 1)
        again = ok(http.get(f"/api/runs/{run_id}"))
        assert again["status"] == "failed" and again["steps"] == run["steps"]
        made = [i for s in run["steps"] for i in s["image_ids"]]
        assert sorted(i["id"] for i in series_images(http, series_id)) == sorted(made)
        _, image_steps = rows_of(server_database_url, run_id)
        assert sorted(image_steps) == sorted(made)
