"""Style between series through the API, against Gemini (the real SDK at the fake server), on
SQLite and PostgreSQL: a style profile drafted, edited and drafted for a series without
images; a job's style source, its refusals, and what its runs send and record."""

from __future__ import annotations

from typing import Any

import httpx

from tests.api import make_job, ok, put_steps, run_job, series_with_images
from tests.factories import make_series

PROFILE = {
    "palette": "rust, ochre and slate",
    "medium": "gouache on rough paper",
    "lighting": "low raking sun",
    "composition": "wide, horizon low",
    "mood": "quiet",
}
PROFILE_TEXT = (
    "Palette: rust, ochre and slate\nMedium: gouache on rough paper\nLighting: low raking sun\n"
    "Composition: wide, horizon low\nMood: quiet"
)


# --- the profile --------------------------------------------------------------------------------


async def test_a_style_profile_is_drafted_then_edited(
    gemini_client: httpx.AsyncClient, gemini: Any
) -> None:
    series, _, _ = await series_with_images(
        gemini_client, "Harbour", 2, description="Boats at rest", tags=["sea", "gouache"]
    )
    assert series["style_profile"] == "" and series["style_profile_updated_at"] is None
    gemini.reset()
    gemini.script_json([PROFILE])
    drafted = ok(await gemini_client.post(f"/api/series/{series['id']}/style-profile"))
    assert drafted["style_profile"] == PROFILE_TEXT
    assert drafted["style_profile_updated_at"] is not None
    # The model saw the series' images (as thumbnails) and its metadata, and answered in JSON.
    (request,) = gemini.requests
    assert request.model == "gemini-3.5-flash"
    assert [i.mime_type for i in request.images] == ["image/webp", "image/webp"]
    for words in ("Series title: Harbour", "Boats at rest", "sea, gouache", "2 image(s)"):
        assert words in request.prompt
    assert "palette" in (request.system or "")
    assert request.generation_config.get("responseMimeType") == "application/json"

    # Edited by hand: PATCH with `style_profile`; the time moves on.
    edited = ok(
        await gemini_client.patch(
            f"/api/series/{series['id']}", json={"style_profile": "  Ink wash, grey and blue. "}
        )
    )
    assert edited["style_profile"] == "Ink wash, grey and blue."
    assert edited["style_profile_updated_at"] > drafted["style_profile_updated_at"]
    fetched = ok(await gemini_client.get(f"/api/series/{series['id']}"))
    assert fetched["style_profile"] == "Ink wash, grey and blue."
    # Refusals change nothing.
    for bad in ({"style_profile": None}, {"style_profile": "x" * 4001}):
        response = await gemini_client.patch(f"/api/series/{series['id']}", json=bad)
        assert response.status_code == 422, response.text
    fetched = ok(await gemini_client.get(f"/api/series/{series['id']}"))
    assert fetched["style_profile"] == "Ink wash, grey and blue."
    # An empty text clears it.
    cleared = ok(
        await gemini_client.patch(f"/api/series/{series['id']}", json={"style_profile": ""})
    )
    assert cleared["style_profile"] == ""


async def test_a_series_without_images_gets_a_profile_from_its_metadata(
    gemini_client: httpx.AsyncClient, gemini: Any
) -> None:
    parent = await make_series(gemini_client, "Nocturnes", description="Night scenes in ink")
    series = await make_series(
        gemini_client, "Empty", description="Lanterns", tags=["night"], parent_id=parent["id"]
    )
    gemini.reset()
    drafted = ok(await gemini_client.post(f"/api/series/{series['id']}/style-profile"))
    assert drafted["style_profile"].startswith("Palette: ")
    (request,) = gemini.requests
    assert request.images == ()
    assert "no images yet" in request.prompt
    assert "Lanterns" in request.prompt and "Night scenes in ink" in request.prompt


async def test_a_refused_draft_leaves_the_profile(
    gemini_client: httpx.AsyncClient, gemini: Any
) -> None:
    series = await make_series(gemini_client, "Kept")
    ok(await gemini_client.patch(f"/api/series/{series['id']}", json={"style_profile": "mine"}))
    gemini.reset()
    gemini.fail_next(1, status=400)
    response = await gemini_client.post(f"/api/series/{series['id']}/style-profile")
    assert response.status_code == 502, response.text
    assert ok(await gemini_client.get(f"/api/series/{series['id']}"))["style_profile"] == "mine"
    missing = await gemini_client.post(
        "/api/series/00000000-0000-0000-0000-000000000000/style-profile"
    )
    assert missing.status_code == 404


