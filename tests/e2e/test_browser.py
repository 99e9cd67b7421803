"""The pages in a real browser: Debian's Chromium driven by Playwright, against `cog serve` run as
a subprocess on loopback, generating through the fake Gemini server (real HTTP, Gemini's wire
format). Screenshots of every page, at desktop and phone widths, go to `test-artifacts/`.
"""

from __future__ import annotations

import base64
import json
import re
import time
import zipfile
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect

from cog.testing.gemini_server import GeminiTestServer
from tests.e2e.browser import (
    CHROMIUM,
    DESKTOP,
    PHONE,
    Cog,
    Watch,
    open_page,
    png,
    settled,
    shoot,
    start_cog,
    upload_by_chooser,
)

SEP = "\u203a"  # the arrow between the titles of a trail
EVIL = "<script>alert(1)</script> \"double\" 'single' Ёжик «в» тумане 霧"
# Not a double quote: browsers send it in a multipart file name as %22 (the HTML spec's form
# encoding), and the API records the name as it arrives.
EVIL_FILE = "<img src=x onerror=alert(2)> «霧» 'q'.png"

# Slow enough that a run is seen running, fast enough for the suite.
GEMINI_LATENCY_S = 0.4

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"no Chromium at {CHROMIUM}"),
]


SERIES_URL = re.compile(r"/cog/series/[0-9a-f-]{36}$")
IMAGE_URL = re.compile(r"/cog/images/[0-9a-f-]{36}$")
JOB_URL = re.compile(r"/cog/jobs/[0-9a-f-]{36}$")


# --- a newcomer's whole flow ----------------------------------------------------------------------


