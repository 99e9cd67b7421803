"""Faults from outside, met by real processes: the database going away in the middle of a run
and coming back, and the serving process killed in the middle of an upload."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from cog.testing.tcp_proxy import TcpProxy
from tests.e2e.test_recovery import (
    Server,
    assert_each_image_once,
    base_env,
    database_url,
    gemini_url,
    ok,
    series_images,
    serve,
    start_run,
    three_image_steps,
    wait_for_end,
)

pytestmark = pytest.mark.slow

__all__ = ["base_env", "database_url", "gemini_url", "serve"]  # fixtures, used by name

OUTAGE_S = 4.0


def poll(http: httpx.Client, path: str) -> tuple[int, Any]:
    response = http.get(path)
    return response.status_code, response.json()


@pytest.mark.postgres
@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
def test_a_run_outlives_the_database_going_away_for_a_few_seconds(
    serve: Callable[..., Server], database_url: str
) -> None:
    """`cog serve` (running the run itself) reaches PostgreSQL through a proxy that the test
    takes away for OUTAGE_S in the middle of a run. Meanwhile the API says why it cannot answer;
    afterwards the run carries on from its last finished step and succeeds."""
    target = sa.make_url(database_url)
    with TcpProxy(target.host or "127.0.0.1", target.port or 5432) as proxy:
        through_proxy = target.set(port=proxy.port).render_as_string(hide_password=False)
        server = serve(COG_DATABASE_URL=through_proxy)
        with server.client() as http:
            series_id, run_id = start_run(http, three_image_steps())
            deadline = time.monotonic() + 15
            while True:
                _, run = poll(http, f"/api/runs/{run_id}")
                if [s["status"] for s in run["steps"]][:2] == ["succeeded", "running"]:
                    break
                assert time.monotonic() < deadline, run
                time.sleep(0.01)
            before = run

            proxy.cut()
            answers = []
            until = time.monotonic() + OUTAGE_S
            while time.monotonic() < until:
                answers.append(poll(http, f"/api/runs/{run_id}"))
                time.sleep(0.25)
            proxy.restore()
            # While the database was away, a clear 503, never a 500.
            away = [body for status, body in answers if status != 200]
            assert away, answers
            assert {status for status, _ in answers} <= {200, 503}, answers
            assert all("cannot reach its database" in body["detail"] for body in away), away

            run = wait_for_end(http, run_id, seconds=30)
            assert run["status"] == "succeeded", run
            assert [s["status"] for s in run["steps"]] == ["succeeded"] * 3
            assert run["steps"][0]["image_ids"] == before["steps"][0]["image_ids"]
            assert run["steps"][0]["finished_at"] == before["steps"][0]["finished_at"]
            assert_each_image_once(http, database_url, series_id, run, count=2)
            assert len(series_images(http, series_id)) == 6
            ok(http.get("/api/series"))
    assert "lost the database" in server.output(), server.output()
