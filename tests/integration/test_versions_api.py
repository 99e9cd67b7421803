"""Versions and lineage of images through the API, on SQLite and PostgreSQL.

Edits go through the real google-genai SDK to the fake Gemini server on loopback, which records
what it received. Stored files are read back from the store's folder and checked by SHA-256;
no file is ever overwritten, and a refused change leaves no row and no file behind.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import boto3
import httpx
import pytest
import sqlalchemy as sa
from PIL import Image

from cog.config import Settings
from cog.db.models import ImageParent, ImageVersion
from cog.db.session import make_engine
from cog.web.app import create_app
from tests.conftest import make_settings, open_client, stored_keys, wait_for_run
from tests.factories import image_bytes, make_series, upload

EDIT = "make the sky stormy"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def store_root(settings: Settings) -> Path:
    return Path(urlparse(settings.storage_url).path)


def stored_file(settings: Settings, key: str) -> bytes:
    return (store_root(settings) / key).read_bytes()


async def ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json()


async def refused(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert isinstance(detail, str) and detail.strip()
    return detail


async def version_rows(settings: Settings) -> list[Any]:
    engine = make_engine(settings.database_url)
    try:
        async with engine.connect() as conn:
            rows = await conn.execute(
                sa.select(ImageVersion).order_by(ImageVersion.image_id, ImageVersion.number)
            )
            return list(rows.all())
    finally:
        await engine.dispose()


async def parent_rows(settings: Settings) -> list[Any]:
    engine = make_engine(settings.database_url)
    try:
        async with engine.connect() as conn:
            return list((await conn.execute(sa.select(ImageParent))).all())
    finally:
        await engine.dispose()


async def new_image(
    client: httpx.AsyncClient, series_id: str, data: bytes, name: str = "harbour.png"
) -> dict[str, Any]:
    response = await upload(client, series_id, (name, data, "image/png"))
    body: dict[str, Any] = (await ok(response, 201))["items"][0]
    return body


def decoded_size(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as picture:
        return picture.size


# --- an edit, a restore, a split ------------------------------------------------------------------


async def test_an_edit_a_restore_and_a_split(
    gemini_client: httpx.AsyncClient, gemini: Any, gemini_settings: Settings
) -> None:
    client = gemini_client
    series = await make_series(client, "Harbour")
    original = image_bytes(96, 64, color=(20, 60, 160))
    image = await new_image(client, series["id"], original)
    assert image["version"] == 1
    assert image["versions_url"] == f"/api/images/{image['id']}/versions"
    base = f"/api/images/{image['id']}"

    # An edit by prompt: the model gets the image's bytes and the words, and its answer is
    # version 2 of the same image.
    edited = await ok(await client.post(f"{base}/versions", json={"prompt": f"  {EDIT} "}), 201)
    (call,) = gemini.requests
    assert call.model == "gemini-3-pro-image"
    assert call.prompt == EDIT
    assert [(i.mime_type, i.data) for i in call.images] == [("image/png", original)]
    assert edited["number"] == 2 and edited["is_current"] is True
    assert edited["source"] == "edit"
    assert (edited["prompt"], edited["model"], edited["provider"]) == (
        EDIT,
        "gemini-3-pro-image",
        "gemini",
    )
    assert edited["metadata"]["model_text"]  # the model's words beside the picture
    assert edited["metadata"]["edited_from"] == 1
    edit_bytes = (await client.get(edited["file_url"])).content
    assert sha(edit_bytes) == edited["sha256"] != sha(original)
    assert edited["size_bytes"] == len(edit_bytes)
    assert (edited["width"], edited["height"]) == decoded_size(edit_bytes)

    # The image row mirrors version 2; the gallery shows one image, its current version.
    now = await ok(await client.get(base))
    assert now["version"] == 2
    assert (now["sha256"], now["prompt"], now["model"], now["provider"]) == (
        edited["sha256"],
        EDIT,
        "gemini-3-pro-image",
        "gemini",
    )
    assert (now["width"], now["height"], now["size_bytes"]) == (
        edited["width"],
        edited["height"],
        edited["size_bytes"],
    )
    assert now["original_filename"] == "harbour.png"  # an edit keeps the image's name
    assert (await client.get(f"{base}/file")).content == edit_bytes
    gallery = await ok(await client.get(f"/api/series/{series['id']}/images"))
    assert [(i["id"], i["version"]) for i in gallery["items"]] == [(image["id"], 2)]
    # The image's thumbnail is that of its current version.
    thumb = await client.get(f"{base}/thumbnail")
    assert decoded_size(thumb.content) == decoded_size(edit_bytes)  # the fake answers 256 px
    assert thumb.content == (await client.get(edited["thumbnail_url"])).content
    first_thumb = await client.get(f"{base}/versions/1/thumbnail")
    assert decoded_size(first_thumb.content) == (96, 64)

    # Restore version 1: a new version 3, a copy of it; history is kept.
    restored = await ok(await client.post(f"{base}/versions/1/restore"), 201)
    assert (restored["number"], restored["source"], restored["restored_from"]) == (
        3,
        "restore",
        1,
    )
    assert restored["sha256"] == sha(original)
    assert (await client.get(f"{base}/file")).content == original
    assert (await ok(await client.get(base)))["version"] == 3

    listed = (await ok(await client.get(f"{base}/versions")))["items"]
    assert [(v["number"], v["source"], v["is_current"]) for v in listed] == [
        (1, "upload", False),
        (2, "edit", False),
        (3, "restore", True),
    ]
    assert [v["restored_from"] for v in listed] == [None, None, 1]
    for version in listed:
        data = (await client.get(version["file_url"])).content
        assert sha(data) == version["sha256"]
    assert await ok(await client.get(f"{base}/versions/2")) == listed[1]

    # Split version 2 off: an image of its own in the same series, made from version 2.
    split = await ok(await client.post(f"{base}/versions/2/split"), 201)
    assert split["id"] != image["id"]
    assert split["series_id"] == series["id"]
    assert (split["version"], split["source"], split["sha256"]) == (
        1,
        "generated",
        edited["sha256"],
    )
    assert (split["prompt"], split["model"]) == (EDIT, "gemini-3-pro-image")
    assert split["metadata"]["split_from"] == {"image_id": image["id"], "version": 2}
    assert (await client.get(split["file_url"])).content == edit_bytes
    split_versions = (await ok(await client.get(f"{split['versions_url']}")))["items"]
    assert [(v["number"], v["source"]) for v in split_versions] == [(1, "edit")]
    lineage = await ok(await client.get(f"/api/images/{split['id']}/lineage"))
    assert [
        (p["image_id"], p["version"], p["own_version"], p["role"]) for p in lineage["parents"]
    ] == [(image["id"], 2, 1, "edit")]
    assert lineage["parents"][0]["thumbnail_url"] == f"{base}/versions/2/thumbnail"
    assert lineage["children"] == []
    original_lineage = await ok(await client.get(f"{base}/lineage"))
    assert original_lineage["parents"] == []  # its own edits are in its versions list
    assert [
        (c["image_id"], c["version"], c["own_version"]) for c in original_lineage["children"]
    ] == [(split["id"], 1, 2)]
    # The edit itself is recorded as lineage from version 2 to version 1.
    versions = {(str(v.image_id), v.number): v for v in await version_rows(gemini_settings)}
    links = {
        (link.child_version_id, link.parent_version_id, link.role)
        for link in await parent_rows(gemini_settings)
    }
    assert links == {
        (versions[(image["id"], 2)].id, versions[(image["id"], 1)].id, "edit"),
        (versions[(split["id"], 1)].id, versions[(image["id"], 2)].id, "edit"),
    }

    # No file was overwritten: every version has a key of its own, and each holds its bytes.
    keys = [v.storage_path for v in versions.values()]
    assert len(set(keys)) == len(keys) == 4
    for version in versions.values():
        assert sha(stored_file(gemini_settings, version.storage_path)) == version.sha256

    # Deleting the image removes every version's file and thumbnail; the split image stays.
    own_ids = [str(v.id) for (iid, _), v in versions.items() if iid == image["id"]]
    assert all(
        any(vid in key for key in stored_keys(store_root(gemini_settings))) for vid in own_ids
    )
    assert (await client.delete(base)).status_code == 204
    remaining = stored_keys(store_root(gemini_settings))
    assert not [key for key in remaining if any(vid in key for vid in own_ids)]
    assert all(split["id"] in key for key in remaining)
    assert (await client.get(split["file_url"])).content == edit_bytes
    assert (await ok(await client.get(f"/api/images/{split['id']}/lineage")))["parents"] == []


async def test_an_edit_can_start_from_an_earlier_version(
    gemini_client: httpx.AsyncClient, gemini: Any, gemini_settings: Settings
) -> None:
    client = gemini_client
    series = await make_series(client, "Branches")
    original = image_bytes(40, 40, color=(200, 10, 10))
    image = await new_image(client, series["id"], original)
    base = f"/api/images/{image['id']}"
    await ok(await client.post(f"{base}/versions", json={"prompt": "add a moon"}), 201)
    third = await ok(
        await client.post(f"{base}/versions", json={"prompt": "add a boat", "version": 1}), 201
    )
    assert third["number"] == 3 and third["metadata"]["edited_from"] == 1
    assert gemini.requests[-1].images[0].data == original
    assert gemini.requests[-1].prompt == "add a boat"
    versions = {v.number: v.id for v in await version_rows(gemini_settings)}
    links = {
        (link.child_version_id, link.parent_version_id)
        for link in await parent_rows(gemini_settings)
    }
    assert links == {(versions[2], versions[1]), (versions[3], versions[1])}


async def test_a_gif_is_sent_to_the_model_as_png(
    gemini_client: httpx.AsyncClient, gemini: Any
) -> None:
    series = await make_series(gemini_client, "Gifs")
    gif = image_bytes(30, 20, "GIF")
    response = await upload(gemini_client, series["id"], ("loop.gif", gif, "image/gif"))
    image = (await ok(response, 201))["items"][0]
    await ok(
        await gemini_client.post(f"/api/images/{image['id']}/versions", json={"prompt": EDIT}),
        201,
    )
    (sent,) = gemini.requests[-1].images
    assert sent.mime_type == "image/png"
    with Image.open(io.BytesIO(sent.data)) as picture:
        assert (picture.format, picture.size) == ("PNG", (30, 20))


async def test_the_preview_provider_edits_without_a_key(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    series = await make_series(client, "Free")
    image = await new_image(client, series["id"], image_bytes(64, 64))
    edited = await ok(
        await client.post(f"/api/images/{image['id']}/versions", json={"prompt": EDIT}), 201
    )
    assert (edited["source"], edited["provider"], edited["model"]) == (
        "edit",
        "preview",
        settings.image_model,
    )
    data = (await client.get(f"/api/images/{image['id']}/file")).content
    assert sha(data) == edited["sha256"]


async def test_two_edits_at_once_make_two_versions(
    gemini_client: httpx.AsyncClient, gemini: Any, gemini_settings: Settings
) -> None:
    client = gemini_client
    series = await make_series(client, "Race")
    image = await new_image(client, series["id"], image_bytes(30, 30))
    gemini.latency_s = 0.2
    answers = await asyncio.gather(
        *(
            client.post(f"/api/images/{image['id']}/versions", json={"prompt": f"edit {i}"})
            for i in range(3)
        )
    )
    gemini.latency_s = 0.0
    assert [a.status_code for a in answers] == [201, 201, 201], [a.text for a in answers]
    assert sorted(a.json()["number"] for a in answers) == [2, 3, 4]
    rows = await version_rows(gemini_settings)
    assert len({row.storage_path for row in rows}) == 4
    for row in rows:
        assert sha(stored_file(gemini_settings, row.storage_path)) == row.sha256
    now = await ok(await client.get(f"/api/images/{image['id']}"))
    assert now["version"] == 4
    assert now["sha256"] == next(r.sha256 for r in rows if r.number == 4)


# --- replacement files ----------------------------------------------------------------------------


async def test_a_replacement_upload_is_a_new_version(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    series = await make_series(client, "Scans")
    first = image_bytes(50, 40)
    image = await new_image(client, series["id"], first, "scan.png")
    better = image_bytes(120, 90, "JPEG", color=(0, 200, 0))
    response = await client.post(
        f"/api/images/{image['id']}/versions",
        files={"file": ("scan-better.jpg", better, "image/jpeg")},
    )
    version = await ok(response, 201)
    assert (version["number"], version["source"], version["original_filename"]) == (
        2,
        "upload",
        "scan-better.jpg",
    )
    assert (version["mime_type"], version["width"], version["height"]) == ("image/jpeg", 120, 90)
    assert version["sha256"] == sha(better)
    now = await ok(await client.get(f"/api/images/{image['id']}"))
    assert (now["version"], now["sha256"], now["mime_type"], now["original_filename"]) == (
        2,
        sha(better),
        "image/jpeg",
        "scan-better.jpg",
    )
    fetched = await client.get(now["file_url"])
    assert fetched.content == better
    assert fetched.headers["content-disposition"] == "inline; filename*=UTF-8''scan-better.jpg"
    # Version 1 is still there, under its own key, as it was.
    old = await client.get(f"/api/images/{image['id']}/versions/1/file")
    assert old.content == first
    assert old.headers["content-disposition"] == "inline; filename*=UTF-8''scan.png"
    rows = await version_rows(settings)
    assert [sha(stored_file(settings, r.storage_path)) for r in rows] == [sha(first), sha(better)]


@pytest.mark.parametrize(
    ("name", "data", "status"),
    [
        ("notes.txt", b"tide tables, not a picture", 415),
        ("cut.png", image_bytes(200, 200)[:300], 422),
        ("empty.png", b"", 422),
    ],
)
async def test_a_refused_replacement_changes_nothing(
    client: httpx.AsyncClient, settings: Settings, name: str, data: bytes, status: int
) -> None:
    series = await make_series(client, "Refusals")
    first = image_bytes(50, 40)
    image = await new_image(client, series["id"], first)
    before_keys = stored_keys(store_root(settings))
    before = await ok(await client.get(f"/api/images/{image['id']}"))

    response = await client.post(
        f"/api/images/{image['id']}/versions", files={"file": (name, data, "image/png")}
    )
    await refused(response, status)

    assert stored_keys(store_root(settings)) == before_keys
    assert len(await version_rows(settings)) == 1
    assert await ok(await client.get(f"/api/images/{image['id']}")) == before
    assert (await client.get(f"/api/images/{image['id']}/file")).content == first


async def test_bad_version_requests_are_refused(client: httpx.AsyncClient) -> None:
    series = await make_series(client, "Bad")
    image = await new_image(client, series["id"], image_bytes())
    base = f"/api/images/{image['id']}"
    assert "already the current" in await refused(
        await client.post(f"{base}/versions/1/restore"), 409
    )
    assert "versions are 1 to 1" in await refused(await client.get(f"{base}/versions/7"), 404)
    await refused(await client.get(f"{base}/versions/7/file"), 404)
    await refused(await client.post(f"{base}/versions/7/split"), 404)
    await refused(await client.get(f"{base}/versions/0"), 422)
    # Past what the database's INTEGER holds: still just a version that is not there.
    huge = 2**64
    await refused(await client.get(f"{base}/versions/{huge}/thumbnail"), 404)
    await refused(await client.post(f"{base}/versions/{huge}/restore"), 404)
    await refused(await client.post(f"{base}/versions", json={"prompt": "x", "version": huge}), 404)
    await refused(await client.post(f"{base}/versions", json={"prompt": "   "}), 422)
    await refused(await client.post(f"{base}/versions", json={"prompt": "x", "colour": 1}), 422)
    await refused(await client.post(f"{base}/versions", json={"prompt": "x", "version": 5}), 404)
    await refused(
        await client.post(
            f"{base}/versions", content=b"{not json", headers={"content-type": "application/json"}
        ),
        422,
    )
    detail = await refused(await client.post(f"{base}/versions", content=b"make it blue"), 415)
    assert "prompt" in detail and "`file`" in detail
    detail = await refused(
        await client.post(
            f"{base}/versions", files={"other": ("a.png", image_bytes(), "image/png")}
        ),
        422,
    )
    assert "`file`" in detail
    missing = "/api/images/00000000-0000-4000-8000-000000000000"
    await refused(await client.post(f"{missing}/versions", json={"prompt": "x"}), 404)
    await refused(await client.get(f"{missing}/versions"), 404)
    await refused(await client.get(f"{missing}/lineage"), 404)
    assert (await ok(await client.get(base)))["version"] == 1


@pytest.mark.parametrize(
    ("trouble", "status", "words"),
    [
        ("safety", 422, "refused the prompt for safety reasons"),
        ("no image", 422, "without an image"),
        ("server error", 502, "500"),
        ("bad key", 502, "rejected the request"),
    ],
)
async def test_a_failed_edit_changes_nothing(
    gemini_client: httpx.AsyncClient,
    gemini: Any,
    gemini_settings: Settings,
    trouble: str,
    status: int,
    words: str,
) -> None:
    client = gemini_client
    series = await make_series(client, "Refused")
    image = await new_image(client, series["id"], image_bytes(30, 20))
    before_keys = stored_keys(store_root(gemini_settings))
    if trouble == "safety":
        gemini.block_next("IMAGE_SAFETY", where="finish", kind="image")
    elif trouble == "no image":
        gemini.no_image_next(1)
    elif trouble == "server error":
        gemini.fail_next(gemini_settings.provider_max_attempts, status=500)
    else:
        gemini.fail_next(1, status=403)

    response = await client.post(f"/api/images/{image['id']}/versions", json={"prompt": EDIT})
    detail = await refused(response, status)
    assert words in detail
    assert detail.endswith("The image was not changed.")
    assert set(response.json()) == {"detail"}
    assert stored_keys(store_root(gemini_settings)) == before_keys
    assert len(await version_rows(gemini_settings)) == 1
    assert (await ok(await client.get(f"/api/images/{image['id']}")))["version"] == 1


# --- files and caching ----------------------------------------------------------------------------


async def test_current_files_revalidate_and_version_files_are_kept(
    client: httpx.AsyncClient,
) -> None:
    series = await make_series(client, "Caching")
    image = await new_image(client, series["id"], image_bytes(30, 30))
    base = f"/api/images/{image['id']}"
    for url in (f"{base}/file", f"{base}/thumbnail"):
        response = await client.get(url)
        assert response.headers["cache-control"] == "private, no-cache"
        again = await client.get(url, headers={"If-None-Match": response.headers["etag"]})
        assert again.status_code == 304
    for url in (f"{base}/versions/1/file", f"{base}/versions/1/thumbnail"):
        response = await client.get(url)
        assert response.status_code == 200
        assert "immutable" in response.headers["cache-control"]
        again = await client.get(url, headers={"If-None-Match": response.headers["etag"]})
        assert again.status_code == 304
    # After a new version the same URL answers the new file (the old ETag no longer matches).
    old_etag = (await client.get(f"{base}/file")).headers["etag"]
    await client.post(
        f"{base}/versions", files={"file": ("b.png", image_bytes(31, 30), "image/png")}
    )
    fresh = await client.get(f"{base}/file", headers={"If-None-Match": old_etag})
    assert fresh.status_code == 200 and fresh.content == image_bytes(31, 30)


async def test_openapi_documents_both_ways_to_add_a_version(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    paths = spec["paths"]
    body = paths["/api/images/{image_id}/versions"]["post"]["requestBody"]["content"]
    assert set(body) == {"application/json", "multipart/form-data"}
    assert "prompt" in body["application/json"]["schema"]["properties"]
    assert body["multipart/form-data"]["schema"]["required"] == ["file"]
    for path in (
        "/api/images/{image_id}/versions/{number}",
        "/api/images/{image_id}/versions/{number}/file",
        "/api/images/{image_id}/versions/{number}/thumbnail",
        "/api/images/{image_id}/versions/{number}/restore",
        "/api/images/{image_id}/versions/{number}/split",
        "/api/images/{image_id}/lineage",
    ):
        assert path in paths


# --- deletion -----------------------------------------------------------------------------------


async def test_deleting_a_series_removes_every_version_file(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    parent = await make_series(client, "Parent")
    child = await make_series(client, "Child", parent_id=parent["id"])
    kept_series = await make_series(client, "Kept")
    kept = await new_image(client, kept_series["id"], image_bytes(20, 20))
    image = await new_image(client, child["id"], image_bytes(20, 20))
    base = f"/api/images/{image['id']}"
    await ok(await client.post(f"{base}/versions", json={"prompt": EDIT}), 201)
    await ok(await client.post(f"{base}/versions/1/restore"), 201)
    for number in (1, 2, 3):
        assert (await client.get(f"{base}/versions/{number}/thumbnail")).status_code == 200
    assert len(stored_keys(store_root(settings))) == 2 + 6

    assert (await client.delete(f"/api/series/{parent['id']}?recursive=true")).status_code == 204
    remaining = stored_keys(store_root(settings))
    assert len(remaining) == 2
    assert all(kept["id"] in key for key in remaining)


# --- lineage --------------------------------------------------------------------------------------


async def test_lineage_of_a_two_step_job_survives_deleting_the_job(
    gemini_client: httpx.AsyncClient, gemini_settings: Settings
) -> None:
    client = gemini_client
    series = await make_series(client, "Lineage")
    reference = await new_image(client, series["id"], image_bytes(64, 48), "ref.png")
    job = await ok(
        await client.post(
            f"/api/series/{series['id']}/jobs", json={"title": "Two", "base_prompt": "a fox"}
        ),
        201,
    )
    steps = [
        {
            "kind": "image",
            "prompt": "{{ base_prompt }}",
            "config": {"input_images": [reference["id"]]},
        },
        {"kind": "image", "prompt": "again", "config": {"input_images": ["step:0"]}},
    ]
    await ok(await client.put(f"/api/jobs/{job['id']}/steps", json={"steps": steps}))
    started = await ok(await client.post(f"/api/jobs/{job['id']}/runs"), 202)
    run = await wait_for_run(client, started["id"])
    assert run["status"] == "succeeded", run
    (first,) = run["steps"][0]["image_ids"]
    (second,) = run["steps"][1]["image_ids"]

    def summary(links: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
        return [
            (
                link["image_id"],
                link["version"],
                link["role"],
                link["job_id"],
                link["run_id"],
                link["step_position"],
            )
            for link in links
        ]

    ref_lineage = await ok(await client.get(f"/api/images/{reference['id']}/lineage"))
    assert ref_lineage["parents"] == []
    assert summary(ref_lineage["children"]) == [(first, 1, "reference", job["id"], run["id"], 0)]
    middle = await ok(await client.get(f"/api/images/{first}/lineage"))
    assert summary(middle["parents"]) == [
        (reference["id"], 1, "reference", job["id"], run["id"], 0)
    ]
    assert summary(middle["children"]) == [(second, 1, "reference", job["id"], run["id"], 1)]
    assert middle["parents"][0]["label"] == "ref.png"
    assert (
        middle["parents"][0]["thumbnail_url"]
        == f"/api/images/{reference['id']}/versions/1/thumbnail"
    )
    assert (await client.get(middle["parents"][0]["thumbnail_url"])).status_code == 200
    last = await ok(await client.get(f"/api/images/{second}/lineage"))
    assert summary(last["parents"]) == [(first, 1, "reference", job["id"], run["id"], 1)]
    assert last["children"] == []

    # Deleting the job keeps the images and their lineage; only the job's links are gone.
    assert (await client.delete(f"/api/jobs/{job['id']}")).status_code == 204
    middle = await ok(await client.get(f"/api/images/{first}/lineage"))
    assert summary(middle["parents"]) == [(reference["id"], 1, "reference", None, None, None)]
    assert summary(middle["children"]) == [(second, 1, "reference", None, None, None)]
    assert middle["parents"][0]["step_id"] is None

    # An edit of the reference adds a version; its old children still point at version 1.
    await ok(
        await client.post(f"/api/images/{reference['id']}/versions", json={"prompt": EDIT}), 201
    )
    ref_lineage = await ok(await client.get(f"/api/images/{reference['id']}/lineage"))
    assert [(c["image_id"], c["own_version"]) for c in ref_lineage["children"]] == [(first, 1)]


# --- against the S3 store -----------------------------------------------------------------------


@pytest.mark.s3
async def test_versions_in_a_bucket_and_their_removal(
    tmp_path: Path, database_url: str, s3_storage: dict[str, str]
) -> None:
    s3 = boto3.client(
        "s3",
        endpoint_url=s3_storage["s3_endpoint_url"],
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )
    prefix = urlparse(s3_storage["storage_url"]).path.strip("/") + "/"

    def bucket() -> dict[str, bytes]:
        listed = s3.list_objects_v2(Bucket="cog-images", Prefix=prefix).get("Contents", [])
        return {
            item["Key"][len(prefix) :]: s3.get_object(Bucket="cog-images", Key=item["Key"])[
                "Body"
            ].read()
            for item in listed
        }

    settings = make_settings(tmp_path, database_url=database_url, **s3_storage)
    async for client in open_client(create_app(settings)):
        series = await make_series(client, "Cloud")
        first, second = image_bytes(40, 30), image_bytes(30, 40, "JPEG")
        image = await new_image(client, series["id"], first)
        base = f"/api/images/{image['id']}"
        await ok(
            await client.post(f"{base}/versions", files={"file": ("b.jpg", second, "image/jpeg")}),
            201,
        )
        await ok(await client.post(f"{base}/versions/1/restore"), 201)
        files = {k: v for k, v in bucket().items() if k.startswith("images/")}
        assert sorted(sha(v) for v in files.values()) == sorted(
            [sha(first), sha(second), sha(first)]
        )
        assert (await client.get(f"{base}/file")).content == first
        assert (await client.get(f"{base}/versions/2/file")).content == second
        assert (await client.delete(base)).status_code == 204
        assert bucket() == {}
