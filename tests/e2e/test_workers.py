"""Runs on the queue: `cog serve` with COG_EXECUTOR=queue and `cog worker` processes, all real
subprocesses on one PostgreSQL database, the fake Gemini server answering with latency.

Workers are stopped with SIGKILL (nothing of theirs runs) or SIGTERM (they hand back).
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from cog.db.models import JobRun
from cog.db.session import make_engine
from cog.testing.tcp_proxy import TcpProxy
from tests.conftest import free_port, pg_url
from tests.e2e.processes import (
    STALE_AFTER_S,
    START_WITHIN_S,
    Proc,
    Server,
    assert_each_image_once,
    ok,
    series_images,
    start_run,
    stop_process,
    three_image_steps,
    wait_for_end,
    wait_until,
)
from tests.factories import image_bytes

pytestmark = [pytest.mark.slow, pytest.mark.postgres]


# A killed worker's run goes stale after STALE_AFTER_S, is found on the next upkeep tick (1 s)
# and taken by the next job fetch; a few calls of LATENCY_MS then finish it.
RESUME_WITHIN_S = 15
# How long the database is away in the outage test: longer than STALE_AFTER_S, so the run's
# heartbeat lapses too.
OUTAGE_S = 4.0


class Worker(Proc):
    @property
    def pid(self) -> int:
        return self.proc.pid

    def kill(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def claimed(self) -> list[str]:
        return re.findall(r"run (\S+) claimed by", self.output())


@pytest.fixture
def database_url(pg_database: str, base_env: dict[str, str], tmp_path: Path) -> str:
    """A fresh PostgreSQL database, brought up to date by `cog db upgrade` (which installs the
    run queue too)."""
    url = pg_url(pg_database)
    done = subprocess.run(
        [sys.executable, "-m", "cog", "db", "upgrade"],
        env={**base_env, "COG_DATABASE_URL": url},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "run queue" in done.stdout, done.stdout
    return url


@pytest.fixture
def env(
    tmp_path: Path, base_env: dict[str, str], gemini_url: str, database_url: str
) -> dict[str, str]:
    return {
        **base_env,
        "COG_DATA_DIR": str(tmp_path / "data"),
        "COG_DATABASE_URL": database_url,
        "COG_EXECUTOR": "queue",
        "COG_PROVIDER": "gemini",
        "COG_GEMINI_BASE_URL": gemini_url,
        "GOOGLE_API_KEY": "test",
        "COG_RUN_STALE_AFTER_S": str(STALE_AFTER_S),
        "COG_PROVIDER_RETRY_INITIAL_S": "0.05",
    }


@pytest.fixture
def serve(tmp_path: Path, env: dict[str, str]) -> Iterator[Server]:
    port = free_port()
    log = tmp_path / "serve.log"
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "cog", "serve", "--port", str(port)],
            env=env,
            cwd=tmp_path,
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    server = Server(proc, log, f"http://127.0.0.1:{port}", env)
    try:
        deadline = time.monotonic() + START_WITHIN_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"cog serve exited with {proc.returncode}:\n{server.output()}")
            try:
                if httpx.get(f"{server.base_url}/api/series", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                said = server.output()
                pytest.fail(f"cog serve did not answer within {START_WITHIN_S} s:\n{said}")
            time.sleep(0.05)
        yield server
    finally:
        stop_process(server.proc)
    assert "Traceback" not in server.output(), server.output()


@pytest.fixture
def workers(tmp_path: Path, env: dict[str, str]) -> Iterator[Callable[..., Worker]]:
    """Start `cog worker` processes; every one is stopped at the end."""
    started: list[Worker] = []

    def start(concurrency: int = 1, **settings: str) -> Worker:
        log = tmp_path / f"worker-{len(started)}.log"
        with log.open("wb") as sink:
            proc = subprocess.Popen(
                [sys.executable, "-m", "cog", "worker", "--concurrency", str(concurrency)],
                env={**env, **settings},
                cwd=tmp_path,
                stdout=sink,
                stderr=subprocess.STDOUT,
            )
        worker = Worker(proc, log)
        started.append(worker)
        deadline = time.monotonic() + START_WITHIN_S
        while "started (concurrency" not in worker.output():
            if proc.poll() is not None:
                pytest.fail(f"cog worker exited with {proc.returncode}:\n{worker.output()}")
            if time.monotonic() > deadline:
                said = worker.output()
                pytest.fail(f"cog worker did not start within {START_WITHIN_S} s:\n{said}")
            time.sleep(0.05)
        return worker

    try:
        yield start
    finally:
        for worker in started:
            stop_process(worker.proc)


def claimed_by(database_url: str, run_id: str) -> str | None:
    async def read() -> str | None:
        engine = make_engine(database_url)
        try:
            async with engine.connect() as conn:
                found: str | None = await conn.scalar(
                    sa.select(JobRun.claimed_by).where(JobRun.id == uuid.UUID(run_id))
                )
                return found
        finally:
            await engine.dispose()

    return asyncio.run(read())


def make_runs(http: httpx.Client, n: int) -> list[tuple[str, str]]:
    return [start_run(http, three_image_steps()) for _ in range(n)]


# --- the tests ----------------------------------------------------------------------------------


def test_runs_spread_over_two_workers_and_survive_one_killed_mid_run(
    serve: Server, workers: Callable[..., Worker], database_url: str
) -> None:
    first, second = workers(), workers()
    with serve.client() as http:
        runs = make_runs(http, 6)
        # A run of the first worker, caught between its first and second step.
        victim: dict[str, Any] | None = None
        deadline = time.monotonic() + 20
        while victim is None:
            assert time.monotonic() < deadline, "the first worker never held a run mid-way"
            for _series_id, run_id in runs:
                run = ok(http.get(f"/api/runs/{run_id}"))
                holder = claimed_by(database_url, run_id) or ""
                steps = [s["status"] for s in run["steps"]]
                if f":{first.pid}:" in holder and steps[:2] == ["succeeded", "running"]:
                    victim = run
                    break
            time.sleep(0.01)
        first.kill()
        for series_id, run_id in runs:
            run = wait_for_end(http, run_id, seconds=RESUME_WITHIN_S + 10)
            assert run["status"] == "succeeded", run
            assert [s["status"] for s in run["steps"]] == ["succeeded"] * 3
            assert_each_image_once(http, database_url, series_id, run, count=2)
            assert len(series_images(http, series_id)) == 6
            if run_id == victim["id"]:
                assert run["attempts"] == 2  # started by the first worker, resumed by the second
                assert run["steps"][0]["image_ids"] == victim["steps"][0]["image_ids"]
                assert run["steps"][0]["finished_at"] == victim["steps"][0]["finished_at"]
            else:
                assert run["attempts"] in (1, 2)
    # Both workers ran runs; the one killed mid-run was finished by the other.
    assert first.claimed(), first.output()
    assert victim["id"] in second.claimed(), second.output()
    assert "Traceback" not in second.output(), second.output()


def test_sigterm_hands_the_run_back_and_the_next_worker_resumes_it(
    serve: Server, workers: Callable[..., Worker], database_url: str
) -> None:
    worker = workers(COG_WORKER_SHUTDOWN_GRACE_S="0")
    with serve.client() as http:
        series_id, run_id = start_run(http, three_image_steps())
        before = wait_until(
            http,
            run_id,
            lambda r: (
                r["steps"][0]["status"] == "succeeded" and r["steps"][1]["status"] == "running"
            ),
            seconds=15,
        )
        worker.proc.send_signal(signal.SIGTERM)
        assert worker.proc.wait(timeout=10) == 0, worker.output()
        handed_back = ok(http.get(f"/api/runs/{run_id}"))
        assert handed_back["status"] == "queued", handed_back
        assert claimed_by(database_url, run_id) is None

        again = workers()
        run = wait_for_end(http, run_id, seconds=RESUME_WITHIN_S)
        assert run["status"] == "succeeded", run
        assert run["attempts"] == 2
        assert run["steps"][0]["image_ids"] == before["steps"][0]["image_ids"]
        assert_each_image_once(http, database_url, series_id, run, count=2)
    assert run_id in again.claimed()
    assert "Traceback" not in worker.output() + again.output()


def test_a_cancel_reaches_the_worker(serve: Server, workers: Callable[..., Worker]) -> None:
    """The worker renews its claim only every 15 s here; the cancel still reaches it in about a
    second, long before the run (nine steps of 400 ms calls) would end."""
    workers(COG_RUN_STALE_AFTER_S="60")
    with serve.client() as http:
        _series_id, run_id = start_run(http, three_image_steps() * 3)
        wait_until(http, run_id, lambda r: r["status"] == "running", seconds=15)
        ok(http.post(f"/api/runs/{run_id}/cancel"))
        run = wait_for_end(http, run_id, seconds=4)
        assert run["status"] == "cancelled", run
        assert [s["status"] for s in run["steps"]].count("succeeded") < 9, run


def test_serve_and_worker_refuse_the_queue_on_sqlite(
    tmp_path: Path, base_env: dict[str, str]
) -> None:
    env = {**base_env, "COG_DATA_DIR": str(tmp_path / "data"), "COG_EXECUTOR": "queue"}
    for command in (["serve", "--port", str(free_port())], ["worker"]):
        done = subprocess.run(
            [sys.executable, "-m", "cog", *command],
            env=env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 2, done.stderr
        assert "PostgreSQL" in done.stderr and "Traceback" not in done.stderr


def test_a_worker_carries_on_after_the_database_went_away_for_a_few_seconds(
    serve: Server, workers: Callable[..., Worker], database_url: str
) -> None:
    """The worker reaches PostgreSQL through a proxy that the test takes away for 4 s in the
    middle of a run, as when the database's machine restarts. `cog serve` keeps its own
    connection, so the run is watched throughout. The worker process is never restarted."""
    target = sa.make_url(database_url)
    with TcpProxy(target.host or "127.0.0.1", target.port or 5432) as proxy:
        through_proxy = target.set(port=proxy.port).render_as_string(hide_password=False)
        worker = workers(COG_DATABASE_URL=through_proxy)
        with serve.client() as http:
            series_id, run_id = start_run(http, three_image_steps())
            before = wait_until(
                http,
                run_id,
                lambda r: (
                    r["steps"][0]["status"] == "succeeded" and r["steps"][1]["status"] == "running"
                ),
                seconds=15,
            )
            proxy.cut()
            time.sleep(OUTAGE_S)
            assert worker.proc.poll() is None, worker.output()
            proxy.restore()

            run = wait_for_end(http, run_id, seconds=RESUME_WITHIN_S + 10)
            assert run["status"] == "succeeded", run
            assert [s["status"] for s in run["steps"]] == ["succeeded"] * 3
            # The step that had finished before the outage was kept, not made again.
            assert run["steps"][0]["image_ids"] == before["steps"][0]["image_ids"]
            assert run["steps"][0]["finished_at"] == before["steps"][0]["finished_at"]
            assert_each_image_once(http, database_url, series_id, run, count=2)
            assert len(series_images(http, series_id)) == 6

            # And it goes on taking new runs, in the same process.
            series_id, later = start_run(http, three_image_steps(count=1))
            run = wait_for_end(http, later, seconds=20)
            assert run["status"] == "succeeded", run
            assert len(series_images(http, series_id)) == 3
        assert worker.proc.poll() is None, worker.output()
        stop_process(worker.proc)  # while the database is there, so it stops at once
    assert later in worker.claimed(), worker.output()
    assert proxy.connections > 2  # it reconnected after the outage
    # The lost database is not taken for a fault of the run. (procrastinate itself may log
    # that it could not record the end of its job while the database was away.)
    assert "lost the database" in worker.output(), worker.output()
    assert "crashed" not in worker.output(), worker.output()


def test_a_batch_runs_through_the_workers_within_its_limit(
    serve: Server, workers: Callable[..., Worker]
) -> None:
    """Six images, two workers with two slots each, COG_BATCH_CONCURRENCY=2 (the default): the
    batch never has more than two runs going, a freed slot is taken within a couple of seconds,
    and a plain run queued behind the batch gets one of the workers' other slots meanwhile."""
    first, second = workers(concurrency=2), workers(concurrency=2)
    with serve.client() as http:
        series = ok(http.post("/api/series", json={"title": "Batch"}), 201)
        files = [
            ("files", (f"i{n}.png", image_bytes(color=(40 * n, 90, 30)), "image/png"))
            for n in range(6)
        ]
        images = ok(http.post(f"/api/series/{series['id']}/images", files=files), 201)["items"]
        job = ok(http.post(f"/api/series/{series['id']}/jobs", json={"base_prompt": "ink"}), 201)
        steps = [
            {
                "kind": "image",
                "prompt": "{{ base_prompt }}: {{ input.filename }}",
                "config": {"input_images": ["input"]},
            }
        ]
        ok(http.put(f"/api/jobs/{job['id']}/steps", json={"steps": steps}))
        batch = ok(
            http.post(
                f"/api/jobs/{job['id']}/batches", json={"image_ids": [i["id"] for i in images]}
            ),
            202,
        )
        _plain_series, plain_id = start_run(http, three_image_steps(count=1))
        deadline = time.monotonic() + 60
        while (batch := ok(http.get(f"/api/batches/{batch['id']}")))["status"] == "running":
            assert time.monotonic() < deadline, batch
            time.sleep(0.1)
        assert batch["status"] == "succeeded", batch
        assert batch["succeeded"] == 6
        plain = wait_for_end(http, plain_id, seconds=30)
        assert plain["status"] == "succeeded", plain
        assert plain["started_at"] < batch["finished_at"]  # not held behind the batch

    spans = sorted(
        (datetime.fromisoformat(r["started_at"]), datetime.fromisoformat(r["finished_at"]))
        for r in batch["runs"]
    )
    edges = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])
    at_once = [sum(step for _, step in edges[: n + 1]) for n in range(len(edges))]
    assert max(at_once) == 2, spans
    # Each run after the first two starts soon after an earlier one ended: it was waiting for
    # that slot, not for a poll or an upkeep round.
    for started, _ in spans[2:]:
        gap = min((started - e).total_seconds() for _, e in spans if e <= started)
        assert gap < 2.0, (gap, spans)
    claimed = first.claimed() + second.claimed()
    assert {r["id"] for r in batch["runs"]} <= set(claimed)
    assert "Traceback" not in first.output() + second.output()