async def test_the_preview_provider_drafts_a_labelled_profile(client: httpx.AsyncClient) -> None:
    series = await make_series(client, "Local", tags=["calm"])
    first = ok(await client.post(f"/api/series/{series['id']}/style-profile"))
    again = ok(await client.post(f"/api/series/{series['id']}/style-profile"))
    assert first["style_profile"] == again["style_profile"]  # the same series, the same
    assert "preview" in first["style_profile"]
    assert first["style_profile"].count("\n") == 4  # five aspects, one a line


# --- a job's style source -----------------------------------------------------------------------


async def test_a_job_with_a_style_source_sends_the_style_images(
    gemini_client: httpx.AsyncClient, gemini: Any
) -> None:
    style, style_images, style_files = await series_with_images(
        gemini_client, "Gouache", 4, tags=["paint"]
    )
    ok(await gemini_client.patch(f"/api/series/{style['id']}", json={"style_profile": "Thick"}))
    target, refs, ref_files = await series_with_images(gemini_client, "Boats", 1)
    job = await make_job(
        gemini_client, target["id"], style_series_id=style["id"], style_image_count=2
    )
    assert (job["style_series_id"], job["style_image_ids"], job["style_image_count"]) == (
        style["id"],
        [],
        2,
    )
    ok(
        await put_steps(
            gemini_client,
            job["id"],
            [
                {"kind": "llm", "prompt": "Describe {{ style.title }}: {{ style.profile }}"},
                {
                    "kind": "image",
                    "prompt": "{{ base_prompt }}, {{ style.tags | join(',') }}",
                    "config": {"input_images": [refs[0]["id"]]},
                },
            ],
        )
    )
    gemini.reset()
    run = await run_job(gemini_client, job["id"])
    assert run["status"] == "succeeded", run
    # A sample of two spread over the series: its oldest and newest image.
    sample = [style_images[0]["id"], style_images[3]["id"]]
    assert run["style"] == {
        "series_id": style["id"],
        "title": "Gouache",
        "tags": ["paint"],
        "profile": "Thick",
        "image_ids": sample,
    }
    text_call, image_call = gemini.requests
    # The llm step sees the profile in its prompt, and no style images.
    assert text_call.prompt == "Describe Gouache: Thick" and text_call.images == ()
    # The image step: its own reference first, then the style images, and a line saying so.
    assert [i.data for i in image_call.images] == [ref_files[0], style_files[0], style_files[3]]
    marker = (
        "The last 2 images are style references from the series “Gouache”: match their style "
        "(palette, medium, lighting, composition, mood), not their subjects."
    )
    assert image_call.prompt == f"a fox in a misty forest at dawn, paint\n\n{marker}"
    assert run["steps"][1]["rendered_prompt"] == image_call.prompt

    (made,) = run["steps"][1]["image_ids"]
    image = ok(await gemini_client.get(f"/api/images/{made}"))
    assert image["metadata"]["style"] == {
        "series_id": style["id"],
        "title": "Gouache",
        "image_ids": sample,
    }
    lineage = ok(await gemini_client.get(f"/api/images/{made}/lineage"))
    assert sorted((p["image_id"], p["role"]) for p in lineage["parents"]) == sorted(
        [(refs[0]["id"], "reference"), (sample[0], "style"), (sample[1], "style")]
    )

    # Picked images instead of a sample; the run records them, the server receives them.
    picked = [style_images[2]["id"]]
    changed = ok(
        await gemini_client.patch(f"/api/jobs/{job['id']}", json={"style_image_ids": picked})
    )
    assert changed["style_image_ids"] == picked
    gemini.reset()
    run = await run_job(gemini_client, job["id"])
    assert run["style"]["image_ids"] == picked
    _, image_call = gemini.requests
    assert [i.data for i in image_call.images] == [ref_files[0], style_files[2]]
    assert "The last image is a style reference" in image_call.prompt

    # Editing the style series later does not change what a run recorded.
    ok(await gemini_client.patch(f"/api/series/{style['id']}", json={"style_profile": "Thin"}))
    assert ok(await gemini_client.get(f"/api/runs/{run['id']}"))["style"]["profile"] == "Thick"

    # Removing the style source: no style images, empty style variables.
    removed = ok(
        await gemini_client.patch(f"/api/jobs/{job['id']}", json={"style_series_id": None})
    )
    assert removed["style_series_id"] is None and removed["style_image_ids"] == []
    gemini.reset()
    run = await run_job(gemini_client, job["id"])
    assert run["style"] is None
    text_call, image_call = gemini.requests
    assert text_call.prompt == "Describe :" and [i.data for i in image_call.images] == [
        ref_files[0]
    ]


