"""Restyle through the API, against Gemini (the real SDK at the fake server), on SQLite and
PostgreSQL: three images of one series re-rendered in the style of another into a third, what
the server received (each image with the style images), the provenance and lineage of every
result, the job reused the second time, and the refusals that change nothing."""

from __future__ import annotations

from typing import Any

import httpx

from tests.api import ok, series_with_images, wait_for_batch
from tests.factories import make_series

NOWHERE = "00000000-0000-0000-0000-000000000000"


async def test_restyle_three_images(gemini_client: httpx.AsyncClient, gemini: Any) -> None:
    photos, originals, original_files = await series_with_images(gemini_client, "Photos", 3)
    style, style_images, style_files = await series_with_images(gemini_client, "Gouache", 3)
    ok(
        await gemini_client.patch(
            f"/api/series/{style['id']}", json={"style_profile": "Palette: rust and slate"}
        )
    )
    target = await make_series(gemini_client, "Photos in gouache")
    picked = [style_images[1]["id"], style_images[2]["id"]]

    gemini.reset()
    started = ok(
        await gemini_client.post(
            "/api/restyles",
            json={
                "image_ids": [i["id"] for i in originals],
                "style_series_id": style["id"],
                "target_series_id": target["id"],
                "prompt": "keep the faces sharp",
                "style_image_ids": picked,
            },
        ),
        202,
    )
    assert started["total"] == 3
    batch = await wait_for_batch(gemini_client, started["id"])
    assert batch["status"] == "succeeded", batch

    job = ok(await gemini_client.get(f"/api/jobs/{batch['job_id']}"))
    assert job["series_id"] == target["id"] and job["style_series_id"] == style["id"]
    assert job["style_image_ids"] == picked and job["base_prompt"] == "keep the faces sharp"
    assert job["title"] == "Restyle in the style of Gouache"

    # Each call: the image to re-render first, then the two style images, with the prompt
    # saying which is which.
    requests = gemini.requests
    assert len(requests) == 3
    sent = sorted(([i.data for i in r.images], r.prompt) for r in requests)
    expected_prompt = (
        "Re-render the first image in the style of the series “Gouache”. Keep its subject, "
        "composition and content; change only its look to match the style.\n"
        "Style: Palette: rust and slate\nkeep the faces sharp\n\n"
        "The last 2 images are style references from the series “Gouache”: match their style "
        "(palette, medium, lighting, composition, mood), not their subjects."
    )
    assert sent == sorted(
        ([original, style_files[1], style_files[2]], expected_prompt) for original in original_files
    )

    for run_summary, original in zip(batch["runs"], originals, strict=True):
        assert run_summary["input_image_id"] == original["id"]
        run = ok(await gemini_client.get(f"/api/runs/{run_summary['id']}"))
        assert run["style"]["series_id"] == style["id"] and run["style"]["image_ids"] == picked
        (made,) = run_summary["image_ids"]
        image = ok(await gemini_client.get(f"/api/images/{made}"))
        assert image["series_id"] == target["id"]
        assert image["metadata"]["input_image_id"] == original["id"]
        assert image["metadata"]["style"] == {
            "series_id": style["id"],
            "title": "Gouache",
            "image_ids": picked,
        }
        lineage = ok(await gemini_client.get(f"/api/images/{made}/lineage"))
        assert sorted((p["image_id"], p["role"]) for p in lineage["parents"]) == sorted(
            [(original["id"], "input"), (picked[0], "style"), (picked[1], "style")]
        )
        # Seen from the source image: what was made from it.
        source = ok(await gemini_client.get(f"/api/images/{original['id']}/lineage"))
        assert [(c["image_id"], c["role"]) for c in source["children"]] == [(made, "input")]

    # The sources stay where they were; the target holds the three results.
    assert len(ok(await gemini_client.get(f"/api/series/{photos['id']}/images"))["items"]) == 3
    assert len(ok(await gemini_client.get(f"/api/series/{target['id']}/images"))["items"]) == 3

    # Again, a whole series, with a sample of the style: the same job is reused.
    again = ok(
        await gemini_client.post(
            "/api/restyles",
            json={
                "series_id": photos["id"],
                "style_series_id": style["id"],
                "target_series_id": target["id"],
                "style_image_count": 1,
            },
        ),
        202,
    )
    assert again["job_id"] == batch["job_id"]
    done = await wait_for_batch(gemini_client, again["id"])
    assert done["status"] == "succeeded", done
    job = ok(await gemini_client.get(f"/api/jobs/{batch['job_id']}"))
    assert (job["style_image_ids"], job["style_image_count"], job["base_prompt"]) == ([], 1, "")
    jobs = ok(await gemini_client.get(f"/api/series/{target['id']}/jobs"))
    assert len(jobs["items"]) == 1


