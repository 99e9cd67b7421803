"""The versions and lineage of an image on its page, through the app in-process, on both
databases: what the page shows, and the forms and buttons that change the image."""

from __future__ import annotations

import re
from typing import Any

import httpx

from tests.conftest import wait_for_run
from tests.factories import image_bytes, make_series, upload

HX = {"HX-Request": "true"}
EVIL = "<script>alert(1)</script> \"q\" 'q' Ёжик 霧"


async def new_image(client: httpx.AsyncClient, series_id: str, name: str = "a.png") -> Any:
    response = await upload(client, series_id, (name, image_bytes(80, 60), "image/png"))
    assert response.status_code == 201, response.text
    return response.json()["items"][0]


def clean(html: str) -> None:
    assert "<script>alert" not in html
    assert re.findall(r"<script(?![^>]*\bsrc=)", html) == []
    assert " style=" not in html and "hx-on" not in html


async def test_edit_restore_and_split_from_the_page(client: httpx.AsyncClient) -> None:
    series = await make_series(client, "Pages")
    image = await new_image(client, series["id"], f"{EVIL}.png")
    page = await client.get(f"/cog/images/{image['id']}")
    assert page.status_code == 200
    clean(page.text)
    assert 'id="edit-form"' in page.text and 'id="replace-form"' in page.text
    assert "Not made from another image" in page.text
    assert len(re.findall(r'id="version-\d+"', page.text)) == 1

    # Edit by prompt (the preview provider: no key here): the page goes to the new version.
    edited = await client.post(f"/cog/images/{image['id']}/edit", data={"prompt": EVIL}, headers=HX)
    assert edited.status_code == 204, edited.text
    assert edited.headers["HX-Redirect"] == f"/cog/images/{image['id']}?notice=image-edited"
    page = await client.get(edited.headers["HX-Redirect"])
    clean(page.text)
    assert "The edit is the image&#39;s new version" in page.text
    assert len(re.findall(r'id="version-\d+"', page.text)) == 2
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page.text  # the prompt, as text
    assert f'src="/api/images/{image["id"]}/versions/2/file"' in page.text
    assert "edited from version 1" in page.text
    assert 'href="/cog/images/' + image["id"] + '/compare"' not in page.text  # a GET form
    assert f'action="/cog/images/{image["id"]}/compare"' in page.text

    # An older version, large: it says so and offers to restore it.
    old = await client.get(f"/cog/images/{image['id']}?version=1")
    assert f'src="/api/images/{image["id"]}/versions/1/file"' in old.text
    assert "Version 1 of 2, not the current one." in old.text
    assert 'name="version" value="1"' in old.text  # an edit there starts from version 1
    missing = await client.get(
        f"/cog/images/{image['id']}?version=9", headers={"Accept": "text/html"}
    )
    assert missing.status_code == 404 and "no version 9" in missing.text

    # Compare two versions: side by side.
    compared = await client.get(f"/cog/images/{image['id']}/compare?a=1&b=2")
    assert compared.status_code == 200
    clean(compared.text)
    for number in (1, 2):
        assert f'src="/api/images/{image["id"]}/versions/{number}/file"' in compared.text
    assert (await client.get(f"/cog/images/{image['id']}/compare")).status_code == 200
    assert (await client.get(f"/cog/images/{image['id']}/compare?a=5")).status_code == 404

    restored = await client.post(f"/cog/images/{image['id']}/versions/1/restore", headers=HX)
    assert restored.headers["HX-Redirect"] == f"/cog/images/{image['id']}?notice=version-restored"
    assert (await client.get(f"/api/images/{image['id']}")).json()["version"] == 3
    again = await client.post(f"/cog/images/{image['id']}/versions/3/restore", headers=HX)
    assert again.status_code == 409 and again.headers["HX-Reswap"] == "none"

    split = await client.post(f"/cog/images/{image['id']}/versions/2/split", headers=HX)
    target = split.headers["HX-Redirect"]
    new_id = re.fullmatch(r"/cog/images/([0-9a-f-]{36})\?notice=version-split", target)
    assert new_id
    page = await client.get(target)
    assert "split off from a version of another image" in page.text
    assert 'id="lineage-parents"' in page.text
    assert f'href="/cog/images/{image["id"]}?version=2"' in page.text
    original = await client.get(f"/cog/images/{image['id']}")
    assert 'id="lineage-children"' in original.text
    assert f'href="/cog/images/{new_id.group(1)}"' in original.text


