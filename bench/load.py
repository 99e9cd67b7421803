"""Load benchmark: `cog serve` on loopback, 50 clients paging galleries and fetching thumbnails
for 30 s while images are uploaded and a job runs.

    uv run python -m bench.load                         # 50 clients, 30 s, SQLite
    uv run python -m bench.load --database postgres     # on a throwaway PostgreSQL database
    uv run python -m bench.load --quick                 # a few seconds, to try the script
    uv run python -m bench.load --workers 2             # only `cog serve --workers 2`

The script seeds a data dir with a few series holding N image rows between them (Cog's own
models, a small real PNG behind each, and the thumbnail an upload would have stored: those are
served warm). It starts the fake Gemini server (answering each call after L ms) and `cog serve`
as subprocesses, with a clean environment, and waits until the server answers.

The load comes from this process, over HTTP on loopback, with asyncio and an aiohttp session (and
connection) per client. The load shares the machine with the server, so what the client spends
is taken from the server: aiohttp's client spends about a quarter of the CPU httpx's does per
request (0.3 against 1.4 ms here), and half of what httpcore's does.

Each of the C client tasks opens a gallery at its newest page
(`GET /api/series/{id}/images?limit=60`) and scrolls, following the cursor, for 1 to 8 pages
(`--depth`; 0 scrolls to the last page) before opening the next series, wrapping around. For
each page it fetches the thumbnails of a few of its images (their `thumbnail_url`), and every
fourth page it fetches the same page again as the HTML fragment the gallery's infinite scroll
swaps in. Meanwhile one task uploads a noise PNG of about 1.5 MB every 0.5 s
into the first series, and another starts a run of a job of two image steps in the second
series, waits for it to end (polling `GET /api/runs/{id}`) and starts the next one. The images
the runs make land at the top of a gallery being paged; their thumbnails are made on first
request (as Cog does for generated images), and those first requests are counted apart
(`thumbnail_first`).

It does so for each `--workers` count in turn (by default 1, then one process per CPU), with a
fresh data dir and server each time, so one run shows side by side what a single process holds
and what the machine's CPUs do.

The load comes in two phases of `--seconds` each, against the same server:

- browsing: after each page (its thumbnails and HTML fetched), a client pauses 0.5 to 1.5 times
  `--think-ms` (1 s): 50 people scrolling through galleries quickly. The server has spare time,
  and a page's latency is what it costs to answer.
- saturated: no client ever pauses, so 50 requests are always waiting and the server never
  idles. A page's latency is then mostly its wait in line: with X requests answered per second,
  each of the 50 waits about 50 / X s (Little's law), however fast each answer is made. This
  phase measures throughput, and how evenly the wait is shared.

Every request's latency is recorded by kind, as are errors: any answer other than 2xx, and any
transport error or timeout. The script prints a table per kind (count, req/s, p50, p95, p99,
max, errors), the CPU time of the server, of this client and of the fake Gemini, the server's
peak RSS, how busy the machine was meanwhile (PostgreSQL's processes count as others), and
whether the targets were met, for each phase: zero errors, p99 of a gallery page under 100 ms.
The last line printed is a JSON object with every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import httpx
from rich.console import Console
from rich.table import Table

from bench.gallery import MB, noise_png, percentile, seed_gallery
from bench.workers import clean_env, start_gemini
from cog import event_loop
from cog.config import Settings
from cog.db.migrate import upgrade
from cog.db.session import make_engine
from cog.storage import make_store
from cog.testing.databases import throwaway_postgres

console = Console(stderr=False, highlight=False)
ENDED = ("succeeded", "failed", "cancelled")
KINDS = ("page", "thumbnail", "thumbnail_first", "html", "upload", "run")
PAGE_TARGET_MS = 100.0
# Browsing: each client pauses after a page, as a person looking at it would. Saturated: no
# client ever pauses, so the server always has 50 requests waiting.
PHASES = ("browsing", "saturated")


# --- options ------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=50, help="concurrent gallery clients")
    parser.add_argument("--seconds", type=float, default=30.0, help="how long the load lasts")
    parser.add_argument("--images", type=int, default=6_000, help="image rows, all series")
    parser.add_argument("--series", type=int, default=3, help="series the images are in")
    parser.add_argument("--page", type=int, default=60, help="images per gallery page")
    parser.add_argument("--thumbs", type=int, default=6, help="thumbnails fetched per page")
    parser.add_argument(
        "--depth",
        type=int,
        default=8,
        help="a client scrolls 1 to N pages of a gallery, then opens the next (0: to the end)",
    )
    parser.add_argument(
        "--think-ms",
        type=float,
        default=1000.0,
        help="in the browsing phase, a client's pause after each page, on average",
    )
    parser.add_argument(
        "--phases",
        default=",".join(PHASES),
        help="which phases, in order: browsing (clients pause), saturated (they do not)",
    )
    parser.add_argument(
        "--html-every", type=int, default=4, help="every Nth page is also fetched as HTML (0: none)"
    )
    parser.add_argument("--upload-mb", type=float, default=1.5, help="size of each upload, MB")
    parser.add_argument("--upload-every", type=float, default=0.5, help="seconds between uploads")
    parser.add_argument("--latency-ms", type=int, default=300, help="the fake Gemini's latency")
    parser.add_argument("--steps", type=int, default=2, help="image steps in the job")
    parser.add_argument("--database", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument(
        "--workers",
        default=",".join(str(n) for n in sorted({1, os.cpu_count() or 1})),
        help="`cog serve --workers`, a comma-separated list: each count is measured in turn "
        "(default: 1, and one per CPU)",
    )
    parser.add_argument("--seed", type=int, default=7, help="seed of the clients' choices")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a tiny run: 5 clients for 3 s, 300 images, small uploads, 50 ms latency",
    )
    parser.add_argument("--pg-host", default=os.environ.get("COG_TEST_PG_HOST", "127.0.0.1"))
    parser.add_argument(
        "--pg-port", type=int, default=int(os.environ.get("COG_TEST_PG_PORT", "5432"))
    )
    parser.add_argument("--pg-user", default=os.environ.get("COG_TEST_PG_USER", "postgres"))
    args = parser.parse_args(argv)
    args.phases = [name.strip() for name in args.phases.split(",") if name.strip()]
    try:
        args.workers = [int(n) for n in args.workers.split(",") if n.strip()]
    except ValueError:
        args.workers = []
    if not args.workers or min(args.workers) < 1:
        parser.error("--workers: a comma-separated list of process counts, such as 1,2")
    if not args.phases or set(args.phases) - set(PHASES):
        parser.error(f"--phases: a comma-separated list of {', '.join(PHASES)}")
    if args.quick:
        args.clients, args.seconds, args.images, args.series = 5, 3.0, 300, 2
        args.upload_mb, args.latency_ms = 0.1, 50
    return args


# --- processes ----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    log: Path
    base_url: str

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def start_server(env: dict[str, str], folder: Path, workers: int = 1) -> Server:
    """`cog serve` on a free loopback port; answers once it serves the API."""
    port = free_port()
    log = folder / "serve.log"
    command = [sys.executable, "-m", "cog", "serve", "--port", str(port), "--workers", str(workers)]
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            command,
            env=env,
            cwd=folder,  # no .env file of the repository is read
            stdout=sink,
            stderr=subprocess.STDOUT,
        )
    server = Server(proc, log, f"http://127.0.0.1:{port}")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"cog serve exited with {proc.returncode}:\n{server.output()}")
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"{server.base_url}/api/series", timeout=1).status_code == 200:
                return server
        time.sleep(0.1)
    stop(proc)
    raise SystemExit(f"cog serve did not answer within 60 s:\n{server.output()}")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


def log_problems(text: str) -> list[str]:
    """Lines of the server's log that say something went wrong (tracebacks, errors, locks)."""
    marks = ("Traceback", "ERROR", "database is locked", "Exception")
    return [line.strip()[:300] for line in text.splitlines() if any(m in line for m in marks)]


