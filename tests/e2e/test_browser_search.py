"""Search in a real browser: Debian's Chromium driven by Playwright, against `cog serve` run as a
subprocess. A person types in the header's box, sees the results, narrows them with a filter,
and goes back. Screenshots go to `test-artifacts/`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, expect

from tests.e2e.browser import (
    CHROMIUM,
    PHONE,
    Cog,
    Watch,
    open_page,
    png,
    shoot,
    start_cog,
)

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"no Chromium at {CHROMIUM}"),
]


@pytest.fixture(scope="module")
def cog(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cog]:
    server = start_cog(Path(tmp_path_factory.mktemp("cog-search")))
    yield server
    server.stop()


def test_search_from_the_header_then_narrow_it_and_go_back(
    browser: Browser, cog: Cog, watch: Watch
) -> None:
    api = cog.api
    woods = api.post("/api/series", json={"title": "Woods"}).json()
    night = api.post("/api/series", json={"title": "Night", "parent_id": woods["id"]}).json()
    coast = api.post("/api/series", json={"title": "Coast"}).json()
    uploads = {
        woods["id"]: ["fox-in-the-ferns.png", "fern-study.png"],
        night["id"]: ["fox-by-moonlight.png"],
        coast["id"]: ["fox-on-the-dunes.png", "lighthouse.png"],
    }
    for series_id, names in uploads.items():
        files = [
            ("files", (name, png(120, 80, (40 + 30 * n, 90, 120)), "image/png"))
            for n, name in enumerate(names)
        ]
        assert api.post(f"/api/series/{series_id}/images", files=files).status_code == 201

    page = open_page(browser, watch)
    page.goto(f"{cog.url}/cog")

    # The box in the header: type, press Enter, and the search page shows what matches.
    header_box = page.get_by_role("search").get_by_placeholder("Search images")
    header_box.fill("fox")
    header_box.press("Enter")
    expect(page).to_have_url(re.compile(r"/cog/search\?q=fox$"))
    results = page.locator("#search-results .tile")
    expect(results).to_have_count(3)
    box = page.locator("#search-form input[name=q]")
    expect(box).to_have_value("fox")
    expect(box).to_be_focused()

    # Typing on narrows as it goes (after a pause), and the address follows.
    box.press_sequentially(" fer", delay=30)
    expect(results).to_have_count(1)
    expect(results.first).to_have_attribute("title", "fox-in-the-ferns.png")
    expect(page).to_have_url(re.compile(r"/cog/search\?q=fox(\+|%20)fer$"))

    # A filter: a series, with its sub-series or without.
    box.fill("fox")
    expect(results).to_have_count(3)
    page.locator("#search-form select[name=series_id]").select_option(label="Woods")
    expect(results).to_have_count(2)
    expect(page).to_have_url(
        re.compile(rf"/cog/search\?q=fox&series_id={woods['id']}&include_subseries=true$")
    )
    page.get_by_label("Include sub-series").uncheck()
    expect(results).to_have_count(1)
    expect(results.first).to_have_attribute("title", "fox-in-the-ferns.png")
    shoot(page, "search-filtered-desktop")

    # The address is the search: loaded anew, it shows the same; back goes to the one before.
    page.reload()
    expect(results).to_have_count(1)
    expect(page.get_by_label("Include sub-series")).not_to_be_checked()
    page.go_back()
    expect(page).to_have_url(re.compile(r"include_subseries=true$"))
    expect(results).to_have_count(2)

    # Nothing found says so; a result opens the image.
    box.fill("fox walrus")
    expect(page.locator("#search-results")).to_contain_text("No images match")
    box.fill("lighthouse")
    page.locator("#search-form select[name=series_id]").select_option(label="Every series")
    expect(results).to_have_count(1)
    results.first.click()
    expect(page).to_have_url(re.compile(r"/cog/images/[0-9a-f-]{36}$"))
    watch.assert_clean()
    page.context.close()

    phone = open_page(browser, watch, PHONE)
    phone.goto(f"{cog.url}/cog/search?q=fox")
    expect(phone.locator("#search-results .tile")).to_have_count(3)
    shoot(phone, "search-phone")
    watch.assert_clean()
    phone.context.close()