async def test_a_refused_edit_or_replacement_comes_back_in_its_form(
    client: httpx.AsyncClient,
) -> None:
    series = await make_series(client, "Refusals")
    image = await new_image(client, series["id"])
    empty = await client.post(f"/cog/images/{image['id']}/edit", data={"prompt": "   "}, headers=HX)
    assert empty.status_code == 422
    assert 'id="edit-form"' in empty.text and "Say what to change" in empty.text
    nul = await client.post(
        f"/cog/images/{image['id']}/edit", data={"prompt": "a\x00b"}, headers=HX
    )
    assert nul.status_code == 422 and "NUL" in nul.text

    refused = await client.post(
        f"/cog/images/{image['id']}/replace",
        files={"file": ("notes.txt", b"not a picture", "text/plain")},
        headers=HX,
    )
    assert refused.status_code == 422
    assert 'id="replace-form"' in refused.text and "Cog accepts" in refused.text
    assert (await client.get(f"/api/images/{image['id']}")).json()["version"] == 1

    replaced = await client.post(
        f"/cog/images/{image['id']}/replace",
        files={"file": ("new.png", image_bytes(20, 20), "image/png")},
        headers=HX,
    )
    assert replaced.headers["HX-Redirect"] == f"/cog/images/{image['id']}?notice=image-replaced"
    assert (await client.get(f"/api/images/{image['id']}")).json()["original_filename"] == "new.png"
    cross = await client.post(
        f"/cog/images/{image['id']}/edit",
        data={"prompt": "x"},
        headers={"Sec-Fetch-Site": "cross-site", "HX-Request": "true"},
    )
    assert cross.status_code == 403


async def test_the_gallery_shows_the_current_version(client: httpx.AsyncClient) -> None:
    series = await make_series(client, "Gallery")
    image = await new_image(client, series["id"])
    await client.post(
        f"/api/images/{image['id']}/versions",
        files={"file": ("b.png", image_bytes(30, 30), "image/png")},
    )
    page = await client.get(f"/cog/series/{series['id']}")
    assert f'src="/api/images/{image["id"]}/versions/2/thumbnail"' in page.text


async def test_lineage_of_a_run_links_jobs_and_survives_their_deletion(
    client: httpx.AsyncClient,
) -> None:
    series = await make_series(client, "Lineage")
    reference = await new_image(client, series["id"], "ref.png")
    job = (
        await client.post(
            f"/api/series/{series['id']}/jobs", json={"title": "Foxes", "base_prompt": "a fox"}
        )
    ).json()
    steps = [
        {"kind": "image", "prompt": "a fox", "config": {"input_images": [reference["id"]]}},
    ]
    await client.put(f"/api/jobs/{job['id']}/steps", json={"steps": steps})
    run = await wait_for_run(
        client, (await client.post(f"/api/jobs/{job['id']}/runs")).json()["id"]
    )
    (made,) = run["steps"][0]["image_ids"]

    page = await client.get(f"/cog/images/{reference['id']}")
    assert "Used for" in page.text
    assert f'href="/cog/images/{made}"' in page.text
    assert f'href="/cog/jobs/{job["id"]}">Foxes</a>' in page.text
    assert f"?run={run['id']}#run-{run['id']}" in page.text
    page = await client.get(f"/cog/images/{made}")
    assert "Made from" in page.text and "reference, version 1" in page.text

    await client.delete(f"/api/jobs/{job['id']}")
    page = await client.get(f"/cog/images/{made}")
    assert "Made from" in page.text and "job deleted" in page.text
    assert f"/cog/jobs/{job['id']}" not in page.text
