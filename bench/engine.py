"""Engine benchmark: a job of K image steps of count N, run against the fake Gemini server.

    uv run python bench/engine.py                 # SQLite (L = 200 ms, K = 5, N = 4, 5 repeats)
    uv run python bench/engine.py --postgres      # SQLite, then a throwaway PostgreSQL database

Everything is Cog's own: the app `cog serve` builds (`serving_app`) behind httpx's ASGI
transport, on the event loop `cog serve` runs on (uvloop where installed), its embedded
executor, the Gemini provider on the real `google-genai` SDK, talking HTTP to the fake Gemini
server (`cog.testing.gemini_server.GeminiTestServer`) on loopback, which waits a fixed latency L
before it answers each call. The fake server runs in a process of its own, as a remote API would
(`--server-in-process` runs it in a thread of this process instead, where it competes with Cog
for the GIL). The script makes a series and a job of K image steps (`{{ base_prompt }} step i`,
count N), warms up with two runs, then:

1. Latency: with L set, it starts the run through `POST /api/jobs/{id}/runs` `--repeats` times
   and reads each run back from `GET /api/runs/{id}`. The wall time of a run is
   `finished_at - started_at` as the run itself records them (from the moment the executor
   claims it to the moment it is marked finished), so the interval at which the script polls
   does not enter the figure. Its reads are not made while the run should still be going (the
   first waits for the ideal time): each read is served on the event loop the run is on, and
   at one read every 100 ms they added about 4 ms to a run of 1 s. The ideal is
   K x ceil(N / image_concurrency) x L: each step's N calls overlap, the steps run one after
   another. The ratio is wall / ideal (median of the repeats). For scale, the floor is K times
   the time N bare provider calls take at L (see 2): what a run would take if Cog added nothing
   to the model calls.
2. Overhead: with L = 0, the same run `--overhead-repeats` times; the run's wall time per step
   minus the time the provider calls alone take. That is measured by calling the Gemini provider
   directly (the same SDK, the same fake server, the same prompt) N times at once under the same
   concurrency limit, twice after each run (the two side by side: this machine's speed drifts
   over a minute), and taking the median. What is left is what Cog adds per
   step: rendering and the step's decisions (condition, loop), its status writes, checking each
   image (its structure; the pixels are decoded, and the thumbnail made, when first shown),
   writing the file to the store, the image rows committed with the step's record (the images
   ready together in one transaction), and the run's own start and finish, spread over the K
   steps. For scale, the time a full `verify_image` (decode and thumbnail, as an upload gets)
   takes for N of the server's images, one after another, is reported beside it.
   So is how long `POST /api/jobs/{id}/runs` takes to answer (checking the steps, writing the
   run): what a person waits for before the run starts.

3. Fan-out: with L set, a second job of one llm step that lists M items (`--fanout-items`, 8;
   a structured answer) and one image step with `for_each` over them, run `--repeats` times.
   Its critical path is the llm call, then the M image calls in ceil(M / image_concurrency)
   waves: the ideal is (1 + ceil(M / image_concurrency)) x L, and the ratio is wall / ideal.

The last line printed is a JSON object with every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import io
import itertools
import json
import math
import multiprocessing
import multiprocessing.process
import os
import statistics
import sys
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table

from cog import event_loop
from cog.cli.serve import serving_app
from cog.config import Settings
from cog.db.migrate import upgrade
from cog.db.session import make_engine
from cog.imaging import verify_image
from cog.providers.gemini import GeminiProvider
from cog.providers.retry import RetryPolicy
from cog.testing.databases import throwaway_postgres
from cog.testing.gemini_server import GeminiTestServer

console = Console(highlight=False)
BASE_PROMPT = "a lighthouse on a cliff in a winter storm"
RATIO_TARGET = 1.05
OVERHEAD_TARGET_MS = 5.0
FINAL = ("succeeded", "failed", "cancelled")


# --- the fake Gemini server ----------------------------------------------------------------------


def _serve_in_child(conn: Connection) -> None:
    """Body of the server process: start the fake server, send its URL, then obey the pipe."""
    with GeminiTestServer(latency_s=0.0) as server:
        conn.send(server.base_url)
        while (message := conn.recv()) is not None:
            server.latency_s = float(message)
            conn.send(True)
    conn.close()


class FakeGemini:
    """The fake Gemini server with a settable latency: in a process of its own (the default),
    or in a thread of this one."""

    def __init__(self, *, in_process: bool) -> None:
        self.in_process = in_process
        self._server: GeminiTestServer | None = None
        self._process: multiprocessing.process.BaseProcess | None = None
        if in_process:
            self._server = GeminiTestServer(latency_s=0.0).start()
            self.base_url = self._server.base_url
            return
        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        self._process = context.Process(
            target=_serve_in_child, args=(child,), name="fake-gemini", daemon=True
        )
        self._process.start()
        child.close()
        if not self._conn.poll(60):
            self.close()
            raise RuntimeError("the fake Gemini server process did not start")
        self.base_url = str(self._conn.recv())

    def set_latency(self, seconds: float) -> None:
        if self._server is not None:
            self._server.latency_s = seconds
            return
        self._conn.send(seconds)
        self._conn.recv()

    def close(self) -> None:
        if self._server is not None:
            self._server.stop()
        if self._process is not None:
            with contextlib.suppress(OSError):
                self._conn.send(None)
            self._process.join(timeout=10)
            if self._process.is_alive():
                self._process.terminate()
                self._process.join(timeout=5)
            self._conn.close()


# --- the run, through the API --------------------------------------------------------------------


def step_specs(args: argparse.Namespace) -> list[dict[str, Any]]:
    config: dict[str, Any] = {"count": args.count}
    if args.image_size:
        config["image_size"] = args.image_size
    return [
        {"kind": "image", "prompt": f"{{{{ base_prompt }}}} step {i}", "config": config}
        for i in range(args.steps)
    ]


async def make_job(client: httpx.AsyncClient, args: argparse.Namespace) -> str:
    series = await client.post("/api/series", json={"title": "Engine bench"})
    series.raise_for_status()
    job = await client.post(
        f"/api/series/{series.json()['id']}/jobs",
        json={"title": "Bench", "base_prompt": BASE_PROMPT},
    )
    job.raise_for_status()
    job_id: str = job.json()["id"]
    steps = await client.put(f"/api/jobs/{job_id}/steps", json={"steps": step_specs(args)})
    if steps.status_code != 200:
        raise RuntimeError(f"the steps were refused: {steps.text}")
    return job_id


def ms(start: str, end: str) -> float:
    return (dt.datetime.fromisoformat(end) - dt.datetime.fromisoformat(start)).total_seconds() * 1e3


async def run_once(
    client: httpx.AsyncClient, job_id: str, poll_s: float, expect_s: float = 0.0
) -> dict[str, Any]:
    """Start a run, wait for it to end, answer its timings from its own timestamps. The run
    is first read once `expect_s` (what it should take at best) has passed, then every
    `poll_s`: a read is served on the run's own event loop, and is not timed."""
    posted = time.perf_counter()
    response = await client.post(f"/api/jobs/{job_id}/runs")
    start_ms = (time.perf_counter() - posted) * 1e3
    if response.status_code != 202:
        raise RuntimeError(f"POST runs answered {response.status_code}: {response.text}")
    run_id = response.json()["id"]
    deadline = time.monotonic() + 300
    wait_s = max(poll_s, expect_s)
    while True:
        await asyncio.sleep(wait_s)
        wait_s = poll_s
        got = await client.get(f"/api/runs/{run_id}")
        got.raise_for_status()
        run: dict[str, Any] = got.json()
        if run["status"] in FINAL:
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"run {run_id} did not end: {run['status']}")
    if run["status"] != "succeeded":
        raise RuntimeError(f"run {run_id} {run['status']}: {run['error']}")
    steps = run["steps"]
    made = sum(len(s["image_ids"]) for s in steps)
    expected = sum(
        s["config"].get("count", 1) * (len(s["iterations"]) or 1)
        for s in steps
        if s["kind"] == "image"
    )
    if made != expected:
        raise RuntimeError(f"run {run_id} made {made} images, expected {expected}")
    return {
        "start_ms": start_ms,
        "wall_ms": ms(run["started_at"], run["finished_at"]),
        "queue_ms": ms(run["created_at"], run["started_at"]),
        "step_ms": [ms(s["started_at"], s["finished_at"]) for s in steps],
        # From the run's start to its first step, between steps, from the last step to the end.
        "lead_ms": ms(run["started_at"], steps[0]["started_at"]),
        "gaps_ms": [ms(a["finished_at"], b["started_at"]) for a, b in itertools.pairwise(steps)],
        "tail_ms": ms(steps[-1]["finished_at"], run["finished_at"]),
    }


