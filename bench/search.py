"""Search benchmark: 100,000 images with prompts and tags across a tree of series, searched.

    uv run python -m bench.search            # the full run (SQLite, then PostgreSQL)
    uv run python -m bench.search --quick    # a small run, to try the script

For each database it builds a tree of series (8 at the top, 4 under each, 4 under each of
those) and N image rows spread over it (inserted in bulk with Cog's own models; search needs no
files), with prompts made of varied word lists whose words are as unevenly common as words are,
tags, models and file names. Then it asks `GET /api/images/search` through the app in-process
(httpx's ASGI transport) for pages of 50: by a word (common, middling and rare words, and a
word still being typed), by a tag, and by a word within a series and its sub-series, each
first page and the page after it. It reports the median and p95 time of a request of each
kind, and the database's plan of each kind's query. PostgreSQL runs in a throwaway database
that the script creates and drops. The last line printed is a JSON object with every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa
from rich.console import Console
from rich.table import Table
from sqlalchemy.ext.asyncio import AsyncEngine

from bench.gallery import capture_sql, percentile
from cog.config import Settings
from cog.db.migrate import upgrade
from cog.db.models import Image, Series
from cog.db.session import make_engine, make_sessionmaker
from cog.storage.keys import image_key
from cog.testing.databases import throwaway_postgres
from cog.web.app import create_app

console = Console(stderr=False, highlight=False)
SEARCH_PATH = "/api/images/search"
PAGE = 50


def listed(text: str, separator: str | None = None) -> tuple[str, ...]:
    return tuple(text.split(separator))


# --- the words ------------------------------------------------------------------------------------

SUBJECTS = listed(
    "fox owl lighthouse harbour castle forest mountain river city street cat dog horse whale "
    "dragon robot astronaut samurai knight wizard witch girl boy woman man child old-man "
    "fisherman sailor dancer musician violin piano bicycle train car ship boat airship balloon "
    "bridge tower cathedral temple garden orchard field meadow desert canyon glacier volcano "
    "island beach waterfall lake pond swamp jungle cave tunnel market cafe library kitchen "
    "bedroom attic rooftop alley subway station factory windmill farmhouse cottage cabin tent "
    "campfire lantern candle clock mirror teapot bookshelf umbrella kite butterfly beetle "
    "hummingbird heron crow raven deer wolf bear rabbit hedgehog octopus jellyfish koi tiger"
)
ADJECTIVES = listed(
    "misty golden ancient abandoned tiny giant quiet busy rainy snowy foggy sunny stormy "
    "glowing dark bright faded rusty shiny wooden stone glass crystal paper velvet silver "
    "copper emerald crimson azure violet amber pale vivid lonely crowded forgotten hidden "
    "floating sunken broken overgrown frozen burning whispering sleeping dreaming curious "
    "gentle fierce elegant humble ornate minimal cozy eerie serene chaotic"
)
PLACES = listed(
    "at dawn|at dusk|at night|at noon|in the rain|in the snow|under the stars|by the sea|"
    "in the mountains|in a dense forest|on a quiet street|in an old city|in a small village|"
    "on a distant planet|under water|in the clouds|in a dream|in autumn|in spring|in winter|"
    "in summer|after the storm|before sunrise|during a festival|in a cyberpunk city|"
    "in a fairy tale|in the desert|on the moon|by a river|in a garden",
    "|",
)
STYLES = listed(
    "watercolor|oil painting|pencil sketch|ink drawing|digital art|photograph|35mm film|"
    "polaroid|anime|studio ghibli style|pixel art|low poly|isometric|concept art|matte painting|"
    "ukiyo-e|art nouveau|baroque|impressionist|surreal|minimalist poster|children's book "
    "illustration|charcoal|gouache|pastel|linocut|stained glass|claymation|3d render|"
    "vintage postcard",
    "|",
)
LIGHT = listed(
    "soft light|golden hour|blue hour|dramatic lighting|rim light|volumetric fog|neon glow|"
    "candlelight|moonlight|overcast|backlit|high contrast|muted colors|warm tones|cool tones|"
    "pastel colors|cinematic|shallow depth of field|wide angle|macro|bokeh|long exposure|"
    "high detail|8k|film grain",
    "|",
)
TAGS = listed(
    "landscape portrait animal architecture night day water snow autumn spring summer winter "
    "city nature fantasy sci-fi vintage moody bright colorful monochrome people sea sky "
    "favourite draft final print-ready reference wip client-a client-b client-c experiment "
    "abstract texture pattern character creature vehicle interior exterior food plant"
)
MODELS = ("gemini-3-pro-image", "gemini-2.5-flash-image", "imagen-4", "imagen-4-ultra")
FILE_STEMS = listed(
    "IMG_{n:04d}|DSC{n:05d}|scan-{n:03d}|sketch_{n}|reference {n}|beach-sunset-{n:02d}|"
    "mood board {n}|Screenshot {n}|photo ({n})",
    "|",
)
FILE_EXTENSIONS = ("jpg", "png", "webp", "JPG")


def zipf_weights(count: int, exponent: float = 1.0) -> list[float]:
    """How common the words of a list are: the first very common, the last rare."""
    return [1 / (rank + 1) ** exponent for rank in range(count)]


@dataclass(frozen=True)
class Vocabulary:
    rng: random.Random

    def pick(self, words: tuple[str, ...] | list[str], exponent: float = 1.0) -> str:
        return self.rng.choices(words, weights=zipf_weights(len(words), exponent))[0]

    def prompt(self) -> str:
        r = self.rng
        subject = self.pick(SUBJECTS, 0.9).replace("-", " ")
        parts = [f"a {self.pick(ADJECTIVES, 0.8)} {subject} {self.pick(PLACES, 0.7)}"]
        if r.random() < 0.5:
            parts[0] += f" with a {self.pick(ADJECTIVES, 0.8)} {self.pick(SUBJECTS, 0.9)}"
        parts.append(self.pick(STYLES, 0.8))
        parts.extend(self.pick(LIGHT, 0.8) for _ in range(r.randint(0, 3)))
        return ", ".join(parts)

    def tags(self) -> list[str]:
        return sorted({self.pick(TAGS, 1.1) for _ in range(self.rng.randint(0, 4))})

    def filename(self, index: int) -> str:
        stem = self.rng.choice(FILE_STEMS).format(n=index % 10_000)
        return f"{stem}.{self.rng.choice(FILE_EXTENSIONS)}"


# --- data -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Seeded:
    roots: list[uuid.UUID]
    seconds: float


def series_tree(rng: random.Random) -> tuple[list[dict[str, Any]], list[uuid.UUID]]:
    """8 series at the top, 4 under each, 4 under each of those: 168 series."""
    rows: list[dict[str, Any]] = []
    roots: list[uuid.UUID] = []

    def add(parent: uuid.UUID | None, title: str, depth: int) -> None:
        series_id = uuid.uuid4()
        rows.append({"id": series_id, "parent_id": parent, "title": title, "tags": []})
        if parent is None:
            roots.append(series_id)
        if depth < 2:
            for n in range(4):
                add(series_id, f"{title} / {rng.choice(SUBJECTS)} {n}", depth + 1)

    for n in range(8):
        add(None, f"Project {n}", 0)
    return rows, roots


async def seed(engine: AsyncEngine, count: int, seed_value: int = 8) -> Seeded:
    started = time.perf_counter()
    rng = random.Random(seed_value)
    words = Vocabulary(rng)
    series_rows, roots = series_tree(rng)
    series_ids = [row["id"] for row in series_rows]
    sessions = make_sessionmaker(engine)
    async with sessions.begin() as session:
        # Parents before children: the rows are in that order already.
        await session.execute(sa.insert(Series), series_rows)
    now = dt.datetime.now(dt.UTC)
    span_ms = 2 * 365 * 24 * 3600 * 1000  # two years
    for start in range(0, count, 2000):
        rows: list[dict[str, Any]] = []
        for index in range(start, min(count, start + 2000)):
            image_id = uuid.uuid4()
            generated = rng.random() < 0.75
            rows.append(
                {
                    "id": image_id,
                    "series_id": rng.choice(series_ids),
                    "source": "generated" if generated else "upload",
                    "storage_path": image_key(image_id, "png"),
                    "original_filename": None if generated else words.filename(index),
                    "mime_type": "image/png",
                    "width": 1024,
                    "height": 1024,
                    "size_bytes": 1_000_000,
                    "sha256": image_id.hex * 2,
                    "prompt": words.prompt() if generated else None,
                    "model": words.pick(MODELS) if generated else None,
                    "provider": "gemini" if generated else None,
                    "meta": {},
                    "tags": words.tags(),
                    "created_at": now - dt.timedelta(milliseconds=rng.randrange(span_ms)),
                }
            )
        async with sessions.begin() as session:  # ORM bulk INSERT: many rows per statement
            await session.execute(sa.insert(Image), rows)
    if engine.dialect.name == "postgresql":
        # What autovacuum does a moment after a bulk load; done now so the plans are the
        # steady ones. (SQLite has no statistics unless asked, and Cog does not ask.)
        async with engine.begin() as conn:
            await conn.execute(sa.text("ANALYZE cog_series, cog_images"))
    return Seeded(roots, time.perf_counter() - started)


# --- measuring ------------------------------------------------------------------------------------


async def explain(
    engine: AsyncEngine, statement: str, parameters: Any, settings: list[tuple[str, Any]]
) -> list[str]:
    """The database's plan for one statement the app sent, with the same parameters and the
    settings the app made for its transaction."""
    prefix = "EXPLAIN QUERY PLAN " if engine.dialect.name == "sqlite" else "EXPLAIN "
    async with engine.connect() as conn:  # one transaction, where the settings hold
        for setting, values in settings:
            await conn.exec_driver_sql(setting, values)
        result = await conn.exec_driver_sql(prefix + statement, parameters)
        rows = result.all()
    if engine.dialect.name == "sqlite":
        return [str(row[-1]) for row in rows]
    return [str(row[0]) for row in rows]


def kinds(roots: list[uuid.UUID], middle: uuid.UUID) -> dict[str, list[dict[str, Any]]]:
    """The searches each kind cycles through: words from the most common to rare ones, typed as
    a person types them (the last word a prefix), tags likewise, and words within a series
    with its sub-series (one of the top series: an eighth of the images; one a level down)."""
    words = ["misty", "fox", "watercolor", "lighthouse", "golden", "owl", "cathedral", "koi"]
    words += ["tiger", "hedgehog", "lanter", "cinematic"]
    pairs = ["misty forest", "golden hour", "oil painting", "red fox", "old city", "fox owl"]
    pairs += ["dark castle", "quiet harbour", "snowy mountain", "paper lantern"]
    tags = ["landscape", "portrait", "autumn", "night", "vintage", "favourite"]
    tags += ["client-b", "print-ready", "texture", "plant"]
    in_tree = [
        {"q": word, "series_id": str(series)}
        for word in ("misty", "fox", "lighthouse", "koi", "golden hour")
        for series in (roots[0], middle)
    ]
    return {
        "word": [{"q": w} for w in words],
        "two_words": [{"q": p} for p in pairs],
        "tag": [{"tag": t} for t in tags],
        "word_in_subtree": in_tree,
    }


async def measure(
    client: httpx.AsyncClient,
    engine: AsyncEngine,
    searches: list[dict[str, Any]],
    rounds: int,
) -> dict[str, Any]:
    """Ask each search `rounds` times (after once unmeasured); the first page, then the next."""
    for params in searches:  # the first request of each shape compiles it; not counted
        (await client.get(SEARCH_PATH, params={**params, "limit": PAGE})).raise_for_status()
    first: list[float] = []
    second: list[float] = []
    found: list[int] = []
    with capture_sql(engine) as statements:
        for _ in range(rounds):
            for params in searches:
                started = time.perf_counter()
                response = await client.get(SEARCH_PATH, params={**params, "limit": PAGE})
                first.append(time.perf_counter() - started)
                response.raise_for_status()
                body = response.json()
                found.append(len(body["items"]))
                if body["next_cursor"]:
                    cursor = {"cursor": body["next_cursor"]}
                    started = time.perf_counter()
                    again = await client.get(
                        SEARCH_PATH, params={**params, "limit": PAGE, **cursor}
                    )
                    second.append(time.perf_counter() - started)
                    again.raise_for_status()
    # The plan of the first request's page query, with what the request set before it.
    at = next(n for n, (s, _) in enumerate(statements) if "ORDER BY cog_images.created_at" in s)
    settings = [(s, p) for s, p in statements[:at] if "set_config(" in s]
    plan = await explain(engine, *statements[at], settings)
    return {
        "requests": len(first) + len(second),
        "median_ms": round(statistics.median(first) * 1000, 2),
        "p95_ms": round(percentile(first, 95) * 1000, 2),
        "max_ms": round(max(first) * 1000, 2),
        "next_page_median_ms": round(statistics.median(second) * 1000, 2) if second else None,
        "next_page_p95_ms": round(percentile(second, 95) * 1000, 2) if second else None,
        "mean_results": round(statistics.mean(found), 1),  # on a first page, at most PAGE
        "full_pages": round(sum(1 for n in found if n == PAGE) / len(found), 2),
        "plan": plan,
    }


# --- one database ---------------------------------------------------------------------------------


async def bench_database(
    label: str, database_url: str, data_dir: Path, args: argparse.Namespace
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
        console.print(f"[bold]{label}[/bold]: seeding {args.images:,} images …")
        seeded = await seed(engine, args.images)
        async with engine.connect() as conn:
            middle = (
                await conn.execute(
                    sa.select(Series.id).where(Series.parent_id == seeded.roots[0]).limit(1)
                )
            ).scalar_one()
    finally:
        await engine.dispose()
    results: dict[str, Any] = {"seed_seconds": round(seeded.seconds, 2)}
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        app_engine: AsyncEngine = app.state.cog.engine
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://bench", timeout=120
        ) as client:
            for kind, searches in kinds(seeded.roots, middle).items():
                console.print(f"[bold]{label}[/bold]: {kind} ({len(searches)} searches) …")
                results[kind] = await measure(client, app_engine, searches, args.rounds)
    return results


# --- main -----------------------------------------------------------------------------------------

KINDS = ("word", "two_words", "tag", "word_in_subtree")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=100_000, help="image rows")
    parser.add_argument("--rounds", type=int, default=10, help="times each search is asked")
    parser.add_argument("--quick", action="store_true", help="a small run: 5,000 images")
    parser.add_argument("--pg-host", default=os.environ.get("COG_TEST_PG_HOST", "127.0.0.1"))
    parser.add_argument(
        "--pg-port", type=int, default=int(os.environ.get("COG_TEST_PG_PORT", "5432"))
    )
    parser.add_argument("--pg-user", default=os.environ.get("COG_TEST_PG_USER", "postgres"))
    parser.add_argument("--no-postgres", action="store_true", help="SQLite only")
    args = parser.parse_args(argv)
    if args.quick:
        args.images, args.rounds = 5_000, 3
    return args


def report(results: dict[str, dict[str, Any]]) -> None:
    table = Table(title=f"Cog search benchmark (pages of {PAGE})", title_justify="left")
    table.add_column("search")
    for label in results:
        table.add_column(f"{label} median", justify="right")
        table.add_column(f"{label} p95", justify="right")
    for kind in KINDS:
        cells = []
        for result in results.values():
            cells += [f"{result[kind]['median_ms']:.1f} ms", f"{result[kind]['p95_ms']:.1f} ms"]
        table.add_row(kind.replace("_", " "), *cells)
    table.add_row(
        "seeding (s)", *(c for r in results.values() for c in (f"{r['seed_seconds']}", ""))
    )
    console.print(table)
    for label, result in results.items():
        for kind in KINDS:
            console.print(f"[bold]{label}[/bold] plan of a {kind.replace('_', ' ')} search:")
            for line in result[kind]["plan"]:
                console.print(f"  {line}", markup=False, soft_wrap=True)


async def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="cog-bench-") as tmp:
        root = Path(tmp)
        results["sqlite"] = await bench_database(
            "sqlite", f"sqlite+aiosqlite:///{root / 'sqlite' / 'cog.db'}", root / "sqlite", args
        )
        if not args.no_postgres:
            async with throwaway_postgres(
                args.pg_host, args.pg_port, args.pg_user, "cog_bench_search"
            ) as url:
                results["postgres"] = await bench_database("postgres", url, root / "postgres", args)
    report(results)
    figures = {
        "params": {
            "images": args.images,
            "rounds": args.rounds,
            "page": PAGE,
            "python": sys.version.split()[0],
            "cpus": os.cpu_count(),
        },
        **{
            label: {
                key: ({k: v for k, v in value.items() if k != "plan"} if key in KINDS else value)
                for key, value in result.items()
            }
            for label, result in results.items()
        },
        "plans": {
            label: {kind: result[kind]["plan"] for kind in KINDS}
            for label, result in results.items()
        },
    }
    print(json.dumps(figures, separators=(",", ":")))
    return figures


if __name__ == "__main__":
    asyncio.run(main())