# --- CPU and memory (Linux /proc; None elsewhere) -----------------------------------------------

TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def process_cpu_s(pid: int) -> float | None:
    """User + system CPU time a process has used so far."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / TICK


def process_tree(pid: int) -> list[int]:
    """The process and its descendants (`cog serve --workers N` answers from child processes)."""
    parents: dict[int, list[int]] = defaultdict(list)
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        parents[ppid].append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(parents.get(current, []))
    return found


def tree_cpu_s(pid: int) -> float | None:
    """CPU time of a process and its live descendants."""
    times = [process_cpu_s(p) for p in process_tree(pid)]
    known = [t for t in times if t is not None]
    return sum(known) if known else None


def peak_rss_mb(pid: int) -> float | None:
    """Peak resident memory of a process and its descendants, added up."""
    total = 0
    for member in process_tree(pid):
        try:
            status = Path(f"/proc/{member}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                total += int(line.split()[1])
    return round(total / 1024, 1) if total else None


def machine_ticks() -> tuple[int, int] | None:
    """(busy, total) CPU ticks of the whole machine since boot, all CPUs."""
    try:
        first = Path("/proc/stat").read_text().splitlines()[0].split()
    except OSError:
        return None
    user, nice, system, idle, iowait, irq, softirq, steal = (int(v) for v in first[1:9])
    busy = user + nice + system + irq + softirq + steal
    return busy, busy + idle + iowait


def load_average() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


@dataclass
class Usage:
    """CPU used by each process of the benchmark and by the machine, at one moment."""

    server: float | None
    gemini: float | None
    client: float
    machine: tuple[int, int] | None

    @classmethod
    def now(cls, server_pid: int, gemini_pid: int) -> Usage:
        return cls(
            tree_cpu_s(server_pid),
            process_cpu_s(gemini_pid),
            time.process_time(),
            machine_ticks(),
        )


def usage_between(before: Usage, after: Usage, seconds: float) -> dict[str, Any]:
    def spent(a: float | None, b: float | None) -> dict[str, float | None]:
        if a is None or b is None:
            return {"cpu_s": None, "cpu_percent": None}
        return {"cpu_s": round(b - a, 2), "cpu_percent": round((b - a) / seconds * 100, 1)}

    figures: dict[str, Any] = {
        "server": spent(before.server, after.server),
        "client": spent(before.client, after.client),
        "gemini": spent(before.gemini, after.gemini),
    }
    cpus = os.cpu_count() or 1
    machine: dict[str, Any] = {"cpus": cpus, "busy_percent": None, "others_percent": None}
    if before.machine and after.machine:
        busy = after.machine[0] - before.machine[0]
        total = after.machine[1] - before.machine[1]
        # Percent of the whole machine (all CPUs = 100); "others" is what no process of ours used.
        machine["busy_percent"] = round(busy / total * 100, 1) if total else None
        ours = sum(figures[name]["cpu_s"] or 0.0 for name in ("server", "client", "gemini"))
        if machine["busy_percent"] is not None:
            others = machine["busy_percent"] - ours / (seconds * cpus) * 100
            machine["others_percent"] = round(max(0.0, others), 1)
    figures["machine"] = machine
    return figures


# --- the load -----------------------------------------------------------------------------------


@dataclass
class Recorder:
    """Latency of every request by kind, and the errors with a sample of their messages."""

    deadline: float = 0.0
    timings: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    errors: Counter[str] = field(default_factory=Counter)
    messages: Counter[str] = field(default_factory=Counter)
    thumbnailed: set[str] = field(default_factory=set)
    runs: list[tuple[str, float]] = field(default_factory=list)  # (status, seconds)
    uploaded: int = 0

    def running(self) -> bool:
        return time.perf_counter() < self.deadline

    def fail(self, kind: str, message: str) -> None:
        self.errors[kind] += 1
        self.messages[f"{kind}: {message}"] += 1

    async def call(
        self, kind: str, http: aiohttp.ClientSession, method: str, url: str, **kwargs: Any
    ) -> Answer | None:
        """The answer when it is a 2xx; else None, with the error recorded."""
        started = time.perf_counter()
        try:
            answer = await fetch(http, method, url, **kwargs)
        except (aiohttp.ClientError, TimeoutError) as exc:
            self.timings[kind].append(time.perf_counter() - started)
            self.fail(kind, f"{method} {url.split('?')[0]}: {type(exc).__name__} {exc}"[:300])
            return None
        self.timings[kind].append(time.perf_counter() - started)
        if not 200 <= answer.status < 300:
            detail = answer.body[:200].decode(errors="replace").replace("\n", " ")
            self.fail(kind, f"{method} {url.split('?')[0]}: {answer.status} {detail}")
            return None
        return answer


@dataclass
class Answer:
    """A whole answer: the body is read before the latency is taken."""

    status: int
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


async def fetch(http: aiohttp.ClientSession, method: str, url: str, **kwargs: Any) -> Answer:
    async with http.request(method, url, **kwargs) as response:
        return Answer(response.status, await response.read())


async def fetch_ok(http: aiohttp.ClientSession, method: str, url: str, **kwargs: Any) -> Answer:
    """`fetch` for the set-up, where any answer but a 2xx ends the benchmark."""
    answer = await fetch(http, method, url, **kwargs)
    if not 200 <= answer.status < 300:
        raise SystemExit(f"{method} {url}: {answer.status} {answer.body[:300]!r}")
    return answer


async def browse(
    rec: Recorder,
    http: aiohttp.ClientSession,
    series_ids: list[str],
    index: int,
    args: argparse.Namespace,
    think_ms: float,
) -> None:
    """One client: open a gallery at its newest page and scroll (follow the cursor) for a few
    pages, fetching some thumbnails of each page and now and then the page as HTML; then open
    the next series."""
    rng = random.Random(args.seed * 1000 + index)

    def scroll_depth() -> int | None:
        return rng.randint(1, args.depth) if args.depth else None  # None: to the last page

    if think_ms:
        # People do not all arrive at the same moment: each client starts somewhere within
        # its first pause, rather than all 50 asking at once when the phase begins.
        await asyncio.sleep(rng.uniform(0, think_ms / 1000))
    lap = index
    cursor: str | None = None
    depth = scroll_depth()
    scrolled = 0
    while rec.running():
        series_id = series_ids[lap % len(series_ids)]
        params = {"limit": args.page, **({"cursor": cursor} if cursor else {})}
        response = await rec.call(
            "page", http, "GET", f"/api/series/{series_id}/images", params=params
        )
        if response is None:
            cursor = None
            await asyncio.sleep(0.1)  # no tight loop against a failing server
            continue
        body = response.json()
        items = body["items"]
        for item in rng.sample(items, min(args.thumbs, len(items))):
            if not rec.running():
                break
            kind = "thumbnail"
            if item["source"] == "generated" and item["id"] not in rec.thumbnailed:
                kind = "thumbnail_first"  # made on this request
            rec.thumbnailed.add(item["id"])
            await rec.call(kind, http, "GET", item["thumbnail_url"])
        if args.html_every and scrolled % args.html_every == 0 and rec.running():
            await rec.call(
                "html",
                http,
                "GET",
                f"/cog/series/{series_id}/images",
                params={"cursor": cursor} if cursor else None,
                headers={"HX-Request": "true"},
            )
        scrolled += 1
        cursor = body["next_cursor"]
        if cursor is None or scrolled == depth:
            lap, cursor, depth, scrolled = lap + 1, None, scroll_depth(), 0
        if think_ms:
            pause = rng.uniform(0.5, 1.5) * think_ms / 1000
            await asyncio.sleep(max(0.0, min(pause, rec.deadline - time.perf_counter())))


async def upload(
    rec: Recorder, http: aiohttp.ClientSession, series_id: str, files: list[bytes], every: float
) -> None:
    """One image every `every` seconds (or as fast as the server takes them, if slower)."""
    url = f"/api/series/{series_id}/images"
    next_at = time.perf_counter()
    count = 0
    while rec.running():
        data = files[count % len(files)]
        count += 1
        form = aiohttp.FormData()
        form.add_field("files", data, filename=f"load-{count:04d}.png", content_type="image/png")
        if await rec.call("upload", http, "POST", url, data=form):
            rec.uploaded += 1
        next_at += every
        await asyncio.sleep(max(0.0, min(next_at, rec.deadline) - time.perf_counter()))


async def run_jobs(rec: Recorder, http: aiohttp.ClientSession, job_id: str) -> None:
    """Start a run, wait for it to end, start the next; the one going at the end is left."""
    while rec.running():
        started = time.perf_counter()
        response = await rec.call("run", http, "POST", f"/api/jobs/{job_id}/runs")
        if response is None:
            await asyncio.sleep(0.5)
            continue
        run_id = response.json()["id"]
        while rec.running():
            await asyncio.sleep(0.25)
            polled = await rec.call("run", http, "GET", f"/api/runs/{run_id}")
            if polled is None:
                continue
            run = polled.json()
            if run["status"] in ENDED:
                rec.runs.append((run["status"], time.perf_counter() - started))
                if run["status"] != "succeeded":
                    rec.fail("run", f"run {run_id} {run['status']}: {run['error']}")
                break


def kind_figures(rec: Recorder, seconds: float) -> dict[str, dict[str, Any]]:
    figures: dict[str, dict[str, Any]] = {}
    for kind in KINDS:
        values = rec.timings.get(kind, [])
        figures[kind] = {
            "count": len(values),
            "rps": round(len(values) / seconds, 1),
            "p50_ms": round(percentile(values, 50) * 1000, 1) if values else None,
            "p95_ms": round(percentile(values, 95) * 1000, 1) if values else None,
            "p99_ms": round(percentile(values, 99) * 1000, 1) if values else None,
            "max_ms": round(max(values) * 1000, 1) if values else None,
            "errors": rec.errors[kind],
        }
    return figures


async def prepare_job(http: aiohttp.ClientSession, series_id: str, steps: int) -> str:
    job = await fetch_ok(
        http,
        "POST",
        f"/api/series/{series_id}/jobs",
        json={"title": "Load", "base_prompt": "a lighthouse in a storm"},
    )
    job_id: str = job.json()["id"]
    prompts = [f"{{{{ base_prompt }}}}, view {i + 1}" for i in range(steps)]
    body = {"steps": [{"kind": "image", "prompt": prompt} for prompt in prompts]}
    await fetch_ok(http, "PUT", f"/api/jobs/{job_id}/steps", json=body)
    return job_id


async def warm(http: aiohttp.ClientSession, series_ids: list[str], page: int) -> None:
    """Each query shape once before the clock starts (compiled statements, templates)."""
    for series_id in series_ids:
        url = f"/api/series/{series_id}/images"
        body = (await fetch_ok(http, "GET", url, params={"limit": page})).json()
        if body["next_cursor"]:
            params = {"limit": page, "cursor": body["next_cursor"]}
            await fetch_ok(http, "GET", url, params=params)
        await fetch_ok(http, "GET", f"/cog/series/{series_id}/images")
        if body["items"]:
            await fetch_ok(http, "GET", body["items"][0]["thumbnail_url"])


async def drive(
    args: argparse.Namespace,
    server: Server,
    gemini_pid: int,
    series_ids: list[str],
    files: list[bytes],
) -> dict[str, Any]:
    # Each client, the uploader and the runs have a session of their own, as browsers would:
    # one pool shared by all would have its bookkeeping grow with the clients.
    def new_client() -> aiohttp.ClientSession:
        return aiohttp.ClientSession(
            base_url=server.base_url,
            connector=aiohttp.TCPConnector(limit=2),
            timeout=aiohttp.ClientTimeout(total=60),
        )

    async with contextlib.AsyncExitStack() as stack:
        clients = [await stack.enter_async_context(new_client()) for _ in range(args.clients + 2)]
        http = clients[-1]
        runs_in = series_ids[1 % len(series_ids)]
        job_id = await prepare_job(http, runs_in, args.steps)
        await warm(http, series_ids, args.page)
        thumbnailed: set[str] = set()  # across the phases: a thumbnail is made once
        phases: dict[str, dict[str, Any]] = {}
        for name in args.phases:
            think_ms = args.think_ms if name == "browsing" else 0.0
            console.print(
                f"{name}: {args.clients} clients for {args.seconds:g} s, "
                + (f"pausing {think_ms:g} ms after a page on average" if think_ms else "no pauses")
            )
            rec = Recorder(thumbnailed=thumbnailed)
            phases[name] = await load_phase(
                rec, args, clients, server, gemini_pid, series_ids, files, job_id, think_ms
            )
    return phases


async def load_phase(
    rec: Recorder,
    args: argparse.Namespace,
    clients: list[aiohttp.ClientSession],
    server: Server,
    gemini_pid: int,
    series_ids: list[str],
    files: list[bytes],
    job_id: str,
    think_ms: float,
) -> dict[str, Any]:
    """`args.seconds` of load: the clients browse (pausing `think_ms` on average after each
    page) while the uploads and the runs go on."""
    load_before = load_average()
    before = Usage.now(server.proc.pid, gemini_pid)
    started = time.perf_counter()
    rec.deadline = started + args.seconds
    await asyncio.gather(
        *(browse(rec, clients[i], series_ids, i, args, think_ms) for i in range(args.clients)),
        upload(rec, clients[-2], series_ids[0], files, args.upload_every),
        run_jobs(rec, clients[-1], job_id),
    )
    elapsed = time.perf_counter() - started
    after = Usage.now(server.proc.pid, gemini_pid)
    kinds = kind_figures(rec, elapsed)
    total = sum(k["count"] for k in kinds.values())
    errors = sum(k["errors"] for k in kinds.values())
    run_seconds = [s for _status, s in rec.runs]
    figures = {
        "think_ms": think_ms,
        "elapsed_s": round(elapsed, 2),
        "requests": total,
        "rps": round(total / elapsed, 1),
        "errors": errors,
        "kinds": kinds,
        "error_samples": [
            f"{message} (x{count})" for message, count in rec.messages.most_common(10)
        ],
        "uploads": rec.uploaded,
        "runs": {
            "ended": len(rec.runs),
            "succeeded": sum(status == "succeeded" for status, _s in rec.runs),
            "wall_p50_s": round(percentile(run_seconds, 50), 2) if run_seconds else None,
            "wall_max_s": round(max(run_seconds), 2) if run_seconds else None,
        },
        **usage_between(before, after, elapsed),
        "load_average": {"before": load_before, "after": load_average()},
    }
    figures["targets"] = targets(figures)
    return figures


# --- one database -------------------------------------------------------------------------------


async def bench(
    args: argparse.Namespace, workers: int, database_url: str, root: Path, files: list[bytes]
) -> dict[str, Any]:
    data_dir = root / "data"
    settings = Settings(
        _env_file=None,
        data_dir=data_dir,
        database_url=database_url,
        api_token=None,
    )
    engine = make_engine(database_url)
    series_ids: list[str] = []
    seed_started = time.perf_counter()
    try:
        await upgrade(engine)
        store = make_store(settings)
        console.print(
            f"Seeding {args.images:,} images in {args.series} series ({args.database}), "
            "with their thumbnails …"
        )
        for i in range(args.series):
            count = args.images // args.series + (i < args.images % args.series)
            series_id, _seconds = await seed_gallery(
                engine, store, count, title=f"Gallery {i + 1}", thumbnail_px=settings.thumbnail_px
            )
            series_ids.append(str(series_id))
    finally:
        await engine.dispose()
    seed_s = time.perf_counter() - seed_started
    gemini, gemini_url = start_gemini(args.latency_ms, root)
    try:
        env = {
            **clean_env(),
            "COG_DATA_DIR": str(data_dir),
            "COG_DATABASE_URL": database_url,
            "COG_THUMBNAIL_PX": str(settings.thumbnail_px),
            "COG_PROVIDER": "gemini",
            "COG_GEMINI_BASE_URL": gemini_url,
            "GOOGLE_API_KEY": "test",
        }
        server = start_server(env, root, workers)
        try:
            console.print(
                f"`cog serve --workers {workers}` on {server.base_url}; all along, an upload every "
                f"{args.upload_every:g} s and runs of {args.steps} image steps "
                f"(Gemini latency {args.latency_ms} ms) …"
            )
            phases = await drive(args, server, gemini.pid, series_ids, files)
            serving: dict[str, Any] = {"peak_rss_mb": peak_rss_mb(server.proc.pid)}
        finally:
            stop(server.proc)
        serving["log_problems"] = log_problems(server.output())[:10]
    finally:
        stop(gemini)
    return {"phases": phases, "server": serving, "seed_seconds": round(seed_s, 2)}


# --- report -------------------------------------------------------------------------------------


def targets(phase: dict[str, Any]) -> dict[str, bool]:
    page_p99 = phase["kinds"]["page"]["p99_ms"]
    return {
        "zero_errors": phase["errors"] == 0,
        "page_p99_under_100ms": page_p99 is not None and page_p99 < PAGE_TARGET_MS,
    }


def processes_text(workers: str | int) -> str:
    return f"{workers} process" + ("es" if int(workers) > 1 else "")


def report(figures: dict[str, Any]) -> None:
    for workers, measured in figures["processes"].items():
        for name, phase in measured["phases"].items():
            report_phase(f"{processes_text(workers)}, {name}", phase, figures["params"])
        for line in measured["server"]["log_problems"]:
            console.print(f"  server log: {line}", markup=False, soft_wrap=True)
    verdict = {True: "[green]met[/green]", False: "[red]not met[/red]"}
    for workers, measured in figures["processes"].items():
        for name, phase in measured["phases"].items():
            met = phase["targets"]
            page_p99 = phase["kinds"]["page"]["p99_ms"]
            console.print(
                f"{processes_text(workers)}, {name}: target zero errors "
                f"{verdict[met['zero_errors']]} ({phase['errors']}); target p99 of a gallery "
                f"page under {PAGE_TARGET_MS:.0f} ms {verdict[met['page_p99_under_100ms']]} "
                f"({page_p99} ms)"
            )
    summary = {
        f"{processes_text(workers)}, {name}": f"{phase['rps']:.0f} req/s, page p99 "
        f"{phase['kinds']['page']['p99_ms']} ms"
        for workers, measured in figures["processes"].items()
        for name, phase in measured["phases"].items()
    }
    if len(figures["processes"]) > 1:
        console.print("side by side: " + "; ".join(f"{k}: {v}" for k, v in summary.items()))


def report_phase(name: str, figures: dict[str, Any], params: dict[str, Any]) -> None:
    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value:.1f}"

    pause = f"pausing {figures['think_ms']:g} ms a page" if figures["think_ms"] else "no pauses"
    table = Table(
        title=f"{name}: {params['clients']} clients, {pause} ({params['database']}; ms)",
        title_justify="left",
    )
    table.add_column("kind", no_wrap=True)
    for column in ("count", "req/s", "p50", "p95", "p99", "max", "errors"):
        table.add_column(column, justify="right")
    for kind, k in figures["kinds"].items():
        table.add_row(
            kind,
            f"{k['count']:,}",
            f"{k['rps']:.1f}",
            ms(k["p50_ms"]),
            ms(k["p95_ms"]),
            ms(k["p99_ms"]),
            ms(k["max_ms"]),
            str(k["errors"]),
        )
    table.add_row(
        "all",
        f"{figures['requests']:,}",
        f"{figures['rps']:.1f}",
        "",
        "",
        "",
        "",
        str(figures["errors"]),
        style="bold",
    )
    console.print(table)

    def cpu(part_name: str) -> str:
        part = figures[part_name]
        if part["cpu_s"] is None:
            return "n/a"
        return f"{part['cpu_s']:.1f} s CPU ({part['cpu_percent']:.0f}% of one CPU)"

    machine = figures["machine"]
    postgres = " (PostgreSQL's among them)" if params["database"] == "postgres" else ""
    runs = figures["runs"]
    lines = [
        f"{figures['rps']:.0f} requests/s over {figures['elapsed_s']:.1f} s; "
        f"{figures['uploads']} uploads, {runs['ended']} runs ended "
        f"({runs['succeeded']} succeeded, median {runs['wall_p50_s']} s)",
        f"server: {cpu('server')}; client (this process): {cpu('client')}; "
        f"fake Gemini: {cpu('gemini')}",
        f"machine: {machine['cpus']} CPUs, {machine['busy_percent']}% busy, "
        f"{machine['others_percent']}% by other processes{postgres}; load average "
        f"{figures['load_average']['before']} -> {figures['load_average']['after']}",
    ]
    for line in lines:
        console.print(line, markup=False)
    for sample in figures["error_samples"]:
        console.print(f"  error: {sample}", markup=False, soft_wrap=True)


# --- main ---------------------------------------------------------------------------------------


async def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    # A pool of distinct uploads, made before any clock starts; they are sent in turn.
    files = [noise_png(int(args.upload_mb * MB)) for _ in range(8)]
    processes: dict[str, Any] = {}
    for workers in args.workers:  # each on data of its own, seeded alike
        with tempfile.TemporaryDirectory(prefix="cog-bench-load-") as tmp:
            root = Path(tmp)
            if args.database == "postgres":
                async with throwaway_postgres(
                    args.pg_host, args.pg_port, args.pg_user, "cog_bench_load"
                ) as url:
                    processes[str(workers)] = await bench(args, workers, url, root, files)
            else:
                url = f"sqlite+aiosqlite:///{root / 'data' / 'cog.db'}"
                processes[str(workers)] = await bench(args, workers, url, root, files)
    figures: dict[str, Any] = {
        "params": {
            "database": args.database,
            "workers": args.workers,
            "clients": args.clients,
            "seconds": args.seconds,
            "images": args.images,
            "series": args.series,
            "page": args.page,
            "thumbs_per_page": args.thumbs,
            "depth": args.depth,
            "think_ms": args.think_ms,
            "phases": args.phases,
            "html_every": args.html_every,
            "upload_mb": args.upload_mb,
            "upload_every_s": args.upload_every,
            "gemini_latency_ms": args.latency_ms,
            "steps": args.steps,
            "python": sys.version.split()[0],
            "cpus": os.cpu_count(),
        },
        "processes": processes,
    }
    figures["targets"] = {
        "zero_errors": all(
            phase["targets"]["zero_errors"]
            for measured in processes.values()
            for phase in measured["phases"].values()
        ),
        "page_p99_under_100ms": {
            workers: {
                name: phase["targets"]["page_p99_under_100ms"]
                for name, phase in measured["phases"].items()
            }
            for workers, measured in processes.items()
        },
    }
    report(figures)
    print(json.dumps(figures, separators=(",", ":")))
    return figures


if __name__ == "__main__":
    event_loop.run(main())  # the loop `cog serve` runs on too, so the client is lean
