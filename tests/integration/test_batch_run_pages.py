"""Batches on the job's page, in-process on both databases: the "Run for each image" form and
its count, starting a batch from the editor, the card a running batch polls for, cancel, a
selection given by `?images=`, and a batch's run opened from its card."""

from __future__ import annotations

import asyncio
import re
import uuid
from typing import Any

import httpx

from tests.api import HX, editor_form, make_job, put_steps
from tests.factories import make_image, make_series

INPUT_STEP = {"kind": "llm", "prompt": "Caption {{ input.filename }}", "input_images": "input"}


async def card_until_ended(client: httpx.AsyncClient, batch_id: str) -> str:
    """Poll the batch's card, as the page does, until it stops asking to be polled."""
    for _ in range(400):
        card = await client.get(f"/cog/batches/{batch_id}/card", headers=HX)
        assert card.status_code == 200, card.text
        if 'hx-trigger="every 1s"' not in card.text:
            return card.text
        await asyncio.sleep(0.05)
    raise AssertionError(f"batch {batch_id} never ended")


async def test_a_batch_started_from_the_page_runs_live_to_its_end(
    client: httpx.AsyncClient,
) -> None:
    top = await make_series(client, "Top")
    child = await make_series(client, "Child", parent_id=top["id"])
    for n in range(2):
        await make_image(client, top["id"], f"t{n}.png")
    await make_image(client, child["id"], "c.png")
    job = await make_job(client, top["id"])

    page = await client.get(f"/cog/jobs/{job['id']}")
    assert page.status_code == 200
    assert "Run for each image" in page.text
    # The job's series and its sub-series, with their counts.
    assert "Top — 2 images, 3 with sub-series" in page.text
    assert "Child — 1 image<" in page.text
    assert "Run for each of 2 images" in page.text
    form = await client.get(
        f"/cog/jobs/{job['id']}/batch-form",
        params={"series_id": top["id"], "include_subseries": "true"},
        headers=HX,
    )
    assert "Run for each of 3 images" in form.text

    # The button posts the editor (saved first) and the batch form together.
    data = {**editor_form(INPUT_STEP), "series_id": top["id"], "include_subseries": "true"}
    started = await client.post(f"/cog/jobs/{job['id']}/batches", data=data, headers=HX)
    assert started.status_code == 200, started.text
    assert "Saved and started 3 runs, one for each image." in started.text
    assert 'hx-swap-oob="afterbegin:#batches-list"' in started.text
    (batch_id,) = set(re.findall(r'id="batch-([0-9a-f-]{36})"', started.text))
    saved = (await client.get(f"/api/jobs/{job['id']}")).json()
    assert saved["steps"][0]["config"]["input_images"] == ["input"]

    final = await card_until_ended(client, batch_id)
    assert "badge-succeeded" in final
    assert "3 / 3</strong> done" in final and "3 succeeded" in final
    assert 'aria-valuenow="3"' in final and 'class="bar-ok" x="0" y="0" width="3"' in final
    run_ids = re.findall(r"\?run=([0-9a-f-]{36})", final)
    assert len(run_ids) == 3

    # The page lists the batch, not its runs among the job's runs; a run's link opens it.
    page = await client.get(f"/cog/jobs/{job['id']}")
    assert f'id="batch-{batch_id}"' in page.text
    assert f'id="run-{run_ids[0]}"' not in page.text
    opened = await client.get(f"/cog/jobs/{job['id']}?run={run_ids[0]}")
    assert f'id="run-{run_ids[0]}"' in opened.text
    assert re.search(
        rf'<details class="run run-succeeded" id="run-{run_ids[0]}"\s+open', opened.text
    )


