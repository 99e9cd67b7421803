"""The pages and their htmx fragments through the app in-process, on both databases: what they
render, what they refuse, and that they change things only through the services."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest

from tests.api import HX, editor_form, make_job, put_steps
from tests.conftest import wait_for_run
from tests.factories import image_bytes, make_image, make_series, upload

HTML = {"Accept": "text/html"}
EVIL = "<script>alert(1)</script> \"q\" 'q' Ёжик 霧"


# --- rendering ----------------------------------------------------------------------------------


async def test_every_page_shows_user_text_as_text(client: httpx.AsyncClient) -> None:
    series = await make_series(client, EVIL, description=EVIL, tags=[EVIL])
    await make_series(client, EVIL, parent_id=series["id"])
    image = await make_image(client, series["id"], name=f"{EVIL}.png")
    job = await make_job(client, series["id"], title=EVIL, base_prompt=EVIL)
    pages = [
        "/cog",
        f"/cog?q={EVIL[:8]}",
        f"/cog/series/{series['id']}",
        f"/cog/series/{series['id']}/children",
        f"/cog/series/{series['id']}/edit",
        f"/cog/series/{series['id']}/delete",
        f"/cog/images/{image['id']}",
        f"/cog/jobs/{job['id']}",
    ]
    for url in pages:
        response = await client.get(url)
        assert response.status_code == 200, url
        assert "<script>alert" not in response.text, url
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in response.text, url
        # Every script is a file of Cog's own: nothing inline for the CSP to refuse.
        assert re.findall(r"<script(?![^>]*\bsrc=)", response.text) == [], url
        assert " style=" not in response.text and "hx-on" not in response.text, url


async def test_the_series_page_shows_the_first_gallery_page_and_the_rest_follows(
    client: httpx.AsyncClient,
) -> None:
    series = await make_series(client, "Many")
    for start in (0, 70):
        files = [
            (f"{i}.png", image_bytes(8, 8, color=(i, 0, 0)), "image/png")
            for i in range(start, start + 70)
        ]
        assert (await upload(client, series["id"], *files)).status_code == 201
    page = await client.get(f"/cog/series/{series['id']}")
    seen = re.findall(r'href="/cog/images/([0-9a-f-]{36})"', page.text)
    assert len(seen) == 60
    pages = 1
    while cursor := re.search(r'images\?cursor=([^"]+)" hx-trigger="revealed"', page.text):
        page = await client.get(f"/cog/series/{series['id']}/images?cursor={cursor.group(1)}")
        assert page.status_code == 200
        seen += re.findall(r'href="/cog/images/([0-9a-f-]{36})"', page.text)
        pages += 1
    assert (pages, len(seen), len(set(seen))) == (3, 140, 140)
    listed = (await client.get(f"/api/series/{series['id']}/images?limit=500")).json()["items"]
    assert seen == [i["id"] for i in listed]  # the same newest-first order as the API


async def test_the_tree_and_search(client: httpx.AsyncClient) -> None:
    top = await make_series(client, "Archive", tags=["paper"])
    old = await make_series(client, "Old", parent_id=top["id"])
    await make_series(client, "Older", parent_id=old["id"], description="foxed pages")
    page = await client.get("/cog")
    assert 'aria-controls="kids-' + top["id"] in page.text
    assert "Older" not in page.text  # deeper levels load when opened
    children = await client.get(f"/cog/series/{top['id']}/children")
    assert "Old" in children.text and "1 sub-series" in children.text
    found = await client.get("/cog?q=FOXED", headers={**HX, "HX-Target": "series-results"})
    assert "<html" not in found.text  # the fragment only
    assert "Archive \u203a Old \u203a" in found.text and "1 series" in found.text
    assert "Archive" in (await client.get("/cog?tag=Paper")).text


# --- changing things ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},
        {"Origin": "http://evil.example"},
        {"Origin": "http://evil.example", "HX-Request": "true"},
        {"Sec-Fetch-Site": "cross-site", "HX-Request": "true"},
    ],
)
async def test_page_changes_refuse_cross_site_requests(
    client: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    response = await client.post("/cog/series", data={"title": "Sneaky"}, headers=headers)
    assert response.status_code == 403
    assert (await client.get("/api/series")).json()["items"] == []


@pytest.mark.parametrize(
    "headers",
    [HX, {"Sec-Fetch-Site": "same-origin"}, {"Origin": "http://testserver"}],
)
async def test_page_changes_from_the_same_site_are_accepted(
    client: httpx.AsyncClient, headers: dict[str, str]
) -> None:
    response = await client.post(
        "/cog/series", data={"title": " Kept ", "tags": "A, b ,a"}, headers=headers
    )
    assert response.status_code == 204
    (created,) = (await client.get("/api/series")).json()["items"]
    assert response.headers["HX-Redirect"] == f"/cog/series/{created['id']}"
    assert (created["title"], created["tags"]) == ("Kept", ["a", "b"])


async def test_a_refused_form_comes_back_with_its_errors(client: httpx.AsyncClient) -> None:
    response = await client.post("/cog/series", data={"title": "  ", "tags": "x"}, headers=HX)
    assert response.status_code == 422
    assert "Give it a title." in response.text
    assert 'value="x"' in response.text  # what was typed is kept
    parent = await make_series(client, "Parent")
    child = await client.post(
        "/cog/series", data={"title": "Child", "parent_id": parent["id"]}, headers=HX
    )
    assert child.status_code == 200
    assert 'hx-swap-oob="true"' in child.text and "Child" in child.text
    assert "cog:toast" in child.headers["HX-Trigger"]


async def test_editing_a_series_in_place(client: httpx.AsyncClient) -> None:
    series = await make_series(client, "Before", tags=["x"])
    form = await client.get(f"/cog/series/{series['id']}/edit")
    assert 'value="Before"' in form.text and 'value="x"' in form.text
    saved = await client.post(
        f"/cog/series/{series['id']}",
        data={"title": "After", "description": "line 1\r\nline 2", "tags": "y, z"},
        headers=HX,
    )
    assert saved.status_code == 200 and "<h1>After</h1>" in saved.text
    fetched = (await client.get(f"/api/series/{series['id']}")).json()
    assert (fetched["description"], fetched["tags"]) == ("line 1\nline 2", ["y", "z"])


async def test_moving_and_deleting_a_series(client: httpx.AsyncClient) -> None:
    a = await make_series(client, "A")
    b = await make_series(client, "B")
    inner = await make_series(client, "Inner", parent_id=a["id"])
    await make_image(client, inner["id"])
    dialog = await client.get(f"/cog/series/{a['id']}/move")
    assert f'value="{b["id"]}"' in dialog.text
    assert f'value="{inner["id"]}"' not in dialog.text  # not inside itself
    moved = await client.post(
        f"/cog/series/{a['id']}/move", data={"parent_id": b["id"]}, headers=HX
    )
    assert moved.status_code == 204 and moved.headers["HX-Refresh"] == "true"
    assert (await client.get(f"/api/series/{a['id']}")).json()["parent_id"] == b["id"]

    summary = await client.get(f"/cog/series/{a['id']}/delete")
    assert "1 image</strong>" in summary.text and "1 sub-series</strong>" in summary.text
    gone = await client.post(
        f"/cog/series/{a['id']}/delete",
        headers={**HX, "HX-Current-URL": f"http://testserver/cog/series/{a['id']}"},
    )
    assert gone.headers["HX-Redirect"] == f"/cog/series/{b['id']}?notice=series-deleted"
    assert (await client.get(f"/api/series/{inner['id']}")).status_code == 404
    notice = await client.get(f"/cog/series/{b['id']}?notice=series-deleted")
    assert "The series was deleted." in notice.text
    assert "evil" not in (await client.get("/cog?notice=<b>evil</b>")).text


async def test_an_image_is_used_as_reference_moved_and_deleted(client: httpx.AsyncClient) -> None:
    series = await make_series(client, "S")
    other = await make_series(client, "Other")
    image = await make_image(client, series["id"])
    job = await make_job(client, series["id"])
    steps = [{"kind": "image", "prompt": "{{ base_prompt }}"}]
    await client.put(f"/api/jobs/{job['id']}/steps", json={"steps": steps})
    picker = await client.get(f"/cog/images/{image['id']}/reference")
    assert f'value="{job["id"]}/0"' in picker.text
    added = await client.post(
        f"/cog/images/{image['id']}/reference", data={"target": f"{job['id']}/0"}, headers=HX
    )
    assert "step 1 of" in added.text
    config = (await client.get(f"/api/jobs/{job['id']}")).json()["steps"][0]["config"]
    assert config["input_images"] == [image["id"]]
    editor = await client.get(f"/cog/jobs/{job['id']}")
    assert re.search(rf'value="{image["id"]}" checked', editor.text)

    moved = await client.post(
        f"/cog/images/{image['id']}/move", data={"series_id": other["id"]}, headers=HX
    )
    assert moved.status_code == 204
    refused = await client.post(
        f"/cog/images/{image['id']}/reference", data={"target": f"{job['id']}/0"}, headers=HX
    )
    assert refused.status_code == 422  # it belongs to another series now
    assert refused.headers["HX-Reswap"] == "none"
    assert "another series" in refused.headers["HX-Trigger"]

    deleted = await client.post(f"/cog/images/{image['id']}/delete", headers=HX)
    assert deleted.headers["HX-Redirect"] == f"/cog/series/{other['id']}?notice=image-deleted"


# --- the job editor -----------------------------------------------------------------------------


async def test_saving_steps_shows_each_problem_at_its_field_and_saves_nothing(
    client: httpx.AsyncClient,
) -> None:
    series = await make_series(client, "S")
    job = await make_job(client, series["id"])
    bad = editor_form(
        {"kind": "image", "prompt": "{{ steps[0].text }}", "count": "99"},
        {"kind": "llm", "prompt": "", "temperature": "hot"},
        title="Renamed",
    )
    response = await client.post(f"/cog/jobs/{job['id']}", data=bad, headers=HX)
    assert response.status_code == 422
    text = response.text
    assert 'id="steps-0-prompt-error">The prompt uses `steps[0]`' in text
    assert "Images: input should be less than or equal to 8" in text
    assert 'id="steps-1-prompt-error">Write a prompt for this step.' in text
    assert "Temperature: input should be a valid number" in text
    assert "4 problems to fix below; nothing was saved." in text
    assert 'value="Renamed"' in text  # as typed
    saved = (await client.get(f"/api/jobs/{job['id']}")).json()
    assert (saved["title"], saved["steps"]) == (job["title"], [])  # not "Renamed"

    good = editor_form(
        {"kind": "llm", "prompt": "Describe {{ base_prompt }}\r\nin detail", "temperature": "0.4"},
        {"kind": "image", "prompt": "{{ previous.text }}", "count": "2", "aspect_ratio": "16:9"},
        title="Renamed",
    )
    response = await client.post(f"/cog/jobs/{job['id']}", data=good, headers=HX)
    assert response.status_code == 200 and "Saved." in response.text
    saved = (await client.get(f"/api/jobs/{job['id']}")).json()
    assert saved["title"] == "Renamed"
    assert [s["prompt"] for s in saved["steps"]] == [
        "Describe {{ base_prompt }}\nin detail",
        "{{ previous.text }}",
    ]
    assert saved["steps"][0]["config"]["temperature"] == 0.4
    assert saved["steps"][1]["config"]["count"] == 2


async def test_the_step_tools_change_the_form_not_the_job(client: httpx.AsyncClient) -> None:
    series = await make_series(client, "S")
    job = await make_job(client, series["id"])
    form = editor_form({"kind": "llm", "prompt": "first"}, {"kind": "image", "prompt": "second"})
    moved = await client.post(
        f"/cog/jobs/{job['id']}/edit", data={**form, "action": "up:1"}, headers=HX
    )
    assert moved.status_code == 200
    assert moved.text.index(">second</textarea>") < moved.text.index(">first</textarea>")
    assert 'id="s0-down" autofocus' in moved.text  # the moved step keeps the keyboard
    assert "Unsaved changes" in moved.text
    added = await client.post(
        f"/cog/jobs/{job['id']}/edit", data={**form, "action": "add:llm"}, headers=HX
    )
    assert 'name="steps-2-prompt" id="steps-2-prompt" autofocus' in added.text
    assert (await client.get(f"/api/jobs/{job['id']}")).json()["steps"] == []


async def test_draft_run_history_and_delete(client: httpx.AsyncClient) -> None:
    """With the preview provider: drafting saves steps, Run saves and starts a live run, the
    stream of a finished run is its final card, and deleting the job keeps its images."""
    series = await make_series(client, "S")
    job = await make_job(client, series["id"])
    drafted = await client.post(
        f"/cog/jobs/{job['id']}/draft", data=editor_form(base="a red kite"), headers=HX
    )
    assert drafted.status_code == 200 and "Drafted 2 steps and saved them." in drafted.text
    steps = (await client.get(f"/api/jobs/{job['id']}")).json()["steps"]
    assert [s["kind"] for s in steps] == ["llm", "image"]
    form = editor_form(
        *({"kind": s["kind"], "prompt": s["prompt"]} for s in steps), base="a red kite"
    )
    started = await client.post(f"/cog/jobs/{job['id']}/runs", data=form, headers=HX)
    assert started.status_code == 200
    assert 'hx-swap-oob="afterbegin:#runs-list"' in started.text
    run_id = re.search(r'sse-connect="/cog/runs/([0-9a-f-]{36})/live"', started.text)
    assert run_id is not None
    run = await wait_for_run(client, run_id.group(1))
    assert run["status"] == "succeeded"

    stream = await client.get(f"/cog/runs/{run['id']}/live")
    assert stream.headers["content-type"].startswith("text/event-stream")
    events = re.findall(r"^event: (\w+)$", stream.text, re.MULTILINE)
    assert events == ["snapshot", "run_finished"]
    final = stream.text.split("event: run_finished", 1)[1]
    assert f'id="run-{run["id"]}"' in final and 'hx-swap-oob="true"' in final
    assert "sse-connect" not in final  # the finished card listens to nothing

    cancel = await client.post(f"/cog/runs/{run['id']}/cancel", headers=HX)
    assert cancel.status_code == 409  # already over

    history = await client.get(f"/cog/jobs/{job['id']}")
    assert history.text.count('class="run run-succeeded"') == 1
    made = run["steps"][1]["image_ids"]
    assert made
    provenance = (await client.get(f"/cog/images/{made[0]}")).text
    link = f"/cog/jobs/{job['id']}?run={run['id']}#run-{run['id']}"
    assert f'href="{link}">this run</a>, step 2' in provenance
    opened = (await client.get(link.split("#")[0])).text
    assert re.search(rf'id="run-{run["id"]}" open', opened)
    gone = await client.post(f"/cog/jobs/{job['id']}/delete", headers=HX)
    assert gone.headers["HX-Redirect"] == f"/cog/series/{series['id']}?notice=job-deleted"
    page = await client.get(gone.headers["HX-Redirect"])
    assert "Every image it made is still in this series." in page.text
    assert all(image_id in page.text for image_id in made)
    image = await client.get(f"/cog/images/{made[0]}")
    assert "deleted (the image stays)" in image.text


async def test_run_refuses_an_empty_job_at_the_form(client: httpx.AsyncClient) -> None:
    series = await make_series(client, "S")
    job = await make_job(client, series["id"])
    response = await client.post(f"/cog/jobs/{job['id']}/runs", data=editor_form(), headers=HX)
    assert response.status_code == 422
    assert "The job has no steps yet" in response.text


# --- errors ---------------------------------------------------------------------------------------


async def test_errors_are_pages_for_browsers_and_messages_for_htmx(
    client: httpx.AsyncClient,
) -> None:
    missing = "/cog/series/00000000-0000-0000-0000-000000000000"
    page = await client.get(missing, headers=HTML)
    assert page.status_code == 404 and page.headers["content-type"].startswith("text/html")
    assert "There is no series" in page.text and "Back to your series" in page.text
    unknown = await client.get("/cog/nowhere", headers=HTML)
    assert unknown.status_code == 404 and "Not found" in unknown.text
    fragment = await client.get(missing + "/edit", headers=HX)
    assert fragment.status_code == 404
    assert fragment.json()["detail"].startswith("There is no series")
    assert fragment.headers["HX-Reswap"] == "none" and "cog:toast" in fragment.headers["HX-Trigger"]
    api = await client.get("/api/series/00000000-0000-0000-0000-000000000000", headers=HTML)
    assert api.headers["content-type"] == "application/json"  # the API stays JSON


async def test_the_preview_banner_follows_the_provider(
    client: httpx.AsyncClient, gemini_client: httpx.AsyncClient
) -> None:
    assert "GEMINI_API_KEY" in (await client.get("/cog")).text
    assert 'id="preview-banner"' not in (await gemini_client.get("/cog")).text


async def test_a_failed_draft_says_why_and_keeps_the_steps_as_typed(
    gemini_client: httpx.AsyncClient, gemini: Any
) -> None:
    series = await make_series(gemini_client, "S")
    job = await make_job(gemini_client, series["id"])
    gemini.fail_next(1, status=400)
    typed = editor_form({"kind": "llm", "prompt": "mine"}, base="a new base prompt")
    response = await gemini_client.post(f"/cog/jobs/{job['id']}/draft", data=typed, headers=HX)
    assert response.status_code == 422
    assert "Drafting did not work:" in response.text
    assert ">mine</textarea>" in response.text and "Unsaved changes" in response.text
    saved = (await gemini_client.get(f"/api/jobs/{job['id']}")).json()
    assert (saved["base_prompt"], saved["steps"]) == ("a new base prompt", [])


async def described_then_drawn(client: httpx.AsyncClient, *, count: int) -> dict[str, Any]:
    """A job of an llm step describing the base prompt and an image step of `count` images."""
    series = await make_series(client, "S")
    job = await make_job(client, series["id"])
    steps = [
        {"kind": "llm", "prompt": "Describe {{ base_prompt }}"},
        {"kind": "image", "prompt": "{{ previous.text }}", "config": {"count": count}},
    ]
    assert (await put_steps(client, job["id"], steps)).status_code == 200
    return job


async def test_the_live_stream_draws_each_event_where_it_belongs(
    gemini_client: httpx.AsyncClient, gemini: Any
) -> None:
    job = await described_then_drawn(gemini_client, count=2)
    gemini.latency_s = 0.2
    run = (await gemini_client.post(f"/api/jobs/{job['id']}/runs")).json()
    stream = await gemini_client.get(f"/cog/runs/{run['id']}/live")  # follows it to the end
    events = re.findall(r"^event: (\w+)\ndata: (.*?)\n\n", stream.text, re.MULTILINE | re.DOTALL)
    names = [name for name, _ in events]
    assert names[0] == "snapshot" and names[-1] == "run_finished"
    assert names.count("image_stored") == 2 and names.count("step_finished") == 2
    assert names.index("step_started") < names.index("image_stored")
    prefix = f"run-{run['id']}"
    for name, data in events:
        html = data.replace("\ndata: ", "\n")
        if name == "image_stored":  # a thumbnail added to its step's strip
            assert f'hx-swap-oob="beforeend:#{prefix}-step-1-images"' in html
            assert 'class="tile tile-generated"' in html
        elif name in ("step_started", "step_finished"):  # the step, and the run's summary
            assert re.search(rf'<li [^>]*id="{prefix}-step-\d"[^>]*hx-swap-oob="true"', html)
            assert f'id="{prefix}-summary" hx-swap-oob="true"' in html
        elif name == "run_finished":  # the whole card, listening no more
            assert html.count('hx-swap-oob="true"') == 1 and "sse-connect" not in html
            assert "succeeded" in html
    finished = events[-1][1]
    assert finished.count('class="tile tile-generated"') == 2


async def test_a_run_step_counts_its_calls_and_retries_apart(
    gemini_client: httpx.AsyncClient, gemini: Any
) -> None:
    """Four images are four calls, not four attempts; a retried call says so."""
    job = await described_then_drawn(gemini_client, count=4)
    gemini.fail_next(1, status=503)  # the llm step's first try
    started = (await gemini_client.post(f"/api/jobs/{job['id']}/runs")).json()
    run = await wait_for_run(gemini_client, started["id"])
    assert run["status"] == "succeeded", run
    assert [s["attempts"] for s in run["steps"]] == [2, 4]
    page = (await gemini_client.get(f"/cog/jobs/{job['id']}?run={run['id']}")).text
    heads = re.findall(
        r'<strong>Step \d</strong>\s*<span class="muted small">(.*?)</span>', page, re.S
    )
    assert len(heads) == 2
    assert "1 retry" in heads[0] and "call" not in heads[0]
    assert "4 calls" in heads[1] and "retr" not in heads[1] and "attempt" not in heads[1]


async def test_text_no_database_can_store_is_refused_in_the_form(client: httpx.AsyncClient) -> None:
    series = await make_series(client, "S")
    job = await make_job(client, series["id"])
    form = editor_form({"kind": "llm", "prompt": "a\x00b"})
    response = await client.post(f"/cog/jobs/{job['id']}", data=form, headers=HX)
    assert response.status_code == 422
    assert "NUL" in response.text
    nul_title = await client.post("/cog/series", data={"title": "a\x00b"}, headers=HX)
    assert nul_title.status_code == 422 and "NUL" in nul_title.text


async def test_a_page_streams_two_active_runs_and_polls_the_others(
    gemini_client: httpx.AsyncClient, gemini: Any
) -> None:
    """A browser holds six connections per server; a stream holds one for as long as it runs."""
    series = await make_series(gemini_client, "S")
    job = await make_job(gemini_client, series["id"])
    steps = [{"kind": "llm", "prompt": "Describe {{ base_prompt }}"}]
    await gemini_client.put(f"/api/jobs/{job['id']}/steps", json={"steps": steps})
    gemini.latency_s = 1.5
    runs = [(await gemini_client.post(f"/api/jobs/{job['id']}/runs")).json() for _ in range(3)]
    page = (await gemini_client.get(f"/cog/jobs/{job['id']}")).text
    streaming = re.findall(r'sse-connect="/cog/runs/([0-9a-f-]{36})/live"', page)
    polling = re.findall(r'hx-get="/cog/runs/([0-9a-f-]{36})/card" hx-trigger="every 2s"', page)
    assert streaming == [runs[2]["id"], runs[1]["id"]]  # the newest
    assert polling == [runs[0]["id"]]
    card = await gemini_client.get(f"/cog/runs/{runs[0]['id']}/card")
    assert 'hx-trigger="every 2s"' in card.text and "sse-connect" not in card.text
    for run in runs:
        await wait_for_run(gemini_client, run["id"])
    final = await gemini_client.get(f"/cog/runs/{runs[0]['id']}/card")
    assert "hx-trigger" not in final.text and "run-succeeded" in final.text  # polling stops


async def test_an_image_page_links_its_neighbours_in_gallery_order(
    client: httpx.AsyncClient,
) -> None:
    series = await make_series(client, "S")
    other = await make_series(client, "Other")
    first, second, third = [
        await make_image(client, series["id"], name=f"{i}.png") for i in range(3)
    ]
    await make_image(client, other["id"])  # another series' images are not neighbours
    middle = (await client.get(f"/cog/images/{second['id']}")).text
    assert f'rel="prev" href="/cog/images/{third["id"]}"' in middle  # newer
    assert f'rel="next" href="/cog/images/{first["id"]}"' in middle  # older
    newest = (await client.get(f"/cog/images/{third['id']}")).text
    assert 'rel="prev"' not in newest and "Newest" in newest
