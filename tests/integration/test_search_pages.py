"""The search page through the in-process client: the header box on every page, the form with
its filters, the results and their next pages, the htmx fragment, the empty states."""

from __future__ import annotations

import datetime as dt
import re
from html import unescape
from typing import Any

import httpx
import pytest

from cog.config import Settings
from tests.factories import insert_images, make_image, make_series

HTMX = {"HX-Request": "true", "HX-Target": "search-results"}


def tiles(html: str) -> list[str]:
    """The image ids of the thumbnails on a page or fragment, in order."""
    return re.findall(r'class="tile[^"]*" href="/cog/images/([0-9a-f-]{36})"', html)


def next_url(html: str) -> str | None:
    found = re.search(r'class="gallery-more" hx-get="([^"]+)"', html)
    return unescape(found.group(1)) if found else None


@pytest.fixture
async def seeded(client: httpx.AsyncClient, settings: Settings) -> dict[str, Any]:
    studio = await make_series(client, "Studio")
    sketches = await make_series(client, "Sketches", parent_id=studio["id"])
    day = dt.datetime(2025, 5, 1, tzinfo=dt.UTC)
    lanterns = await insert_images(
        settings.database_url,
        sketches["id"],
        *(
            {
                "prompt": f"a paper lantern, study {n}",
                "model": "gemini-3-pro-image",
                "tags": ["lantern", "warm"] if n % 2 else ["lantern"],
                "created_at": day + dt.timedelta(minutes=n),
            }
            for n in range(70)
        ),
    )
    (moth,) = await insert_images(
        settings.database_url,
        studio["id"],
        {
            "prompt": "a moth near a lantern, <b>glow</b> & smoke",
            "model": "imagen-4",
            "created_at": day - dt.timedelta(minutes=1),
        },
    )
    return {"studio": studio, "sketches": sketches, "lanterns": lanterns, "moth": moth}


async def test_every_page_has_the_search_box_in_its_header(client: httpx.AsyncClient) -> None:
    series = await make_series(client, "Anywhere")
    for url in ("/cog", f"/cog/series/{series['id']}"):
        html = (await client.get(url)).text
        assert 'class="top-search" role="search" action="/cog/search"' in html
        assert 'name="q" placeholder="Search images"' in html
    # A series' page offers to search its images and its sub-series' images.
    assert f'href="/cog/search?series_id={series["id"]}&amp;include_subseries=true"' in html
    # The search page has its own, larger box instead.
    page = (await client.get("/cog/search")).text
    assert 'class="top-search"' not in page
    assert 'id="search-form"' in page


async def test_a_search_shows_its_results_and_loads_the_rest_as_it_scrolls(
    client: httpx.AsyncClient, seeded: dict[str, Any]
) -> None:
    response = await client.get("/cog/search", params={"q": "lantern"})
    assert response.status_code == 200
    html = response.text
    newest_first = list(reversed(seeded["lanterns"]))
    assert tiles(html) == newest_first[:60]
    assert 'value="lantern"' in html  # the box shows the search back
    more = next_url(html)
    assert more is not None and more.startswith("/cog/search/images?q=lantern&cursor=")
    rest = (await client.get(more)).text
    assert tiles(rest) == [*newest_first[60:], seeded["moth"]]
    assert next_url(rest) is None


async def test_filters_are_shown_back_and_carried_to_the_next_pages(
    client: httpx.AsyncClient, seeded: dict[str, Any]
) -> None:
    studio = seeded["studio"]["id"]
    params = {
        "q": "lantern",
        "tag": "warm, Lantern",
        "model": "gemini-3-pro-image",
        "source": "generated",
        "series_id": studio,
        "include_subseries": "true",
        "from": "2025-05-01",
        "to": "2025-05-01",
    }
    html = (await client.get("/cog/search", params=params)).text
    warm = [i for n, i in enumerate(seeded["lanterns"]) if n % 2]
    assert tiles(html) == list(reversed(warm))
    assert 'name="tag" value="warm, Lantern"' in html
    assert '<option value="gemini-3-pro-image" selected>' in html
    assert '<option value="imagen-4">' in html  # the models present are the choices
    assert '<option value="generated" selected>' in html
    assert f'<option value="{studio}" selected>' in html
    assert 'name="include_subseries" value="true" data-only-with="series_id" checked' in html
    assert 'name="from" value="2025-05-01"' in html
    # Without the sub-series: only what is in Studio itself.
    alone = (await client.get("/cog/search", params={"series_id": studio})).text
    assert tiles(alone) == [seeded["moth"]]
    assert 'data-only-with="series_id">' in alone  # the box is left cleared
    # The next page keeps every filter.
    many = (
        await client.get(
            "/cog/search", params={"q": "lantern", "series_id": studio, "include_subseries": "true"}
        )
    ).text
    more = next_url(many)
    assert more is not None
    assert f"series_id={studio}" in more and "include_subseries=true" in more


async def test_htmx_gets_the_results_alone(
    client: httpx.AsyncClient, seeded: dict[str, Any]
) -> None:
    response = await client.get("/cog/search", params={"q": "moth"}, headers=HTMX)
    assert response.status_code == 200
    assert "<html" not in response.text
    assert 'id="search-form"' not in response.text
    assert tiles(response.text) == [seeded["moth"]]
    assert "1 image found" in response.text
    assert response.headers["vary"] == "HX-Request"


async def test_what_people_typed_is_shown_as_text(
    client: httpx.AsyncClient, seeded: dict[str, Any]
) -> None:
    typed = '<script>alert(1)</script> "quoted'
    html = (await client.get("/cog/search", params={"q": typed})).text
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &#34;quoted" in html
    # The moth's prompt has markup in it; it is a title, escaped.
    moth = (await client.get("/cog/search", params={"q": "moth"})).text
    assert 'title="a moth near a lantern, &lt;b&gt;glow&lt;/b&gt; &amp; smoke"' in moth


async def test_empty_states(client: httpx.AsyncClient, settings: Settings) -> None:
    html = (await client.get("/cog/search")).text
    assert "No images yet" in html
    series = await make_series(client, "One")
    image = await make_image(client, series["id"], name="only.png")
    everything = (await client.get("/cog/search")).text
    assert tiles(everything) == [image["id"]]
    none = (await client.get("/cog/search", params={"q": "nothing-like-this"})).text
    assert "No images match" in none
    assert tiles(none) == []


async def test_a_bad_filter_is_a_page_that_says_so(client: httpx.AsyncClient) -> None:
    response = await client.get("/cog/search", params={"from": "someday"})
    assert response.status_code == 422
    assert "`from` is not a date" in unescape(response.text)
    fragment = await client.get("/cog/search", params={"source": "painted"}, headers=HTMX)
    assert fragment.status_code == 422
    assert "upload" in fragment.json()["detail"]