async def test_restyle_the_images_of_a_series_with_a_tag(
    gemini_client: httpx.AsyncClient, gemini: Any
) -> None:
    """What a gallery's "select all tagged …" sends: only the tagged images are restyled."""
    photos, originals, original_files = await series_with_images(gemini_client, "Photos", 3)
    style, _, _ = await series_with_images(gemini_client, "Ink", 1)
    target = await make_series(gemini_client, "Photos in ink")
    for image in (originals[0], originals[2]):
        ok(await gemini_client.patch(f"/api/images/{image['id']}", json={"tags": ["keep"]}))

    gemini.reset()
    started = ok(
        await gemini_client.post(
            "/api/restyles",
            json={
                "series_id": photos["id"],
                "tag": "keep",
                "style_series_id": style["id"],
                "target_series_id": target["id"],
            },
        ),
        202,
    )
    assert started["total"] == 2
    batch = await wait_for_batch(gemini_client, started["id"])
    assert batch["status"] == "succeeded", batch
    assert [r["input_image_id"] for r in batch["runs"]] == [originals[0]["id"], originals[2]["id"]]
    # Each call sent its own source image first: the untagged one was never sent.
    firsts = sorted(r.images[0].data for r in gemini.requests)
    assert firsts == sorted([original_files[0], original_files[2]])
    made = ok(await gemini_client.get(f"/api/series/{target['id']}/images"))["items"]
    assert len(made) == 2


async def test_restyle_into_a_new_series(gemini_client: httpx.AsyncClient) -> None:
    photos, originals, _ = await series_with_images(gemini_client, "Photos", 2)
    style, _, _ = await series_with_images(gemini_client, "Ink", 1)
    started = ok(
        await gemini_client.post(
            "/api/restyles",
            json={
                "series_id": photos["id"],
                "style_series_id": style["id"],
                "target_title": " Photos in ink ",
            },
        ),
        202,
    )
    batch = await wait_for_batch(gemini_client, started["id"])
    assert batch["status"] == "succeeded", batch
    job = ok(await gemini_client.get(f"/api/jobs/{batch['job_id']}"))
    made = ok(await gemini_client.get(f"/api/series/{job['series_id']}"))
    assert (made["title"], made["parent_id"]) == ("Photos in ink", None)
    results = ok(await gemini_client.get(f"/api/series/{made['id']}/images"))["items"]
    assert sorted(i["metadata"]["input_image_id"] for i in results) == sorted(
        i["id"] for i in originals
    )


async def test_restyle_refusals_change_nothing(gemini_client: httpx.AsyncClient) -> None:
    photos, originals, _ = await series_with_images(gemini_client, "Photos", 1)
    style, _, _ = await series_with_images(gemini_client, "Style", 1)
    empty = await make_series(gemini_client, "Empty")
    target = await make_series(gemini_client, "Target")
    base = {
        "image_ids": [originals[0]["id"]],
        "style_series_id": style["id"],
        "target_series_id": target["id"],
    }
    cases: list[tuple[dict[str, Any], int, str]] = [
        ({**base, "image_ids": [NOWHERE]}, 422, "does not exist"),
        ({**base, "image_ids": []}, 422, "at least one image"),
        ({**base, "series_id": photos["id"]}, 422, "either"),
        ({**base, "tag": "keep"}, 422, "give the series too"),
        ({**base, "image_ids": None, "series_id": photos["id"], "tag": "none"}, 422, "tagged"),
        ({**base, "style_series_id": empty["id"]}, 422, "no images and no style profile"),
        ({**base, "style_series_id": NOWHERE}, 404, "no series"),
        ({**base, "target_series_id": NOWHERE}, 404, "no series"),
        ({**base, "style_image_ids": [originals[0]["id"]]}, 422, "another series"),
        ({**base, "style_image_count": 14}, 422, "at most 13"),
        ({**base, "colour": "red"}, 422, "colour"),
        ({**base, "target_title": "New"}, 422, "either `target_series_id`"),
        ({**base, "target_series_id": None}, 422, "either `target_series_id`"),
        (
            {
                **base,
                "target_series_id": None,
                "target_title": "New",
                "style_series_id": empty["id"],
            },
            422,
            "no images and no style profile",
        ),
        ({**base, "target_series_id": None, "target_title": "  "}, 422, "target_title"),
    ]
    for body, status, words in cases:
        response = await gemini_client.post("/api/restyles", json=body)
        assert response.status_code == status, (body, response.text)
        assert words in response.json()["detail"], (body, response.text)
    assert ok(await gemini_client.get(f"/api/series/{target['id']}/jobs"))["items"] == []
    # No refused restyle made the new series it was asked for.
    titles = [s["title"] for s in ok(await gemini_client.get("/api/series"))["items"]]
    assert "New" not in titles
