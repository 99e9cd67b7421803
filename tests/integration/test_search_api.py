"""`GET /api/images/search` on SQLite and PostgreSQL: each filter, their combinations, paging,
query text no one should be able to break, and the plans that show the indexes at work."""

from __future__ import annotations

import datetime as dt
from typing import Any

import httpx
import pytest
from bench.gallery import capture_sql
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from cog.config import Settings
from tests.factories import insert_images, make_image, make_series

URL = "/api/images/search"


async def found(client: httpx.AsyncClient, **params: Any) -> list[str]:
    """The ids one search answers, newest first (every page of it)."""
    ids: list[str] = []
    cursor = None
    while True:
        response = await client.get(
            URL, params={**params, **({"cursor": cursor} if cursor else {})}
        )
        assert response.status_code == 200, response.text
        body = response.json()
        ids += [item["id"] for item in body["items"]]
        cursor = body["next_cursor"]
        if cursor is None:
            return ids


async def refused(client: httpx.AsyncClient, **params: Any) -> str:
    response = await client.get(URL, params=params)
    assert response.status_code == 422, response.text
    detail: str = response.json()["detail"]
    assert detail.strip()
    return detail


@pytest.fixture
async def world(client: httpx.AsyncClient, settings: Settings) -> dict[str, Any]:
    """Series Nature > Forest > Night, and Sea; images with prompts, tags, models and times."""
    nature = await make_series(client, "Nature")
    forest = await make_series(client, "Forest", parent_id=nature["id"])
    night = await make_series(client, "Night", parent_id=forest["id"])
    sea = await make_series(client, "Sea")
    day = dt.datetime(2025, 3, 14, 12, 0, tzinfo=dt.UTC)
    url = settings.database_url
    ids: dict[str, str] = {}
    (ids["fox"],) = await insert_images(
        url,
        nature["id"],
        {
            "prompt": "A red fox in a misty forest at dawn",
            "model": "gemini-3-pro-image",
            "tags": ["autumn", "red fox"],
            "created_at": day - dt.timedelta(days=10),
        },
    )
    (ids["owl"],) = await insert_images(
        url,
        forest["id"],
        {
            "prompt": "An owl on a branch, forest that is misty, watercolour",
            "model": "imagen-4",
            "tags": ["night", "red", "fox"],
            "created_at": day - dt.timedelta(days=1),
        },
    )
    (ids["foxglove"],) = await insert_images(
        url,
        night["id"],
        {
            "prompt": "Foxgloves under the moon",
            "model": "gemini-3-pro-image",
            "tags": ["night", "autumn"],
            "created_at": day,
        },
    )
    (ids["boat"],) = await insert_images(
        url,
        sea["id"],
        {
            "prompt": "A fishing boat in the fog, oil painting",
            "model": "imagen-4",
            "tags": ["sea"],
            "created_at": day + dt.timedelta(hours=13),
        },
    )
    upload = await make_image(client, sea["id"], name="harbour-sunset.png")
    ids["upload"] = upload["id"]
    return {
        "ids": ids,
        "series": {"nature": nature, "forest": forest, "night": night, "sea": sea},
        "day": day,
    }


def names(world: dict[str, Any], ids: list[str]) -> list[str]:
    by_id = {v: k for k, v in world["ids"].items()}
    return [by_id[i] for i in ids]


# --- each filter ----------------------------------------------------------------------------------


async def test_words_are_and_ed_in_any_order_case_and_punctuation_aside(
    client: httpx.AsyncClient, world: dict[str, Any]
) -> None:
    assert names(world, await found(client, q="misty forest ")) == ["owl", "fox"]
    assert names(world, await found(client, q="FOREST, Misty! ")) == ["owl", "fox"]
    assert names(world, await found(client, q="misty fox ")) == ["fox"]
    assert await found(client, q="misty boat ") == []


async def test_the_last_word_is_a_prefix_while_typing(
    client: httpx.AsyncClient, world: dict[str, Any]
) -> None:
    # "fo" finds fox, foxgloves, fog and forest; newest first.
    assert names(world, await found(client, q="fo")) == ["boat", "foxglove", "owl", "fox"]
    assert names(world, await found(client, q="red fo")) == ["fox"]
    # A space after the word: the word itself only.
    assert names(world, await found(client, q="fox ")) == ["fox"]
    # A star makes any word a prefix; one letter alone never is.
    assert names(world, await found(client, q="foxg* moon ")) == ["foxglove"]
    assert names(world, await found(client, q="a")) == ["boat", "owl", "fox"]


