"""Worker scaling: R runs of a job of 3 image steps, the fake Gemini server answering each call
after L ms, executed by 1, 2 and 4 `cog worker` processes of concurrency 1.

    uv run python bench/workers.py                      # R = 40, L = 300 ms, workers 1 2 4

For each worker count the script makes a fresh PostgreSQL database (`cog db upgrade`'s schema
and run queue), starts the workers as subprocesses and waits until each says it has started,
then starts the clock, queues the R runs through the API of an in-process app with
COG_EXECUTOR=queue (each `POST /api/jobs/{id}/runs` commits the run and its procrastinate job
together) and stops the clock when the last run has ended. Runs per minute = R / elapsed. The
ideal for one worker is one run per 3 x L (the steps run one after another). The scaling ratio
is the throughput of N workers over that of one. The fake server runs in a process of its own.

The last line printed is a JSON object with every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console

from cog.config import Settings
from cog.db import migrate
from cog.db import queue as queue_db
from cog.db.session import make_engine
from cog.testing.databases import throwaway_postgres
from cog.web.app import create_app

console = Console(stderr=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--latency-ms", type=int, default=300)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--pg-host", default=os.environ.get("COG_TEST_PG_HOST", "127.0.0.1"))
    parser.add_argument(
        "--pg-port", type=int, default=int(os.environ.get("COG_TEST_PG_PORT", "5432"))
    )
    parser.add_argument("--pg-user", default=os.environ.get("COG_TEST_PG_USER", "postgres"))
    return parser.parse_args(argv)


def clean_env() -> dict[str, str]:
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("COG_", "GEMINI_", "GOOGLE_", "PYTHONDONTWRITEBYTECODE"))
    }


def start_gemini(latency_ms: int, folder: Path) -> tuple[subprocess.Popen[bytes], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "cog.testing.gemini_server", "--latency-ms", str(latency_ms)],
        env=clean_env(),
        cwd=folder,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert proc.stdout is not None
    return proc, proc.stdout.readline().decode().strip()


def start_workers(
    n: int, env: dict[str, str], folder: Path
) -> list[tuple[subprocess.Popen[bytes], Path]]:
    started = []
    for i in range(n):
        log = folder / f"worker-{i}.log"
        with log.open("wb") as sink:
            proc = subprocess.Popen(
                [sys.executable, "-m", "cog", "worker", "--concurrency", "1"],
                env=env,
                cwd=folder,
                stdout=sink,
                stderr=subprocess.STDOUT,
            )
        started.append((proc, log))
    deadline = time.monotonic() + 60
    for proc, log in started:
        while "started (concurrency" not in log.read_text(errors="replace"):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"a worker did not start:\n{log.read_text(errors='replace')}")
            time.sleep(0.05)
    return started


def stop_workers(started: list[tuple[subprocess.Popen[bytes], Path]]) -> None:
    for proc, _log in started:
        proc.terminate()
    for proc, _log in started:
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


async def one_count(
    args: argparse.Namespace, n: int, gemini_url: str, folder: Path
) -> dict[str, Any]:
    async with throwaway_postgres(
        args.pg_host, args.pg_port, args.pg_user, "cog_bench_workers"
    ) as url:
        engine = make_engine(url)
        await migrate.upgrade(engine)
        await queue_db.install_schema(engine)
        await engine.dispose()
        env = {
            **clean_env(),
            "COG_DATA_DIR": str(folder / f"data-{n}"),
            "COG_DATABASE_URL": url,
            "COG_EXECUTOR": "queue",
            "COG_PROVIDER": "gemini",
            "COG_GEMINI_BASE_URL": gemini_url,
            "GOOGLE_API_KEY": "test",
            "PYTHONPYCACHEPREFIX": str(folder / "pycache"),
        }
        settings = Settings(
            _env_file=None,  # type: ignore[call-arg]
            data_dir=folder / f"data-{n}",
            database_url=url,
            executor="queue",
            provider="preview",
        )
        app = create_app(settings)
        started = start_workers(n, env, folder)
        try:
            async with app.router.lifespan_context(app):
                transport = httpx.ASGITransport(app=app)
                async with httpx.AsyncClient(transport=transport, base_url="http://b") as http:
                    series = (await http.post("/api/series", json={"title": "bench"})).json()
                    job = (
                        await http.post(
                            f"/api/series/{series['id']}/jobs",
                            json={"title": "three", "base_prompt": "a lighthouse"},
                        )
                    ).json()
                    steps = [
                        {"kind": "image", "prompt": f"{{{{ base_prompt }}}} {i}"} for i in range(3)
                    ]
                    await http.put(f"/api/jobs/{job['id']}/steps", json={"steps": steps})
                    begin = time.perf_counter()
                    ids = [
                        (await http.post(f"/api/jobs/{job['id']}/runs")).json()["id"]
                        for _ in range(args.runs)
                    ]
                    ended: dict[str, dict[str, Any]] = {}
                    while len(ended) < len(ids):
                        for run_id in ids:
                            if run_id in ended:
                                continue
                            run = (await http.get(f"/api/runs/{run_id}")).json()
                            if run["status"] in ("succeeded", "failed", "cancelled"):
                                ended[run_id] = run
                        await asyncio.sleep(0.05)
                    elapsed = time.perf_counter() - begin
        finally:
            stop_workers(started)
        statuses = sorted({r["status"] for r in ended.values()})
        per_worker = [
            log.read_text(errors="replace").count(" claimed by ") for _proc, log in started
        ]
        return {
            "workers": n,
            "runs": len(ended),
            "statuses": statuses,
            "elapsed_s": round(elapsed, 2),
            "runs_per_min": round(len(ended) / elapsed * 60, 1),
            "runs_per_worker": per_worker,
        }


async def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="cog-bench-workers-") as tmp:
        folder = Path(tmp)
        gemini, gemini_url = start_gemini(args.latency_ms, folder)
        try:
            results = []
            for n in args.workers:
                console.print(f"{args.runs} runs, {n} worker(s) of concurrency 1 …")
                result = await one_count(args, n, gemini_url, folder)
                console.print(
                    f"  {result['runs_per_min']} runs/min in {result['elapsed_s']} s "
                    f"(runs per worker {result['runs_per_worker']}, {result['statuses']})"
                )
                results.append(result)
        finally:
            gemini.terminate()
            gemini.wait()
    base = results[0]["runs_per_min"]
    ideal = 60 / (3 * args.latency_ms / 1000)
    figures: dict[str, Any] = {
        "runs": args.runs,
        "latency_ms": args.latency_ms,
        "ideal_runs_per_min_one_worker": round(ideal, 1),
        "results": results,
        "scaling": {str(r["workers"]): round(r["runs_per_min"] / base, 2) for r in results},
    }
    for r in results:
        ratio = figures["scaling"][str(r["workers"])]
        console.print(f"{r['workers']} worker(s): {r['runs_per_min']} runs/min, x{ratio}")
    print(json.dumps(figures))
    return figures


if __name__ == "__main__":
    asyncio.run(main())
