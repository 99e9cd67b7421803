"""Branching in a real browser (Chromium through Playwright, `cog serve` as a subprocess, the fake
Gemini server): a person gives a text step an answer schema, makes an image step loop over it
and adds a condition, sees a refused condition at its field, runs the job and watches each item
and the skipped step appear live."""

from __future__ import annotations

import json
import re

import pytest
from playwright.sync_api import Browser, expect

from cog.testing.gemini_server import GeminiTestServer
from tests.e2e.browser import CHROMIUM, Cog, Watch, open_page, shoot

# Slow enough that a run is seen running, fast enough for the suite.
GEMINI_LATENCY_S = 0.3

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not CHROMIUM.exists(), reason=f"no Chromium at {CHROMIUM}"),
]

SCENES = {
    "type": "object",
    "properties": {
        "scenes": {"type": "array", "items": {"type": "string"}},
        "needs_detail": {"type": "boolean"},
    },
    "required": ["scenes", "needs_detail"],
}


def test_a_person_edits_a_loop_and_a_condition_and_watches_the_run(
    browser: Browser, cog: Cog, browser_gemini: GeminiTestServer, watch: Watch
) -> None:
    series = cog.api.post("/api/series", json={"title": "Harbour"}).json()
    job = cog.api.post(
        f"/api/series/{series['id']}/jobs",
        json={"title": "Scenes", "base_prompt": "a day in a harbour town"},
    ).json()
    page = open_page(browser, watch)
    page.goto(f"{cog.url}/cog/jobs/{job['id']}")

    # A text step that answers in JSON, then an image step over its list.
    page.get_by_role("button", name="+ Text step").click()
    page.locator("textarea[name='steps-0-prompt']").fill("List the scenes of {{ base_prompt }}")
    page.locator("#step-0 details.branching summary").click()
    page.locator("textarea[name='steps-0-schema']").fill(json.dumps(SCENES))
    page.get_by_role("button", name="+ Image step").click()
    page.locator("textarea[name='steps-1-prompt']").fill("{{ item }}, watercolour")
    page.locator("#step-1 details.branching summary").click()
    page.locator("input[name='steps-1-for_each']").fill("steps[0].json.scenes")
    # A condition on a field the schema does not have: refused at its field, nothing saved.
    page.locator("input[name='steps-1-when']").fill("steps[0].json.needs_detial")
    page.locator("#save-button").click()
    expect(page.locator("#steps-1-when-error")).to_contain_text("has no field `needs_detial`")
    expect(page.locator("#save-state")).to_contain_text("nothing was saved")
    assert cog.api.get(f"/api/jobs/{job['id']}").json()["steps"] == []
    # Fixed, it saves.
    page.locator("input[name='steps-1-when']").fill("not steps[0].json.needs_detail")
    page.locator("#save-button").click()
    expect(page.locator("#save-state")).to_have_text("Saved.")
    saved = cog.api.get(f"/api/jobs/{job['id']}").json()["steps"]
    assert saved[0]["config"]["schema"] == SCENES
    assert saved[1]["for_each"] == "steps[0].json.scenes"
    assert saved[1]["when"] == "not steps[0].json.needs_detail"
    # The page shows them again after a reload, and offers the answer to later prompts.
    page.reload()
    expect(page.locator("input[name='steps-1-for_each']")).to_have_value("steps[0].json.scenes")
    expect(page.locator("input[name='steps-1-when']")).to_have_value(
        "not steps[0].json.needs_detail"
    )
    expect(page.locator("#step-1 .vars")).to_contain_text("steps[0].json")
    expect(page.locator("#step-1 .vars")).to_contain_text("item")

    # A third step only for detailed answers: skipped in this run.
    page.get_by_role("button", name="+ Image step").click()
    page.locator("textarea[name='steps-2-prompt']").fill("A close-up")
    page.locator("#step-2 details.branching summary").click()
    page.locator("input[name='steps-2-when']").fill("steps[0].json.needs_detail")

    browser_gemini.script_json(
        [{"scenes": ["boats at dawn", "the fish market", "the lighthouse"], "needs_detail": False}]
    )
    page.locator("#run-button").click()
    run = page.locator(".run").first
    expect(run).to_have_attribute("sse-connect", re.compile(r"/cog/runs/.+/live"))
    items = run.locator(".run-step").nth(1).locator(".iteration")
    expect(items).to_have_count(3, timeout=20_000)
    expect(items.nth(2)).to_contain_text("the lighthouse")
    expect(run.locator(".run-summary .badge")).to_have_text("succeeded", timeout=20_000)
    for i in range(3):
        expect(items.nth(i).locator(".badge")).to_have_text("succeeded")
        expect(items.nth(i).locator(".tile")).to_have_count(1)
    skipped = run.locator(".run-step").nth(2)
    expect(skipped.locator(".badge").first).to_have_text("skipped")
    expect(skipped).to_contain_text("Skipped: Its condition was false")
    expect(run.locator(".run-step").nth(0).locator(".step-json")).to_contain_text("boats at dawn")
    run.scroll_into_view_if_needed()
    shoot(page, "branching-run-desktop")
    # The refused save is the only thing the browser complains of.
    watch.assert_clean("Failed to load resource: the server responded with a status of 422")