async def test_the_form_narrows_a_series_to_a_tag_and_the_batch_follows(
    client: httpx.AsyncClient,
) -> None:
    top = await make_series(client, "Top")
    child = await make_series(client, "Child", parent_id=top["id"])
    images = [await make_image(client, top["id"], f"t{n}.png") for n in range(3)]
    below = await make_image(client, child["id"], "c.png")
    for image, tags in ((images[0], ["night"]), (images[2], ["night", "sea"]), (below, ["sea"])):
        assert (await client.patch(f"/api/images/{image['id']}", json={"tags": tags})).is_success
    job = await make_job(client, top["id"])

    # The tags of the chosen images, most used first, each with its count.
    page = (await client.get(f"/cog/jobs/{job['id']}")).text
    offered = re.findall(
        r'<option value="([^"]*)"[^>]*>([^<]+)</option>',
        page.split('id="batch-tag"')[1].split("</select>")[0],
    )
    assert offered == [("", "All images"), ("night", "night — 2 images"), ("sea", "sea — 1 image")]
    narrowed = await client.get(
        f"/cog/jobs/{job['id']}/batch-form",
        params={"series_id": top["id"], "include_subseries": "true", "tag": "sea"},
        headers=HX,
    )
    assert "Run for each of 2 images" in narrowed.text
    assert 'value="sea" selected' in narrowed.text
    assert "sea — 2 images" in narrowed.text  # with the sub-series' image

    data = {**editor_form(INPUT_STEP), "series_id": top["id"], "tag": "night"}
    started = await client.post(f"/cog/jobs/{job['id']}/batches", data=data, headers=HX)
    assert started.status_code == 200, started.text
    assert "Saved and started 2 runs, one for each image." in started.text
    (batch_id,) = set(re.findall(r'id="batch-([0-9a-f-]{36})"', started.text))
    await card_until_ended(client, batch_id)
    batch = (await client.get(f"/api/batches/{batch_id}")).json()
    assert [r["input_image_id"] for r in batch["runs"]] == [images[0]["id"], images[2]["id"]]


async def test_refusals_show_in_the_form_and_a_plain_run_says_to_use_a_batch(
    client: httpx.AsyncClient,
) -> None:
    series = await make_series(client)
    job = await make_job(client, series["id"])
    # No images yet: the button is off, and a post says why.
    page = await client.get(f"/cog/jobs/{job['id']}")
    assert re.search(r'id="batch-button"\s+disabled', page.text)
    data = {**editor_form(INPUT_STEP), "series_id": series["id"]}
    refused = await client.post(f"/cog/jobs/{job['id']}/batches", data=data, headers=HX)
    assert refused.status_code == 422
    assert "There are no images in the series" in refused.text
    assert 'id="batch-form"' in refused.text and 'hx-swap-oob="true"' in refused.text
    assert (await client.get(f"/api/jobs/{job['id']}/batches")).json()["items"] == []

    run = await client.post(f"/cog/jobs/{job['id']}/runs", data=editor_form(INPUT_STEP), headers=HX)
    assert run.status_code == 422
    assert "run it as a batch" in run.text

    await make_image(client, series["id"])
    plain = editor_form({"kind": "llm", "prompt": "{{ base_prompt }}"})
    unused = await client.post(
        f"/cog/jobs/{job['id']}/batches", data={**plain, "series_id": series["id"]}, headers=HX
    )
    assert unused.status_code == 422 and "uses the image each run is for" in unused.text


async def test_a_selection_from_elsewhere_and_cancel(
    gemini_client: httpx.AsyncClient, gemini: Any
) -> None:
    client = gemini_client
    series = await make_series(client)
    other = await make_series(client, "Elsewhere")
    picked = [await make_image(client, other["id"], f"o{n}.png") for n in range(3)]
    job = await make_job(client, series["id"])
    ghost = str(uuid.uuid4())
    ids = ",".join([*(p["id"] for p in picked[:2]), ghost])

    page = await client.get(f"/cog/jobs/{job['id']}?images={ids}")
    assert (
        "2 selected images" in page.text and "1 of the chosen images no longer exists" in page.text
    )
    assert page.text.count('name="image_ids"') == 2
    assert "Run for each of 2 images" in page.text
    bad = await client.get(f"/cog/jobs/{job['id']}?images=nope")
    assert bad.status_code == 422

    gemini.latency_s = 1.0  # the runs are still going when the cancel comes
    data: dict[str, Any] = {**editor_form(INPUT_STEP), "image_ids": [p["id"] for p in picked[:2]]}
    started = await client.post(f"/cog/jobs/{job['id']}/batches", data=data, headers=HX)
    assert started.status_code == 200, started.text
    (batch_id,) = set(re.findall(r'id="batch-([0-9a-f-]{36})"', started.text))
    batch = (await client.get(f"/api/batches/{batch_id}")).json()
    assert [r["input_image_id"] for r in batch["runs"]] == [p["id"] for p in picked[:2]]
    cancelled = await client.post(f"/cog/batches/{batch_id}/cancel", headers=HX)
    assert cancelled.status_code == 200
    assert "Cancelling…" in cancelled.text or "badge-cancelled" in cancelled.text
    final = await card_until_ended(client, batch_id)
    gemini.latency_s = 0.0
    assert "badge-cancelled" in final and "2 cancelled" in final
    again = await client.post(f"/cog/batches/{batch_id}/cancel", headers=HX)
    assert again.status_code == 409


