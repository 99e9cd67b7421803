"""Context inherited down the series tree, through the API, against Gemini (the real SDK at the
fake server), on SQLite and PostgreSQL: what a job's templates render and what the models are
sent, in "Autumn / Forest / Dawn", with inheriting on and off."""

from __future__ import annotations

from typing import Any

import httpx

from tests.api import make_job, ok, put_steps, run_job
from tests.factories import make_series

CONTEXT_PROMPT = (
    "Context: {{ series.context }}\n"
    "Above: {% for a in series.ancestors %}{{ a.title }} [{{ a.tags | join(',') }}] "
    "{{ a.description }}; {% endfor %}\n"  # the block eats its newline
    "Own: {{ series.title }} [{{ series.tags | join(',') }}]"
)


async def tree(client: httpx.AsyncClient) -> tuple[dict[str, Any], ...]:
    autumn = await make_series(
        client, "Autumn", description="Low sun over red leaves.", tags=["autumn"]
    )
    forest = await make_series(
        client,
        "Forest",
        description="Tall pines, moss underfoot.",
        tags=["forest"],
        parent_id=autumn["id"],
    )
    dawn = await make_series(
        client, "Dawn", description="First light, mist.", tags=["dawn"], parent_id=forest["id"]
    )
    return autumn, forest, dawn


async def rendered(client: httpx.AsyncClient, series_id: str) -> tuple[dict[str, Any], str]:
    job = await make_job(client, series_id)
    ok(
        await put_steps(
            client,
            job["id"],
            [
                {"kind": "llm", "prompt": CONTEXT_PROMPT},
                {"kind": "image", "prompt": "{{ series.context }}"},
            ],
        )
    )
    run = await run_job(client, job["id"])
    assert run["status"] == "succeeded", run
    return run, run["steps"][0]["rendered_prompt"]


async def test_a_three_level_tree_renders_all_three_levels(
    gemini_client: httpx.AsyncClient, gemini: Any
) -> None:
    _, _, dawn = await tree(gemini_client)
    gemini.reset()
    run, prompt = await rendered(gemini_client, dawn["id"])
    assert prompt == (
        "Context: Low sun over red leaves.\nTall pines, moss underfoot.\nFirst light, mist.\n"
        "Above: Autumn [autumn] Low sun over red leaves.; "
        "Forest [forest] Tall pines, moss underfoot.; Own: Dawn [dawn]"
    )
    # What the models received: the llm step's prompt as rendered, and the image step's.
    text_call, image_call = gemini.requests
    assert text_call.prompt == prompt
    assert image_call.prompt == (
        "Low sun over red leaves.\nTall pines, moss underfoot.\nFirst light, mist."
    )
    assert run["steps"][1]["rendered_prompt"] == image_call.prompt
    # The series reads back with inheriting on (the default).
    assert ok(await gemini_client.get(f"/api/series/{dawn['id']}"))["inherit_context"] is True


async def test_turning_inheritance_off_cuts_the_context_above(
    gemini_client: httpx.AsyncClient, gemini: Any
) -> None:
    _, forest, dawn = await tree(gemini_client)
    # Off on the middle series: it and Dawn below it no longer see Autumn.
    changed = ok(
        await gemini_client.patch(f"/api/series/{forest['id']}", json={"inherit_context": False})
    )
    assert changed["inherit_context"] is False
    _, prompt = await rendered(gemini_client, dawn["id"])
    assert "Low sun" not in prompt and "Autumn" not in prompt
    assert prompt.startswith("Context: Tall pines, moss underfoot.\nFirst light, mist.\n")
    assert "Above: Forest [forest] Tall pines, moss underfoot.; Own: Dawn [dawn]" in prompt

    # Off on Dawn itself: only its own description.
    ok(await gemini_client.patch(f"/api/series/{forest['id']}", json={"inherit_context": True}))
    ok(await gemini_client.patch(f"/api/series/{dawn['id']}", json={"inherit_context": False}))
    _, prompt = await rendered(gemini_client, dawn["id"])
    assert prompt == "Context: First light, mist.\nAbove: Own: Dawn [dawn]"


async def test_inherit_context_on_create_and_refusals(gemini_client: httpx.AsyncClient) -> None:
    alone = await make_series(gemini_client, "Alone", inherit_context=False)
    assert alone["inherit_context"] is False
    for bad in ({"inherit_context": None}, {"inherit_context": "sometimes"}):
        response = await gemini_client.patch(f"/api/series/{alone['id']}", json=bad)
        assert response.status_code == 422, response.text
        assert "inherit_context" in response.json()["detail"]
    assert ok(await gemini_client.get(f"/api/series/{alone['id']}"))["inherit_context"] is False


async def test_drafting_sends_the_inherited_context(
    gemini_client: httpx.AsyncClient, gemini: Any
) -> None:
    _, _, dawn = await tree(gemini_client)
    job = await make_job(gemini_client, dawn["id"])
    gemini.reset()
    ok(await gemini_client.post(f"/api/jobs/{job['id']}/draft"))
    (request,) = gemini.requests
    for words in (
        "Series title: Dawn",
        "First light, mist.",
        "Inside the series “Autumn”: Low sun over red leaves. (tags: autumn)",
        "Inside the series “Forest”: Tall pines, moss underfoot. (tags: forest)",
    ):
        assert words in request.prompt, request.prompt
    assert "series.context" in (request.system or "")


async def test_style_variables_render_empty_without_a_style_source(
    gemini_client: httpx.AsyncClient, gemini: Any
) -> None:
    series = await make_series(gemini_client, "Plain")
    job = await make_job(gemini_client, series["id"])
    ok(
        await put_steps(
            gemini_client,
            job["id"],
            [{"kind": "image", "prompt": "a fox[{{ style.title }}|{{ style.profile }}]"}],
        )
    )
    gemini.reset()
    run = await run_job(gemini_client, job["id"])
    assert run["status"] == "succeeded", run
    assert run["style"] is None
    assert run["steps"][0]["rendered_prompt"] == "a fox[|]"
    (request,) = gemini.requests
    assert request.prompt == "a fox[|]" and request.images == ()