async def test_quoted_phrases_keep_their_words_together(
    client: httpx.AsyncClient, world: dict[str, Any]
) -> None:
    assert names(world, await found(client, q='"misty forest"')) == ["fox"]
    assert names(world, await found(client, q='"forest misty"')) == []
    # An unclosed quote, as while typing: a phrase whose last word is a prefix.
    assert names(world, await found(client, q='"fishing bo')) == ["boat"]
    assert names(world, await found(client, q='owl "forest that"')) == ["owl"]


async def test_file_names_are_searched_too(
    client: httpx.AsyncClient, world: dict[str, Any]
) -> None:
    assert names(world, await found(client, q="harbour-sunset.png")) == ["upload"]
    assert names(world, await found(client, q="harbour")) == ["upload"]


async def test_tags_match_whole_tags_and_all_of_them(
    client: httpx.AsyncClient, world: dict[str, Any]
) -> None:
    assert names(world, await found(client, tag="autumn")) == ["foxglove", "fox"]
    assert names(world, await found(client, tag=["autumn", "night"])) == ["foxglove"]
    assert names(world, await found(client, tag=" Red  Fox ")) == ["fox"]  # tags are normalised
    # The owl has the tags "red" and "fox", not "red fox".
    assert names(world, await found(client, tag="red")) == ["owl"]
    assert await found(client, tag="aut") == []  # no prefix for tags
    assert await found(client, tag="★") == []


async def test_model_and_source(client: httpx.AsyncClient, world: dict[str, Any]) -> None:
    assert names(world, await found(client, model="imagen-4")) == ["boat", "owl"]
    assert await found(client, model="imagen") == []
    assert names(world, await found(client, source="upload")) == ["upload"]
    assert names(world, await found(client, source="generated", q="fo")) == [
        "boat",
        "foxglove",
        "owl",
        "fox",
    ]


async def test_a_series_with_and_without_its_sub_series(
    client: httpx.AsyncClient, world: dict[str, Any]
) -> None:
    series = world["series"]
    assert names(world, await found(client, series_id=series["nature"]["id"])) == [
        "foxglove",
        "owl",
        "fox",
    ]
    assert names(
        world, await found(client, series_id=series["nature"]["id"], include_subseries="false")
    ) == ["fox"]
    assert names(world, await found(client, series_id=series["forest"]["id"])) == [
        "foxglove",
        "owl",
    ]
    assert names(world, await found(client, series_id=series["night"]["id"])) == ["foxglove"]
    assert names(world, await found(client, series_id=series["sea"]["id"])) == ["upload", "boat"]


async def test_a_date_range(client: httpx.AsyncClient, world: dict[str, Any]) -> None:
    ids = world["ids"]
    everything = await found(client)
    assert names(world, everything) == ["upload", "boat", "foxglove", "owl", "fox"]
    # Days are whole UTC days, both ends included.
    assert names(world, await found(client, **{"from": "2025-03-13", "to": "2025-03-14"})) == [
        "foxglove",
        "owl",
    ]
    assert names(world, await found(client, to="2025-03-14")) == ["foxglove", "owl", "fox"]
    assert ids["boat"] in await found(client, **{"from": "2025-03-15", "to": "2025-03-15"})
    # Instants, with a zone or in UTC; `to` includes its instant.
    assert names(
        world, await found(client, **{"from": "2025-03-14T12:00:00Z", "to": "2025-03-15T01:00"})
    ) == ["boat", "foxglove"]
    assert names(world, await found(client, to="2025-03-14T13:00:00+01:00")) == [
        "foxglove",
        "owl",
        "fox",
    ]


async def test_filters_combine(client: httpx.AsyncClient, world: dict[str, Any]) -> None:
    nature = world["series"]["nature"]["id"]
    assert names(world, await found(client, q="fo", tag="night", series_id=nature)) == [
        "foxglove",
        "owl",
    ]
    assert names(
        world,
        await found(
            client, q="fo", tag="night", series_id=nature, model="imagen-4", to="2025-03-13"
        ),
    ) == ["owl"]
    assert await found(client, q="boat", series_id=nature) == []