def test_a_newcomer_makes_series_uploads_and_runs_a_job(
    browser: Browser, cog: Cog, watch: Watch
) -> None:
    page = open_page(browser, watch)

    # An empty Cog says what to do first; with a key set there is no preview banner.
    page.goto(f"{cog.url}/")
    expect(page).to_have_url(f"{cog.url}/cog")
    expect(page.get_by_role("heading", name="Start with a series")).to_be_visible()
    expect(page.locator("#preview-banner")).to_have_count(0)

    # A series, with a description and tags; creating it opens it.
    form = page.locator("#new-series")
    form.locator("input[name=title]").fill("Harbour at dawn")
    form.get_by_text("Description and tags").click()
    form.locator("textarea[name=description]").fill("Boats, mist and the first light.")
    form.locator("input[name=tags]").fill("Sea, morning")
    form.get_by_role("button", name="Create series").click()
    expect(page).to_have_url(SERIES_URL)
    expect(page.locator("h1")).to_have_text("Harbour at dawn")
    expect(page.locator("#series-header .tags")).to_have_text(re.compile(r"sea\s*morning"))
    series_url = page.url

    # A sub-series, from the series page; it is listed at once.
    child = page.locator("#new-child")
    child.locator("input[name=title]").fill("Close-ups")
    child.get_by_role("button", name="Add").click()
    expect(page.locator("#children")).to_contain_text("Close-ups")
    expect(page.locator("#new-child input[name=title]")).to_have_value("")

    # Three files by the file chooser: two images, and one that is not an image.
    upload_by_chooser(
        page,
        [
            {"name": "boat.png", "mimeType": "image/png", "buffer": png(320, 200, (30, 90, 160))},
            {
                "name": "mist.jpg",
                "mimeType": "image/jpeg",
                "buffer": png(200, 300, (200, 200, 190), "JPEG"),
            },
            {
                "name": "notes.txt",
                "mimeType": "text/plain",
                "buffer": b"tide tables, not a picture",
            },
        ],
    )
    refused = page.locator("#uploads li.failed")
    expect(refused).to_have_count(1)
    expect(refused).to_contain_text("notes.txt")
    expect(refused.locator(".upload-status")).to_contain_text("Cog accepts")
    expect(page.locator("#uploads li.done")).to_have_count(2)
    expect(page.locator("#uploads-summary")).to_have_text("2 added · 1 refused")
    expect(page.locator("#gallery .tile")).to_have_count(2)
    expect(page.locator("#image-count")).to_have_text("2")
    shoot(page, "flow-series-after-upload-desktop")

    # The gallery is the same after a reload (newest first), and an image opens.
    page.reload()
    expect(page.locator("#gallery .tile")).to_have_count(2)
    page.locator("#gallery .tile").first.click()
    expect(page).to_have_url(IMAGE_URL)
    meta = page.locator("dl.meta")
    expect(meta).to_contain_text("Uploaded")
    expect(meta).to_contain_text(re.compile(r"(boat\.png|mist\.jpg)"))
    expect(page.locator(".stage-full")).to_have_js_property("complete", True)
    page.get_by_role("link", name="Harbour at dawn").first.click()
    expect(page).to_have_url(series_url)

    # A job: created from the series page, it opens in the editor.
    page.locator("#new-job summary").click()
    page.locator("#new-job input[name=title]").fill("Boats")
    page.locator("#new-job textarea[name=base_prompt]").fill("fishing boats in morning mist")
    page.get_by_role("button", name="Create job").click()
    expect(page).to_have_url(JOB_URL)
    job_url = page.url
    expect(page.locator(".steps-empty")).to_be_visible()

    # Draft with AI: the steps arrive as cards.
    page.get_by_role("button", name="Draft with AI").click()
    expect(page.locator("#draft-progress")).to_be_visible()  # the model takes its time
    expect(page.locator(".step-card")).to_have_count(2)
    expect(page.locator("#save-state")).to_contain_text("Drafted 2 steps")
    expect(page.locator("#step-0 select[data-kind]")).to_have_value("llm")
    expect(page.locator("#step-1 select[data-kind]")).to_have_value("image")

    # Edit the image step: its prompt and two images.
    page.locator("textarea[name='steps-1-prompt']").fill("{{ steps[0].text }} Soft watercolour.")
    page.locator("input[name='steps-1-count']").fill("2")
    expect(page.locator("#save-state")).to_have_text("Unsaved changes")

    # Reorder: the image step first. It then uses a step that has not run: the error is shown
    # at that step's prompt, and nothing is saved.
    page.get_by_role("button", name="Move step 2 up").click()
    expect(page.locator("#step-0 select[data-kind]")).to_have_value("image")
    expect(page.locator("textarea[name='steps-0-prompt']")).to_have_value(
        "{{ steps[0].text }} Soft watercolour."
    )
    page.locator("#save-button").click()
    expect(page.locator("#steps-0-prompt-error")).to_contain_text("does not run before this step")
    expect(page.locator("#save-state")).to_contain_text("nothing was saved")
    # Back in order, it saves.
    page.get_by_role("button", name="Move step 1 down").click()
    expect(page.locator("#step-1 select[data-kind]")).to_have_value("image")
    page.locator("#save-button").click()
    expect(page.locator("#save-state")).to_have_text("Saved.")
    job_id = job_url.rsplit("/", 1)[1]
    saved = cog.api.get(f"/api/jobs/{job_id}").json()["steps"]
    assert [s["kind"] for s in saved] == ["llm", "image"]
    assert saved[1]["prompt"] == "{{ steps[0].text }} Soft watercolour."
    assert saved[1]["config"]["count"] == 2

    # Run: the run appears at the top of the history and fills in live, images as they are
    # stored, without the page loading again.
    page.evaluate("window.__sameDocument = true")
    page.locator("#run-button").click()
    first_run = page.locator(".run").first
    expect(first_run).to_have_attribute("sse-connect", re.compile(r"/cog/runs/.+/live"))
    expect(first_run.locator(".run-summary .badge")).to_have_text(re.compile("queued|running"))
    expect(first_run.locator(".run-step").nth(0).locator(".step-text")).to_be_visible()
    expect(first_run.locator(".run-step").nth(1).locator(".tile")).to_have_count(2, timeout=20_000)
    expect(first_run.locator(".run-summary .badge")).to_have_text("succeeded", timeout=20_000)
    expect(first_run).not_to_have_attribute("sse-connect", re.compile("."))
    assert page.evaluate("window.__sameDocument") is True
    shoot(page, "flow-job-after-run-desktop")

    # Run again: two runs in the history.
    page.locator("#run-button").click()
    expect(page.locator(".run")).to_have_count(2)
    expect(page.locator(".run").first.locator(".run-summary .badge")).to_have_text(
        "succeeded", timeout=20_000
    )

    # The history: the older run opens to show its steps, prompts and outputs.
    page.reload()
    older = page.locator(".run").nth(1)
    expect(older).not_to_have_attribute("open", "")
    older.locator(".run-summary").click()
    expect(older.locator(".run-step")).to_have_count(2)
    expect(older.locator(".run-step").nth(1).locator(".tile")).to_have_count(2)
    older.locator(".run-step").nth(1).get_by_text("Prompt as sent").click()
    expect(older.locator(".run-step").nth(1).locator("pre")).to_contain_text("Soft watercolour.")

    # Delete the job: the confirmation says the images stay, and they do.
    page.get_by_role("button", name="Delete job").click()
    expect(page.locator("#confirm")).to_be_visible()
    expect(page.locator("#confirm-text")).to_contain_text("Every image it made stays")
    page.locator("[data-confirm-ok]").click()
    expect(page).to_have_url(re.compile(re.escape(series_url) + r"\?notice=job-deleted$"))
    expect(page.locator(".notice")).to_contain_text("Every image it made is still in this series")
    expect(page.locator("#gallery .tile")).to_have_count(6)
    expect(page.locator("#gallery .tile-generated")).to_have_count(4)
    expect(page.locator("#image-count")).to_have_text("6")
    expect(page.locator(".jobs")).to_have_count(0)

    # A generated image keeps its provenance; the job is gone but the image says so.
    page.locator("#gallery .tile-generated").first.click()
    expect(page.locator("dl.meta")).to_contain_text("Generated")
    expect(page.locator("dl.meta")).to_contain_text("gemini-3-pro-image")
    expect(page.locator("dl.meta")).to_contain_text("deleted (the image stays)")

    # The browser reports the refusals that were meant to happen: the file that is not an image
    # (415) and the save of steps in the wrong order (422, its form swapped in with the errors).
    watch.assert_clean(
        "Failed to load resource: the server responded with a status of 415",
        "Failed to load resource: the server responded with a status of 422",
    )
    page.context.close()


# --- a batch: the job for each image ---------------------------------------------------------