async def run_many(
    client: httpx.AsyncClient, job_id: str, repeats: int, poll_s: float, expect_s: float = 0.0
) -> dict[str, Any]:
    return summary([await run_once(client, job_id, poll_s, expect_s) for _ in range(repeats)])


def summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians of the timings of `runs` (as `run_once` answers them)."""
    walls = [r["wall_ms"] for r in runs]
    gaps = [x for r in runs for x in r["gaps_ms"]]
    return {
        "walls_ms": [round(w, 1) for w in walls],
        "wall_ms": statistics.median(walls),
        "queue_ms": statistics.median(r["queue_ms"] for r in runs),
        "start_ms": statistics.median(r["start_ms"] for r in runs),
        "step_ms": statistics.median(x for r in runs for x in r["step_ms"]),
        "lead_ms": statistics.median(r["lead_ms"] for r in runs),
        "gap_ms": statistics.median(gaps) if gaps else 0.0,
        "tail_ms": statistics.median(r["tail_ms"] for r in runs),
    }


async def make_fanout_job(client: httpx.AsyncClient, items: int) -> str:
    """A job of one llm step listing `items` scenes (a structured answer; the fake server
    answers with as many as the schema's minItems asks) and one image step over them."""
    scenes = {
        "type": "object",
        "properties": {
            "scenes": {
                "type": "array",
                "minItems": items,
                "maxItems": items,
                "items": {"type": "string"},
            }
        },
        "required": ["scenes"],
    }
    steps = [
        {"kind": "llm", "prompt": "List scenes of {{ base_prompt }}", "config": {"schema": scenes}},
        {"kind": "image", "prompt": "{{ item }}", "for_each": "steps[0].json.scenes"},
    ]
    series = await client.post("/api/series", json={"title": "Engine bench, fan-out"})
    series.raise_for_status()
    job = await client.post(
        f"/api/series/{series.json()['id']}/jobs",
        json={"title": "Fan-out", "base_prompt": BASE_PROMPT},
    )
    job.raise_for_status()
    job_id: str = job.json()["id"]
    saved = await client.put(f"/api/jobs/{job_id}/steps", json={"steps": steps})
    if saved.status_code != 200:
        raise RuntimeError(f"the fan-out steps were refused: {saved.text}")
    return job_id


# --- the provider calls alone, and the image work alone -----------------------------------------


class BareCalls:
    """N concurrent image calls straight through the Gemini provider, under the same limit: the
    time the model calls themselves take, without the engine around them."""

    def __init__(self, settings: Settings, args: argparse.Namespace) -> None:
        self.settings = settings
        self.count = args.count
        self.image_size = args.image_size or None
        self.provider = GeminiProvider(
            api_key=None,
            base_url=settings.gemini_base_url,
            text_model=settings.text_model,
            image_model=settings.image_model,
            retry=RetryPolicy(max_attempts=1),
            timeout_s=settings.provider_timeout_s,
        )
        self.slots = asyncio.Semaphore(settings.image_concurrency)
        self.last_image = b""

    async def _one(self) -> None:
        async with self.slots:
            result = await self.provider.generate_image(
                prompt=f"{BASE_PROMPT} step 0", image_size=self.image_size
            )
        if not result.data:
            raise RuntimeError("the fake server answered without an image")
        self.last_image = result.data

    async def batch(self) -> float:
        started = time.perf_counter()
        async with asyncio.TaskGroup() as group:
            for _ in range(self.count):
                group.create_task(self._one())
        return (time.perf_counter() - started) * 1000

    async def warm(self) -> None:
        for _ in range(2):  # connections open, code paths warm
            await self.batch()

    async def measure(self, batches: int) -> tuple[float, float]:
        """Median wall time of a batch, and the CPU time this process spent per batch."""
        await self.warm()
        cpu = time.process_time()
        walls = [await self.batch() for _ in range(batches)]
        return statistics.median(walls), (time.process_time() - cpu) * 1000 / batches

    async def aclose(self) -> None:
        await self.provider.aclose()


async def side_by_side(
    client: httpx.AsyncClient, job_id: str, bare: BareCalls, repeats: int, poll_s: float
) -> tuple[dict[str, Any], float, float, float]:
    """Runs at L = 0, each followed by two batches of bare calls, so that both are measured
    under the same conditions: this machine's speed drifts by tens of percent over a minute,
    and a figure taken before the other would carry the drift into their difference. Answers
    the runs' summary, the CPU time per run, the median wall time of a bare batch and the CPU
    time per bare batch."""
    await bare.warm()
    runs: list[dict[str, Any]] = []
    walls: list[float] = []
    run_cpu = bare_cpu = 0.0
    for _ in range(repeats):
        cpu = time.process_time()
        runs.append(await run_once(client, job_id, poll_s))
        between = time.process_time()
        walls += [await bare.batch() for _ in range(2)]
        run_cpu += between - cpu
        bare_cpu += time.process_time() - between
    return (
        summary(runs),
        run_cpu * 1000 / repeats,
        statistics.median(walls),
        bare_cpu * 1000 / len(walls),
    )


def verify_ms(settings: Settings, data: bytes, repeats: int = 30) -> float:
    """The median time `verify_image` (decode, check, WebP thumbnail) takes for one image."""
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        verify_image(
            io.BytesIO(data),
            max_bytes=settings.max_upload_bytes,
            max_pixels=settings.max_image_pixels,
            thumbnail_px=settings.thumbnail_px,
        )
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


# --- one database --------------------------------------------------------------------------------


async def bench_database(
    label: str, database_url: str, data_dir: Path, server: FakeGemini, args: argparse.Namespace
) -> dict[str, Any]:
    settings = Settings(
        _env_file=None,
        data_dir=data_dir,
        database_url=database_url,
        storage_url=(data_dir / "storage").as_uri(),
        api_token=None,
        provider="gemini",
        gemini_base_url=server.base_url,
    )
    engine = make_engine(database_url)
    try:
        await upgrade(engine)
    finally:
        await engine.dispose()
    latency_ms = args.latency_ms
    waves = math.ceil(args.count / settings.image_concurrency)
    ideal_ms = args.steps * waves * latency_ms
    # The critical path of the fan-out job: the llm call, then the image calls in waves.
    fanout_ideal = latency_ms * (1 + math.ceil(args.fanout_items / settings.image_concurrency))
    poll_s = args.poll_ms / 1000
    say = f"[bold]{label}[/bold]:"
    app = serving_app(settings)  # the app `cog serve` answers with
    bare = BareCalls(settings, args)
    try:
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://bench", timeout=120
            ) as client,
        ):
            job_id = await make_job(client, args)
            server.set_latency(0.0)
            console.print(f"{say} warming up (2 runs at L = 0) …")
            await run_many(client, job_id, 2, poll_s)

            console.print(f"{say} overhead, {args.overhead_repeats} runs at L = 0 …")
            at_zero, run_cpu, bare_zero, bare_cpu = await side_by_side(
                client, job_id, bare, args.overhead_repeats, poll_s
            )
            cpu_per_step = run_cpu / args.steps
            image_ms = verify_ms(settings, bare.last_image)

            server.set_latency(latency_ms / 1000)
            console.print(
                f"{say} {args.repeats} runs at L = {latency_ms:g} ms, K = {args.steps}, "
                f"N = {args.count} …"
            )
            timed = await run_many(client, job_id, args.repeats, poll_s, ideal_ms / 1000)
            bare_at_l, _ = await bare.measure(args.repeats)

            fanout_job = await make_fanout_job(client, args.fanout_items)
            server.set_latency(0.0)
            await run_many(client, fanout_job, 1, poll_s)  # warm up
            server.set_latency(latency_ms / 1000)
            console.print(
                f"{say} {args.repeats} fan-out runs at L = {latency_ms:g} ms: 1 llm step "
                f"listing {args.fanout_items}, an image step over them …"
            )
            fanout = await run_many(client, fanout_job, args.repeats, poll_s, fanout_ideal / 1000)
            server.set_latency(0.0)
    finally:
        await bare.aclose()

    per_step_zero = at_zero["wall_ms"] / args.steps
    overhead = per_step_zero - bare_zero
    # At L = 0 there is no ideal to compare with: the ratios are left out (null), not NaN.
    ratio = timed["wall_ms"] / ideal_ms if ideal_ms else None
    floor_ms = args.steps * bare_at_l
    fanout_ratio = fanout["wall_ms"] / fanout_ideal if fanout_ideal else None
    return {
        "fanout_wall_ms": round(fanout["wall_ms"], 1),
        "fanout_walls_ms": fanout["walls_ms"],
        "fanout_ideal_ms": round(fanout_ideal, 1),
        "fanout_ratio": _rounded(fanout_ratio, 4),
        "fanout_ratio_ok": fanout_ratio is not None and fanout_ratio <= RATIO_TARGET,
        "fanout_image_step_ms": round(fanout["step_ms"], 1),
        "fanout_between_steps_ms": round(fanout["gap_ms"], 1),
        "image_concurrency": settings.image_concurrency,
        "wall_ms": round(timed["wall_ms"], 1),
        "ideal_ms": round(ideal_ms, 1),
        "ratio": _rounded(ratio, 4),
        "overhead_ms_per_step": round(overhead, 2),
        "ratio_ok": ratio is not None and ratio <= RATIO_TARGET,
        "overhead_ok": overhead < OVERHEAD_TARGET_MS,
        "walls_ms": timed["walls_ms"],
        "floor_ms": round(floor_ms, 1),
        "floor_ratio": round(floor_ms / ideal_ms, 4) if ideal_ms else None,
        "wall_over_floor": round(timed["wall_ms"] / floor_ms, 4),
        "step_ms": round(timed["step_ms"], 1),
        "step_beyond_latency_ms": round(timed["step_ms"] - waves * latency_ms, 1),
        "bare_calls_at_latency_ms": round(bare_at_l, 1),
        "run_lead_ms": round(timed["lead_ms"], 1),
        "between_steps_ms": round(timed["gap_ms"], 1),
        "run_tail_ms": round(timed["tail_ms"], 1),
        "queue_ms": round(timed["queue_ms"], 1),
        "start_answer_ms": round(at_zero["start_ms"], 2),
        "l0_wall_ms": round(at_zero["wall_ms"], 1),
        "l0_walls_ms": at_zero["walls_ms"],
        "l0_wall_per_step_ms": round(per_step_zero, 2),
        "l0_step_ms": round(at_zero["step_ms"], 2),
        "l0_between_steps_ms": round(at_zero["gap_ms"], 2),
        "l0_run_lead_ms": round(at_zero["lead_ms"], 2),
        "l0_run_tail_ms": round(at_zero["tail_ms"], 2),
        "l0_bare_calls_ms": round(bare_zero, 2),
        "l0_cpu_ms_per_step": round(cpu_per_step, 2),
        "l0_bare_calls_cpu_ms": round(bare_cpu, 2),
        "overhead_cpu_ms_per_step": round(cpu_per_step - bare_cpu, 2),
        "verify_ms_per_image": round(image_ms, 2),
        "verify_ms_per_step": round(args.count * image_ms, 2),
    }