async def test_each_image_comes_in_the_image_shape(
    client: httpx.AsyncClient, world: dict[str, Any]
) -> None:
    response = await client.get(URL, params={"q": "foxgloves"})
    assert response.status_code == 200
    body = response.json()
    assert body["next_cursor"] is None
    (item,) = body["items"]
    single = (await client.get(f"/api/images/{item['id']}")).json()
    assert item == single


async def test_the_api_documents_the_search(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    operation = spec["paths"]["/api/images/search"]["get"]
    names = [p["name"] for p in operation["parameters"]]
    assert names == [
        "q",
        "tag",
        "model",
        "source",
        "series_id",
        "include_subseries",
        "from",
        "to",
        "limit",
        "cursor",
    ]
    assert all(p.get("description") for p in operation["parameters"])
    assert "422" in operation["responses"]


# --- paging ---------------------------------------------------------------------------------------


async def test_paging_yields_every_match_once_newest_first_ties_included(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    series = await make_series(client, "Many")
    same_time = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    matches = await insert_images(
        settings.database_url,
        series["id"],
        *(
            {"prompt": f"lantern number {n}", **({"created_at": same_time} if n % 3 else {})}
            for n in range(23)
        ),
    )
    await insert_images(settings.database_url, series["id"], {"prompt": "a candle"})
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params: dict[str, Any] = {"q": "lantern", "limit": 5}
        if cursor:
            params["cursor"] = cursor
        body = (await client.get(URL, params=params)).json()
        seen += [item["id"] for item in body["items"]]
        pages += 1
        cursor = body["next_cursor"]
        if not cursor:
            break
    assert pages == 5
    assert sorted(seen) == sorted(matches)
    assert len(set(seen)) == len(seen)
    every = (await client.get(URL, params={"q": "lantern", "limit": 500})).json()["items"]
    assert [i["id"] for i in every] == seen
    keys = [(i["created_at"], i["id"]) for i in every]
    assert keys == sorted(keys, reverse=True)


async def test_no_filter_is_every_image(client: httpx.AsyncClient, world: dict[str, Any]) -> None:
    assert sorted(await found(client, q="  ", limit=2)) == sorted(world["ids"].values())


# --- what people type -----------------------------------------------------------------------------

HOSTILE = [
    '"',
    '""',
    '"""',
    "'",
    "*",
    "**",
    "fox*",
    "*fox",
    ":",
    "prompt:fox",
    "prompt : fox",
    "{prompt}: fox",
    "fox:*",
    "fox:A",
    "AND",
    "fox AND",
    "AND OR NOT",
    "fox OR owl",
    "NOT fox",
    "-fox",
    "NEAR(",
    "NEAR(fox owl, 2)",
    "fox NEAR owl",
    "^fox",
    "fox +owl",
    "(",
    ")",
    "((fox)",
    "fox & owl | !boat",
    "fox <-> owl",
    "<2>",
    "\\",
    "fox\\",
    "'fox'",
    "it's",
    "%",
    "_",
    "100%",
    "a_b",
    "\t\n",
    "🦊",
    "🦊 fox",
    "Ёжик в тумане",
    "霧の森",
    "e\u0301",
    "²",
    "² ½ ",
    "fox ²",
    "\u200b",
    "\ufeff",
    "x" * 500,
    "fox " * 32,
    " ".join(f"w{n}" for n in range(32)),
    "a" * 499 + "*",
    "SELECT * FROM cog_images; --",
    "' OR 1=1 --",
    "rowid MATCH",
]


async def test_no_query_text_breaks_the_search(
    client: httpx.AsyncClient, world: dict[str, Any]
) -> None:
    for text in HOSTILE:
        for params in ({"q": text}, {"tag": text[:64]}, {"model": text}, {"q": text, "tag": text}):
            response = await client.get(URL, params=params)
            assert response.status_code == 200, (params, response.text)
            assert isinstance(response.json()["items"], list)
    # Operators are words, not operators: "fox OR owl" is three words, "NEAR(" one.
    assert await found(client, q="fox OR owl ") == []
    assert names(world, await found(client, q="-fox ")) == ["fox"]
    assert names(world, await found(client, q="prompt:fox")) == []
    assert names(world, await found(client, q="fox:*")) == ["foxglove", "fox"]


async def test_what_cannot_be_searched_is_a_clear_422(
    client: httpx.AsyncClient, world: dict[str, Any]
) -> None:
    assert "500" in await refused(client, q="x" * 501)
    assert "32" in await refused(client, q=" ".join(f"w{n}" for n in range(33)))
    assert "NUL" in await refused(client, q="fox\x00")
    assert "20" in await refused(client, tag=[f"t{n}" for n in range(21)])
    assert "upload" in await refused(client, source="painted")
    assert "from" in await refused(client, **{"from": "yesterday"})
    assert "to" in await refused(client, to="2025-02-30")
    assert "empty" in await refused(client, **{"from": "2025-03-02", "to": "2025-03-01"})
    assert "past" in await refused(client, to="9999-12-31")
    assert "series" in await refused(client, series_id="00000000-0000-0000-0000-000000000000")
    assert "series_id" in await refused(client, series_id="nature")
    assert "cursor" in await refused(client, cursor="not-a-cursor")
    assert "limit" in await refused(client, limit=0)
    assert "limit" in await refused(client, limit=501)


# --- the indexes at work --------------------------------------------------------------------------


async def plan_of_search(
    client: httpx.AsyncClient, app: FastAPI, pg_settings: tuple[str, ...] = (), **params: Any
) -> str:
    """The database's plan of the page query behind one search request, as one text."""
    engine: AsyncEngine = app.state.cog.engine
    with capture_sql(engine) as sent:
        response = await client.get(URL, params=params)
        assert response.status_code == 200, response.text
    at = next(n for n, (s, _) in enumerate(sent) if "ORDER BY cog_images.created_at DESC" in s)
    statement, parameters = sent[at]
    async with engine.connect() as conn:  # one transaction, as the request's
        # What the request set for its transaction before the query, then what the test adds.
        for setting, values in sent[:at]:
            if "set_config(" in setting:
                await conn.exec_driver_sql(setting, values)
        for setting in pg_settings:
            await conn.exec_driver_sql(setting)
        if engine.dialect.name == "sqlite":
            rows = await conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters)
            return "\n".join(str(row[-1]) for row in rows)
        rows = await conn.exec_driver_sql("EXPLAIN " + statement, parameters)
        return "\n".join(str(row[0]) for row in rows)


async def test_text_and_tags_are_found_through_the_indexes(
    client: httpx.AsyncClient, app: FastAPI, settings: Settings, dialect: str
) -> None:
    series = await make_series(client, "Plans")
    words = ["harbour", "meadow", "castle", "river", "orchard", "glacier", "canyon", "temple"]
    await insert_images(
        settings.database_url,
        series["id"],
        *(
            {
                "prompt": f"a {words[n % 8]} {words[(n // 8) % 8]} number {n}",
                "tags": [words[n % 7], f"t{n % 50}"],
                "model": f"model-{n % 4}",
            }
            for n in range(3000)
        ),
        {"prompt": "a lighthouse in a gale", "tags": ["storm"]},
    )
    engine: AsyncEngine = app.state.cog.engine
    if dialect == "postgres":
        async with engine.begin() as conn:
            await conn.exec_driver_sql("ANALYZE cog_images")
    rare = await plan_of_search(client, app, q="lighthouse gale")
    common = await plan_of_search(client, app, q="number")
    tag = await plan_of_search(client, app, tag="storm")
    if dialect == "sqlite":
        for plan in (rare, common, tag):
            assert "SCAN cog_images_fts VIRTUAL TABLE INDEX 0:M" in plan, plan
        # A few matches are looked up by rowid; many are walked in date order and checked.
        assert "USING INTEGER PRIMARY KEY (rowid=?)" in rare, rare
        assert "USING INDEX ix_cog_images_created_at_id" in common, common
    else:
        assert "ix_cog_images_search" in rare, rare
        assert "ix_cog_images_tags" in tag, tag
        # However common the word, the document the query asks for is the indexed one: with
        # other ways closed, the planner still has the index to use.
        forced = await plan_of_search(
            client,
            app,
            ("SET LOCAL enable_seqscan = off", "SET LOCAL enable_indexscan = off"),
            q="number",
        )
        assert "Bitmap Index Scan on ix_cog_images_search" in forced, forced