def _option(html: str, value: str) -> str:
    """The whole `<option>` of `value` in a page."""
    found = re.search(rf'<option value="{value}"[^>]*>[^<]*</option>', html)
    assert found is not None, f"no option {value}"
    return found.group(0)


async def test_the_gallery_dialog_offers_every_job_that_can_run_for_each_image(
    client: httpx.AsyncClient,
) -> None:
    top = await make_series(client, "Harbours")
    piers = await make_series(client, "Piers", parent_id=top["id"])
    empty = await client.get(f"/cog/series/{piers['id']}/run-job", headers=HX)
    assert empty.status_code == 200
    assert "There are no jobs yet" in empty.text
    assert re.search(r'<button type="submit" disabled>Run</button>', empty.text)

    studio = await make_series(client, "Studio")
    each = await make_job(client, piers["id"], title="Ink each")
    plain = await make_job(client, piers["id"], title="Plain")
    elsewhere = await make_job(client, studio["id"], title="Watercolour each")
    for job, prompt in ((each, "Ink {{ input.prompt }}"), (plain, "Ink"), (elsewhere, "W")):
        steps = [{"kind": "image", "prompt": prompt}]
        if job is elsewhere:
            steps[0]["config"] = {"input_images": ["input"]}
        assert (await put_steps(client, job["id"], steps)).status_code == 200

    gallery = await client.get(f"/cog/series/{piers['id']}")
    assert f'hx-get="/cog/series/{piers["id"]}/run-job"' in gallery.text
    dialog = (await client.get(f"/cog/series/{piers['id']}/run-job", headers=HX)).text
    assert 'data-batch-form="run-job"' in dialog
    # Each series' jobs under its place in the tree; the first that can run here is chosen.
    assert dialog.index('label="Harbours \u203a Piers"') < dialog.index(_option(dialog, each["id"]))
    assert dialog.index('label="Studio"') < dialog.index(_option(dialog, elsewhere["id"]))
    assert _option(dialog, each["id"]).endswith(" selected>Ink each — 1 step</option>")
    assert " disabled" not in _option(dialog, elsewhere["id"])
    # A job no step of which uses the image cannot be chosen, and says why.
    refused = _option(dialog, plain["id"])
    assert " disabled" in refused and "(does not use the image)" in refused
    # From the Studio's gallery, its own job is chosen; from Harbours', which has none, the
    # person chooses.
    studios = (await client.get(f"/cog/series/{studio['id']}/run-job", headers=HX)).text
    assert " selected>" in _option(studios, elsewhere["id"])
    assert " selected>" not in _option(studios, each["id"])
    top_dialog = (await client.get(f"/cog/series/{top['id']}/run-job", headers=HX)).text
    assert " selected>" not in _option(top_dialog, each["id"])
    assert '<option value="" selected disabled>Choose a job…</option>' in top_dialog

    missing = await client.get(f"/cog/series/{uuid.uuid4()}/run-job", headers=HX)
    assert missing.status_code == 404

    # An image's page offers the same dialog for that image alone.
    image = await make_image(client, piers["id"])
    page = (await client.get(f"/cog/images/{image['id']}")).text
    url = f"/cog/series/{piers['id']}/run-job?image_id={image['id']}"
    assert f'hx-get="{url}"' in page
    for_one = (await client.get(url, headers=HX)).text
    assert f'data-image-id="{image["id"]}"' in for_one
    assert "Run a job for this image" in for_one
    assert _option(for_one, each["id"]).endswith(" selected>Ink each — 1 step</option>")
    gone = await client.get(f"/cog/series/{piers['id']}/run-job?image_id={uuid.uuid4()}")
    assert gone.status_code == 404
