"""Cog and the fake Gemini server as real processes, and what tests do with them over HTTP:
start a run, wait for a moment of it, check that every image it made exists once."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

from cog.db.models import Image, StepRun
from cog.db.session import make_engine

# Every call to the fake Gemini server of `gemini_url` takes this long.
LATENCY_MS = 400
STALE_AFTER_S = 1.5
# How long a `cog serve` or `cog worker` may take to answer once started: a cold start (imports,
# a fresh database's migrations) on a busy machine running the other tests can take a while.
START_WITHIN_S = 60


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


def stop_process(proc: subprocess.Popen[Any]) -> None:
    """Ask it to stop; kill it if it has not within 10 s."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


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
