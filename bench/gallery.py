"""Gallery benchmark: page through a series of 10,000 images, then upload 200 images of 2 MB.

    uv run python bench/gallery.py            # the full run (SQLite, then PostgreSQL)
    uv run python bench/gallery.py --quick    # a small run, to try the script

For each database it builds a series of N image rows (inserted in bulk with Cog's own models)
with a small real file in the store behind each, then pages through
`GET /api/series/{id}/images?limit=100` from the first page to the last through the app
in-process (httpx's ASGI transport) and reports the median and p95 time of a page, and the
median of the first ten pages against the last ten (flat keyset pagination keeps that ratio near
1). It tags every image of the series with one batch request (`POST /api/images/batch` with
a filter), then untags them, and reports both times. Then it uploads distinct random-noise
PNGs through the upload endpoint in batches and reports the time and throughput. PostgreSQL
runs in a throwaway database that the script creates and drops. The last line printed is a JSON
object with every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import hashlib
import io
import json
import math
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa
from PIL import Image as PILImage
from rich.console import Console
from rich.table import Table
from sqlalchemy.engine import Connection, ExecutionContext
from sqlalchemy.ext.asyncio import AsyncEngine

from cog.config import Settings
from cog.db.migrate import upgrade
from cog.db.models import Image, Series
from cog.db.session import make_engine, make_sessionmaker
from cog.imaging import thumbnail_from_bytes
from cog.storage import ObjectStore, make_store
from cog.storage.keys import image_key, thumbnail_key
from cog.testing.databases import throwaway_postgres
from cog.web.app import create_app

console = Console(stderr=False, highlight=False)
MB = 1024 * 1024
LIST_PATH = "/api/series/{id}/images"


# --- data ---------------------------------------------------------------------------------------


def tiny_png(index: int) -> bytes:
    """A small, real PNG, different for every index."""
    color = (index % 251, (index // 251) % 251, (index // 63001) % 251)
    image = PILImage.new("RGB", (16, 12), color)
    image.putpixel((index % 16, 0), (255, 255, 255))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def noise_png(target_bytes: int) -> bytes:
    """A PNG of random noise: it does not compress, so its size is about `target_bytes`."""
    side = max(8, math.isqrt(target_bytes // 3))
    image = PILImage.frombytes("RGB", (side, side), os.urandom(side * side * 3))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


async def seed_gallery(
    engine: AsyncEngine,
    store: ObjectStore,
    count: int,
    *,
    title: str = "Gallery",
    thumbnail_px: int | None = None,
) -> tuple[uuid.UUID, float]:
    """A series with `count` image rows, each with a small file. Answers its id and the time.

    With `thumbnail_px`, each image also gets the thumbnail an upload would have stored.
    """
    started = time.perf_counter()
    series_id = uuid.uuid4()
    now = dt.datetime.now(dt.UTC)
    sessions = make_sessionmaker(engine)
    async with sessions.begin() as session:
        await session.execute(
            sa.insert(Series),
            [{"id": series_id, "title": title, "description": "bench", "tags": ["bench"]}],
        )
    # The oldest first, a millisecond apart, so newest-first order is well defined.
    base = now - dt.timedelta(milliseconds=count)
    rows: list[dict[str, Any]] = []
    files: list[tuple[str, bytes]] = []
    for index in range(count):
        image_id = uuid.uuid4()
        data = tiny_png(index)
        key = image_key(image_id, "png")
        files.append((key, data))
        if thumbnail_px is not None:
            files.append((thumbnail_key(image_id), thumbnail_from_bytes(data, thumbnail_px)))
        rows.append(
            {
                "id": image_id,
                "series_id": series_id,
                "source": "upload",
                "storage_path": key,
                "original_filename": f"img-{index:05d}.png",
                "mime_type": "image/png",
                "width": 16,
                "height": 12,
                "size_bytes": len(data),
                "sha256": hashlib.sha256(data).hexdigest(),
                "meta": {},
                "created_at": base + dt.timedelta(milliseconds=index),
            }
        )
    async with sessions.begin() as session:  # ORM bulk INSERT: many rows per statement
        for start in range(0, count, 1000):
            await session.execute(sa.insert(Image), rows[start : start + 1000])
    slots = asyncio.Semaphore(32)

    async def put(key: str, data: bytes) -> None:
        async with slots:
            await store.put(key, data)

    await asyncio.gather(*(put(key, data) for key, data in files))
    if engine.dialect.name == "postgresql":
        # What autovacuum does a moment after a bulk load; done now so the plan is the steady one.
        async with engine.begin() as conn:
            await conn.execute(sa.text("ANALYZE cog_series, cog_images"))
    return series_id, time.perf_counter() - started


# --- measuring ----------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    rank = max(0, math.ceil(q / 100 * len(ordered)) - 1)
    return ordered[rank]


@contextmanager
def capture_sql(engine: AsyncEngine) -> Iterator[list[tuple[str, Any]]]:
    """The statements the app sends to the database while the block runs."""
    seen: list[tuple[str, Any]] = []

    def listener(
        _conn: Connection,
        _cursor: Any,
        statement: str,
        parameters: Any,
        _context: ExecutionContext | None,
        _many: bool,
    ) -> None:
        seen.append((statement, parameters))

    sa.event.listen(engine.sync_engine, "before_cursor_execute", listener)
    try:
        yield seen
    finally:
        sa.event.remove(engine.sync_engine, "before_cursor_execute", listener)


async def explain(engine: AsyncEngine, statement: str, parameters: Any) -> list[str]:
    """The database's plan for one statement the app sent, with the same parameters."""
    prefix = "EXPLAIN QUERY PLAN " if engine.dialect.name == "sqlite" else "EXPLAIN "
    async with engine.connect() as conn:
        result = await conn.exec_driver_sql(prefix + statement, parameters)
        rows = result.all()
    if engine.dialect.name == "sqlite":
        return [str(row[-1]) for row in rows]
    return [str(row[0]) for row in rows]