def test_a_batch_started_from_the_job_page_runs_to_its_end(
    browser: Browser, cog: Cog, watch: Watch
) -> None:
    api = cog.api
    top = api.post("/api/series", json={"title": "Harbours"}).json()
    child = api.post("/api/series", json={"title": "Piers", "parent_id": top["id"]}).json()
    for series, names in ((top, ["quay.png", "buoy.png"]), (child, ["pier.png"])):
        files = [
            ("files", (name, png(120, 90, (40 * n, 120, 160)), "image/png"))
            for n, name in enumerate(names)
        ]
        assert api.post(f"/api/series/{series['id']}/images", files=files).status_code == 201
    job = api.post(f"/api/series/{top['id']}/jobs", json={"base_prompt": "ink"}).json()

    page = open_page(browser, watch)
    page.goto(f"{cog.url}/cog/jobs/{job['id']}")
    # One image step that takes the batch's image as its reference and names it in its prompt.
    page.locator("#add-image").click()
    page.locator("textarea[name='steps-0-prompt']").fill("Ink drawing of {{ input.filename }}")
    page.locator("#step-0 .inputs summary").click()
    page.get_by_label("This batch's image").check()

    # The series with its sub-series: the count follows the choice.
    form = page.locator("#batch-form")
    expect(form.locator("#batch-button")).to_have_text("▶ Run for each of 2 images")
    form.get_by_label("with its sub-series").check()
    expect(form.locator("#batch-button")).to_have_text("▶ Run for each of 3 images")
    form.locator("#batch-button").click()

    # The steps are saved and the batch's card appears, then fills to the end by itself.
    expect(page.locator("#save-state")).to_contain_text("Saved and started 3 runs")
    card = page.locator(".batch").first
    expect(card.locator(".batch-title")).to_have_text("For each of 3 images")
    expect(card.locator(".badge")).to_have_text(re.compile("running|succeeded"))
    expect(card.locator(".badge")).to_have_text("succeeded", timeout=20_000)
    expect(card.locator(".batch-progress")).to_have_attribute("aria-valuenow", "3")
    expect(card.locator(".bar-ok")).to_have_attribute("width", "3")
    expect(card.locator(".batch-counts")).to_contain_text("3 / 3 done")
    expect(card.locator(".batch-counts")).to_contain_text("3 succeeded")
    expect(card.locator(".batch-run")).to_have_count(3)
    expect(card.locator(".batch-run img")).to_have_count(6)  # each input and what it made
    expect(card.locator(".batch-actions")).to_have_count(0)  # nothing left to cancel
    shoot(page, "batch-job-page-desktop")
    saved = api.get(f"/api/jobs/{job['id']}").json()["steps"]
    assert saved[0]["config"]["input_images"] == ["input"]

    # A run of the batch opens, with the prompt its image gave it.
    card.locator(".batch-run a").first.click()
    opened = page.locator(".run[open]").first
    expect(opened.locator(".run-summary .badge")).to_have_text("succeeded")
    opened.get_by_text("Prompt as sent").first.click()
    expect(opened.locator("pre").first).to_contain_text("Ink drawing of quay.png")
    watch.assert_clean()
    page.context.close()


def batch_to_its_end(page: Page, cog: Cog, job_id: str, title: str) -> dict[str, Any]:
    """On the job's page a started batch opens, its card until it has succeeded; the batch."""
    expect(page).to_have_url(re.compile(rf"/cog/jobs/{job_id}#batch-"))
    card = page.locator("article.batch").first
    expect(card).to_contain_text(title)
    expect(card.locator(".badge")).to_have_text("succeeded", timeout=20_000)
    batch: dict[str, Any] = cog.api.get(f"/api/batches/{page.url.rsplit('#batch-', 1)[1]}").json()
    return batch


def test_a_gallery_selection_runs_through_a_job_of_another_series(
    browser: Browser, cog: Cog, watch: Watch
) -> None:
    api = cog.api
    photos = api.post("/api/series", json={"title": "Sketches"}).json()
    inks = api.post("/api/series", json={"title": "Inks"}).json()
    files = [
        ("files", (f"s{n}.png", png(90, 60, (60 * n, 90, 120)), "image/png")) for n in range(4)
    ]
    made = api.post(f"/api/series/{photos['id']}/images", files=files).json()["items"]
    fields = {"title": "Ink over", "base_prompt": "ink"}
    job = api.post(f"/api/series/{inks['id']}/jobs", json=fields).json()
    step = {
        "kind": "image",
        "prompt": "Ink over {{ input.filename }}",
        "config": {"input_images": ["input"]},
    }
    assert api.put(f"/api/jobs/{job['id']}/steps", json={"steps": [step]}).status_code == 200

    page = open_page(browser, watch)
    page.goto(f"{cog.url}/cog/series/{photos['id']}")
    page.get_by_role("button", name="Select", exact=True).click()
    tiles = page.locator("#gallery .tile-box")
    chosen = [tiles.nth(i).get_attribute("data-id") for i in (0, 2)]
    for i in (0, 2):
        tiles.nth(i).locator(".tile-check").check()
    expect(page.locator("#selection-count")).to_have_text("2 images selected")
    page.set_viewport_size(PHONE)
    expect(page.get_by_role("button", name="Run a job…")).to_be_in_viewport()
    shoot(page, "gallery-selection-phone")
    page.set_viewport_size(DESKTOP)
    page.get_by_role("button", name="Run a job…").click()
    dialog = page.locator("#modal dialog")
    expect(dialog).to_contain_text("Run a job for 2 images")
    # Nothing of this series' own can run, so the person chooses; Inks' job is offered.
    select = dialog.get_by_label("The job")
    expect(select).to_have_value("")
    select.select_option(value=job["id"])
    shoot(page, "run-job-dialog")
    dialog.get_by_role("button", name="Run").click()

    # The job's page, with the batch's card, to its end.
    batch = batch_to_its_end(page, cog, job["id"], "For each of 2 images")
    assert sorted(r["input_image_id"] for r in batch["runs"]) == sorted(chosen)
    by_id = {i["id"]: i["original_filename"] for i in made}
    inked = api.get(f"/api/series/{inks['id']}/images").json()["items"]
    assert sorted(i["prompt"] for i in inked) == sorted(f"Ink over {by_id[c]}" for c in chosen)

    # From one image's page, for that image alone.
    lone = made[3]
    page.goto(f"{cog.url}/cog/images/{lone['id']}")
    page.get_by_role("button", name="Run a job…").click()
    dialog = page.locator("#modal dialog")
    expect(dialog.locator("h2")).to_have_text("Run a job for this image")
    dialog.get_by_label("The job").select_option(value=job["id"])
    dialog.get_by_role("button", name="Run").click()
    batch = batch_to_its_end(page, cog, job["id"], "For each of 1 image")
    assert [r["input_image_id"] for r in batch["runs"]] == [lone["id"]]
    watch.assert_clean()
    page.context.close()


# --- the everyday tools ---------------------------------------------------------------------------


