"""Properties of paging, on SQLite and PostgreSQL, through the API.

Whatever the rows and the page size, following `next_cursor` answers every row exactly once and
in order: a series' images newest first, with rows made in the same microsecond (ties) in id
order; series by title, with equal titles in id order, at one level or searched by tag or text
across the tree. No page is longer than asked, and only the last has no cursor.

Rows are written straight to the database (not uploaded), so their timestamps can be chosen.
"""

from __future__ import annotations

import datetime as dt
import itertools
import uuid
from typing import Any

import httpx
import sqlalchemy as sa
from fastapi import FastAPI
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from cog.db.models import Image, Job, Series
from cog.runtime import Runtime

BASE = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
# A few instants, some a microsecond apart, so that many rows share one.
INSTANTS = st.sampled_from(
    [
        BASE,
        BASE + dt.timedelta(microseconds=1),
        BASE + dt.timedelta(seconds=1),
        BASE + dt.timedelta(seconds=1, microseconds=999_999),
        BASE + dt.timedelta(days=400),
        dt.datetime(1999, 12, 31, 23, 59, 59, 999_999, tzinfo=dt.UTC),
        dt.datetime(2100, 1, 1, tzinfo=dt.UTC),
    ]
)
LIMITS = st.one_of(st.integers(1, 7), st.just(500))
# One app and database serve every example of a test; each example starts from empty tables.
FIXTURES_KEPT = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow]


async def reset(app: FastAPI) -> None:
    runtime: Runtime = app.state.cog
    async with runtime.sessions() as session:
        for table in (Image, Job, Series):
            await session.execute(sa.delete(table))
        await session.commit()


async def add(app: FastAPI, *rows: object) -> None:
    runtime: Runtime = app.state.cog
    async with runtime.sessions() as session:
        session.add_all(rows)
        await session.commit()


def image_row(series_id: uuid.UUID, created_at: dt.datetime) -> Image:
    image_id = uuid.uuid4()
    return Image(
        id=image_id,
        series_id=series_id,
        source="upload",
        storage_path=f"images/{image_id}.png",
        mime_type="image/png",
        width=1,
        height=1,
        size_bytes=1,
        sha256="0" * 64,
        meta={},
        created_at=created_at,
    )


async def page_through(
    client: httpx.AsyncClient, url: str, limit: int, **params: Any
) -> list[dict[str, Any]]:
    """Every item of a listing, following `next_cursor`; checks each page's shape."""
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    for _ in range(1_000):
        query = {**params, "limit": limit, **({"cursor": cursor} if cursor else {})}
        response = await client.get(url, params=query)
        assert response.status_code == 200, response.text
        page = response.json()
        assert len(page["items"]) <= limit
        if page["next_cursor"] is not None:
            assert len(page["items"]) == limit  # only the last page may be short
        items.extend(page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            return items
    raise AssertionError("the listing never ended")


@settings(max_examples=60, deadline=None, suppress_health_check=FIXTURES_KEPT)
@given(
    mine=st.lists(INSTANTS, max_size=40),
    theirs=st.lists(INSTANTS, max_size=5),
    limit=LIMITS,
)
async def test_paging_through_images_answers_each_once_newest_first(
    app: FastAPI, client: httpx.AsyncClient, mine: list[dt.datetime], theirs: list[dt.datetime],
    limit: int,
) -> None:  # fmt: skip
    await reset(app)
    series, other = Series(title="Mine"), Series(title="Theirs")
    await add(app, series, other)
    rows = [image_row(series.id, at) for at in mine]
    await add(app, *rows, *(image_row(other.id, at) for at in theirs))
    event(f"ties: {len(mine) - len(set(mine)) > 0}")

    paged = await page_through(client, f"/api/series/{series.id}/images", limit)

    expected = sorted(rows, key=lambda r: (r.created_at, r.id), reverse=True)
    assert [i["id"] for i in paged] == [str(r.id) for r in expected]


TITLES = st.sampled_from(["a", "A", "b", "a b", "ä", "Z", "é", "a%", "a_"])
TAGS = st.lists(st.sampled_from(["sea", "sand", "sky"]), max_size=2, unique=True)


@st.composite
def trees(draw: st.DrawFn) -> list[Series]:
    """Series with equal titles and shared tags, some nested in others."""
    made: list[Series] = []
    for _ in range(draw(st.integers(0, 25))):
        parent = draw(st.none() | st.sampled_from(made)) if made else None
        made.append(
            Series(
                id=uuid.uuid4(),
                title=draw(TITLES),
                tags=draw(TAGS),
                parent_id=parent.id if parent else None,
            )
        )
    return made


@settings(max_examples=50, deadline=None, suppress_health_check=FIXTURES_KEPT)
@given(tree=trees(), limit=LIMITS, search=st.sampled_from(["", "tag", "text"]))
async def test_paging_through_series_answers_each_once_in_title_order(
    app: FastAPI, client: httpx.AsyncClient, tree: list[Series], limit: int, search: str
) -> None:
    await reset(app)
    await add(app, *tree)
    params: dict[str, str] = {"tag": "sea"} if search == "tag" else {}
    if search == "text":
        params = {"q": "a"}
    event(f"search: {search or 'top level'}")

    paged = await page_through(client, "/api/series", limit, **params)
    whole = await page_through(client, "/api/series", 500, **params)

    def wanted(s: Series) -> bool:
        if search == "tag":
            return "sea" in s.tags
        if search == "text":
            return "a" in s.title.lower()
        return s.parent_id is None

    ids = [i["id"] for i in paged]
    assert len(ids) == len(set(ids))
    assert sorted(ids) == sorted(str(s.id) for s in tree if wanted(s))
    # The order is the database's (its collation ranks `ä` and `a`): one page or many, the same.
    assert ids == [i["id"] for i in whole]
    titled = [(i["title"], i["id"]) for i in paged]
    for (title, before), (same, after) in itertools.pairwise(titled):
        if title == same:
            assert uuid.UUID(before) < uuid.UUID(after)  # ties in id order