async def page_through(
    client: httpx.AsyncClient, engine: AsyncEngine, series_id: uuid.UUID, limit: int
) -> dict[str, Any]:
    url = LIST_PATH.format(id=series_id)
    # The first two pages once, not counted: the first request of each query shape pays for
    # compiling it (SQLAlchemy's cache, PostgreSQL's prepared statement); the walk measures the
    # steady state.
    warm = await client.get(url, params={"limit": limit})
    warm.raise_for_status()
    if warm.json()["next_cursor"]:
        again = await client.get(url, params={"limit": limit, "cursor": warm.json()["next_cursor"]})
        again.raise_for_status()
    timings: list[float] = []
    seen: set[str] = set()
    cursor: str | None = None
    with capture_sql(engine) as statements:
        while True:
            params: dict[str, Any] = {"limit": limit}
            if cursor:
                params["cursor"] = cursor
            started = time.perf_counter()
            response = await client.get(url, params=params)
            timings.append(time.perf_counter() - started)
            response.raise_for_status()
            body = response.json()
            seen.update(item["id"] for item in body["items"])
            cursor = body["next_cursor"]
            if not cursor:
                break
    # The plan of the query behind a page past the first (the one with the keyset condition).
    keyset = [
        (sql, params)
        for sql, params in statements
        if "FROM cog_images" in sql and "ORDER BY" in sql and "<" in sql
    ]
    plan = await explain(engine, *keyset[-1]) if keyset else []
    first = timings[:10]
    last = timings[-10:]
    return {
        "pages": len(timings),
        "rows": len(seen),
        "page_median_ms": round(statistics.median(timings) * 1000, 2),
        "page_p95_ms": round(percentile(timings, 95) * 1000, 2),
        "page_max_ms": round(max(timings) * 1000, 2),
        "first10_median_ms": round(statistics.median(first) * 1000, 2),
        "last10_median_ms": round(statistics.median(last) * 1000, 2),
        "last_over_first": round(statistics.median(last) / statistics.median(first), 2),
        "keyset_plan": plan,
    }