def test_the_tree_gallery_and_editing_tools(
    browser: Browser, cog: Cog, browser_gemini: GeminiTestServer, watch: Watch
) -> None:
    api = cog.api
    archive = api.post("/api/series", json={"title": "Archive", "tags": ["old"]}).json()
    old = api.post("/api/series", json={"title": "Old", "parent_id": archive["id"]}).json()
    api.post("/api/series", json={"title": "New", "parent_id": archive["id"]})
    api.post("/api/series", json={"title": "Older", "parent_id": old["id"]})
    for batch in (range(100), range(100, 130)):
        files = [
            ("files", (f"scan-{i:03d}.png", png(24, 16, (i, 90, 140)), "image/png")) for i in batch
        ]
        assert api.post(f"/api/series/{archive['id']}/images", files=files).status_code == 201
    job = api.post(
        f"/api/series/{archive['id']}/jobs", json={"title": "Restore", "base_prompt": "restore"}
    ).json()
    steps = [{"kind": "image", "prompt": "{{ base_prompt }} this scan"}]
    api.put(f"/api/jobs/{job['id']}/steps", json={"steps": steps}).raise_for_status()
    page = open_page(browser, watch)

    # The tree opens level by level.
    page.goto(f"{cog.url}/cog")
    row = page.locator(".tree-item").filter(has_text="Archive").first
    row.get_by_role("button", name="Show the sub-series of Archive").click()
    expect(row.locator(".children .row-title")).to_have_text(["New", "Old"])
    row.get_by_role("button", name="Show the sub-series of Old").click()
    expect(row.locator(".children .children .row-title")).to_have_text(["Older"])
    row.get_by_role("button", name="Show the sub-series of Archive").click()
    expect(row.locator(".children").first).to_be_hidden()
    # Search finds any level and says where it is.
    page.locator("form.filters input[name=q]").fill("older")
    expect(page.locator("#series-results .row-title")).to_have_text(["Older"])
    expect(page.locator("#series-results .trail")).to_have_text(f"Archive {SEP} Old {SEP}")
    expect(page).to_have_url(re.compile(r"/cog\?q=older"))
    page.locator("form.filters input[name=q]").fill("")
    page.locator("input[name=tag]").fill("old")
    expect(page.locator("#series-results .row-title")).to_have_text(["Archive"])

    # The gallery loads more as it scrolls, newest first, to the very last image.
    page.goto(f"{cog.url}/cog/series/{archive['id']}")
    tiles = page.locator("#gallery .tile")
    expect(tiles).to_have_count(60)
    # (Newest first: the second upload before the first; inside one upload, the order is the
    # database's tie-break, so names are not checked one by one.)
    expect(tiles.first).to_have_attribute("title", re.compile(r"scan-1[0-2]\d\.png"))
    page.locator(".gallery-more").scroll_into_view_if_needed()
    expect(tiles).to_have_count(120)
    page.locator(".gallery-more").scroll_into_view_if_needed()
    expect(tiles).to_have_count(130)
    expect(tiles.last).to_have_attribute("title", re.compile(r"scan-0\d\d\.png"))
    expect(page.locator(".gallery-more")).to_have_count(0)

    # Files dropped anywhere on the page upload too; the newest goes first.
    dropped = base64.b64encode(png(40, 30, (250, 120, 0))).decode()
    page.evaluate(
        """(data) => {
            const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
            const files = new DataTransfer();
            files.items.add(new File([bytes], "dropped.png", { type: "image/png" }));
            const event = (type) =>
                new DragEvent(type, { dataTransfer: files, bubbles: true, cancelable: true });
            document.body.dispatchEvent(event("dragenter"));
            window.__dragging = document.body.classList.contains("dragging");
            document.body.dispatchEvent(event("drop"));
        }""",
        dropped,
    )
    assert page.evaluate("window.__dragging") is True
    expect(page.locator("body")).not_to_have_class(re.compile("dragging"))
    expect(page.locator("#uploads li.done")).to_have_text(
        re.compile(r"dropped\.png\s*Added · 40 \u00d7 30")
    )
    expect(tiles).to_have_count(131)
    expect(tiles.first).to_have_attribute("title", "dropped.png")
    expect(page.locator("#image-count")).to_have_text("131")
    page.reload()

    # Edit in place: Escape leaves it as it was, Save keeps the change.
    page.get_by_role("button", name="Edit", exact=True).click()
    title = page.locator("#series-header input[name=title]")
    expect(title).to_be_focused()
    settled(page.locator("form#series-header"))  # its buttons and keys go through htmx
    title.fill("Not this")
    page.keyboard.press("Escape")
    expect(page.locator("h1")).to_have_text("Archive")
    page.get_by_role("button", name="Edit", exact=True).click()
    expect(title).to_be_focused()
    settled(page.locator("form#series-header"))
    title.fill("Archive, scanned")
    page.locator("#series-header input[name=tags]").fill("old, paper")
    page.keyboard.press("Enter")
    expect(page.locator("h1")).to_have_text("Archive, scanned")
    expect(page.locator("#series-header .tags li")).to_have_text(["old", "paper"])
    expect(page.locator(".toast").last).to_have_text("Saved.")

    # Move a sub-series under another; the dialog offers no place inside itself.
    page.get_by_role("button", name="Move New").click()
    dialog = page.locator("#modal dialog")
    expect(dialog).to_be_visible()
    dialog.get_by_label("Put it under").select_option(value=old["id"])
    dialog.get_by_role("button", name="Move").click()
    expect(page.locator("#children .row-title")).to_have_text(["Old"])
    expect(page.locator("#children .row-meta")).to_have_text("0 images · 2 sub-series")

    # Delete a sub-series: the dialog says what goes with it.
    page.get_by_role("button", name="Delete Old").click()
    dialog = page.locator("#modal dialog")
    expect(dialog).to_contain_text("2 sub-series and everything in them")
    dialog.get_by_role("button", name="Cancel").click()
    expect(dialog).to_have_count(0)
    page.get_by_role("button", name="Delete Old").click()
    page.locator("#modal dialog").get_by_role("button", name="Delete").click()
    expect(page.locator("#children")).to_contain_text("No sub-series yet")

    # An image: browse with the arrow keys, and use it as a reference for the job's step.
    newest, second = (tiles.nth(i).get_attribute("title") for i in (0, 1))
    tiles.nth(1).click()
    expect(page.locator("h1")).to_have_text(str(second))
    page.keyboard.press("ArrowLeft")
    expect(page.locator("h1")).to_have_text(str(newest))
    page.keyboard.press("ArrowRight")
    expect(page.locator("h1")).to_have_text(str(second))
    image_id = page.url.rsplit("/", 1)[1]
    page.get_by_text("Use as reference…").click()
    page.get_by_label("Add it to the input images of").select_option(index=0)
    page.get_by_role("button", name="Add as reference").click()
    expect(page.locator(".reference .ok")).to_contain_text("step 1 of Restore")
    config = api.get(f"/api/jobs/{job['id']}").json()["steps"][0]["config"]
    assert config["input_images"] == [image_id]

    # Delete it: the job's step now points at nothing, and Run says so at that step.
    page.get_by_role("button", name="Delete", exact=True).click()
    expect(page.locator("#confirm-text")).to_contain_text("Delete this image?")
    page.locator("[data-confirm-ok]").click()
    expect(page.locator(".notice")).to_have_text("The image was deleted.")
    expect(page.locator("#image-count")).to_have_text("130")
    page.goto(f"{cog.url}/cog/jobs/{job['id']}")
    expect(page.locator("#step-0 .inputs .count")).to_have_text("1")
    page.locator("#run-button").click()
    expect(page.locator("#step-0 .field-error")).to_contain_text("does not exist")
    expect(page.locator(".run")).to_have_count(0)

    # Without it, the run starts; a slow model gives time to cancel it.
    page.locator(f"#step-0 input[value='{image_id}']").uncheck()
    browser_gemini.latency_s = 5.0
    try:
        page.locator("#run-button").click()
        run = page.locator(".run").first
        expect(run.locator(".run-summary .badge")).to_have_text("running")
        run.get_by_role("button", name="Cancel run").click()
        expect(run.locator(".run-summary .badge")).to_have_text("cancelled", timeout=15_000)
        expect(run.locator(".run-step .badge")).to_have_text("cancelled")
    finally:
        browser_gemini.latency_s = 0.4
    watch.assert_clean(
        # The refusal that was meant to happen (the step's missing image), and the thumbnail of
        # the deleted image, shown as an empty box.
        "Failed to load resource: the server responded with a status of 422",
        "Failed to load resource: the server responded with a status of 404",
    )
    page.context.close()


