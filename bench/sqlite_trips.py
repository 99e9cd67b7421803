"""SQLite transactions through SQLAlchemy's aiosqlite adapter and through Cog's one-trip one
(`cog.db.sqlite_driver`), side by side in one run.

    uv run python bench/sqlite_trips.py              # 500 of each, interleaved
    uv run python bench/sqlite_trips.py --rounds 2000

Two engines from `cog.db.session.make_engine` on two files in a temporary folder, with the same
pragmas (WAL, synchronous=NORMAL); they differ only in the adapter: its cursor (a statement in
one trip to aiosqlite's thread or in three or four) and its rollback (none made when no
transaction is open). Each round, in each engine:

- write: one transaction of what a step's images cost: 4 rows inserted into one table, 4 into
  another, one row updated, commit;
- read: a gallery page: 60 rows of 5,000 by an index, newest first, and a count.

The two engines alternate round by round, so the machine's drift touches both alike. The wall
time of each transaction is recorded, and the CPU time of the whole process (the event loop and
aiosqlite's threads) per transaction. The last line printed is a JSON object with every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import aiosqlite
import sqlalchemy as sa
from rich.console import Console
from rich.table import Table
from sqlalchemy.dialects.sqlite.aiosqlite import AsyncAdapt_aiosqlite_dbapi
from sqlalchemy.ext.asyncio import AsyncEngine

from cog.db.session import make_engine

META = sa.MetaData()
ROWS = sa.Table(
    "rows",
    META,
    sa.Column("id", sa.Uuid, primary_key=True),
    sa.Column("series", sa.Integer, nullable=False),
    sa.Column("created_at", sa.DateTime, nullable=False),
    sa.Column("text", sa.Text, nullable=False),
    sa.Index("ix_rows_series_created", "series", "created_at"),
)
VERSIONS = sa.Table(
    "versions",
    META,
    sa.Column("id", sa.Uuid, primary_key=True),
    sa.Column("row_id", sa.Uuid, nullable=False),
    sa.Column("text", sa.Text, nullable=False),
)
STEPS = sa.Table(
    "steps",
    META,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("image_ids", sa.JSON, nullable=False),
)


async def prepare(engine: AsyncEngine, rows: int) -> None:
    async with engine.begin() as conn:
        await conn.run_sync(META.create_all)
        start = dt.datetime(2026, 1, 1)
        await conn.execute(
            ROWS.insert(),
            [
                {
                    "id": uuid.uuid4(),
                    "series": 1,
                    "created_at": start + dt.timedelta(seconds=i),
                    "text": f"row {i}",
                }
                for i in range(rows)
            ],
        )
        await conn.execute(STEPS.insert().values(id=1, image_ids=[]))


async def write(engine: AsyncEngine) -> None:
    ids = [uuid.uuid4() for _ in range(4)]
    now = dt.datetime.now()
    async with engine.begin() as conn:
        await conn.execute(
            ROWS.insert(),
            [{"id": i, "series": 2, "created_at": now, "text": "made"} for i in ids],
        )
        await conn.execute(VERSIONS.insert(), [{"id": i, "row_id": i, "text": "v1"} for i in ids])
        await conn.execute(
            STEPS.update().where(STEPS.c.id == 1).values(image_ids=[str(i) for i in ids])
        )


async def read(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        page = await conn.execute(
            sa.select(ROWS).where(ROWS.c.series == 1).order_by(ROWS.c.created_at.desc()).limit(60)
        )
        assert len(page.all()) == 60
        count = await conn.execute(
            sa.select(sa.func.count()).select_from(ROWS).where(ROWS.c.series == 1)
        )
        assert count.scalar_one() > 0


async def timed(work: Any, engine: AsyncEngine) -> tuple[float, float]:
    cpu, wall = time.process_time(), time.perf_counter()
    await work(engine)
    return (time.perf_counter() - wall) * 1e3, (time.process_time() - cpu) * 1e3


async def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=500, help="transactions of each kind")
    parser.add_argument("--rows", type=int, default=5000, help="rows a gallery page is read from")
    args = parser.parse_args(argv)
    figures: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="cog-bench-sqlite-") as tmp:
        engines = {
            "aiosqlite cursor": make_engine(
                f"sqlite+aiosqlite:///{Path(tmp) / 'stock.db'}",
                module=AsyncAdapt_aiosqlite_dbapi(aiosqlite, sqlite3),
            ),
            "one-trip cursor": make_engine(f"sqlite+aiosqlite:///{Path(tmp) / 'one.db'}"),
        }
        try:
            for engine in engines.values():
                await prepare(engine, args.rows)
            for kind, work in (("write", write), ("read", read)):
                samples: dict[str, list[tuple[float, float]]] = {name: [] for name in engines}
                for _ in range(20):  # warm up
                    for engine in engines.values():
                        await work(engine)
                for _ in range(args.rounds):
                    for name, engine in engines.items():
                        samples[name].append(await timed(work, engine))
                for name, got in samples.items():
                    mine = figures.setdefault(name, {})
                    mine[f"{kind}_ms"] = statistics.median(w for w, _ in got)
                    mine[f"{kind}_cpu_ms"] = statistics.mean(c for _, c in got)
        finally:
            for engine in engines.values():
                await engine.dispose()

    stock, one = figures["aiosqlite cursor"], figures["one-trip cursor"]
    ratios = {key: round(stock[key] / one[key], 2) for key in stock}
    console = Console(highlight=False)
    table = Table(title=f"SQLite transactions, {args.rounds} of each", title_justify="left")
    for column in ("figure", *engines, "aiosqlite / one-trip"):
        table.add_column(column, justify="left" if column == "figure" else "right")
    labels = {
        "write_ms": "write: wall, median (ms)",
        "write_cpu_ms": "write: CPU, mean (ms)",
        "read_ms": "read: wall, median (ms)",
        "read_cpu_ms": "read: CPU, mean (ms)",
    }
    for key, label in labels.items():
        table.add_row(label, f"{stock[key]:.3f}", f"{one[key]:.3f}", f"{ratios[key]:.2f}")
    console.print(table)
    result = {
        "params": {"rounds": args.rounds, "rows": args.rows, "python": sys.version.split()[0]},
        "aiosqlite_cursor": {k: round(v, 4) for k, v in stock.items()},
        "one_trip_cursor": {k: round(v, 4) for k, v in one.items()},
        "ratio_aiosqlite_over_one_trip": ratios,
    }
    print(json.dumps(result, separators=(",", ":")))
    return result


if __name__ == "__main__":
    asyncio.run(main())
