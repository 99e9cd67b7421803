"""Export benchmark: a zip of 2,000 images of 256 KB streamed by a real `cog serve` process.

    uv run python bench/export.py            # SQLite, then PostgreSQL
    uv run python bench/export.py --quick    # 200 images, to try the script

For each database it seeds a series of N images (rows inserted in bulk with Cog's own models,
each with a distinct, real PNG in the store), starts `cog serve` as a subprocess on that data,
exports a small series once to warm the process up, reads the process's peak resident memory
(VmHWM in /proc/<pid>/status), then downloads `GET /api/series/{id}/export` to a file and reads
the peak again. It reports the throughput (MB of zip per second, wall time from the request to
the last byte) and the growth of the peak: the export streams, so the growth should not depend
on the size of the zip (the target is under 100 MB). The zip is checked afterwards: every
entry's CRC, the manifest's count, and each file's SHA-256 against its row. PostgreSQL runs in
a throwaway database that the script creates and drops. The last line printed is a JSON object
with every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import hashlib
import io
import json
import os
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import zipfile
import zlib
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa
from PIL import Image as PILImage
from rich.console import Console
from rich.table import Table

from cog.db.migrate import upgrade
from cog.db.models import Image, Series
from cog.db.session import make_engine, make_sessionmaker
from cog.storage import make_store
from cog.storage.keys import image_key
from cog.testing.databases import throwaway_postgres

console = Console(highlight=False)
MB = 1024 * 1024
TARGET_GROWTH_MB = 100


# --- data ---------------------------------------------------------------------------------------


def noise_png(target_bytes: int) -> bytes:
    """A PNG of random noise (it does not compress), about `target_bytes` long."""
    side = max(8, int((target_bytes / 3) ** 0.5))
    image = PILImage.frombytes("RGB", (side, side), os.urandom(side * side * 3))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=0)
    return buffer.getvalue()


def numbered(png: bytes, index: int) -> bytes:
    """The same picture with a text chunk naming `index`: a distinct, valid PNG for each."""
    text = b"cog\x00" + str(index).encode()
    chunk = struct.pack(">I", len(text)) + b"tEXt" + text
    chunk += struct.pack(">I", zlib.crc32(b"tEXt" + text))
    end_of_header = 8 + 25  # signature, then the IHDR chunk
    return png[:end_of_header] + chunk + png[end_of_header:]


async def seed(database_url: str, storage_url: str, count: int, picture: bytes) -> dict[str, Any]:
    """A series of `count` images and a small one of 20 to warm up with."""
    started = time.perf_counter()
    engine = make_engine(database_url)
    store = make_store_for(storage_url)
    try:
        await upgrade(engine)
        sessions = make_sessionmaker(engine)
        ids = {"big": uuid.uuid4(), "warm": uuid.uuid4()}
        async with sessions.begin() as session:
            await session.execute(
                sa.insert(Series),
                [
                    {"id": ids["big"], "title": "Export bench", "description": "", "tags": []},
                    {"id": ids["warm"], "title": "Warm up", "description": "", "tags": []},
                ],
            )
        now = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=count)
        rows: list[dict[str, Any]] = []
        files: list[tuple[str, bytes]] = []
        for index in range(count + 20):
            image_id = uuid.uuid4()
            data = numbered(picture, index)
            key = image_key(image_id, "png")
            files.append((key, data))
            rows.append(
                {
                    "id": image_id,
                    "series_id": ids["big"] if index < count else ids["warm"],
                    "source": "upload",
                    "storage_path": key,
                    "original_filename": f"noise-{index:05d}.png",
                    "mime_type": "image/png",
                    "width": 1,
                    "height": 1,
                    "size_bytes": len(data),
                    "sha256": hashlib.sha256(data).hexdigest(),
                    "meta": {},
                    "tags": ["bench"],
                    "created_at": now + dt.timedelta(milliseconds=index),
                }
            )
        async with sessions.begin() as session:
            for start in range(0, len(rows), 1000):
                await session.execute(sa.insert(Image), rows[start : start + 1000])
        slots = asyncio.Semaphore(16)

        async def put(key: str, data: bytes) -> None:
            async with slots:
                await store.put(key, data)

        await asyncio.gather(*(put(key, data) for key, data in files))
    finally:
        await engine.dispose()
    return {
        "big": str(ids["big"]),
        "warm": str(ids["warm"]),
        "seed_seconds": round(time.perf_counter() - started, 2),
    }


def make_store_for(storage_url: str) -> Any:
    from cog.config import Settings

    return make_store(Settings(_env_file=None, storage_url=storage_url))  # type: ignore[call-arg]


# --- the server ---------------------------------------------------------------------------------


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def clean_env() -> dict[str, str]:
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("COG_", "GEMINI_", "GOOGLE_", "PYTHONDONTWRITEBYTECODE"))
    }


def start_serve(
    folder: Path, database_url: str, storage_url: str
) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {
        **clean_env(),
        "COG_DATA_DIR": str(folder),
        "COG_DATABASE_URL": database_url,
        "COG_STORAGE_URL": storage_url,
        "COG_PROVIDER": "preview",
    }
    log = (folder / "serve.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "cog", "serve", "--port", str(port)],
        env=env,
        cwd=folder,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"cog serve exited: {(folder / 'serve.log').read_text()}")
        try:
            httpx.get(f"{url}/cog/login", timeout=1)
            return proc, url
        except httpx.TransportError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("cog serve did not start")


def memory_kb(pid: int, field: str) -> int:
    """A line of /proc/<pid>/status, in kB: VmHWM (peak resident) or VmRSS (resident now)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} for process {pid}")