# --- text is text ---------------------------------------------------------------------------------


def test_titles_tags_prompts_and_file_names_are_shown_as_text_never_run(
    browser: Browser, cog: Cog, watch: Watch
) -> None:
    page = open_page(browser, watch)
    page.goto(f"{cog.url}/cog")
    form = page.locator("#new-series")
    form.locator("input[name=title]").fill(EVIL)
    form.get_by_text("Description and tags").click()
    form.locator("textarea[name=description]").fill(f"About: {EVIL}")
    form.locator("input[name=tags]").fill('<b>bold</b>, "quoted", 霧')
    form.get_by_role("button", name="Create series").click()
    expect(page).to_have_url(SERIES_URL)
    expect(page.locator("h1")).to_have_text(EVIL)
    expect(page.locator("#series-header .description")).to_have_text(f"About: {EVIL}")
    expect(page.locator("#series-header .tags li")).to_have_text(["<b>bold</b>", '"quoted"', "霧"])
    expect(page).to_have_title(f"{EVIL} · Cog")
    series_url = page.url

    # A sub-series with the same name, and an upload whose file name is markup.
    page.locator("#new-child input[name=title]").fill(EVIL)
    page.locator("#new-child").get_by_role("button", name="Add").click()
    expect(page.locator("#children .row-title")).to_have_text(EVIL)
    expect(page.locator(".toast").last).to_contain_text(EVIL)
    upload_by_chooser(
        page, [{"name": EVIL_FILE, "mimeType": "image/png", "buffer": png(64, 64, (9, 9, 9))}]
    )
    expect(page.locator("#uploads li.done .upload-name")).to_have_text(EVIL_FILE)
    expect(page.locator("#gallery .tile")).to_have_attribute("title", EVIL_FILE)
    page.locator("#gallery .tile").first.click()
    expect(page).to_have_url(IMAGE_URL)
    expect(page.locator("h1")).to_have_text(EVIL_FILE)
    expect(page.locator("dl.meta")).to_contain_text(EVIL_FILE)
    shoot(page, "text-image-desktop")

    # A job whose title, base prompt and step prompt carry it too, run once.
    page.goto(series_url)
    page.locator("#new-job summary").click()
    page.locator("#new-job input[name=title]").fill(EVIL)
    page.locator("#new-job textarea[name=base_prompt]").fill(EVIL)
    page.get_by_role("button", name="Create job").click()
    expect(page).to_have_url(JOB_URL)
    page.get_by_role("button", name="+ Text step").click()
    page.locator("textarea[name='steps-0-prompt']").fill(
        "Say {{ base_prompt }} <img src=x onerror=alert(3)>"
    )
    page.locator("#run-button").click()
    run = page.locator(".run").first
    expect(run.locator(".run-summary .badge")).to_have_text("succeeded", timeout=20_000)
    run.get_by_text("Prompt as sent").click()
    expect(run.locator("pre")).to_have_text(f"Say {EVIL} <img src=x onerror=alert(3)>")
    expect(page.locator("input[name=title]")).to_have_value(EVIL)
    expect(page.locator("textarea[name=base_prompt]")).to_have_value(EVIL)
    shoot(page, "text-job-desktop")

    # The tree and search show it as text as well.
    page.goto(f"{cog.url}/cog")
    expect(page.locator(".row-title").filter(has_text="Ёжик")).to_have_count(1)
    page.locator("form.filters input[name=q]").fill("тумане 霧")
    expect(page.locator(".result-count")).to_contain_text("тумане 霧")
    expect(page.locator("#series-results .row-title")).to_have_text([EVIL, EVIL])
    expect(page.locator("#series-results .trail")).to_have_text(f"{EVIL} {SEP}")
    shoot(page, "text-search-desktop")

    # Nothing ran: no dialog opened, no markup from the text exists, no script is inline.
    assert watch.dialogs == []
    assert page.locator("img[src=x], b").count() == 0
    for url in (series_url, page.url):
        page.goto(url)
        assert page.locator("script:not([src])").count() == 0
        assert page.locator("img[src=x]").count() == 0
    watch.assert_clean()
    page.context.close()