async def tag_all(client: httpx.AsyncClient, series_id: uuid.UUID, count: int) -> dict[str, Any]:
    """Tag every image of the series with one batch request, then untag them with another."""
    figures: dict[str, Any] = {}
    for action in ("tag", "untag"):
        body = {"action": action, "filter": {"series_id": str(series_id)}, "tags": ["batch"]}
        started = time.perf_counter()
        response = await client.post("/api/images/batch", json=body)
        seconds = time.perf_counter() - started
        if response.status_code != 200 or response.json()["count"] != count:
            raise RuntimeError(f"{action} answered {response.status_code}: {response.text[:300]}")
        figures[f"{action}_all_seconds"] = round(seconds, 2)
    figures["tag_images_per_s"] = round(count / figures["tag_all_seconds"])
    return figures


async def upload_all(client: httpx.AsyncClient, files: list[bytes], batch: int) -> dict[str, Any]:
    created = await client.post("/api/series", json={"title": "Uploads"})
    created.raise_for_status()
    url = f"/api/series/{created.json()['id']}/images"
    stored = 0
    started = time.perf_counter()
    for start in range(0, len(files), batch):
        parts = [
            ("files", (f"noise-{start + i:04d}.png", data, "image/png"))
            for i, data in enumerate(files[start : start + batch])
        ]
        response = await client.post(url, files=parts)
        if response.status_code != 201:
            raise RuntimeError(f"upload answered {response.status_code}: {response.text[:300]}")
        stored += len(response.json()["items"])
    seconds = time.perf_counter() - started
    total = sum(len(f) for f in files)
    return {
        "uploaded": stored,
        "upload_batch": batch,
        "upload_mb_each": round(total / len(files) / MB, 2),
        "upload_total_mb": round(total / MB, 1),
        "upload_seconds": round(seconds, 2),
        "upload_mb_per_s": round(total / MB / seconds, 1),
        "upload_ms_per_image": round(seconds / len(files) * 1000, 1),
    }


# --- one database -------------------------------------------------------------------------------


async def bench_database(
    label: str, database_url: str, data_dir: Path, args: argparse.Namespace, files: list[bytes]
) -> dict[str, Any]:
    settings = Settings(
        _env_file=None,
        data_dir=data_dir,
        database_url=database_url,
        storage_url=(data_dir / "storage").as_uri(),
        api_token=None,
    )
    engine = make_engine(database_url)
    try:
        await upgrade(engine)
        console.print(f"[bold]{label}[/bold]: seeding {args.images} images …")
        series_id, seed_s = await seed_gallery(engine, make_store(settings), args.images)
    finally:
        await engine.dispose()
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        app_engine: AsyncEngine = app.state.cog.engine
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://bench", timeout=120
        ) as client:
            console.print(f"[bold]{label}[/bold]: paging through with limit={args.page} …")
            paging = await page_through(client, app_engine, series_id, args.page)
            if paging["rows"] != args.images:
                raise RuntimeError(f"paged {paging['rows']} images, expected {args.images}")
            console.print(f"[bold]{label}[/bold]: tagging and untagging them all …")
            tagging = await tag_all(client, series_id, args.images)
            console.print(f"[bold]{label}[/bold]: uploading {len(files)} images …")
            uploads = await upload_all(client, files, args.batch)
    return {"seed_seconds": round(seed_s, 2), **paging, **tagging, **uploads}