async def test_a_job_may_take_the_style_of_its_own_series(
    gemini_client: httpx.AsyncClient, gemini: Any
) -> None:
    series, images, files = await series_with_images(gemini_client, "Self", 1)
    job = await make_job(gemini_client, series["id"], style_series_id=series["id"])
    ok(await put_steps(gemini_client, job["id"], [{"kind": "image", "prompt": "more"}]))
    gemini.reset()
    run = await run_job(gemini_client, job["id"])
    assert run["status"] == "succeeded" and run["style"]["image_ids"] == [images[0]["id"]]
    assert [i.data for i in gemini.requests[0].images] == files


async def test_style_source_refusals_change_nothing(gemini_client: httpx.AsyncClient) -> None:
    style, style_images, _ = await series_with_images(gemini_client, "Style", 1)
    other, other_images, _ = await series_with_images(gemini_client, "Other", 1)
    job = await make_job(gemini_client, other["id"])
    nowhere = "00000000-0000-0000-0000-000000000000"
    cases: list[tuple[dict[str, Any], str]] = [
        ({"style_series_id": nowhere}, "no series"),
        (
            {"style_series_id": style["id"], "style_image_ids": [other_images[0]["id"]]},
            "belongs to another series",
        ),
        ({"style_series_id": style["id"], "style_image_ids": [nowhere]}, "does not exist"),
        ({"style_image_ids": [style_images[0]["id"]]}, "need a style source"),
        ({"style_series_id": style["id"], "style_image_count": 15}, "style_image_count"),
        ({"style_series_id": style["id"], "style_image_count": -1}, "style_image_count"),
        ({"style_image_count": None}, "cannot be null"),
    ]
    for body, words in cases:
        response = await gemini_client.patch(f"/api/jobs/{job['id']}", json=body)
        assert response.status_code == 422, (body, response.text)
        assert words in response.json()["detail"], (body, response.text)
        created = await gemini_client.post(
            f"/api/series/{other['id']}/jobs", json={"base_prompt": "x", **body}
        )
        assert created.status_code == 422, (body, created.text)
    after = ok(await gemini_client.get(f"/api/jobs/{job['id']}"))
    assert (after["style_series_id"], after["style_image_ids"]) == (None, [])
    jobs = ok(await gemini_client.get(f"/api/series/{other['id']}/jobs"))
    assert len(jobs["items"]) == 1


async def test_style_images_and_own_references_fit_one_request(
    gemini_client: httpx.AsyncClient,
) -> None:
    style, _, _ = await series_with_images(gemini_client, "Style", 1)
    series, images, _ = await series_with_images(gemini_client, "Refs", 1)
    job = await make_job(gemini_client, series["id"])
    # 12 references of its own: 8 made by step 0 and 4 of the series.
    steps = [
        {"kind": "image", "prompt": "a", "config": {"count": 8}},
        {
            "kind": "image",
            "prompt": "b",
            "config": {"input_images": ["step:0"] + [images[0]["id"]] * 4},
        },
    ]
    ok(await put_steps(gemini_client, job["id"], steps))
    ok(
        await gemini_client.patch(
            f"/api/jobs/{job['id']}",
            json={"style_series_id": style["id"], "style_image_count": 2},
        )
    )
    too_many = await gemini_client.patch(f"/api/jobs/{job['id']}", json={"style_image_count": 3})
    assert too_many.status_code == 422, too_many.text
    assert "step 1" in too_many.json()["detail"] and "14" in too_many.json()["detail"]
    assert ok(await gemini_client.get(f"/api/jobs/{job['id']}"))["style_image_count"] == 2
    # The same from the steps' side: one more reference is refused with the style in place.
    steps[1]["config"]["input_images"].append(images[0]["id"])
    refused = await put_steps(gemini_client, job["id"], steps)
    assert refused.status_code == 422, refused.text
    assert "style source" in refused.json()["detail"]