# --- the preview provider -------------------------------------------------------------------------


def test_sign_in_then_the_preview_banner_says_how_to_set_the_key(
    browser: Browser, tmp_path: Path, watch: Watch
) -> None:
    server = start_cog(tmp_path, COG_PROVIDER="preview", COG_API_TOKEN="s3cret")
    try:
        series = server.api.post("/api/series", json={"title": "Try it"}).json()
        target = f"/cog/series/{series['id']}"
        for width, viewport in (("desktop", DESKTOP), ("phone", PHONE)):
            page = open_page(browser, watch, viewport)
            # With a token, a page sends a browser to the login form, and back after it.
            page.goto(server.url + target)
            expect(page).to_have_url(re.compile(r"/cog/login\?next="))
            page.get_by_label("Token").fill("wrong")
            page.get_by_role("button", name="Sign in").click()
            expect(page.locator(".login .error")).to_have_text("Wrong token.")
            shoot(page, f"login-{width}")
            page.get_by_label("Token").fill("s3cret")
            page.get_by_role("button", name="Sign in").click()
            expect(page).to_have_url(server.url + target)
            for url in (target, "/cog"):
                page.goto(server.url + url)
                banner = page.locator("#preview-banner")
                expect(banner).to_be_visible()
                expect(banner).to_contain_text("Preview mode")
                expect(banner).to_contain_text("GEMINI_API_KEY")
            shoot(page, f"preview-series-list-{width}")
            page.context.close()
        # Behind the token, the live run still reaches the page (its stream sends the cookie).
        job = server.api.post(
            f"/api/series/{series['id']}/jobs", json={"title": "T", "base_prompt": "a kite"}
        ).json()
        steps = {
            "steps": [{"kind": "image", "prompt": "{{ base_prompt }}", "config": {"count": 2}}]
        }
        server.api.put(f"/api/jobs/{job['id']}/steps", json=steps).raise_for_status()
        page = open_page(browser, watch)
        page.goto(f"{server.url}/cog/login?next=/cog/jobs/{job['id']}")
        page.get_by_label("Token").fill("s3cret")
        page.get_by_role("button", name="Sign in").click()
        page.locator("#run-button").click()
        run = page.locator(".run").first
        expect(run.locator(".run-summary .badge")).to_have_text("succeeded")
        expect(run.locator(".tile")).to_have_count(2)
        page.context.close()
    finally:
        server.stop()
    watch.assert_clean("Failed to load resource: the server responded with a status of 401")


# --- every page, looked at ------------------------------------------------------------------------


def seed_for_screenshots(cog: Cog) -> dict[str, str]:
    """A series as a person would have it after a while: nested, tagged, images, a job run."""
    api = cog.api
    top = api.post(
        "/api/series",
        json={
            "title": "Night markets",
            "description": "Lanterns, steam and neon after dark, from four cities.",
            "tags": ["street", "night", "neon"],
        },
    ).json()
    for title in ("Taipei", "Bangkok", "Hanoi"):
        api.post("/api/series", json={"title": title, "parent_id": top["id"], "tags": ["city"]})
    colors = [(196, 72, 52), (38, 84, 124), (222, 170, 60), (40, 40, 56), (120, 160, 140)]
    files = [
        ("files", (f"market-{i}.png", png(300 + 60 * (i % 3), 300, colors[i % 5]), "image/png"))
        for i in range(9)
    ]
    images = api.post(f"/api/series/{top['id']}/images", files=files).json()["items"]
    job = api.post(
        f"/api/series/{top['id']}/jobs",
        json={
            "title": "Lanterns in the rain",
            "base_prompt": "a night market street, paper lanterns, light rain",
        },
    ).json()
    api.post(f"/api/jobs/{job['id']}/draft").raise_for_status()
    run = api.post(f"/api/jobs/{job['id']}/runs").json()
    deadline = time.monotonic() + 20
    while api.get(f"/api/runs/{run['id']}").json()["status"] in ("queued", "running"):
        assert time.monotonic() < deadline, "the run did not end"
        time.sleep(0.1)
    return {
        "series-list": "/cog",
        "series": f"/cog/series/{top['id']}",
        "image": f"/cog/images/{images[0]['id']}",
        "job": f"/cog/jobs/{job['id']}",
    }


def test_every_page_at_desktop_and_phone_width(browser: Browser, cog: Cog, watch: Watch) -> None:
    pages = seed_for_screenshots(cog)
    looks = (
        ("desktop", DESKTOP, "light"),
        ("phone", PHONE, "light"),
        ("desktop-dark", DESKTOP, "dark"),
    )
    for width, viewport, scheme in looks:
        page = open_page(browser, watch, viewport, scheme)
        for name, url in pages.items():
            page.goto(cog.url + url)
            shoot(page, f"{name}-{width}")
            # Nothing sticks out sideways, whatever the width.
            overflow = page.evaluate(
                "document.documentElement.scrollWidth - document.documentElement.clientWidth"
            )
            assert overflow <= 0, f"{name} at {width} width scrolls sideways by {overflow}px"
            # Every thumbnail has its box before its file arrives: no layout jumps.
            unsized = page.locator("img:not([width]), img:not([height])").count()
            assert unsized == 0, f"{name}: {unsized} image(s) without width and height"
        page.context.close()
    watch.assert_clean()


