"""Style in a real browser: Debian's Chromium driven by Playwright, against `cog serve` run as a
subprocess generating through the fake Gemini server. A person writes a series' style profile,
selects images in another series' gallery, restyles them into a third, and watches the batch
run to its end. Screenshots go to `test-artifacts/`.
"""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import Browser, Locator, Page, expect

from cog.testing.gemini_server import GeminiTestServer
from tests.e2e.browser import CHROMIUM, Cog, Watch, open_page, png, shoot

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"no Chromium at {CHROMIUM}"),
]

# Slow enough to see the batch run, fast enough for the suite.
GEMINI_LATENCY_S = 0.3


def restyle_dialog(page: Page, title: str, style_id: str, target_id: str) -> Locator:
    """Open Restyle… for what is selected, check what the dialog says it is for, and choose
    the style and the target series."""
    page.get_by_role("button", name="Restyle…").click()
    dialog = page.locator("#modal dialog")
    expect(dialog).to_contain_text(title)
    dialog.get_by_label("In the style of the series").select_option(value=style_id)
    dialog.get_by_label("Into the series").select_option(value=target_id)
    return dialog


def test_restyle_a_selection_in_the_style_of_another_series(
    browser: Browser, cog: Cog, browser_gemini: GeminiTestServer, watch: Watch
) -> None:
    api = cog.api
    photos = api.post("/api/series", json={"title": "Photos"}).json()
    gouache = api.post("/api/series", json={"title": "Gouache"}).json()
    target = api.post("/api/series", json={"title": "Photos in gouache"}).json()
    sources = {f"p{n}.png": png(90, 60, (200 - 60 * n, 40, 40 + 60 * n)) for n in range(3)}
    styles = {f"g{n}.png": png(60, 90, (30, 120 + 50 * n, 60)) for n in range(2)}
    for series, files in ((photos, sources), (gouache, styles)):
        parts = [("files", (name, data, "image/png")) for name, data in files.items()]
        assert api.post(f"/api/series/{series['id']}/images", files=parts).status_code == 201

    page = open_page(browser, watch)
    # The style series' profile, written by hand on its page.
    page.goto(f"{cog.url}/cog/series/{gouache['id']}")
    style = page.locator("#series-style")
    expect(style).to_contain_text("No style profile yet")
    style.get_by_role("button", name="Edit profile").click()
    style.locator("textarea[name=style_profile]").fill("Thick gouache, warm ochres, soft edges")
    style.get_by_role("button", name="Save").click()
    expect(page.locator("[data-style-profile]")).to_have_text(
        "Thick gouache, warm ochres, soft edges"
    )

    # Select the photos and restyle them.
    page.goto(f"{cog.url}/cog/series/{photos['id']}")
    page.get_by_role("button", name="Select", exact=True).click()
    page.get_by_role("button", name="Select all shown").click()
    expect(page.locator("#selection-count")).to_have_text("3 images selected")
    dialog = restyle_dialog(page, "Restyle 3 images", gouache["id"], target["id"])
    dialog.get_by_label("Style images to send with each").fill("2")
    shoot(page, "restyle-dialog")
    browser_gemini.reset()
    dialog.get_by_role("button", name="Restyle").click()

    # The restyle job's page, with the batch's progress, live, to its end.
    expect(page).to_have_url(re.compile(r"/cog/jobs/[0-9a-f-]+#batch-"))
    expect(page.locator("h1, .job-title, input[name=title]").first).to_be_visible()
    card = page.locator("article.batch").first
    expect(card).to_contain_text("For each of 3 images")
    expect(card).to_have_class(re.compile(r"\bbatch-succeeded\b"), timeout=30_000)
    expect(page.locator("#style-source select[name=style_series_id]")).to_have_value(gouache["id"])
    shoot(page, "restyle-done")

    # What the model received: each photo with the two style images, marked as such.
    requests = browser_gemini.requests
    assert len(requests) == 3
    assert sorted(r.images[0].data for r in requests) == sorted(sources.values())
    for request in requests:
        assert sorted(i.data for i in request.images[1:]) == sorted(styles.values())
        assert "Style: Thick gouache, warm ochres, soft edges" in request.prompt
        assert "The last 2 images are style references from the series “Gouache”" in (
            request.prompt
        )
    made = api.get(f"/api/series/{target['id']}/images").json()["items"]
    assert len(made) == 3
    for image in made:
        assert image["metadata"]["style"]["series_id"] == gouache["id"]

    # Again for the photos tagged "keep" only, more than a page of them, chosen with "Select
    # all … tagged": the gallery sends the series with the tag, and only those are restyled.
    more = [("files", (f"k{n}.png", png(8, 8, (n, 90, 200)), "image/png")) for n in range(61)]
    added = api.post(f"/api/series/{photos['id']}/images", files=more).json()["items"]
    keep = sorted(i["id"] for i in added)
    tagging = {"action": "tag", "ids": keep, "tags": ["keep"]}
    assert api.post("/api/images/batch", json=tagging).status_code == 200
    page.goto(f"{cog.url}/cog/series/{photos['id']}?tag=keep")
    page.get_by_role("button", name="Select", exact=True).click()
    page.get_by_role("button", name="Select all 61 tagged “keep”").click()
    expect(page.locator("#selection-count")).to_have_text("All 61 images selected")
    # Into a new series this time, titled in the dialog.
    dialog = restyle_dialog(page, "Restyle all 61 images", gouache["id"], "new")
    title = dialog.get_by_label("Title of the new series")
    expect(title).to_have_value("Photos, restyled")
    title.fill("Kept, in gouache")
    dialog.get_by_role("button", name="Restyle").click()
    expect(page).to_have_url(re.compile(r"/cog/jobs/[0-9a-f-]+#batch-"))
    expect(page.locator("article.batch").first).to_contain_text("For each of 61 images")
    batch_id = page.url.rsplit("#batch-", 1)[1]
    batch = api.get(f"/api/batches/{batch_id}").json()
    assert sorted(r["input_image_id"] for r in batch["runs"]) == keep
    job = api.get(f"/api/jobs/{batch['job_id']}").json()
    assert api.get(f"/api/series/{job['series_id']}").json()["title"] == "Kept, in gouache"
    assert api.post(f"/api/batches/{batch_id}/cancel").status_code == 200
    watch.assert_clean()
    page.context.close()
