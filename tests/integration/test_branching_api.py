"""Branching jobs through the API, with Gemini through the real SDK at the fake server: a
structured answer, a loop over it, conditions true and false (and the steps that need a skipped
one), answers that do not match their schema, and every problem an edit can have."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest

from tests.api import SCENES, make_job, put_steps, run_job
from tests.conftest import wait_for_run
from tests.factories import make_series

ANSWER = {
    "scenes": [
        {"title": "the harbour at dawn", "mood": "quiet"},
        {"title": "the market at noon", "mood": "busy"},
        {"title": "the lighthouse at night", "mood": "stormy"},
    ],
    "needs_detail": False,
}


@pytest.fixture
async def job(gemini_client: httpx.AsyncClient) -> dict[str, Any]:
    series = await make_series(gemini_client, "Harbour", description="A fishing town")
    return await make_job(gemini_client, series["id"], base_prompt="a day in a harbour town")


def scenes_step(**extra: Any) -> dict[str, Any]:
    return {
        "kind": "llm",
        "prompt": "List the scenes of {{ base_prompt }}.",
        "config": {"schema": SCENES},
        **extra,
    }


async def test_structured_scenes_fan_out_into_images_recorded_with_their_item(
    gemini_client: httpx.AsyncClient, gemini: Any, job: dict[str, Any]
) -> None:
    steps = [
        scenes_step(),
        {
            "kind": "image",
            "prompt": "{{ item.title }}, {{ item.mood }} mood, for {{ series.title }}",
            "config": {"count": 2, "aspect_ratio": "3:2"},
            "for_each": "steps[0].json.scenes",
        },
        {
            "kind": "llm",
            "prompt": "Caption the {{ steps[1].images | length }} pictures of "
            "{{ steps[0].json.scenes | map(attribute='title') | join(', ') }}.",
            "config": {"input_images": ["step:1"]},
        },
    ]
    saved = await put_steps(gemini_client, job["id"], steps)
    assert saved.status_code == 200, saved.text
    assert saved.json()["steps"][1]["for_each"] == "steps[0].json.scenes"
    assert saved.json()["steps"][0]["config"]["schema"] == SCENES
    gemini.script_json([ANSWER])
    run = await run_job(gemini_client, job["id"])
    assert run["status"] == "succeeded", run
    listing, images, caption = run["steps"]

    # The structured answer, as the model sent it, stored with the step's run.
    assert listing["json"] == ANSWER
    assert json.loads(listing["text"]) == ANSWER
    (ask,) = [r for r in gemini.requests if r.model == "gemini-3.5-flash" and "List" in r.prompt]
    config = ask.generation_config
    assert config["responseMimeType"] == "application/json"
    assert config["responseJsonSchema"] == SCENES

    # One iteration per scene, each with its item, prompt and its own two images.
    assert [it["item"] for it in images["iterations"]] == ANSWER["scenes"]
    assert [it["index"] for it in images["iterations"]] == [0, 1, 2]
    assert {it["status"] for it in images["iterations"]} == {"succeeded"}
    assert images["iterations"][2]["prompt"] == "the lighthouse at night, stormy mood, for Harbour"
    assert all(len(it["image_ids"]) == 2 for it in images["iterations"])
    all_ids = [i for it in images["iterations"] for i in it["image_ids"]]
    assert images["image_ids"] == all_ids and len(set(all_ids)) == 6
    for iteration in images["iterations"]:
        for image_id in iteration["image_ids"]:
            image = (await gemini_client.get(f"/api/images/{image_id}")).json()
            assert image["metadata"]["item"] == iteration["item"]
            assert image["metadata"]["iteration"] == iteration["index"]
            assert image["prompt"] == iteration["prompt"]
    drawn = sorted(r.prompt for r in gemini.requests if r.model == "gemini-3-pro-image")
    assert drawn == sorted(it["prompt"] for it in images["iterations"] for _ in range(2))

    # A later step uses every image of the loop, and the structured fields.
    assert caption["rendered_prompt"] == (
        "Caption the 6 pictures of the harbour at dawn, the market at noon, "
        "the lighthouse at night."
    )
    (looked,) = [r for r in gemini.requests if r.prompt == caption["rendered_prompt"]]
    assert len(looked.images) == 6


async def test_a_loop_refines_each_item_with_the_image_an_earlier_loop_made_for_it(
    gemini_client: httpx.AsyncClient, gemini: Any, job: dict[str, Any]
) -> None:
    """`step:N:item`: each turn of a loop gets only the images the earlier loop made for the
    same item, sent to the model and kept in the lineage; a resumed run reads them back."""
    steps = [
        scenes_step(),
        {"kind": "image", "prompt": "Sketch {{ item.title }}", "for_each": "steps[0].json.scenes"},
        {
            "kind": "image",
            "prompt": "Paint {{ item.title }} from the sketch",
            "for_each": "steps[0].json.scenes",
            "config": {"input_images": ["step:1:item"]},
        },
        {
            "kind": "llm",
            "prompt": "Say which scene this is: {{ item.title }}",
            "for_each": "steps[0].json.scenes",
            "config": {"input_images": ["step:2:item"]},
        },
    ]
    saved = await put_steps(gemini_client, job["id"], steps)
    assert saved.status_code == 200, saved.text
    assert saved.json()["steps"][2]["config"]["input_images"] == ["step:1:item"]
    gemini.script_json([ANSWER])
    run = await run_job(gemini_client, job["id"])
    assert run["status"] == "succeeded", run
    _, sketches, paintings, captions = run["steps"]

    async def stored(image_id: str) -> bytes:
        return (await gemini_client.get(f"/api/images/{image_id}/file")).content

    for scene, sketch, painting in zip(
        ANSWER["scenes"], sketches["iterations"], paintings["iterations"], strict=True
    ):
        (paint,) = [r for r in gemini.requests if r.prompt == painting["prompt"]]
        assert painting["prompt"] == f"Paint {scene['title']} from the sketch"
        # The sketch of this scene, and no other.
        assert [i.data for i in paint.images] == [await stored(sketch["image_ids"][0])]
        lineage = (
            await gemini_client.get(f"/api/images/{painting['image_ids'][0]}/lineage")
        ).json()
        assert [(p["image_id"], p["role"]) for p in lineage["parents"]] == [
            (sketch["image_ids"][0], "reference")
        ]
    for painting, caption in zip(paintings["iterations"], captions["iterations"], strict=True):
        (ask,) = [r for r in gemini.requests if r.prompt == caption["prompt"]]
        assert [i.data for i in ask.images] == [await stored(painting["image_ids"][0])]


async def test_a_loop_runs_its_image_calls_together_within_the_limit(
    gemini_client: httpx.AsyncClient, gemini: Any, job: dict[str, Any]
) -> None:
    """Six scenes, one image each, four image calls at a time, 300 ms each: two rounds."""
    steps = [
        scenes_step(),
        {"kind": "image", "prompt": "{{ item.title }}", "for_each": "steps[0].json.scenes"},
    ]
    assert (await put_steps(gemini_client, job["id"], steps)).status_code == 200
    six = {**ANSWER, "scenes": [{"title": f"scene {i}", "mood": "calm"} for i in range(6)]}
    gemini.script_json([six])
    gemini.latency_s = 0.3
    run = await run_job(gemini_client, job["id"])
    assert run["status"] == "succeeded", run
    step = run["steps"][1]
    took = _seconds(step["finished_at"]) - _seconds(step["started_at"])
    assert 0.55 < took < 1.5, took  # not 6 x 0.3 s one after another; not all 6 at once
    assert len(step["image_ids"]) == 6


def _seconds(stamp: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(stamp).timestamp()


async def test_a_condition_true_runs_and_one_false_skips_the_steps_that_need_it(
    gemini_client: httpx.AsyncClient, gemini: Any, job: dict[str, Any]
) -> None:
    steps = [
        {"kind": "llm", "prompt": "Describe {{ base_prompt }}."},
        {
            "kind": "image",
            "prompt": "{{ steps[0].text }}",
            "when": '"night" in steps[0].text | lower',
        },
        {
            "kind": "image",
            "prompt": "{{ steps[0].text }}, sunny",
            "when": '"noon" in steps[0].text',
        },
        {"kind": "llm", "prompt": "Name the {{ steps[2].images | length }} pictures."},
        {"kind": "image", "prompt": "Again", "config": {"input_images": ["step:2"]}},
        {"kind": "llm", "prompt": "After: {{ previous.text }}"},
        {"kind": "llm", "prompt": "Also {{ steps[1].images | length }} at night."},
    ]
    assert (await put_steps(gemini_client, job["id"], steps)).status_code == 200
    gemini.script_text(["The harbour at NIGHT, lamps on the water."])
    run = await run_job(gemini_client, job["id"])
    assert run["status"] == "succeeded", run
    statuses = [s["status"] for s in run["steps"]]
    assert statuses == [
        "succeeded",
        "succeeded",
        "skipped",
        "skipped",
        "skipped",
        "skipped",
        "succeeded",
    ]
    night, noon, names, again, after, also = run["steps"][1:]
    assert night["skip_reason"] is None and len(night["image_ids"]) == 1
    assert noon["skip_reason"] == 'Its condition was false: "noon" in steps[0].text'
    assert noon["image_ids"] == [] and noon["started_at"] is None
    assert names["skip_reason"] == "It needs step 2, which was skipped."
    assert again["skip_reason"] == "It needs step 2, which was skipped."
    assert after["skip_reason"] == "It needs step 4, which was skipped."  # `previous`
    assert also["text"]
    assert also["when"] is None and noon["when"] == '"noon" in steps[0].text'
    # Nothing was sent for the skipped steps.
    assert len([r for r in gemini.requests if r.model == "gemini-3-pro-image"]) == 1
    assert len(gemini.requests) == 3


async def test_a_condition_on_a_structured_field(
    gemini_client: httpx.AsyncClient, gemini: Any, job: dict[str, Any]
) -> None:
    steps = [
        scenes_step(),
        {"kind": "image", "prompt": "Detail", "when": "steps[0].json.needs_detail"},
        {"kind": "image", "prompt": "Overview", "when": "not steps[0].json.needs_detail"},
    ]
    assert (await put_steps(gemini_client, job["id"], steps)).status_code == 200
    gemini.script_json([ANSWER])
    run = await run_job(gemini_client, job["id"])
    assert [s["status"] for s in run["steps"]] == ["succeeded", "skipped", "succeeded"]
    assert run["steps"][1]["skip_reason"] == ("Its condition was false: steps[0].json.needs_detail")


async def test_an_empty_list_skips_the_loop_and_its_dependants(
    gemini_client: httpx.AsyncClient, gemini: Any, job: dict[str, Any]
) -> None:
    steps = [
        scenes_step(),
        {"kind": "image", "prompt": "{{ item.title }}", "for_each": "steps[0].json.scenes"},
        {"kind": "llm", "prompt": "x", "config": {"input_images": ["step:1"]}},
    ]
    assert (await put_steps(gemini_client, job["id"], steps)).status_code == 200
    gemini.script_json([{"scenes": [], "needs_detail": True}])
    run = await run_job(gemini_client, job["id"])
    assert run["status"] == "succeeded", run
    assert [s["status"] for s in run["steps"]] == ["succeeded", "skipped", "skipped"]
    assert "nothing to go over" in run["steps"][1]["skip_reason"]


@pytest.mark.parametrize(
    ("answer", "words"),
    [
        (
            {"scenes": [{"title": "a"}], "needs_detail": True},
            "does not match the step's schema at `scenes[0]`: 'mood' is a required property",
        ),
        ('{"scenes": [', "not valid JSON"),
    ],
)
async def test_an_answer_that_does_not_match_its_schema_fails_the_step(
    gemini_client: httpx.AsyncClient, gemini: Any, job: dict[str, Any], answer: Any, words: str
) -> None:
    steps = [
        scenes_step(),
        {"kind": "image", "prompt": "{{ item.title }}", "for_each": "steps[0].json.scenes"},
    ]
    assert (await put_steps(gemini_client, job["id"], steps)).status_code == 200
    gemini.script_json([answer])
    run = await run_job(gemini_client, job["id"])
    assert run["status"] == "failed"
    first, second = run["steps"]
    assert first["status"] == "failed" and words in first["error"], first["error"]
    assert first["json"] is None
    assert run["error"].startswith("Step 0 failed:")
    assert second["status"] == "skipped"


@pytest.mark.parametrize(
    ("step", "words"),
    [
        (
            {"kind": "image", "prompt": "x", "for_each": "steps[0].text"},
            "`for_each` gave a text, not a list",
        ),
        (
            {"kind": "image", "prompt": "x", "when": "steps[0].json.scenes[5].title"},
            "`when` could not be evaluated",
        ),
        (
            {"kind": "image", "prompt": "x", "when": "(steps[0].text ~ 'x') * 99999"},
            "`when`",
        ),
    ],
)
async def test_an_expression_that_fails_when_it_runs_fails_the_step_in_plain_words(
    gemini_client: httpx.AsyncClient,
    gemini: Any,
    job: dict[str, Any],
    step: dict[str, Any],
    words: str,
) -> None:
    assert (await put_steps(gemini_client, job["id"], [scenes_step(), step])).status_code == 200
    gemini.script_json([ANSWER])
    run = await run_job(gemini_client, job["id"])
    assert run["status"] == "failed", run
    failed = run["steps"][1]
    assert failed["status"] == "failed" and words in failed["error"], failed["error"]
    assert run["error"] == f"Step 1 failed: {failed['error']}"


async def test_a_failing_iteration_fails_the_step_and_keeps_the_others_images(
    gemini_client: httpx.AsyncClient, gemini: Any, job: dict[str, Any]
) -> None:
    steps = [
        scenes_step(),
        {"kind": "image", "prompt": "{{ item.title }}", "for_each": "steps[0].json.scenes"},
    ]
    assert (await put_steps(gemini_client, job["id"], steps)).status_code == 200
    gemini.script_json([ANSWER])
    gemini.block_next("IMAGE_SAFETY", where="finish", kind="image")
    run = await run_job(gemini_client, job["id"])
    assert run["status"] == "failed"
    step = run["steps"][1]
    statuses = sorted(it["status"] for it in step["iterations"])
    assert "failed" in statuses
    (failed,) = [it for it in step["iterations"] if it["status"] == "failed"]
    assert "IMAGE_SAFETY" in failed["error"]
    assert step["error"].startswith(f"Item {failed['index']} of 3 (")
    kept = [i for it in step["iterations"] for i in it["image_ids"]]
    assert step["image_ids"] == kept
    for image_id in kept:
        assert (await gemini_client.get(f"/api/images/{image_id}")).status_code == 200


async def test_an_llm_step_can_loop_too_with_a_structured_answer_per_item(
    gemini_client: httpx.AsyncClient, gemini: Any, job: dict[str, Any]
) -> None:
    caption = {"type": "object", "properties": {"caption": {"type": "string"}}}
    steps = [
        scenes_step(),
        {
            "kind": "llm",
            "prompt": "A caption for {{ item.title }}",
            "config": {"schema": caption},
            "for_each": "steps[0].json.scenes",
        },
        {"kind": "llm", "prompt": "{{ steps[1].json[2].caption }}"},
    ]
    assert (await put_steps(gemini_client, job["id"], steps)).status_code == 200
    gemini.script_json([ANSWER, {"caption": "one"}, {"caption": "two"}, {"caption": "three"}])
    run = await run_job(gemini_client, job["id"])
    assert run["status"] == "succeeded", run
    looped = run["steps"][1]
    assert sorted(it["json"]["caption"] for it in looped["iterations"]) == ["one", "three", "two"]
    assert looped["json"] == [it["json"] for it in looped["iterations"]]
    assert run["steps"][2]["rendered_prompt"] == looped["iterations"][2]["json"]["caption"]


async def test_steps_keep_their_condition_loop_and_schema_and_old_steps_their_shape(
    gemini_client: httpx.AsyncClient, job: dict[str, Any]
) -> None:
    plain = {"kind": "image", "prompt": "{{ base_prompt }}"}
    saved = (await put_steps(gemini_client, job["id"], [plain])).json()
    assert saved["steps"][0]["when"] is None and saved["steps"][0]["for_each"] is None
    assert "schema" not in saved["steps"][0]["config"]
    steps = [
        scenes_step(),
        {**plain, "prompt": "{{ item.title }}", "for_each": "steps[0].json.scenes"},
    ]
    assert (await put_steps(gemini_client, job["id"], steps)).status_code == 200
    changed = await gemini_client.patch(
        f"/api/jobs/{job['id']}/steps/1", json={"when": "steps[0].json.needs_detail"}
    )
    assert changed.status_code == 200, changed.text
    step = changed.json()["steps"][1]
    assert step["when"] == "steps[0].json.needs_detail"
    assert step["for_each"] == "steps[0].json.scenes"
    dropped = await gemini_client.patch(
        f"/api/jobs/{job['id']}/steps/1", json={"when": None, "for_each": None, "prompt": "x"}
    )
    assert dropped.status_code == 200, dropped.text
    assert dropped.json()["steps"][1]["when"] is None
    assert dropped.json()["steps"][1]["for_each"] is None
    # A schema may come as JSON text, as a form or a YAML file may hold it.
    as_text = await put_steps(
        gemini_client, job["id"], [{**scenes_step(), "config": {"schema": json.dumps(SCENES)}}]
    )
    assert as_text.status_code == 200, as_text.text
    assert as_text.json()["steps"][0]["config"]["schema"] == SCENES


LOOP = {"kind": "image", "prompt": "{{ item.title }}", "for_each": "steps[0].json.scenes"}
ITEM_OF_1 = {"input_images": ["step:1:item"]}


@pytest.mark.parametrize(
    ("steps", "problem"),
    [
        (
            [scenes_step(), {**LOOP, "when": "steps[7].text"}],
            "step 1: `when`: the condition uses `steps[7]`, a step that does not exist "
            "(the job has 2)",
        ),
        (
            [{**scenes_step(), "when": "steps[1].text"}, LOOP],
            "step 0: `when`: the condition uses `steps[1]`, which does not run before this step",
        ),
        (
            [scenes_step(), {**LOOP, "for_each": "steps[1].json.scenes"}],
            "step 1: `for_each`: the loop uses `steps[1]`, which does not run before this step",
        ),
        (
            [scenes_step(), {**LOOP, "for_each": "steps[0].json.shots"}],
            "step 1: `for_each`: step 0's answer has no field `shots` in its schema "
            "(it has `scenes`, `needs_detail`)",
        ),
        (
            [scenes_step(), {**LOOP, "when": "steps[0].json.scenes[0].colour"}],
            "step 1: `when`: step 0's answer.scenes[0] has no field `colour` in its schema "
            "(it has `title`, `mood`)",
        ),
        (
            [scenes_step(), {**LOOP, "prompt": "{{ item.colour }}"}],
            "step 1: `item` has no field `colour` in its schema (it has `title`, `mood`)",
        ),
        (
            [scenes_step(), {**LOOP, "when": "steps[0].text |"}],
            "step 1: `when` does not parse:",
        ),
        (
            [scenes_step(), {**LOOP, "when": "steps[0].text }} {{ 1"}],
            "step 1: `when` does not parse: unexpected '}}' after the expression",
        ),
        (
            [scenes_step(), {**LOOP, "for_each": "steps[0].json.needs_detail"}],
            "step 1: `for_each`: the loop goes over a boolean, not a list",
        ),
        (
            [{"kind": "llm", "prompt": "x"}, {**LOOP, "for_each": "steps[0].json.scenes"}],
            "step 1: `for_each`: `steps[0].json` is empty: step 0 declares no schema",
        ),
        (
            [scenes_step(), {**LOOP, "for_each": None}],
            "step 1: the prompt uses unknown variable(s) `item`",
        ),
        (
            [scenes_step(), {**LOOP, "when": "item.title"}],
            "step 1: `when`: the condition uses unknown variable(s) `item`",
        ),
        (
            [scenes_step(), {**LOOP, "when": "steps[0].__class__"}],
            "step 1: `when`: the condition reaches for `__class__`",
        ),
        (
            [scenes_step(), {**LOOP, "when": "steps[0].txt"}],
            "step 1: `when`: `steps[0].txt` is not an output of a step",
        ),
        (
            [scenes_step(), {**LOOP, "when": ""}],
            "step 1: `when` is empty",
        ),
        (
            [scenes_step(), {**LOOP, "config": {"schema": SCENES}}],
            "step 1: `config.schema` applies to llm steps only",
        ),
        (
            [{**scenes_step(), "config": {"schema": {"type": "objekt"}}}],
            "step 0: `config.schema` is not a valid JSON Schema",
        ),
        (
            [{**scenes_step(), "config": {"schema": "{not json"}}],
            "step 0: `config.schema`: Value error, is not valid JSON",
        ),
        (
            [{**scenes_step(), "config": {"schema": [1, 2]}}],
            "step 0: `config.schema`: Value error, must be a JSON Schema object",
        ),
        (
            [{**scenes_step(), "config": {"schema": {"$ref": "https://example.com/s.json"}}}],
            "step 0: `config.schema` refers to 'https://example.com/s.json'",
        ),
        (
            [scenes_step(), {**LOOP, "when": "x" * 2001}],
            "step 1: `when`: String should have at most 2000 characters",
        ),
        (
            [scenes_step(), LOOP, {**LOOP, "config": {"input_images": ["step:2:item"]}}],
            "step 2: input image 'step:2:item' refers to a step that does not run before it",
        ),
        (
            [scenes_step(), LOOP, {**LOOP, "config": {"input_images": ["step:0:item"]}}],
            "step 2: 'step:0:item' is an llm step and makes no images",
        ),
        (
            [scenes_step(), LOOP, {"kind": "image", "prompt": "x", "config": ITEM_OF_1}],
            "step 2: 'step:1:item' gives each item the images step 1 made for the same item: "
            "both steps need a loop (`for_each`)",
        ),
        (
            [
                scenes_step(),
                {**LOOP, "for_each": None, "prompt": "x"},
                {**LOOP, "config": ITEM_OF_1},
            ],
            "step 2: 'step:1:item' gives each item the images step 1 made for the same item",
        ),
        (
            [scenes_step(), LOOP, {**LOOP, "config": {"input_images": ["step:1:items"]}}],
            "'step:1:items' is neither an image id, a step reference like 'step:0'",
        ),
    ],
)
async def test_every_branching_problem_is_a_422_naming_the_step_and_nothing_changes(
    gemini_client: httpx.AsyncClient, job: dict[str, Any], steps: list[Any], problem: str
) -> None:
    before = [{"kind": "llm", "prompt": "keep me"}]
    assert (await put_steps(gemini_client, job["id"], before)).status_code == 200
    response = await put_steps(gemini_client, job["id"], steps)
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert problem in detail, detail
    after = (await gemini_client.get(f"/api/jobs/{job['id']}")).json()
    assert [s["prompt"] for s in after["steps"]] == ["keep me"]


async def test_the_preview_provider_answers_schemas_and_loops(client: httpx.AsyncClient) -> None:
    series = await make_series(client, "Preview")
    job = await make_job(client, series["id"])
    steps = [
        scenes_step(),
        {"kind": "image", "prompt": "{{ item.title }}", "for_each": "steps[0].json.scenes"},
    ]
    assert (await put_steps(client, job["id"], steps)).status_code == 200
    first = await run_job(client, job["id"])
    second = await run_job(client, job["id"])
    assert first["status"] == "succeeded", first
    answer = first["steps"][0]["json"]
    assert answer == second["steps"][0]["json"]  # deterministic
    assert len(answer["scenes"]) == 3 and {"title", "mood"} <= set(answer["scenes"][0])
    assert [it["item"] for it in first["steps"][1]["iterations"]] == answer["scenes"]
    assert len(first["steps"][1]["image_ids"]) == 3


async def test_events_announce_iterations_and_skips(
    gemini_client: httpx.AsyncClient, gemini: Any, job: dict[str, Any]
) -> None:
    steps = [scenes_step(), LOOP, {"kind": "image", "prompt": "x", "when": "false"}]
    assert (await put_steps(gemini_client, job["id"], steps)).status_code == 200
    gemini.script_json([ANSWER])
    run = await run_job(gemini_client, job["id"])
    async with gemini_client.stream("GET", f"/api/runs/{run['id']}/events") as stream:
        body = "".join([chunk async for chunk in stream.aiter_text()])
    final = json.loads(body.split("event: run_finished\ndata: ")[1].split("\n")[0])
    assert final["steps"][2]["status"] == "skipped"
    assert len(final["steps"][1]["iterations"]) == 3


async def test_drafting_knows_loops_and_uses_one_for_variations(
    gemini_client: httpx.AsyncClient, gemini: Any
) -> None:
    series = await make_series(gemini_client, "Bicycles")
    job = await make_job(
        gemini_client, series["id"], base_prompt="four variations of a red bicycle in the rain"
    )
    drafted = await gemini_client.post(f"/api/jobs/{job['id']}/draft")
    assert drafted.status_code == 200, drafted.text
    listing, images = drafted.json()["steps"]
    schema = listing["config"]["schema"]
    assert schema["properties"]["variations"]["minItems"] == 4
    assert images["for_each"] == "steps[0].json.variations"
    assert images["prompt"] == "{{ item.prompt }}"
    (request,) = gemini.requests
    assert request.system is not None
    assert "for_each" in request.system and "steps[0].json" in request.system
    fields = request.generation_config["responseSchema"]["properties"]["steps"]["items"]
    assert {"when", "for_each"} <= set(fields["properties"])

    run = await run_job(gemini_client, job["id"])
    assert run["status"] == "succeeded", run
    assert len(run["steps"][1]["iterations"]) == 4
    assert len(run["steps"][1]["image_ids"]) == 4


async def test_cancelling_a_loop_ends_its_unfinished_items_and_keeps_the_finished(
    gemini_client: httpx.AsyncClient, gemini: Any, job: dict[str, Any]
) -> None:
    steps = [
        scenes_step(),
        {
            "kind": "image",
            "prompt": "{{ item.title }}",
            "for_each": "steps[0].json.scenes",
            "config": {"count": 2},
        },
    ]
    assert (await put_steps(gemini_client, job["id"], steps)).status_code == 200
    gemini.script_json([ANSWER])
    gemini.latency_s = 0.4  # six image calls, four at a time: the loop takes two rounds
    started = (await gemini_client.post(f"/api/jobs/{job['id']}/runs")).json()
    while True:
        run = (await gemini_client.get(f"/api/runs/{started['id']}")).json()
        if run["steps"][1]["image_ids"]:
            break
        await asyncio.sleep(0.01)
    cancelled = await gemini_client.post(f"/api/runs/{started['id']}/cancel")
    assert cancelled.status_code == 200, cancelled.text
    final = await wait_for_run(gemini_client, started["id"], seconds=5)
    gemini.latency_s = 0.0
    assert final["status"] == "cancelled"
    loop = final["steps"][1]
    assert loop["status"] == "cancelled"
    statuses = {it["status"] for it in loop["iterations"]}
    assert statuses <= {"succeeded", "cancelled"} and "cancelled" in statuses
    kept = [i for it in loop["iterations"] for i in it["image_ids"]]
    assert kept and loop["image_ids"] == kept
