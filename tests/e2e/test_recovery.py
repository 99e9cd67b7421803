"""A `cog serve` killed mid-run: the next start resumes the run or fails it, never leaves it
`running` and never makes an image twice.

Everything is real: the fake Gemini server and `cog serve` run as subprocesses, the test talks
to them over HTTP, and the server is stopped with SIGKILL (no shutdown code runs).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from cog.db.models import Image, StepRun
from cog.db.session import make_engine
from tests.conftest import free_port, pg_url

pytestmark = pytest.mark.slow

LATENCY_MS = 400
STALE_AFTER_S = 1.5
# Once the new server answers, the run ends within this: it is found stale at once (the
# server took longer than STALE_AFTER_S to start) or on the next tick, then needs a few calls.
RESUME_WITHIN_S = 10


@dataclass
class Proc:
    proc: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@dataclass
class Server(Proc):
    base_url: str
    env: dict[str, str]

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, timeout=10)

    def kill(self) -> None:
        """SIGKILL: the process stops at once, in the middle of whatever it was doing."""
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)


def _stop(running: Proc) -> None:
    if running.proc.poll() is None:
        running.proc.terminate()
        try:
            running.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            running.proc.kill()
            running.proc.wait()


@pytest.fixture(scope="session")
def base_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The machine's environment without any Cog or Gemini setting. Compiled modules are
    cached in a folder of the test session (not in the virtualenv), so each process after the
    first starts in a second or two, even where PYTHONDONTWRITEBYTECODE is set."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("COG_", "GEMINI_", "GOOGLE_", "PYTHONDONTWRITEBYTECODE"))
    }
    env["PYTHONPYCACHEPREFIX"] = str(tmp_path_factory.mktemp("pycache"))
    return env


@pytest.fixture
def gemini_url(tmp_path: Path, base_env: dict[str, str]) -> Iterator[str]:
    """The fake Gemini server as a subprocess; every call takes LATENCY_MS."""
    log = tmp_path / "gemini.log"
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "cog.testing.gemini_server",
                "--port",
                str(free_port()),
                "--latency-ms",
                str(LATENCY_MS),
            ],
            env=base_env,
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=sink,
        )
    fake = Proc(proc, log)
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().decode().strip()  # its first line is its URL
        assert url.startswith("http://127.0.0.1:"), fake.output()
        yield url
    finally:
        _stop(fake)
        if proc.stdout is not None:
            proc.stdout.close()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where the servers keep their data: SQLite in the data dir, or a fresh migrated
    PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'data' / 'cog.db'}"
    return pg_url(request.getfixturevalue("pg_database"))


@pytest.fixture
def serve(
    tmp_path: Path, base_env: dict[str, str], gemini_url: str, database_url: str
) -> Iterator[Callable[..., Server]]:
    """Start `cog serve` on one data dir and database; every server is stopped at the end."""
    started: list[Server] = []

    def start(**settings: str) -> Server:
        port = free_port()
        env = {
            **base_env,
            "COG_DATA_DIR": str(tmp_path / "data"),
            "COG_DATABASE_URL": database_url,
            "COG_PROVIDER": "gemini",
            "COG_GEMINI_BASE_URL": gemini_url,
            "GOOGLE_API_KEY": "test",
            "COG_RUN_STALE_AFTER_S": str(STALE_AFTER_S),
            "COG_PROVIDER_RETRY_INITIAL_S": "0.05",
            **settings,
        }
        log = tmp_path / f"serve-{len(started)}.log"
        with log.open("wb") as sink:
            proc = subprocess.Popen(
                [sys.executable, "-m", "cog", "serve", "--port", str(port)],
                env=env,
                cwd=tmp_path,  # so no .env file of the repository is read
                stdout=sink,
                stderr=subprocess.STDOUT,
            )
        server = Server(proc, log, f"http://127.0.0.1:{port}", env)
        started.append(server)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"cog serve exited with {proc.returncode}:\n{server.output()}")
            try:
                if httpx.get(f"{server.base_url}/api/series", timeout=1).status_code == 200:
                    return server
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        pytest.fail(f"cog serve did not answer within 20 s:\n{server.output()}")

    try:
        yield start
    finally:
        for server in started:
            _stop(server)
        for server in started:
            assert "Traceback" not in server.output(), server.output()


# --- helpers ------------------------------------------------------------------------------------


def ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json()


def start_run(http: httpx.Client, steps: list[dict[str, Any]]) -> tuple[str, str]:
    """A series, a job with these steps, and a run of it; answers (series id, run id)."""
    series = ok(http.post("/api/series", json={"title": "Crash test"}), 201)
    job = ok(
        http.post(
            f"/api/series/{series['id']}/jobs",
            json={"title": "Three steps", "base_prompt": "a lighthouse in a storm"},
        ),
        201,
    )
    ok(http.put(f"/api/jobs/{job['id']}/steps", json={"steps": steps}))
    run = ok(http.post(f"/api/jobs/{job['id']}/runs"), 202)
    return series["id"], run["id"]


def three_image_steps(count: int = 2) -> list[dict[str, Any]]:
    """Three image steps, each using the images of the one before as references."""
    return [
        {"kind": "image", "prompt": "{{ base_prompt }}", "config": {"count": count}},
        {
            "kind": "image",
            "prompt": "{{ base_prompt }}, closer",
            "config": {"count": count, "input_images": ["step:0"]},
        },
        {
            "kind": "image",
            "prompt": "{{ base_prompt }}, at night",
            "config": {"count": count, "input_images": ["step:1"]},
        },
    ]


def wait_until(
    http: httpx.Client, run_id: str, ready: Callable[[dict[str, Any]], bool], seconds: float
) -> dict[str, Any]:
    deadline = time.monotonic() + seconds
    while True:
        run: dict[str, Any] = ok(http.get(f"/api/runs/{run_id}"))
        if ready(run):
            return run
        if run["status"] in ("succeeded", "failed", "cancelled"):
            raise AssertionError(f"the run ended before the moment the test waits for: {run}")
        if time.monotonic() > deadline:
            raise AssertionError(f"run {run_id} did not get there in {seconds}s: {run}")
        time.sleep(0.01)


def wait_for_end(http: httpx.Client, run_id: str, seconds: float) -> dict[str, Any]:
    deadline = time.monotonic() + seconds
    while True:
        run: dict[str, Any] = ok(http.get(f"/api/runs/{run_id}"))
        if run["status"] in ("succeeded", "failed", "cancelled"):
            return run
        if time.monotonic() > deadline:
            raise AssertionError(f"run {run_id} did not end in {seconds}s: {run}")
        time.sleep(0.05)


def series_images(http: httpx.Client, series_id: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = ok(http.get(f"/api/series/{series_id}/images?limit=100"))["items"]
    return items


def rows_of(database_url: str, run_id: str) -> tuple[dict[int, str], dict[str, str | None]]:
    """From the database itself: the run's step-run ids by position, and the step id of every
    image the run made."""

    async def read() -> tuple[dict[int, str], dict[str, str | None]]:
        engine = make_engine(database_url)
        try:
            async with engine.connect() as conn:
                steps = await conn.execute(
                    sa.select(StepRun.position, StepRun.id).where(
                        StepRun.run_id == uuid.UUID(run_id)
                    )
                )
                images = await conn.execute(
                    sa.select(Image.id, Image.step_id).where(Image.run_id == uuid.UUID(run_id))
                )
                return (
                    {position: str(step_id) for position, step_id in steps},
                    {str(i): str(s) if s else None for i, s in images},
                )
        finally:
            await engine.dispose()

    return asyncio.run(read())


def assert_each_image_once(
    http: httpx.Client, database_url: str, series_id: str, run: dict[str, Any], count: int
) -> None:
    """Every step lists `count` images, each made once, in the series, pointing back at it."""
    listed = series_images(http, series_id)
    listed_ids = [image["id"] for image in listed]
    assert len(listed_ids) == len(set(listed_ids))
    step_ids, image_steps = rows_of(database_url, run["id"])
    everything: list[str] = []
    for step in run["steps"]:
        ids = step["image_ids"]
        assert len(ids) == count, step
        assert len(set(ids)) == count, step
        everything += ids
        for image_id in ids:
            image = ok(http.get(f"/api/images/{image_id}"))
            assert image["series_id"] == series_id
            assert image["source"] == "generated" and image["provider"] == "gemini"
            assert image["run_id"] == run["id"]
            assert image["metadata"]["step_position"] == step["position"]
            assert image["step_id"] == step_ids[step["position"]]
            assert image_steps[image_id] == step_ids[step["position"]]
            assert http.get(f"/api/images/{image_id}/file").status_code == 200
    assert len(everything) == len(set(everything)) == count * len(run["steps"])
    assert sorted(listed_ids) == sorted(everything)
    assert sorted(image_steps) == sorted(everything)  # the database holds no other image of it


# --- the tests ----------------------------------------------------------------------------------


def test_a_run_killed_mid_step_resumes_on_the_next_start(
    serve: Callable[..., Server], database_url: str
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
        assert_each_image_once(http, database_url, series_id, run, count=2)
        assert len(series_images(http, series_id)) == 6


def test_an_image_step_cut_short_makes_only_the_images_it_still_lacks(
    serve: Callable[..., Server], database_url: str
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

    second = serve(**one_at_a_time)
    with second.client() as http:
        run = wait_for_end(http, run_id, seconds=RESUME_WITHIN_S)
        assert run["status"] == "succeeded", run
        assert run["steps"][0]["image_ids"] == kept
        assert run["steps"][1]["image_ids"][:1] == half  # kept, and one more made
        assert_each_image_once(http, database_url, series_id, run, count=2)
        assert len(series_images(http, series_id)) == 6


def test_a_run_out_of_attempts_is_failed_with_the_reason(
    serve: Callable[..., Server], database_url: str
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
        _, image_steps = rows_of(database_url, run_id)
        assert sorted(image_steps) == sorted(made)
