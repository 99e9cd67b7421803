"""Zip exports through the API, on SQLite and PostgreSQL: what the archive holds (one folder per
series, safe and unique names, every file's bytes) and that its manifests say exactly what the
rows say."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
import uuid
import zipfile
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx

from cog.config import Settings
from tests.conftest import wait_for_run
from tests.factories import image_bytes, make_series, upload

MISSING = "00000000-0000-4000-8000-000000000000"
EVIL = '<b>"x"</b> ../..\\ con: a/b?'
SAFE_PART = re.compile(r'[^<>:"/\\|?*\x00-\x1f]+')


def store_root(settings: Settings) -> Path:
    return Path(urlparse(settings.storage_url).path)


async def add(client: httpx.AsyncClient, series_id: str, *names: str) -> list[dict[str, Any]]:
    files = [
        (name, image_bytes(20 + i, 10, color=(i * 20, 100, 50)), "image/png")
        for i, name in enumerate(names)
    ]
    response = await upload(client, series_id, *files)
    assert response.status_code == 201, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


async def generated_image(client: httpx.AsyncClient, series_id: str) -> dict[str, Any]:
    """An image the preview provider makes, with its provenance."""
    job = (
        await client.post(
            f"/api/series/{series_id}/jobs", json={"title": "Fox", "base_prompt": "a fox"}
        )
    ).json()
    steps = [{"kind": "image", "prompt": "{{ base_prompt }} in a misty forest, at dawn!"}]
    assert (
        await client.put(f"/api/jobs/{job['id']}/steps", json={"steps": steps})
    ).status_code == 200
    run = (await client.post(f"/api/jobs/{job['id']}/runs")).json()
    done = await wait_for_run(client, run["id"])
    assert done["status"] == "succeeded", done
    image_id = done["steps"][0]["image_ids"][0]
    image: dict[str, Any] = (await client.get(f"/api/images/{image_id}")).json()
    return image


async def download(client: httpx.AsyncClient, url: str, **kwargs: Any) -> zipfile.ZipFile:
    method = "POST" if "json" in kwargs else "GET"
    response = await client.request(method, url, **kwargs)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/zip"
    assert response.headers["content-disposition"].startswith("attachment; ")
    archive = zipfile.ZipFile(io.BytesIO(response.content))
    assert archive.testzip() is None  # every entry's checksum holds
    return archive


def manifest(archive: zipfile.ZipFile) -> list[dict[str, Any]]:
    body = json.loads(archive.read("manifest.json"))
    assert body["count"] == len(body["images"])
    rows = list(csv.DictReader(io.StringIO(archive.read("manifest.csv").decode())))
    # The CSV holds the same images as the JSON, in the same order.
    assert [r["id"] for r in rows] == [i["id"] for i in body["images"]]
    assert [r["file"] for r in rows] == [i["file"] or "" for i in body["images"]]
    images: list[dict[str, Any]] = body["images"]
    return images


async def test_a_series_export_holds_every_file_and_a_manifest_of_the_rows(
    client: httpx.AsyncClient,
) -> None:
    top = await make_series(client, "Autumn walks")
    forest = await make_series(client, "Forest", parent_id=top["id"])
    deep = await make_series(client, "Mushrooms", parent_id=forest["id"])
    twin_a = await make_series(client, "Twin", parent_id=top["id"])
    twin_b = await make_series(client, "twin", parent_id=top["id"])
    evil = await make_series(client, EVIL, parent_id=top["id"])
    outside = await make_series(client, "Not exported")
    rows = await add(client, top["id"], "leaf.png", "leaf.png", "no extension", ".hidden.png")
    rows += await add(client, forest["id"], "trees.final.PNG")
    rows += await add(client, deep["id"], "cep.png")
    rows += await add(client, twin_a["id"], "a.png")
    rows += await add(client, twin_b["id"], "b.png")
    rows += await add(client, evil["id"], "../../etc/passwd", "CON.png")
    await add(client, outside["id"], "elsewhere.png")
    rows.append(await generated_image(client, forest["id"]))
    tagged = rows[0]["id"]
    await client.patch(f"/api/images/{tagged}", json={"tags": ["=SUM(A1)", "gold"]})

    archive = await download(client, f"/api/series/{top['id']}/export")
    listed = manifest(archive)
    names = archive.namelist()
    assert names[-2:] == ["manifest.json", "manifest.csv"]
    files = names[:-2]
    assert len(files) == len({n.lower() for n in files}) == len(rows)
    for name in files:
        parts = name.split("/")
        assert parts[0] == "Autumn walks", name  # the exported series is the top folder
        assert all(SAFE_PART.fullmatch(p) and p not in (".", "..") for p in parts), name
        assert not any(p.startswith(".") or p.endswith((" ", ".")) for p in parts), name
    # One folder per series, nested like the tree; siblings of one title apart.
    folders = {n.rsplit("/", 1)[0] for n in files}
    assert {"Autumn walks", "Autumn walks/Forest", "Autumn walks/Forest/Mushrooms"} <= folders
    twins = sorted(f for f in folders if f.lower().startswith("autumn walks/twin"))
    assert len(twins) == 2 and twins[0].lower() != twins[1].lower()
    assert all(info.compress_type == zipfile.ZIP_STORED for info in archive.infolist()[:-2])

    # Every row is in the manifest, as the API describes it, with its file's bytes.
    by_id = {i["id"]: i for i in listed}
    assert set(by_id) == {r["id"] for r in rows}
    for row in rows:
        api = (await client.get(f"/api/images/{row['id']}")).json()
        entry = by_id[row["id"]]
        for key in (
            "series_id", "original_filename", "source", "prompt", "model", "provider",
            "job_id", "run_id", "step_id", "width", "height", "mime_type", "size_bytes",
            "sha256", "tags", "metadata",
        ):  # fmt: skip
            assert entry[key] == api[key], (key, entry, api)
        assert entry["version"] == 1
        assert entry["created_at"].replace("+00:00", "Z")[:19] == api["created_at"][:19]
        data = archive.read(entry["file"])
        assert hashlib.sha256(data).hexdigest() == entry["sha256"] == api["sha256"]
        assert data == (await client.get(api["file_url"])).content
        assert entry["file"].endswith(f"-{row['id'].replace('-', '')[:8]}.{_ext(api)}")
    assert by_id[rows[0]["id"]]["file"].startswith("Autumn walks/leaf-")
    assert by_id[rows[4]["id"]]["file"].startswith("Autumn walks/Forest/trees.final-")
    assert by_id[rows[4]["id"]]["series"] == "Autumn walks / Forest"
    generated = by_id[rows[-1]["id"]]
    assert generated["provider"] == "preview" and generated["run_id"] and generated["job_id"]
    assert generated["file"].startswith("Autumn walks/Forest/a-fox-in-a-misty-forest-at-dawn-")
    # A spreadsheet shows text that looks like a formula as text.
    table = {r["id"]: r for r in csv.DictReader(io.StringIO(archive.read("manifest.csv").decode()))}
    assert by_id[tagged]["tags"] == ["=sum(a1)", "gold"]
    assert table[tagged]["tags"] == "'=sum(a1), gold"
    assert table[tagged]["sha256"] == by_id[tagged]["sha256"]
    assert table[rows[-1]["id"]]["run_id"] == generated["run_id"]

    # Without its sub-series: the series' own images only.
    alone = await download(
        client, f"/api/series/{top['id']}/export", params={"include_subseries": "false"}
    )
    assert len(manifest(alone)) == 4


def _ext(image: dict[str, Any]) -> str:
    return {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}[image["mime_type"]]


async def test_an_export_of_ids_or_of_a_filter(client: httpx.AsyncClient) -> None:
    a = await make_series(client, "A")
    b = await make_series(client, "B", parent_id=a["id"])
    rows = await add(client, a["id"], "1.png", "2.png", "3.png")
    rows += await add(client, b["id"], "4.png")
    ids = [rows[0]["id"], rows[3]["id"]]

    by_get = await download(client, "/api/images/export", params={"ids": ",".join(ids)})
    repeated = await download(client, f"/api/images/export?ids={ids[0]}&ids={ids[1]}")
    by_post = await download(client, "/api/images/export", json={"ids": ids})
    for archive in (by_get, repeated, by_post):
        listed = manifest(archive)
        assert sorted(i["id"] for i in listed) == sorted(ids)
        # Named from the top of the tree when no series is the root.
        assert sorted(i["file"].rsplit("/", 1)[0] for i in listed) == ["A", "A/B"]

    await client.post("/api/images/batch", json={"action": "tag", "ids": ids, "tags": ["pick"]})
    by_tag = await download(client, "/api/images/export", params={"tag": "pick"})
    assert sorted(i["id"] for i in manifest(by_tag)) == sorted(ids)
    where = {"series_id": a["id"], "include_subseries": True, "tag": "pick"}
    by_filter = await download(client, "/api/images/export", json={"filter": where})
    assert sorted(i["id"] for i in manifest(by_filter)) == sorted(ids)
    assert all(i["file"].startswith("A/") for i in manifest(by_filter))
    empty = await download(
        client, "/api/images/export", params={"series_id": b["id"], "tag": "none"}
    )
    assert manifest(empty) == [] and empty.namelist() == ["manifest.json", "manifest.csv"]


async def test_an_export_that_cannot_be_made_is_refused_before_any_byte(
    client: httpx.AsyncClient,
) -> None:
    series = await make_series(client, "S")
    rows = await add(client, series["id"], "a.png")
    refusals = [
        ("GET", f"/api/images/export?ids={rows[0]['id']},{MISSING}", 404, MISSING),
        ("GET", "/api/images/export?ids=nope", 422, "'nope' is not an image id"),
        ("GET", "/api/images/export", 422, "needs a `series_id`, a `tag`"),
        ("GET", f"/api/images/export?ids={MISSING}&series_id={series['id']}", 422, "not both"),
        ("GET", f"/api/series/{MISSING}/export", 404, f"There is no series {MISSING}."),
        ("POST", "/api/images/export", 422, "either `ids` or a `filter`"),
    ]
    for method, url, status, words in refusals:
        body = {} if method == "POST" else None
        response = await client.request(method, url, json=body)
        assert response.status_code == status, (url, response.text)
        assert words in response.json()["detail"], (url, response.json())
    too_many = {"ids": [str(uuid.uuid4()) for _ in range(10_001)]}
    response = await client.post("/api/images/export", json=too_many)
    assert response.status_code == 413
    assert "at most 10,000" in response.json()["detail"]


async def test_a_file_missing_from_the_store_is_listed_without_it(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    series = await make_series(client, "S")
    kept, lost = await add(client, series["id"], "kept.png", "lost.png")
    for path in store_root(settings).rglob(f"{lost['id']}.png"):
        path.unlink()
    archive = await download(client, f"/api/series/{series['id']}/export")
    listed = {i["id"]: i for i in manifest(archive)}
    assert listed[lost["id"]]["file"] is None
    assert listed[kept["id"]]["file"] in archive.namelist()
    assert json.loads(archive.read("manifest.json"))["missing_files"] == 1
    assert len(archive.namelist()) == 3
