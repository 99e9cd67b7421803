"""The pages around tags and batches, in-process on both databases: an image's tags edited on its
page, the gallery filtered by an image tag, the dialogs the selection bar opens, and the download
of selected images."""

from __future__ import annotations

import io
import json
import re
import zipfile

import httpx

from tests.factories import image_bytes, make_image, make_series, upload

HX = {"HX-Request": "true"}


async def test_an_images_tags_are_edited_on_its_page(client: httpx.AsyncClient) -> None:
    series = await make_series(client, "Beach")
    image = await make_image(client, series["id"], name="shell.png")
    page = await client.get(f"/cog/images/{image['id']}")
    assert page.status_code == 200
    assert 'id="image-tags"' in page.text and "Edit tags" in page.text

    form = await client.get(f"/cog/images/{image['id']}/tags/edit", headers=HX)
    assert form.status_code == 200
    assert 'name="tags"' in form.text and "data-escape-cancel" in form.text

    saved = await client.post(
        f"/cog/images/{image['id']}/tags", data={"tags": " Sunset, sunset ,<b>x</b>,"}, headers=HX
    )
    assert saved.status_code == 200, saved.text
    assert json.loads(saved.headers["HX-Trigger"]) == {"cog:toast": "Saved."}
    assert (await client.get(f"/api/images/{image['id']}")).json()["tags"] == ["sunset", "<b>x</b>"]
    # Each tag links to the gallery of its series showing the images with it; text stays text.
    assert f'href="/cog/series/{series["id"]}?tag=sunset"' in saved.text
    assert "&lt;b&gt;x&lt;/b&gt;" in saved.text and "<b>x</b>" not in saved.text

    refused = await client.post(
        f"/cog/images/{image['id']}/tags", data={"tags": "ok, " + "x" * 65}, headers=HX
    )
    assert refused.status_code == 422
    assert 'aria-invalid="true"' in refused.text and "at most 64 characters" in refused.text
    assert (await client.get(f"/api/images/{image['id']}")).json()["tags"] == ["sunset", "<b>x</b>"]

    cross_site = await client.post(
        f"/cog/images/{image['id']}/tags",
        data={"tags": "hacked"},
        headers={"Sec-Fetch-Site": "cross-site"},
    )
    assert cross_site.status_code == 403


async def test_the_gallery_shows_the_images_of_one_tag(client: httpx.AsyncClient) -> None:
    series = await make_series(client, "Coast")
    files = [(f"{i:02d}.png", image_bytes(8, 8, color=(i, 1, 1)), "image/png") for i in range(70)]
    ids = [i["id"] for i in (await upload(client, series["id"], *files)).json()["items"]]
    await client.post(
        "/api/images/batch", json={"action": "tag", "ids": ids[:65], "tags": ["dune"]}
    )
    await client.post("/api/images/batch", json={"action": "tag", "ids": ids[:2], "tags": ["rare"]})

    page = await client.get(f"/cog/series/{series['id']}")
    assert page.status_code == 200
    # The filters, most used first, with their counts; the whole series is selectable.
    chips = re.findall(r'\?tag=(\w+)"[^>]*>\w+ <span class="n">(\d+)</span>', page.text)
    assert chips == [("dune", "65"), ("rare", "2")]
    assert 'data-total="70"' in page.text
    assert "Select all 70 in this series" in page.text
    assert page.text.count('class="tile-box"') == 60

    filtered = await client.get(f"/cog/series/{series['id']}", params={"tag": "DUNE"})
    assert 'data-tag="dune"' in filtered.text and 'data-total="65"' in filtered.text
    assert "Select all 65 tagged “dune”" in filtered.text
    assert filtered.text.count('class="tile-box"') == 60
    more = re.search(r'hx-get="(/cog/series/[^"]+)" hx-trigger="revealed"', filtered.text)
    assert more and "tag=dune" in more.group(1)
    rest = await client.get(more.group(1).replace("&amp;", "&"), headers=HX)
    assert rest.text.count('class="tile-box"') == 5
    assert "gallery-more" not in rest.text

    nothing = await client.get(f"/cog/series/{series['id']}", params={"tag": "absent"})
    assert "No image of this series is tagged “absent”." in nothing.text
    assert "data-select-mode" not in nothing.text  # nothing to select


async def test_the_selection_bar_dialogs_and_the_download(client: httpx.AsyncClient) -> None:
    series = await make_series(client, "Here")
    await make_series(client, "There")
    a = await make_image(client, series["id"], name="a.png")
    b = await make_image(client, series["id"], name="b.png")
    await client.patch(f"/api/images/{a['id']}", json={"tags": ["red"]})

    move = await client.get(f"/cog/series/{series['id']}/images/move", headers=HX)
    assert move.status_code == 200
    assert 'data-batch-form="move"' in move.text and "There" in move.text
    tags = await client.get(
        f"/cog/series/{series['id']}/images/tags", params={"action": "untag"}, headers=HX
    )
    assert 'data-batch-form="untag"' in tags.text and '<option value="red">' in tags.text
    bad = await client.get(f"/cog/series/{series['id']}/images/tags", params={"action": "burn"})
    assert bad.status_code == 422
    # From search results, which may come from any series: every series is a place to go,
    # and the tags offered are those used most anywhere.
    move = await client.get("/cog/selected/move", headers=HX)
    assert 'data-batch-form="move"' in move.text
    assert re.search(r'<option value="[^"]+">Here</option>', move.text)
    assert re.search(r'<option value="[^"]+">There</option>', move.text)
    assert "jobs in this series" not in move.text
    tags = await client.get("/cog/selected/tags", params={"action": "tag"}, headers=HX)
    assert 'data-batch-form="tag"' in tags.text and "Used most: red (1)" in tags.text
    assert (await client.get("/cog/selected/tags", params={"action": "burn"})).status_code == 422
    search = await client.get("/cog/search")
    assert 'id="selection-bar"' in search.text and "data-select-mode" in search.text
    assert 'hx-get="/cog/selected/move"' in search.text
    assert 'hx-get="/cog/selected/tags?action=untag"' in search.text
    for series_only in ("data-select-matching", 'data-batch="restyle"', 'data-batch="run-job"'):
        assert series_only not in search.text

    download = await client.post(
        "/cog/images/export",
        data={"ids": f"{a['id']},{b['id']}"},
        headers={"Origin": "http://testserver"},
    )
    assert download.status_code == 200, download.text
    assert download.headers["content-type"] == "application/zip"
    archive = zipfile.ZipFile(io.BytesIO(download.content))
    listed = json.loads(archive.read("manifest.json"))["images"]
    assert sorted(i["id"] for i in listed) == sorted([a["id"], b["id"]])
    assert all(i["file"].startswith("Here/") for i in listed)

    refused = await client.post(
        "/cog/images/export", data={"ids": a["id"]}, headers={"Sec-Fetch-Site": "cross-site"}
    )
    assert refused.status_code == 403
    malformed = await client.post("/cog/images/export", data={"ids": "nope"}, headers=HX)
    assert malformed.status_code == 422