# --- main ----------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--latency-ms", type=float, default=200.0, help="latency L of each call")
    parser.add_argument("--steps", type=int, default=5, help="image steps K in the job")
    parser.add_argument("--count", type=int, default=4, help="images N per step (1..8)")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs at latency L")
    parser.add_argument(
        "--overhead-repeats",
        type=int,
        default=30,
        help="timed runs at L = 0 (they are short; the figure varies from run to run, so many)",
    )
    parser.add_argument(
        "--image-size", choices=["1K", "2K", "4K"], default=None, help="default: the model's"
    )
    parser.add_argument(
        "--fanout-items", type=int, default=8, help="items M the fan-out job goes over (1..32)"
    )
    parser.add_argument(
        "--poll-ms", type=float, default=100.0, help="how often a run is read (not timed)"
    )
    parser.add_argument(
        "--server-in-process",
        action="store_true",
        help="run the fake server in a thread of this process (it then shares Cog's GIL)",
    )
    parser.add_argument("--postgres", action="store_true", help="PostgreSQL too, after SQLite")
    parser.add_argument("--pg-host", default=os.environ.get("COG_TEST_PG_HOST", "127.0.0.1"))
    parser.add_argument(
        "--pg-port", type=int, default=int(os.environ.get("COG_TEST_PG_PORT", "5432"))
    )
    parser.add_argument("--pg-user", default=os.environ.get("COG_TEST_PG_USER", "postgres"))
    args = parser.parse_args(argv)
    if not 1 <= args.count <= 8:
        parser.error("--count is 1..8")
    if not 1 <= args.fanout_items <= 32:
        parser.error("--fanout-items is 1..32")
    if min(args.steps, args.repeats, args.overhead_repeats) < 1 or args.latency_ms < 0:
        parser.error("--steps and the repeats are at least 1, --latency-ms at least 0")
    return args


