"""Jobs end to end through the API: drafting, editing, running with Gemini (through the real SDK,
at the fake server on loopback), provenance, history, retries, refusals, cancel and delete."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import uuid
from typing import Any

import httpx
import pytest
from PIL import Image

from cog.config import Settings
from cog.db import lineage as lineage_db
from cog.db.session import make_engine, make_sessionmaker
from tests.api import make_job, put_steps, run_job
from tests.conftest import wait_for_run
from tests.factories import image_bytes, make_series, upload


@pytest.fixture
async def series_with_image(
    gemini_client: httpx.AsyncClient,
) -> tuple[dict[str, Any], dict[str, Any], bytes]:
    series = await make_series(
        gemini_client, "Autumn", description="Low sun, fog", tags=["autumn", "forest"]
    )
    reference = image_bytes(96, 64, color=(10, 120, 30))
    response = await upload(gemini_client, series["id"], ("ref.png", reference, "image/png"))
    assert response.status_code == 201, response.text
    return series, response.json()["items"][0], reference


async def test_draft_saves_steps_from_the_model(
    gemini_client: httpx.AsyncClient, gemini: Any, series_with_image: Any
) -> None:
    series, _, _ = series_with_image
    job = await make_job(gemini_client, series["id"])
    response = await gemini_client.post(f"/api/jobs/{job['id']}/draft")
    assert response.status_code == 200, response.text
    drafted = response.json()
    assert [s["kind"] for s in drafted["steps"]] == ["llm", "image"]
    assert drafted["steps"][1]["prompt"] == "{{ steps[0].text }}"
    assert [s["position"] for s in drafted["steps"]] == [0, 1]
    # What the model was sent: the base prompt, the series' metadata, and its image (as a
    # thumbnail), asking for JSON against the schema.
    (request,) = gemini.requests
    assert request.model == "gemini-3.5-flash"
    assert "a fox in a misty forest at dawn" in request.prompt
    assert "Autumn" in request.prompt and "Low sun, fog" in request.prompt
    assert "forest" in request.prompt
    assert len(request.images) == 1 and request.images[0].mime_type == "image/webp"
    config = request.generation_config
    assert config.get("responseMimeType") == "application/json"
    # Nothing ran.
    runs = await gemini_client.get(f"/api/jobs/{job['id']}/runs")
    assert runs.json()["items"] == []


@pytest.mark.parametrize(("failures", "status", "words"), [(1, 400, "400"), (4, 503, "4 attempts")])
async def test_a_draft_the_model_fails_is_a_502_that_says_why(
    gemini_client: httpx.AsyncClient,
    gemini: Any,
    series_with_image: Any,
    failures: int,
    status: int,
    words: str,
) -> None:
    # The provider's error carries the engine's record of the call, which is not JSON: the
    # answer was a 500 instead of this.
    series, _, _ = series_with_image
    job = await make_job(gemini_client, series["id"])
    gemini.fail_next(failures, status=status)
    response = await gemini_client.post(f"/api/jobs/{job['id']}/draft")
    assert response.status_code == 502, response.text
    body = response.json()
    assert list(body) == ["detail"] and words in body["detail"], body
    after = await gemini_client.get(f"/api/jobs/{job['id']}")
    assert after.json()["steps"] == []


async def test_llm_step_feeds_an_image_step_with_a_reference(
    gemini_client: httpx.AsyncClient,
    gemini: Any,
    gemini_settings: Settings,
    series_with_image: Any,
) -> None:
    series, reference_image, reference_bytes = series_with_image
    job = await make_job(gemini_client, series["id"])
    steps = [
        {
            "kind": "llm",
            "prompt": "Describe {{ base_prompt }} for the series {{ series.title }} "
            "({{ series.tags | join(', ') }}).",
            "config": {"temperature": 0.3},
        },
        {
            "kind": "image",
            "prompt": "Paint this: {{ previous.text }}",
            "config": {
                "count": 2,
                "aspect_ratio": "16:9",
                "image_size": "2K",
                "input_images": [reference_image["id"]],
            },
        },
    ]
    saved = await put_steps(gemini_client, job["id"], steps)
    assert saved.status_code == 200, saved.text
    gemini.script_text(["A red fox stands in silver fog between birches."])
    run = await run_job(gemini_client, job["id"])
    assert run["status"] == "succeeded", run
    llm, image_step = run["steps"]
    assert llm["status"] == "succeeded"
    assert llm["text"] == "A red fox stands in silver fog between birches."
    assert llm["rendered_prompt"] == (
        "Describe a fox in a misty forest at dawn for the series Autumn (autumn, forest)."
    )
    assert llm["usage"]["total_tokens"] > 0 and llm["attempts"] == 1
    assert image_step["rendered_prompt"] == (
        "Paint this: A red fox stands in silver fog between birches."
    )
    assert len(image_step["image_ids"]) == 2

    # What the server received.
    text_calls = [r for r in gemini.requests if r.model == "gemini-3.5-flash"]
    image_calls = [r for r in gemini.requests if r.model == "gemini-3-pro-image"]
    assert len(text_calls) == 1 and len(image_calls) == 2
    assert text_calls[0].generation_config.get("temperature") == 0.3
    for call in image_calls:
        assert call.prompt == image_step["rendered_prompt"]
        assert [img.data for img in call.images] == [reference_bytes]
        image_config = call.generation_config["imageConfig"]
        assert image_config == {"aspectRatio": "16:9", "imageSize": "2K"}

    # The stored images, with their provenance, in the series.
    for image_id in image_step["image_ids"]:
        meta = (await gemini_client.get(f"/api/images/{image_id}")).json()
        assert meta["source"] == "generated"
        assert meta["series_id"] == series["id"]
        assert meta["job_id"] == job["id"] and meta["run_id"] == run["id"]
        assert meta["prompt"] == image_step["rendered_prompt"]
        assert meta["model"] == "gemini-3-pro-image" and meta["provider"] == "gemini"
        assert meta["metadata"]["step_position"] == 1
        assert meta["metadata"]["model_text"]  # the model's words beside the picture
        data = (await gemini_client.get(f"/api/images/{image_id}/file")).content
        assert hashlib.sha256(data).hexdigest() == meta["sha256"]
        # The thumbnail is made on first request, then kept.
        thumb = await gemini_client.get(f"/api/images/{image_id}/thumbnail")
        assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/webp"
        again = await gemini_client.get(f"/api/images/{image_id}/thumbnail")
        assert again.content == thumb.content
        with Image.open(io.BytesIO(data)) as picture:
            assert picture.format == "PNG"
            assert picture.width > picture.height  # 16:9
    listing = (await gemini_client.get(f"/api/series/{series['id']}/images")).json()
    assert len(listing["items"]) == 3

    # Lineage: each made image records the reference (its version 1) as its parent.
    engine = make_engine(gemini_settings.database_url)
    try:
        async with make_sessionmaker(engine)() as session:
            for image_id in image_step["image_ids"]:
                links = await lineage_db.parents_of(session, uuid.UUID(image_id))
                assert [(str(p.id), link.role) for link, p in links] == [
                    (reference_image["id"], "reference")
                ]
                assert str(links[0][0].parent_version_id) == reference_image["id"]
            children = await lineage_db.children_of(session, uuid.UUID(reference_image["id"]))
            assert sorted(str(c.id) for _, c in children) == sorted(image_step["image_ids"])
    finally:
        await engine.dispose()


async def test_runs_are_history_with_the_steps_they_ran(
    gemini_client: httpx.AsyncClient, series_with_image: Any
) -> None:
    series, _, _ = series_with_image
    job = await make_job(gemini_client, series["id"])
    await put_steps(gemini_client, job["id"], [{"kind": "image", "prompt": "{{ base_prompt }}"}])
    first = await run_job(gemini_client, job["id"])
    edited = await put_steps(
        gemini_client,
        job["id"],
        [
            {"kind": "llm", "prompt": "Refine: {{ base_prompt }}"},
            {"kind": "image", "prompt": "{{ steps[0].text }}", "config": {"count": 3}},
        ],
    )
    assert edited.status_code == 200
    second = await run_job(gemini_client, job["id"])
    history = (await gemini_client.get(f"/api/jobs/{job['id']}/runs")).json()["items"]
    assert [r["id"] for r in history] == [second["id"], first["id"]]
    assert [s["kind"] for s in history[1]["steps"]] == ["image"]
    assert history[1]["steps"][0]["prompt"] == "{{ base_prompt }}"
    assert [s["kind"] for s in history[0]["steps"]] == ["llm", "image"]
    assert len(history[0]["steps"][1]["image_ids"]) == 3
    assert (await gemini_client.get(f"/api/jobs/{job['id']}")).json()["last_run"]["id"] == second[
        "id"
    ]


async def test_starting_a_run_answers_it_as_queued_with_its_steps(
    gemini_client: httpx.AsyncClient, series_with_image: Any
) -> None:
    series, _, _ = series_with_image
    job = await make_job(gemini_client, series["id"])
    steps = [
        {"kind": "llm", "prompt": "Refine: {{ base_prompt }}"},
        {"kind": "image", "prompt": "{{ steps[0].text }}", "config": {"count": 2}},
    ]
    await put_steps(gemini_client, job["id"], steps)
    response = await gemini_client.post(f"/api/jobs/{job['id']}/runs")
    assert response.status_code == 202, response.text
    started = response.json()
    assert started["status"] == "queued"
    assert started["job_id"] == job["id"] and started["base_prompt"] == job["base_prompt"]
    assert started["started_at"] is None and started["finished_at"] is None
    assert started["error"] is None and started["attempts"] == 0
    assert [(s["position"], s["kind"], s["prompt"]) for s in started["steps"]] == [
        (0, "llm", "Refine: {{ base_prompt }}"),
        (1, "image", "{{ steps[0].text }}"),
    ]
    assert started["steps"][1]["config"]["count"] == 2
    for step in started["steps"]:
        assert step["status"] == "pending"
        assert step["image_ids"] == [] and step["attempt_log"] == [] and step["usage"] == {}
        assert step["rendered_prompt"] is None and step["started_at"] is None
    # The run as it is stored afterwards is the one answered, moved on by its executor.
    final = await wait_for_run(gemini_client, started["id"])
    assert final["status"] == "succeeded"
    assert final["created_at"] == started["created_at"]
    assert [s["prompt"] for s in final["steps"]] == [s["prompt"] for s in started["steps"]]


async def test_429_and_503_are_retried_and_recorded(
    gemini_client: httpx.AsyncClient, gemini: Any, series_with_image: Any
) -> None:
    series, _, _ = series_with_image
    job = await make_job(gemini_client, series["id"])
    await put_steps(gemini_client, job["id"], [{"kind": "llm", "prompt": "{{ base_prompt }}"}])
    gemini.fail_next(1, status=429)
    gemini.fail_next(1, status=503)
    run = await run_job(gemini_client, job["id"])
    assert run["status"] == "succeeded", run
    step = run["steps"][0]
    assert step["attempts"] == 3
    assert [a["status_code"] for a in step["attempt_log"][:2]] == [429, 503]
    assert step["attempt_log"][2]["error"] is None


async def test_a_safety_block_fails_the_step_and_keeps_earlier_outputs(
    gemini_client: httpx.AsyncClient, gemini: Any, series_with_image: Any
) -> None:
    series, _, _ = series_with_image
    job = await make_job(gemini_client, series["id"])
    await put_steps(
        gemini_client,
        job["id"],
        [
            {"kind": "image", "prompt": "{{ base_prompt }}"},
            {"kind": "llm", "prompt": "Title for: {{ base_prompt }}"},
            {"kind": "image", "prompt": "{{ steps[1].text }}"},
        ],
    )
    gemini.block_next("SAFETY", where="prompt", kind="text")
    run = await run_job(gemini_client, job["id"])
    assert run["status"] == "failed"
    first, llm, last = run["steps"]
    assert first["status"] == "succeeded" and len(first["image_ids"]) == 1
    assert llm["status"] == "failed"
    assert "safety" in llm["error"].lower() and "SAFETY" in llm["error"]
    assert llm["attempts"] == 1
    assert last["status"] == "skipped"
    assert run["error"].startswith("Step 1 failed")
    # The image the first step made is kept, with its file.
    kept = await gemini_client.get(f"/api/images/{first['image_ids'][0]}/file")
    assert kept.status_code == 200


async def test_an_image_refused_for_safety_and_a_missing_image_say_so(
    gemini_client: httpx.AsyncClient, gemini: Any, series_with_image: Any
) -> None:
    series, _, _ = series_with_image
    job = await make_job(gemini_client, series["id"])
    await put_steps(gemini_client, job["id"], [{"kind": "image", "prompt": "{{ base_prompt }}"}])
    gemini.block_next("IMAGE_SAFETY", where="finish")
    refused = await run_job(gemini_client, job["id"])
    assert refused["status"] == "failed"
    assert "IMAGE_SAFETY" in refused["steps"][0]["error"]
    assert refused["steps"][0]["attempts"] == 1  # a refusal is not retried
    gemini.no_image_next(1)
    empty = await run_job(gemini_client, job["id"])
    assert empty["status"] == "failed"
    assert "without an image" in empty["steps"][0]["error"]
    listing = (await gemini_client.get(f"/api/series/{series['id']}/images")).json()
    assert len(listing["items"]) == 1  # only the uploaded reference


async def test_a_400_fails_at_once_with_the_providers_reason(
    gemini_client: httpx.AsyncClient, gemini: Any, series_with_image: Any
) -> None:
    series, _, _ = series_with_image
    job = await make_job(gemini_client, series["id"])
    await put_steps(gemini_client, job["id"], [{"kind": "llm", "prompt": "{{ base_prompt }}"}])
    gemini.fail_next(1, status=400)
    run = await run_job(gemini_client, job["id"])
    assert run["status"] == "failed"
    assert run["steps"][0]["attempts"] == 1
    assert "400" in run["steps"][0]["error"]


async def test_cancel_stops_the_step_in_flight_and_keeps_what_finished(
    gemini_client: httpx.AsyncClient, gemini: Any, series_with_image: Any
) -> None:
    series, _, _ = series_with_image
    job = await make_job(gemini_client, series["id"])
    await put_steps(
        gemini_client,
        job["id"],
        [
            {"kind": "image", "prompt": "{{ base_prompt }}"},
            {"kind": "image", "prompt": "again {{ base_prompt }}", "config": {"count": 2}},
        ],
    )
    # Every call takes a second: once step 0 has finished, step 1's calls are in flight.
    gemini.latency_s = 1.0
    started = (await gemini_client.post(f"/api/jobs/{job['id']}/runs")).json()
    while True:
        run = (await gemini_client.get(f"/api/runs/{started['id']}")).json()
        if run["steps"][0]["status"] == "succeeded":
            break
        await asyncio.sleep(0.01)
    cancelled = await gemini_client.post(f"/api/runs/{started['id']}/cancel")
    assert cancelled.status_code == 200, cancelled.text
    final = await wait_for_run(gemini_client, started["id"], seconds=5)
    gemini.latency_s = 0.0
    assert final["status"] == "cancelled"
    assert final["steps"][0]["status"] == "succeeded" and len(final["steps"][0]["image_ids"]) == 1
    assert final["steps"][1]["status"] == "cancelled"
    assert final["steps"][1]["image_ids"] == []
    again = await gemini_client.post(f"/api/runs/{started['id']}/cancel")
    assert again.status_code == 409


async def test_deleting_a_job_keeps_its_images(
    gemini_client: httpx.AsyncClient, series_with_image: Any
) -> None:
    series, _, _ = series_with_image
    job = await make_job(gemini_client, series["id"])
    await put_steps(
        gemini_client,
        job["id"],
        [{"kind": "image", "prompt": "{{ base_prompt }}", "config": {"count": 2}}],
    )
    run = await run_job(gemini_client, job["id"])
    made = run["steps"][0]["image_ids"]
    deleted = await gemini_client.delete(f"/api/jobs/{job['id']}")
    assert deleted.status_code == 204
    assert (await gemini_client.get(f"/api/jobs/{job['id']}")).status_code == 404
    assert (await gemini_client.get(f"/api/runs/{run['id']}")).status_code == 404
    for image_id in made:
        image = (await gemini_client.get(f"/api/images/{image_id}")).json()
        assert image["job_id"] is None and image["run_id"] is None
        assert image["prompt"] == "a fox in a misty forest at dawn"
        assert image["model"] == "gemini-3-pro-image"
        assert (await gemini_client.get(f"/api/images/{image_id}/file")).status_code == 200


async def test_events_stream_a_run_live_and_the_final_state_after(
    gemini_client: httpx.AsyncClient, gemini: Any, series_with_image: Any
) -> None:
    series, _, _ = series_with_image
    job = await make_job(gemini_client, series["id"])
    await put_steps(
        gemini_client,
        job["id"],
        [
            {"kind": "llm", "prompt": "{{ base_prompt }}"},
            {"kind": "image", "prompt": "{{ previous.text }}", "config": {"count": 2}},
        ],
    )
    gemini.latency_s = 0.1
    started = (await gemini_client.post(f"/api/jobs/{job['id']}/runs")).json()
    events = await read_events(gemini_client, started["id"])
    gemini.latency_s = 0.0
    names = [name for name, _ in events]
    assert names[0] == "snapshot"
    assert names[-1] == "run_finished"
    assert events[-1][1]["status"] == "succeeded"
    # A listener that joins late learns the rest from the snapshot; together they tell all.
    first: dict[str, Any] = events[0][1]
    began = [step["position"] for step in first["steps"] if step["status"] != "pending"]
    began += [data["position"] for name, data in events if name == "step_started"]
    assert sorted(began) == [0, 1]
    ended = [step["position"] for step in first["steps"] if step["status"] == "succeeded"]
    ended += [data["position"] for name, data in events if name == "step_finished"]
    assert sorted(ended) == [0, 1]
    stored = [data["image_id"] for name, data in events if name == "image_stored"]
    assert sorted(stored) == sorted(events[-1][1]["steps"][1]["image_ids"])
    assert len(stored) == 2
    # Afterwards: the final state, then the stream closes.
    after = await read_events(gemini_client, started["id"])
    assert [name for name, _ in after] == ["snapshot", "run_finished"]
    assert after[0][1]["status"] == "succeeded"
    assert (
        await gemini_client.get("/api/runs/00000000-0000-0000-0000-000000000000/events")
    ).status_code == 404


async def read_events(client: httpx.AsyncClient, run_id: str) -> list[tuple[str, Any]]:
    events: list[tuple[str, Any]] = []
    async with client.stream("GET", f"/api/runs/{run_id}/events") as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        name = None
        async for line in response.aiter_lines():
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                events.append((name or "message", json.loads(line[6:])))
    return events