# --- many images at once --------------------------------------------------------------------------


def test_select_a_range_move_it_and_act_on_all_the_gallery_matches(
    browser: Browser, cog: Cog, watch: Watch
) -> None:
    api = cog.api
    here = api.post("/api/series", json={"title": "Contact sheet"}).json()
    there = api.post("/api/series", json={"title": "Keepers"}).json()
    files = [
        ("files", (f"frame-{i:03d}.png", png(24, 16, (i * 3, 40, 90)), "image/png"))
        for i in range(70)
    ]
    assert api.post(f"/api/series/{here['id']}/images", files=files).status_code == 201
    series_url = f"{cog.url}/cog/series/{here['id']}"
    page = open_page(browser, watch)
    page.goto(series_url)
    tiles = page.locator("#gallery .tile-box")
    expect(tiles).to_have_count(60)  # one page of the gallery
    bar = page.locator("#selection-bar")
    count = page.locator("#selection-count")
    expect(bar).to_be_hidden()

    # Tick one thumbnail's box, then Shift-click one four further on: a range of five,
    # and no image opened.
    names = [tiles.nth(i).locator(".tile").get_attribute("title") for i in range(2, 9)]
    tiles.nth(2).hover()
    tiles.nth(2).locator(".tile-check").check()
    expect(bar).to_be_visible()
    expect(count).to_have_text("1 image selected")
    tiles.nth(6).locator(".tile").click(modifiers=["Shift"])
    expect(count).to_have_text("5 images selected")
    expect(page).to_have_url(series_url)
    expect(page.locator("#gallery .tile-box.selected")).to_have_count(5)
    # The keyboard: Space on a focused box takes it out, and puts it back.
    tiles.nth(4).locator(".tile-check").focus()
    page.keyboard.press("Space")
    expect(count).to_have_text("4 images selected")
    page.keyboard.press("Space")
    expect(count).to_have_text("5 images selected")
    # Shift with Space makes a range from the box before, as Shift with a click does.
    tiles.nth(8).locator(".tile-check").focus()
    page.keyboard.press("Shift+Space")
    expect(count).to_have_text("7 images selected")
    shoot(page, "gallery-selection-desktop")

    # Move them: the dialog says how many, the page shows the result.
    bar.get_by_role("button", name="Move to…").click()
    dialog = page.locator("#modal dialog")
    expect(dialog.locator("h2")).to_have_text("Move 7 images")
    dialog.get_by_label("To the series").select_option(label="Keepers")
    dialog.get_by_role("button", name="Move").click()
    expect(page.locator(".toast").last).to_have_text("Moved 7 images to “Keepers”.")
    expect(page.locator("#image-count")).to_have_text("63")
    expect(bar).to_be_hidden()
    moved = api.get(f"/api/series/{there['id']}/images").json()["items"]
    assert sorted(i["original_filename"] for i in moved) == sorted(names)

    # "Select all" reaches past the loaded page: tag all 63, then download them all.
    page.get_by_role("button", name="Select", exact=True).click()
    expect(count).to_have_text("Nothing selected")
    expect(bar.get_by_role("button", name="Move to…")).to_be_disabled()
    bar.get_by_role("button", name="Select all 63 in this series").click()
    expect(count).to_have_text("All 63 images selected")
    expect(page.locator("#gallery .tile-box.selected")).to_have_count(60)
    bar.get_by_role("button", name="Add tags…").click()
    dialog = page.locator("#modal dialog")
    expect(dialog.locator("h2")).to_have_text("Tag all 63 images")
    dialog.get_by_label("Tags to add").fill("contact, Sheet ")
    dialog.get_by_role("button", name="Add tags").click()
    expect(page.locator(".toast").last).to_have_text("Tagged 63 images “contact, sheet”.")
    tagged = api.get(f"/api/series/{here['id']}/images", params={"tag": "sheet", "limit": 500})
    assert len(tagged.json()["items"]) == 63
    page.get_by_role("link", name=re.compile(r"^contact\s+63$")).click()
    expect(page).to_have_url(re.compile(r"\?tag=contact$"))
    page.get_by_role("button", name="Select", exact=True).click()
    bar.get_by_role("button", name="Select all 63 tagged “contact”").click()
    with page.expect_download() as everything:
        bar.get_by_role("button", name="Download zip").click()
    archive = zipfile.ZipFile(everything.value.path())
    listed = json.loads(archive.read("manifest.json"))["images"]
    assert len(listed) == 63 and len(archive.namelist()) == 65
    assert all(i["file"].startswith("Contact sheet/") for i in listed)
    page.keyboard.press("Escape")
    expect(bar).to_be_hidden()

    # Two picked by hand: downloaded, then deleted after a confirmation that counts them.
    tiles.nth(0).locator(".tile-check").check()
    tiles.nth(1).locator(".tile").click()
    expect(count).to_have_text("2 images selected")
    picked = sorted(str(tiles.nth(i).get_attribute("data-id")) for i in range(2))
    with page.expect_download() as two:
        bar.get_by_role("button", name="Download zip").click()
    listed = json.loads(zipfile.ZipFile(two.value.path()).read("manifest.json"))["images"]
    assert sorted(i["id"] for i in listed) == picked
    bar.get_by_role("button", name="Delete…").click()
    expect(page.locator("#confirm-text")).to_have_text(
        "Delete 2 images? Their files are removed for good."
    )
    page.locator("[data-confirm-ok]").click()
    expect(page.locator(".toast").last).to_have_text("Deleted 2 images.")
    expect(page.locator("#image-count")).to_have_text("61")
    for image_id in picked:
        assert api.get(f"/api/images/{image_id}").status_code == 404

    # Not selecting, a click opens the image; its tags are edited there.
    tiles.first.locator(".tile").click()
    expect(page).to_have_url(IMAGE_URL)
    tags = page.locator("#image-tags")
    expect(tags.locator(".tags li")).to_have_text(["contact", "sheet"])
    tags.get_by_role("button", name="Edit tags").click()
    field = page.locator("#image-tags input[name=tags]")
    expect(field).to_be_focused()
    settled(page.locator("form#image-tags"))
    field.fill("contact, Best")
    page.keyboard.press("Enter")
    expect(page.locator("#image-tags .tags li")).to_have_text(["contact", "best"])
    image_id = page.url.rsplit("/", 1)[1]
    assert api.get(f"/api/images/{image_id}").json()["tags"] == ["contact", "best"]
    watch.assert_clean()
    page.context.close()