def download(url: str, target: Path, pid: int) -> dict[str, Any]:
    """Fetch the zip to `target`, sampling the server's resident memory as it goes."""
    samples: list[int] = []
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            samples.append(memory_kb(pid, "VmRSS"))
            done.wait(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    first_byte: float | None = None
    started = time.perf_counter()
    size = 0
    try:
        with httpx.stream("GET", url, timeout=300) as response, target.open("wb") as sink:
            response.raise_for_status()
            for chunk in response.iter_raw(1024 * 1024):
                if first_byte is None:
                    first_byte = time.perf_counter() - started
                sink.write(chunk)
                size += len(chunk)
    finally:
        done.set()
        sampler.join()
    seconds = time.perf_counter() - started
    return {
        "zip_bytes": size,
        "seconds": seconds,
        "first_byte_ms": round((first_byte or 0) * 1000, 1),
        "rss_max_kb": max(samples, default=0),
    }


def verify(path: Path, count: int) -> int:
    """Check the zip; answers the number of image files in it."""
    with zipfile.ZipFile(path) as archive:
        bad = archive.testzip()
        if bad is not None:
            raise RuntimeError(f"{bad} is damaged in the zip")
        listed = json.loads(archive.read("manifest.json"))["images"]
        if len(listed) != count or len(archive.namelist()) != count + 2:
            raise RuntimeError(f"{len(listed)} images in the manifest, expected {count}")
        for entry in listed:
            if hashlib.sha256(archive.read(entry["file"])).hexdigest() != entry["sha256"]:
                raise RuntimeError(f"{entry['file']} does not match its row")
        return len(listed)


# --- one database -------------------------------------------------------------------------------


def bench_database(
    label: str, database_url: str, folder: Path, args: argparse.Namespace, picture: bytes
) -> dict[str, Any]:
    folder.mkdir(parents=True, exist_ok=True)
    storage_url = (folder / "storage").as_uri()
    console.print(f"[bold]{label}[/bold]: seeding {args.images} images …")
    seeded = asyncio.run(seed(database_url, storage_url, args.images, picture))
    proc, url = start_serve(folder, database_url, storage_url)
    try:
        warm = download(f"{url}/api/series/{seeded['warm']}/export", folder / "warm.zip", proc.pid)
        verify(folder / "warm.zip", 20)
        before = memory_kb(proc.pid, "VmHWM")
        console.print(f"[bold]{label}[/bold]: exporting …")
        got = download(f"{url}/api/series/{seeded['big']}/export", folder / "big.zip", proc.pid)
        after = memory_kb(proc.pid, "VmHWM")
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    files = verify(folder / "big.zip", args.images) if not args.no_verify else None
    (folder / "big.zip").unlink()
    growth_mb = (after - before) / 1024
    return {
        "images": args.images,
        "verified_files": files,
        "zip_mb": round(got["zip_bytes"] / MB, 1),
        "seconds": round(got["seconds"], 2),
        "mb_per_s": round(got["zip_bytes"] / MB / got["seconds"], 1),
        "first_byte_ms": got["first_byte_ms"],
        "warm_up_seconds": round(warm["seconds"], 2),
        "vmhwm_before_mb": round(before / 1024, 1),
        "vmhwm_after_mb": round(after / 1024, 1),
        "peak_growth_mb": round(growth_mb, 1),
        "rss_max_mb": round(got["rss_max_kb"] / 1024, 1),
        "within_target": growth_mb < TARGET_GROWTH_MB,
        "seed_seconds": seeded["seed_seconds"],
    }


# --- main ---------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=2_000, help="images in the zip")
    parser.add_argument("--image-kb", type=int, default=256, help="size of each image, KB")
    parser.add_argument("--quick", action="store_true", help="a small run: 200 images")
    parser.add_argument("--no-verify", action="store_true", help="do not check the zip")
    parser.add_argument("--pg-host", default=os.environ.get("COG_TEST_PG_HOST", "127.0.0.1"))
    parser.add_argument(
        "--pg-port", type=int, default=int(os.environ.get("COG_TEST_PG_PORT", "5432"))
    )
    parser.add_argument("--pg-user", default=os.environ.get("COG_TEST_PG_USER", "postgres"))
    parser.add_argument("--no-postgres", action="store_true", help="SQLite only")
    args = parser.parse_args(argv)
    if args.quick:
        args.images = 200
    return args


def report(results: dict[str, dict[str, Any]]) -> None:
    table = Table(title="Cog export benchmark", title_justify="left")
    table.add_column("figure")
    for label in results:
        table.add_column(label, justify="right")
    rows = [
        ("images in the zip", "images", "{:,}"),
        ("zip size (MB)", "zip_mb", "{:.1f}"),
        ("download (s)", "seconds", "{:.2f}"),
        ("throughput (MB/s)", "mb_per_s", "{:.1f}"),
        ("first byte (ms)", "first_byte_ms", "{:.1f}"),
        ("peak memory before (MB)", "vmhwm_before_mb", "{:.1f}"),
        ("peak memory after (MB)", "vmhwm_after_mb", "{:.1f}"),
        (f"peak growth (MB, target < {TARGET_GROWTH_MB})", "peak_growth_mb", "{:.1f}"),
        ("largest resident seen (MB)", "rss_max_mb", "{:.1f}"),
        ("seeding (s)", "seed_seconds", "{:.2f}"),
    ]
    for title, key, fmt in rows:
        table.add_row(title, *(fmt.format(r[key]) for r in results.values()))
    console.print(table)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    picture = noise_png(args.image_kb * 1024)
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="cog-bench-export-") as tmp:
        root = Path(tmp)
        results["sqlite"] = bench_database(
            "sqlite",
            f"sqlite+aiosqlite:///{root / 'sqlite' / 'cog.db'}",
            root / "sqlite",
            args,
            picture,
        )
        if not args.no_postgres:

            async def with_postgres() -> dict[str, Any]:
                async with throwaway_postgres(
                    args.pg_host, args.pg_port, args.pg_user, "cog_bench_export"
                ) as url:
                    return await asyncio.to_thread(
                        bench_database, "postgres", url, root / "postgres", args, picture
                    )

            results["postgres"] = asyncio.run(with_postgres())
    report(results)
    figures = {
        "params": {
            "images": args.images,
            "image_kb": args.image_kb,
            "python": sys.version.split()[0],
            "cpus": os.cpu_count(),
        },
        **results,
    }
    print(json.dumps(figures, separators=(",", ":")))
    return figures


if __name__ == "__main__":
    main()
