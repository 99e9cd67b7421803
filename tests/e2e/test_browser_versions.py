"""Versions and lineage of an image in a real browser: Debian's Chromium driven by Playwright,
against `cog serve` as a subprocess, editing through the fake Gemini server (real HTTP, Gemini's
wire format). Screenshots go to `test-artifacts/`.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest
from playwright.sync_api import Browser, expect

from cog.testing.gemini_server import GeminiTestServer
from tests.e2e.browser import (
    CHROMIUM,
    DESKTOP,
    PHONE,
    Cog,
    Watch,
    open_page,
    png,
    shoot,
)

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"no Chromium at {CHROMIUM}"),
]

# Slow enough that the edit's progress is seen, fast enough for the suite.
GEMINI_LATENCY_S = 1.0
IMAGE_URL = re.compile(r"/cog/images/([0-9a-f-]{36})(\?.*)?$")


def test_edit_restore_compare_split_and_replace(
    browser: Browser, cog: Cog, browser_gemini: GeminiTestServer, watch: Watch, tmp_path: Path
) -> None:
    api = cog.api
    series = api.post("/api/series", json={"title": "Harbour"}).json()
    original = png(320, 240, (40, 90, 170))
    files = [("files", ("harbour.png", original, "image/png"))]
    image = api.post(f"/api/series/{series['id']}/images", files=files).json()["items"][0]
    image_url = f"{cog.url}/cog/images/{image['id']}"
    page = open_page(browser, watch)
    page.goto(image_url)
    expect(page.locator("#versions .version")).to_have_count(1)
    expect(page.locator("#lineage")).to_contain_text("Not made from another image")

    # Edit by a prompt: the button is disabled and the progress shown while the model works,
    # then the page shows version 2.
    browser_gemini.reset()
    browser_gemini.latency_s = 1.0
    page.locator("#edit-prompt").fill("make the sky stormy")
    button = page.locator("#edit-form button[type=submit]")
    button.click()
    expect(button).to_be_disabled()
    expect(page.locator("#edit-progress")).to_be_visible()
    expect(page.locator("#edit-progress")).to_contain_text("gemini-3-pro-image is editing")
    expect(page).to_have_url(re.compile(r"\?notice=image-edited$"), timeout=15_000)
    expect(page.locator(".notice")).to_contain_text("new version")
    expect(page.locator("#versions .version")).to_have_count(2)
    expect(page.locator("#version-2")).to_have_class(re.compile("is-current"))
    expect(page.locator("#version-2")).to_contain_text("make the sky stormy")
    expect(page.locator("#version-2")).to_contain_text("edited from version 1")
    expect(page.locator("#version-info")).to_contain_text("2 of 2")
    expect(page.locator(".stage-full")).to_have_attribute("src", re.compile(r"/versions/2/file$"))
    expect(page.locator(".stage-full")).to_have_js_property("complete", True)
    # The model got the image and the words.
    (call,) = browser_gemini.requests
    assert call.prompt == "make the sky stormy"
    assert [i.data for i in call.images] == [original]
    shoot(page, "versions-after-edit-desktop")

    # A refused edit comes back in the form, prompt kept, and changes nothing.
    browser_gemini.latency_s = 0.0
    browser_gemini.block_next("IMAGE_SAFETY", where="finish", kind="image")
    page.locator("#edit-prompt").fill("something the model refuses")
    page.locator("#edit-form button[type=submit]").click()
    expect(page.locator("#edit-error")).to_contain_text("refused the prompt for safety reasons")
    expect(page.locator("#edit-prompt")).to_have_value("something the model refuses")
    expect(page.locator("#versions .version")).to_have_count(2)

    # Version 1, large; restore it from there: version 3, a copy of version 1.
    page.locator("#version-1 .version-thumb").click()
    expect(page).to_have_url(re.compile(r"\?version=1$"))
    expect(page.locator("#viewing")).to_contain_text("Version 1 of 2")
    expect(page.locator(".stage-full")).to_have_attribute("src", re.compile(r"/versions/1/file$"))
    shoot(page, "versions-viewing-old-desktop")
    page.locator("#viewing").get_by_role("button", name="Restore this version").click()
    expect(page.locator("#confirm-text")).to_contain_text("no version is lost")
    page.locator("[data-confirm-ok]").click()
    expect(page).to_have_url(re.compile(r"\?notice=version-restored$"))
    expect(page.locator("#versions .version")).to_have_count(3)
    expect(page.locator("#version-3")).to_contain_text("restored from version 1")
    current = api.get(f"/api/images/{image['id']}").json()
    assert current["version"] == 3
    assert current["sha256"] == hashlib.sha256(original).hexdigest()

    # Compare 1 and 3 (the same picture): side by side, and one over the other with a slider.
    form = page.locator("#versions .compare-form")
    form.get_by_label("First version").select_option("1")
    form.get_by_label("Second version").select_option("3")
    form.get_by_role("button", name="Compare").click()
    expect(page).to_have_url(re.compile(r"/compare\?a=1&b=3$"))
    expect(page.locator("#compare-pair figure")).to_have_count(2)
    slider = page.locator("[data-compare-range]")
    slider.fill("80")
    cut = page.locator("[data-compare]").evaluate("(box) => box.style.getPropertyValue('--cut')")
    assert cut == "20%"
    shoot(page, "versions-compare-desktop")
    # Versions 1 and 2 differ in shape: side by side only.
    page.goto(f"{image_url}/compare?a=1&b=2")
    expect(page.locator("#compare-pair figure")).to_have_count(2)
    expect(page.locator("[data-compare]")).to_have_count(0)

    # Split version 2 off: a new image, whose lineage points back at it.
    page.goto(image_url)
    page.get_by_role("button", name="Split off version 2").click()
    page.locator("[data-confirm-ok]").click()
    expect(page).to_have_url(re.compile(r"\?notice=version-split$"))
    split_id = IMAGE_URL.search(page.url).group(1)  # type: ignore[union-attr]
    assert split_id != image["id"]
    expect(page.locator("#lineage-parents .lineage-item")).to_have_count(1)
    expect(page.locator("#lineage-parents")).to_contain_text("split off from version 2")
    expect(page.locator("#versions .version")).to_have_count(1)
    shoot(page, "versions-split-desktop")
    page.locator("#lineage-parents .lineage-label").click()
    expect(page).to_have_url(image_url)
    expect(page.locator("#lineage-children .lineage-item")).to_have_count(1)

    # Replace the file: a bad one is refused in the form, a good one is version 4.
    page.get_by_text("Replace file…").click()
    notes = tmp_path / "notes.txt"
    notes.write_bytes(b"tide tables, not a picture")
    page.locator("#replace-form input[type=file]").set_input_files(str(notes))
    page.locator("#replace-form button[type=submit]").click()
    expect(page.locator("#replace-error")).to_contain_text("Cog accepts")
    better = tmp_path / "harbour-night.jpg"
    better.write_bytes(png(240, 320, (10, 10, 30), "JPEG"))
    page.locator("#replace-form input[type=file]").set_input_files(str(better))
    page.locator("#replace-form button[type=submit]").click()
    expect(page).to_have_url(re.compile(r"\?notice=image-replaced$"))
    expect(page.locator("#versions .version")).to_have_count(4)
    expect(page.locator("h1")).to_have_text("harbour-night.jpg")
    expect(page.locator("#version-4")).to_contain_text("replaced by an upload")

    # The gallery shows the current version of each image.
    page.goto(f"{cog.url}/cog/series/{series['id']}")
    tile = page.locator(f"#gallery a[href='/cog/images/{image['id']}'] img")
    expect(tile).to_have_attribute("src", f"/api/images/{image['id']}/versions/4/thumbnail")
    expect(tile).to_have_js_property("naturalWidth", 240)  # version 4 is 240 x 320, not 320 x 240

    for width, viewport in (("desktop", DESKTOP), ("phone", PHONE)):
        looked = open_page(browser, watch, viewport)
        for name, url in (("image", image_url), ("compare", f"{image_url}/compare?a=1&b=3")):
            looked.goto(url)
            shoot(looked, f"versions-{name}-{width}")
            overflow = looked.evaluate(
                "document.documentElement.scrollWidth - document.documentElement.clientWidth"
            )
            assert overflow <= 0, f"{name} at {width} width scrolls sideways by {overflow}px"
            unsized = looked.locator("img:not([width]), img:not([height])").count()
            assert unsized == 0, f"{name}: {unsized} image(s) without width and height"
        looked.context.close()

    # The refusals that were meant to happen: the model's (422) and the text file's (422).
    watch.assert_clean("Failed to load resource: the server responded with a status of 422")
    page.context.close()