def test_search_results_are_selected_tagged_moved_downloaded_and_deleted(
    browser: Browser, cog: Cog, watch: Watch
) -> None:
    api = cog.api
    coast = api.post("/api/series", json={"title": "Coast"}).json()
    hills = api.post("/api/series", json={"title": "Hills"}).json()
    archive = api.post("/api/series", json={"title": "Tidepool archive"}).json()
    for series, names in ((coast, ("tidepool-dawn", "tidepool-dusk")), (hills, ("tidepool-view",))):
        files = [
            ("files", (f"{n}.png", png(20, 14, (i * 40, 80, 120)), "image/png"))
            for i, n in enumerate(names)
        ]
        assert api.post(f"/api/series/{series['id']}/images", files=files).status_code == 201
    files = [("files", ("buttercups.png", png(20, 14, (10, 160, 40)), "image/png"))]
    assert api.post(f"/api/series/{hills['id']}/images", files=files).status_code == 201

    page = open_page(browser, watch)
    page.goto(f"{cog.url}/cog/search?q=tidepool")
    results = page.locator("#search-results")
    tiles = results.locator(".tile-box")
    expect(tiles).to_have_count(3)  # from two series
    bar = page.locator("#selection-bar")
    count = page.locator("#selection-count")
    expect(bar).to_be_hidden()
    # What needs one series is not offered for results from several.
    for name in ("Restyle…", "Run a job…"):
        expect(bar.get_by_role("button", name=name)).to_have_count(0)

    # "Select", then a click on each of two results selects it rather than opening it.
    page.get_by_role("button", name="Select", exact=True).click()
    expect(bar).to_be_visible()
    expect(count).to_have_text("Nothing selected")
    tiles.nth(0).locator(".tile").click()
    tiles.nth(2).locator(".tile").click()
    expect(count).to_have_text("2 images selected")
    expect(page).to_have_url(re.compile(r"/cog/search\?q=tidepool$"))
    picked = sorted(str(tiles.nth(i).get_attribute("data-id")) for i in (0, 2))

    # Tag them: the dialog offers the tags used most, wherever they are.
    api.patch(f"/api/images/{picked[0]}", json={"tags": ["sea"]})
    bar.get_by_role("button", name="Add tags…").click()
    dialog = page.locator("#modal dialog")
    expect(dialog.locator("h2")).to_have_text("Tag 2 images")
    expect(dialog).to_contain_text("Used most: ")
    expect(dialog).to_contain_text("sea (1)")
    dialog.get_by_label("Tags to add").fill("keep")
    dialog.get_by_role("button", name="Add tags").click()
    expect(page.locator(".toast").last).to_have_text("Tagged 2 images “keep”.")
    for image_id in picked:
        assert "keep" in api.get(f"/api/images/{image_id}").json()["tags"]
    # The page came back with the same search.
    expect(page).to_have_url(re.compile(r"/cog/search\?q=tidepool$"))
    expect(tiles).to_have_count(3)

    # Another search lets the selection go.
    page.get_by_role("button", name="Select", exact=True).click()
    tiles.nth(1).locator(".tile").click()
    expect(count).to_have_text("1 image selected")
    page.get_by_label("Words of the prompt or file name").fill("buttercups")
    expect(tiles).to_have_count(1)
    expect(bar).to_be_hidden()

    # Move two results to a series of neither: every series is offered.
    page.get_by_label("Words of the prompt or file name").fill("tidepool")
    expect(tiles).to_have_count(3)
    tiles.nth(0).locator(".tile-check").check()
    tiles.nth(2).locator(".tile-check").check()
    expect(count).to_have_text("2 images selected")
    bar.get_by_role("button", name="Move to…").click()
    dialog = page.locator("#modal dialog")
    expect(dialog.locator("h2")).to_have_text("Move 2 images")
    dialog.get_by_label("To the series").select_option(label="Tidepool archive")
    dialog.get_by_role("button", name="Move").click()
    expect(page.locator(".toast").last).to_have_text("Moved 2 images to “Tidepool archive”.")
    moved = api.get(f"/api/series/{archive['id']}/images").json()["items"]
    assert sorted(i["id"] for i in moved) == picked

    # Download one, then delete it.
    expect(tiles).to_have_count(3)
    tiles.nth(1).locator(".tile-check").check()
    one = str(tiles.nth(1).get_attribute("data-id"))
    with page.expect_download() as download:
        bar.get_by_role("button", name="Download zip").click()
    listed = json.loads(zipfile.ZipFile(download.value.path()).read("manifest.json"))["images"]
    assert [i["id"] for i in listed] == [one]
    bar.get_by_role("button", name="Delete…").click()
    expect(page.locator("#confirm-text")).to_have_text(
        "Delete 1 image? Its file is removed for good."
    )
    page.locator("[data-confirm-ok]").click()
    expect(page.locator(".toast").last).to_have_text("Deleted 1 image.")
    expect(tiles).to_have_count(2)
    assert api.get(f"/api/images/{one}").status_code == 404
    watch.assert_clean()
    page.context.close()
