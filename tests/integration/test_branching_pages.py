"""The job editor's conditions, loops and schemas, and a run's skipped steps and iterations, as
the pages render them (in-process, on both databases; the preview provider runs the jobs)."""

from __future__ import annotations

import json
import re

import httpx

from tests.api import HX, SCENES, editor_form, make_job
from tests.conftest import wait_for_run
from tests.factories import make_series


async def test_the_editor_saves_a_schema_a_loop_and_a_condition_and_shows_them_again(
    client: httpx.AsyncClient,
) -> None:
    series = await make_series(client, "Harbour")
    job = await make_job(client, series["id"])
    form = editor_form(
        {"kind": "llm", "prompt": "List scenes", "schema": json.dumps(SCENES)},
        {
            "kind": "image",
            "prompt": "{{ item.title }}",
            "for_each": "steps[0].json.scenes",
            "when": "not steps[0].json.needs_detail",
        },
    )
    saved = await client.post(f"/cog/jobs/{job['id']}", data=form, headers=HX)
    assert saved.status_code == 200, saved.text
    steps = (await client.get(f"/api/jobs/{job['id']}")).json()["steps"]
    assert steps[0]["config"]["schema"] == SCENES
    assert steps[1]["for_each"] == "steps[0].json.scenes"
    assert steps[1]["when"] == "not steps[0].json.needs_detail"

    page = (await client.get(f"/cog/jobs/{job['id']}")).text
    assert 'name="steps-1-for_each" value="steps[0].json.scenes"' in page
    assert 'name="steps-1-when" value="not steps[0].json.needs_detail"' in page
    schema_box = re.search(r'name="steps-0-schema"[^>]*>([^<]*)</textarea>', page)
    assert schema_box is not None
    assert json.loads(schema_box.group(1).replace("&#34;", '"')) == SCENES
    assert "steps[0].json" in page  # offered as a variable to the later step


async def test_a_loop_step_takes_each_items_image_of_an_earlier_loop_from_the_editor(
    client: httpx.AsyncClient,
) -> None:
    series = await make_series(client, "Harbour")
    job = await make_job(client, series["id"])
    loop = "steps[0].json.scenes"
    form = editor_form(
        {"kind": "llm", "prompt": "List scenes", "schema": json.dumps(SCENES)},
        {"kind": "image", "prompt": "Sketch {{ item.title }}", "for_each": loop},
        {"kind": "image", "prompt": "Paint {{ item.title }}", "for_each": loop},
    )
    assert (await client.post(f"/cog/jobs/{job['id']}", data=form, headers=HX)).status_code == 200
    page = (await client.get(f"/cog/jobs/{job['id']}")).text
    offered = re.findall(r'name="steps-2-input_images" value="(step:[^"]+)"[^>]*> ([^<]+)<', page)
    assert offered == [
        ("step:1", "Images of step 2"),
        ("step:1:item", "This item&#39;s images of step 2"),
    ]

    form["steps-2-input_images"] = "step:1:item"
    assert (await client.post(f"/cog/jobs/{job['id']}", data=form, headers=HX)).status_code == 200
    steps = (await client.get(f"/api/jobs/{job['id']}")).json()["steps"]
    assert steps[2]["config"]["input_images"] == ["step:1:item"]
    page = (await client.get(f"/cog/jobs/{job['id']}")).text
    assert 'value="step:1:item" checked> This item' in page


async def test_the_editor_shows_branching_problems_at_their_fields_and_saves_nothing(
    client: httpx.AsyncClient,
) -> None:
    series = await make_series(client, "Harbour")
    job = await make_job(client, series["id"])
    form = editor_form(
        {"kind": "llm", "prompt": "List scenes", "schema": "{not json"},
        {"kind": "image", "prompt": "x", "for_each": "steps[3].json", "when": "steps[0].text |"},
    )
    refused = await client.post(f"/cog/jobs/{job['id']}", data=form, headers=HX)
    assert refused.status_code == 422
    text = refused.text
    assert 'id="steps-0-schema-error">Schema: value error, is not valid JSON' in text
    assert 'id="steps-1-for_each-error">The loop uses `steps[3]`' in text
    assert 'id="steps-1-when-error">`when` does not parse' in text
    assert 'value="steps[3].json"' in text  # as typed
    assert (await client.get(f"/api/jobs/{job['id']}")).json()["steps"] == []


async def test_a_run_shows_skipped_steps_with_their_reason_and_each_item(
    client: httpx.AsyncClient,
) -> None:
    series = await make_series(client, "Harbour")
    job = await make_job(client, series["id"])
    steps = [
        {"kind": "llm", "prompt": "List scenes", "config": {"schema": SCENES}},
        {"kind": "image", "prompt": "{{ item.title }}", "for_each": "steps[0].json.scenes"},
        {"kind": "image", "prompt": "x", "when": "steps[0].json.needs_detail"},
    ]
    assert (await client.put(f"/api/jobs/{job['id']}/steps", json={"steps": steps})).is_success
    started = await client.post(f"/api/jobs/{job['id']}/runs")
    run = await wait_for_run(client, started.json()["id"])
    assert run["status"] == "succeeded", run
    page = (await client.get(f"/cog/jobs/{job['id']}?run={run['id']}")).text
    assert "Skipped: Its condition was false: steps[0].json.needs_detail" in page
    assert "For each of <code>steps[0].json.scenes</code>" in page
    for it in run["steps"][1]["iterations"]:
        assert f'id="run-{run["id"]}-step-1-item-{it["index"]}"' in page
        assert f"Item {it['index'] + 1}" in page
        (image_id,) = it["image_ids"]
        assert f"/api/images/{image_id}/thumbnail" in page
    assert 'class="step-json"' in page  # the structured answer