def _rounded(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def report(results: dict[str, dict[str, Any]], args: argparse.Namespace) -> None:
    table = Table(
        title=(
            f"Cog engine: K = {args.steps} image steps of N = {args.count}, "
            f"L = {args.latency_ms:g} ms"
        ),
        title_justify="left",
    )
    table.add_column("figure")
    for label in results:
        table.add_column(label, justify="right")
    rows: list[tuple[str, str | None, str]] = [
        ("run wall time, median (ms)", "wall_ms", "{:.1f}"),
        ("ideal K x L (ms)", "ideal_ms", "{:.1f}"),
        (f"ratio (target <= {RATIO_TARGET})", "ratio", "{:.4f}"),
        ("floor: K x N bare calls at L (ms)", "floor_ms", "{:.1f}"),
        ("floor / ideal", "floor_ratio", "{:.4f}"),
        ("wall / floor", "wall_over_floor", "{:.4f}"),
        ("  a step (ms)", "step_ms", "{:.1f}"),
        ("  a step beyond L (ms)", "step_beyond_latency_ms", "{:.1f}"),
        ("  N bare calls at L (ms)", "bare_calls_at_latency_ms", "{:.1f}"),
        ("  run start to first step (ms)", "run_lead_ms", "{:.1f}"),
        ("  between steps (ms)", "between_steps_ms", "{:.1f}"),
        ("  last step to run end (ms)", "run_tail_ms", "{:.1f}"),
        ("  queued before the claim (ms)", "queue_ms", "{:.1f}"),
        ("L = 0: run wall per step (ms)", "l0_wall_per_step_ms", "{:.2f}"),
        ("L = 0: N bare calls (ms)", "l0_bare_calls_ms", "{:.2f}"),
        ("L = 0: POST runs answered in (ms)", "start_answer_ms", "{:.2f}"),
        (f"overhead per step (target < {OVERHEAD_TARGET_MS:g})", "overhead_ms_per_step", "{:.2f}"),
        ("  in CPU time of this process (ms)", "overhead_cpu_ms_per_step", "{:.2f}"),
        ("  verify + thumbnail of N images (ms)", "verify_ms_per_step", "{:.2f}"),
    ]
    concurrency = next(iter(results.values()))["image_concurrency"]
    rows += [
        (f"fan-out: 1 llm step, M = {args.fanout_items} images over it", None, ""),
        ("  run wall time, median (ms)", "fanout_wall_ms", "{:.1f}"),
        (f"  ideal (1 + ceil(M / {concurrency})) x L (ms)", "fanout_ideal_ms", "{:.1f}"),
        (f"  ratio (target <= {RATIO_TARGET})", "fanout_ratio", "{:.4f}"),
        ("  the image step (ms)", "fanout_image_step_ms", "{:.1f}"),
        ("  between the steps (ms)", "fanout_between_steps_ms", "{:.1f}"),
    ]
    for title, key, fmt in rows:
        if key is None:
            table.add_row(title, *("" for _ in results))
            continue
        table.add_row(
            title, *("-" if r[key] is None else fmt.format(r[key]) for r in results.values())
        )
    console.print(table)
    console.print(
        "overhead per step = run wall time at L = 0 / K - median time of N concurrent bare "
        "provider calls (same SDK, server, limit) at L = 0"
    )


async def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    # The SDK reads its key from the environment; the fake server takes any non-empty key.
    os.environ["GOOGLE_API_KEY"] = "dummy"
    for name in ("GEMINI_API_KEY", "GOOGLE_GEMINI_BASE_URL", "GOOGLE_GENAI_USE_VERTEXAI"):
        os.environ.pop(name, None)
    load_before = os.getloadavg()[0]
    results: dict[str, dict[str, Any]] = {}
    server = FakeGemini(in_process=args.server_in_process)
    try:
        with tempfile.TemporaryDirectory(prefix="cog-bench-engine-") as tmp:
            root = Path(tmp)
            results["sqlite"] = await bench_database(
                "sqlite",
                f"sqlite+aiosqlite:///{root / 'sqlite' / 'cog.db'}",
                root / "sqlite",
                server,
                args,
            )
            if args.postgres:
                async with throwaway_postgres(
                    args.pg_host, args.pg_port, args.pg_user, "cog_bench_engine"
                ) as url:
                    results["postgres"] = await bench_database(
                        "postgres", url, root / "postgres", server, args
                    )
    finally:
        server.close()
    report(results, args)
    figures = {
        "params": {
            "latency_ms": args.latency_ms,
            "steps": args.steps,
            "count": args.count,
            "repeats": args.repeats,
            "overhead_repeats": args.overhead_repeats,
            "image_size": args.image_size or "model default",
            "fanout_items": args.fanout_items,
            "server": "in process" if args.server_in_process else "own process",
            "python": sys.version.split()[0],
            "cpus": os.cpu_count(),
            "load_avg_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        },
        "targets": {
            "ratio_max": RATIO_TARGET,
            "fanout_ratio_max": RATIO_TARGET,
            "overhead_ms_per_step_max": OVERHEAD_TARGET_MS,
        },
        "definitions": {
            "wall_ms": "median over the repeats of the run's finished_at - started_at at L",
            "ideal_ms": "K x ceil(N / image_concurrency) x L",
            "ratio": "wall_ms / ideal_ms",
            "floor_ms": "K x median time of N concurrent bare provider calls at L",
            "overhead_ms_per_step": (
                "median run wall time at L = 0 divided by K, minus the median time of N "
                "concurrent bare GeminiProvider.generate_image calls (same SDK, server, "
                "concurrency limit) at L = 0, two batches made after each run"
            ),
            "overhead_cpu_ms_per_step": (
                "the same difference in CPU time of this process (all its threads; the fake "
                "server runs in another process): CPU per step of the runs at L = 0 minus CPU "
                "per batch of N bare calls; less sensitive to other load on the machine"
            ),
            "start_answer_ms": (
                "median time POST /api/jobs/{id}/runs takes to answer (the steps checked, the "
                "run and its steps written and queued) over the runs at L = 0"
            ),
            "verify_ms_per_step": "N x median time of verify_image on one of the server's images",
            "fanout_wall_ms": (
                "median run wall time at L of a job of an llm step listing M items (a structured "
                "answer) and an image step with for_each over them"
            ),
            "fanout_ideal_ms": "(1 + ceil(M / image_concurrency)) x L: its critical path",
            "fanout_ratio": "fanout_wall_ms / fanout_ideal_ms",
        },
        **results,
    }
    print(json.dumps(figures, separators=(",", ":")))
    return figures


if __name__ == "__main__":
    event_loop.run(main())