# --- main ---------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=10_000, help="image rows in the series")
    parser.add_argument("--page", type=int, default=100, help="images per page (limit)")
    parser.add_argument("--uploads", type=int, default=200, help="images to upload")
    parser.add_argument("--upload-mb", type=float, default=2.0, help="size of each upload, MB")
    parser.add_argument("--batch", type=int, default=10, help="images per upload request")
    parser.add_argument(
        "--quick", action="store_true", help="a small run: 1,000 images, 20 uploads of 1 MB"
    )
    parser.add_argument("--pg-host", default=os.environ.get("COG_TEST_PG_HOST", "127.0.0.1"))
    parser.add_argument(
        "--pg-port", type=int, default=int(os.environ.get("COG_TEST_PG_PORT", "5432"))
    )
    parser.add_argument("--pg-user", default=os.environ.get("COG_TEST_PG_USER", "postgres"))
    parser.add_argument("--no-postgres", action="store_true", help="SQLite only")
    args = parser.parse_args(argv)
    if args.quick:
        args.images, args.uploads, args.upload_mb = 1_000, 20, 1.0
    return args


def report(results: dict[str, dict[str, Any]]) -> None:
    table = Table(title="Cog gallery benchmark", title_justify="left")
    table.add_column("figure")
    for label in results:
        table.add_column(label, justify="right")
    rows = [
        ("images in the series", "rows", "{:,}"),
        ("pages walked", "pages", "{}"),
        ("page median (ms)", "page_median_ms", "{:.2f}"),
        ("page p95 (ms)", "page_p95_ms", "{:.2f}"),
        ("page max (ms)", "page_max_ms", "{:.2f}"),
        ("first 10 pages, median (ms)", "first10_median_ms", "{:.2f}"),
        ("last 10 pages, median (ms)", "last10_median_ms", "{:.2f}"),
        ("last / first", "last_over_first", "{:.2f}"),
        ("tag all, one batch request (s)", "tag_all_seconds", "{:.2f}"),
        ("untag all, one batch request (s)", "untag_all_seconds", "{:.2f}"),
        ("images tagged per s", "tag_images_per_s", "{:,}"),
        ("uploaded images", "uploaded", "{}"),
        ("upload size each (MB)", "upload_mb_each", "{:.2f}"),
        ("upload total (s)", "upload_seconds", "{:.2f}"),
        ("upload throughput (MB/s)", "upload_mb_per_s", "{:.1f}"),
        ("per image (ms)", "upload_ms_per_image", "{:.1f}"),
        ("seeding (s)", "seed_seconds", "{:.2f}"),
    ]
    for title, key, fmt in rows:
        table.add_row(title, *(fmt.format(r[key]) for r in results.values()))
    console.print(table)
    for label, result in results.items():
        console.print(f"[bold]{label}[/bold] plan of a page past the first:")
        for line in result["keyset_plan"]:
            console.print(f"  {line}", markup=False, soft_wrap=True)


async def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    console.print(
        f"Making {args.uploads} noise PNGs of {args.upload_mb} MB (before any clock starts) …"
    )
    files = [noise_png(int(args.upload_mb * MB)) for _ in range(args.uploads)]
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="cog-bench-") as tmp:
        root = Path(tmp)
        results["sqlite"] = await bench_database(
            "sqlite",
            f"sqlite+aiosqlite:///{root / 'sqlite' / 'cog.db'}",
            root / "sqlite",
            args,
            files,
        )
        if not args.no_postgres:
            async with throwaway_postgres(
                args.pg_host, args.pg_port, args.pg_user, "cog_bench"
            ) as url:
                results["postgres"] = await bench_database(
                    "postgres", url, root / "postgres", args, files
                )
    report(results)
    figures = {
        "params": {
            "images": args.images,
            "page": args.page,
            "uploads": args.uploads,
            "upload_mb": args.upload_mb,
            "batch": args.batch,
            "python": sys.version.split()[0],
            "cpus": os.cpu_count(),
        },
        **{
            label: {k: v for k, v in r.items() if k != "keyset_plan"}
            for label, r in results.items()
        },
        "plans": {label: r["keyset_plan"] for label, r in results.items()},
    }
    print(json.dumps(figures, separators=(",", ":")))
    return figures


if __name__ == "__main__":
    asyncio.run(main())
