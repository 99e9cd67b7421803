"""The images API end to end: verified uploads, files and thumbnails, lists, edits and deletes.

Every test runs on SQLite and on PostgreSQL. Refused uploads are checked to leave nothing behind:
no row (the series' list and count) and no file (the store's folder, or the S3 bucket).
"""

from __future__ import annotations

import hashlib
import io
import shutil
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import boto3
import httpx
import pytest
import sqlalchemy as sa
from PIL import Image

from cog.config import Settings
from cog.db.models import ImageVersion
from cog.db.session import make_engine
from cog.storage import ObjectStore
from cog.storage.keys import thumbnail_key
from cog.web.app import create_app
from tests.conftest import make_settings, open_client, stored_keys
from tests.factories import (
    image_bytes,
    make_image,
    make_series,
    noisy_png,
    padded_png,
    png_bomb,
    upload,
)

MB = 1024 * 1024


def store_root(settings: Settings) -> Path:
    return Path(urlparse(settings.storage_url).path)


def assert_refused(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert isinstance(body["detail"], str)
    assert body["detail"].strip()
    return body


async def get_ok(client: httpx.AsyncClient, url: str, **params: Any) -> dict[str, Any]:
    response = await client.get(url, params=params)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def image_ids(client: httpx.AsyncClient, series_id: str) -> list[str]:
    page = await get_ok(client, f"/api/series/{series_id}/images", limit=500)
    assert page["next_cursor"] is None
    return [item["id"] for item in page["items"]]


async def image_count(client: httpx.AsyncClient, series_id: str) -> int:
    count: int = (await get_ok(client, f"/api/series/{series_id}"))["image_count"]
    return count


async def upload_one(
    client: httpx.AsyncClient, series_id: str, name: str, data: bytes, mime: str = "image/png"
) -> dict[str, Any]:
    response = await upload(client, series_id, (name, data, mime))
    assert response.status_code == 201, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    assert len(items) == 1
    return items[0]


def files_under(root: Path) -> set[Path]:
    return {path for path in root.rglob("*") if path.is_file()}


def any_file(*paths: Path) -> bool:
    return any(path.exists() for path in paths)


def decoded(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


# --- uploads ------------------------------------------------------------------------------------


async def test_upload_one_records_its_facts_and_keeps_its_bytes(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    series = await make_series(client, "Leaves")
    data = image_bytes(120, 80)
    image = await upload_one(client, series["id"], "leaf.png", data)

    assert image["series_id"] == series["id"]
    assert image["source"] == "upload"
    assert image["original_filename"] == "leaf.png"
    assert (image["width"], image["height"]) == (120, 80)
    assert image["mime_type"] == "image/png"
    assert image["size_bytes"] == len(data)
    assert image["sha256"] == hashlib.sha256(data).hexdigest()
    assert (image["prompt"], image["model"], image["provider"], image["job_id"]) == (None,) * 4
    assert image["metadata"] == {}
    assert await get_ok(client, f"/api/images/{image['id']}") == image

    fetched = await client.get(image["file_url"])
    assert fetched.status_code == 200
    assert fetched.content == data
    assert fetched.headers["content-type"] == "image/png"
    assert sorted(stored_keys(store_root(settings))) == sorted(
        [
            f"images/{image['id'][:2]}/{image['id']}.png",
            f"thumbs/{image['id'][:2]}/{image['id']}.webp",
        ]
    )


async def test_upload_many_in_one_request(client: httpx.AsyncClient, settings: Settings) -> None:
    series = await make_series(client, "Batch")
    files = [
        ("a.png", image_bytes(10, 20, "PNG"), "image/png"),
        ("b.jpg", image_bytes(30, 40, "JPEG"), "image/jpeg"),
        ("c.webp", image_bytes(50, 60, "WEBP"), "image/webp"),
    ]
    response = await upload(client, series["id"], *files)
    assert response.status_code == 201, response.text
    items = response.json()["items"]
    assert [i["original_filename"] for i in items] == ["a.png", "b.jpg", "c.webp"]
    assert [(i["width"], i["height"]) for i in items] == [(10, 20), (30, 40), (50, 60)]
    for item, (_, data, mime) in zip(items, files, strict=True):
        assert item["mime_type"] == mime
        assert (await client.get(item["file_url"])).content == data
    assert sorted(await image_ids(client, series["id"])) == sorted(i["id"] for i in items)
    assert await image_count(client, series["id"]) == 3
    assert len(stored_keys(store_root(settings))) == 6


ACCEPTED = [
    ("PNG", "image/png", "png"),
    ("JPEG", "image/jpeg", "jpg"),
    ("WEBP", "image/webp", "webp"),
    ("GIF", "image/gif", "gif"),
    ("AVIF", "image/avif", "avif"),
]


async def test_each_accepted_format(client: httpx.AsyncClient, settings: Settings) -> None:
    series = await make_series(client, "Formats")
    for fmt, mime, extension in ACCEPTED:
        data = image_bytes(90, 70, fmt)
        # Declared as something else and named wrongly: the bytes decide.
        image = await upload_one(client, series["id"], "picture", data, "application/octet-stream")
        assert (image["mime_type"], image["width"], image["height"]) == (mime, 90, 70), fmt
        assert image["sha256"] == hashlib.sha256(data).hexdigest()
        fetched = await client.get(image["file_url"])
        assert fetched.content == data, fmt
        assert fetched.headers["content-type"] == mime
        assert f"images/{image['id'][:2]}/{image['id']}.{extension}" in stored_keys(
            store_root(settings)
        )
        thumb = decoded((await client.get(image["thumbnail_url"])).content)
        assert (thumb.format, thumb.size) == ("WEBP", (90, 70)), fmt
    assert await image_count(client, series["id"]) == len(ACCEPTED)


async def test_the_stored_key_never_comes_from_the_file_name(
    client: httpx.AsyncClient, settings: Settings, tmp_path: Path
) -> None:
    series = await make_series(client, "Names")
    files_before = files_under(tmp_path)
    root = store_root(settings)
    names = ["../../etc/evil.png", "..\\..\\windows\\evil.png", "/abs/evil.png", "../"]
    response = await upload(
        client, series["id"], *[(name, image_bytes(8, 8), "image/png") for name in names]
    )
    assert response.status_code == 201, response.text
    items = response.json()["items"]
    assert [i["original_filename"] for i in items] == ["evil.png", "evil.png", "evil.png", "file 4"]

    keys = stored_keys(root)
    assert sorted(keys) == sorted(
        [f"images/{i['id'][:2]}/{i['id']}.png" for i in items]
        + [f"thumbs/{i['id'][:2]}/{i['id']}.webp" for i in items]
    )
    written = files_under(tmp_path) - files_before
    assert written
    assert all(root in path.parents for path in written), written
    # `../../etc/evil.png` from the store folder, or taken from the root.
    assert not {p for p in files_under(tmp_path.parent) if "evil" in p.name}
    assert not any_file(Path("/etc/evil.png"), Path("/abs/evil.png"))
    # The name is still what the file is served under.
    fetched = await client.get(items[0]["file_url"])
    assert fetched.headers["content-disposition"] == "inline; filename*=UTF-8''evil.png"


async def test_a_png_declared_as_jpeg_is_recorded_as_png(client: httpx.AsyncClient) -> None:
    series = await make_series(client, "Lies")
    data = image_bytes(20, 10, "PNG")
    image = await upload_one(client, series["id"], "x.jpg", data, "image/jpeg")
    assert image["mime_type"] == "image/png"
    assert image["original_filename"] == "x.jpg"
    fetched = await client.get(image["file_url"])
    assert fetched.headers["content-type"] == "image/png"
    assert fetched.content == data
    # Saved from a browser, it is named as what it is.
    assert fetched.headers["content-disposition"] == "inline; filename*=UTF-8''x.png"


# --- thumbnails and file headers ----------------------------------------------------------------


async def test_thumbnail_is_webp_bounded_and_cached(
    client: httpx.AsyncClient, settings: Settings, store: ObjectStore
) -> None:
    series = await make_series(client, "Thumbs")
    wide = await upload_one(client, series["id"], "wide.png", image_bytes(1200, 900))
    tall = await upload_one(client, series["id"], "tall.jpg", image_bytes(300, 1500, "JPEG"))
    small = await upload_one(client, series["id"], "small.png", image_bytes(40, 30))
    # A phone photo stored landscape with an EXIF orientation that shows it portrait.
    exif = Image.Exif()
    exif[0x0112] = 6
    photo = image_bytes(800, 600, "JPEG", exif=exif.tobytes())
    sideways = await upload_one(client, series["id"], "phone.jpg", photo, "image/jpeg")
    assert (sideways["width"], sideways["height"]) == (600, 800)
    px = settings.thumbnail_px

    sizes = {}
    for image in (wide, tall, small, sideways):
        response = await client.get(image["thumbnail_url"])
        assert response.status_code == 200
        assert response.headers["content-type"] == "image/webp"
        thumb = decoded(response.content)
        assert thumb.format == "WEBP"
        assert max(thumb.size) <= px
        sizes[image["id"]] = thumb.size
        again = await client.get(image["thumbnail_url"])
        assert again.content == response.content
    assert sizes[wide["id"]] == (px, px * 900 // 1200)
    assert sizes[tall["id"]][1] == px
    assert sizes[small["id"]] == (40, 30)  # never enlarged
    assert sizes[sideways["id"]] == (px * 600 // 800, px)  # upright, as its record says

    # The stored thumbnail is what is served; a process keeps the ones it served in memory.
    key = thumbnail_key(uuid.UUID(wide["id"]))
    stored = await store.get(key)
    assert (await client.get(wide["thumbnail_url"])).content == stored
    await store.delete(key)
    assert (await client.get(wide["thumbnail_url"])).content == stored
    assert await store.size(key) is None  # served from memory, not written back
    async for fresh in open_client(create_app(settings)):
        # A process that has not served it (a restart, another worker) makes it again.
        regenerated = await fresh.get(wide["thumbnail_url"])
        assert regenerated.status_code == 200
        assert decoded(regenerated.content).size == sizes[wide["id"]]
        assert await store.get(key) == regenerated.content
    await store.put(key, b"RIFF\x00\x00\x00\x00WEBPVP8 garbage")
    async for fresh in open_client(create_app(settings)):
        # So does one whose stored object is damaged.
        repaired = await fresh.get(wide["thumbnail_url"])
        assert decoded(repaired.content).size == sizes[wide["id"]]
        assert await store.get(key) == repaired.content

    # An image whose files went missing from the store is a 404 that says so, not an error.
    await store.delete(f"images/{small['id'][:2]}/{small['id']}.png")
    await store.delete(thumbnail_key(uuid.UUID(small["id"])))
    async for fresh in open_client(create_app(settings)):
        for url in (small["file_url"], small["thumbnail_url"]):
            assert "missing from the store" in assert_refused(await fresh.get(url), 404)["detail"]


async def test_thumbnails_kept_in_memory_go_with_their_image(
    client: httpx.AsyncClient, settings: Settings, store: ObjectStore
) -> None:
    series = await make_series(client, "Kept")
    image = await upload_one(client, series["id"], "kept.png", image_bytes(900, 600))
    first = await client.get(image["thumbnail_url"])
    assert first.status_code == 200
    await store.delete(thumbnail_key(uuid.UUID(image["id"])))
    assert (await client.get(image["thumbnail_url"])).content == first.content

    # A new version is another thumbnail, made from its own bytes.
    edited = await client.post(f"/api/images/{image['id']}/versions", json={"prompt": "at dusk"})
    assert edited.status_code == 201, edited.text
    after = await client.get(image["thumbnail_url"])
    assert after.headers["etag"] != first.headers["etag"]
    assert after.content != first.content
    assert decoded(after.content).format == "WEBP"
    version_one = await client.get(f"/api/images/{image['id']}/versions/1/thumbnail")
    assert version_one.content == first.content

    # Once the image is deleted, its thumbnails are gone too, memory or not.
    assert (await client.delete(f"/api/images/{image['id']}")).status_code == 204
    assert_refused(await client.get(image["thumbnail_url"]), 404)
    assert_refused(await client.get(f"/api/images/{image['id']}/versions/1/thumbnail"), 404)

    # With no memory for them (COG_THUMBNAIL_CACHE_MB=0), each is read from the store.
    other = await upload_one(client, series["id"], "other.png", image_bytes(600, 600))
    unkept = settings.model_copy(update={"thumbnail_cache_mb": 0})
    async for plain in open_client(create_app(unkept)):
        served = await plain.get(other["thumbnail_url"])
        await store.put(thumbnail_key(uuid.UUID(other["id"])), b"RIFF\x00\x00\x00\x00WEBPVP8 bad")
        again = await plain.get(other["thumbnail_url"])
        assert decoded(again.content).size == decoded(served.content).size == (512, 512)
        assert await store.get(thumbnail_key(uuid.UUID(other["id"]))) == again.content


async def test_thumbnails_follow_a_changed_thumbnail_size(
    client: httpx.AsyncClient, settings: Settings, tmp_path: Path
) -> None:
    series = await make_series(client, "Resized")
    image = await upload_one(client, series["id"], "wide.png", image_bytes(1000, 500))
    small = await upload_one(client, series["id"], "small.png", image_bytes(100, 50))
    before = await client.get(image["thumbnail_url"])
    assert decoded(before.content).size == (512, 256)

    # The same database and store, served again with smaller thumbnails.
    smaller = settings.model_copy(update={"thumbnail_px": 128})
    async for other in open_client(create_app(smaller)):
        after = await other.get(image["thumbnail_url"])
        assert after.status_code == 200
        assert decoded(after.content).size == (128, 64)
        assert after.headers["etag"] != before.headers["etag"]
        assert (await other.get(image["thumbnail_url"])).content == after.content
        # A thumbnail already smaller than the setting is the image's own size; it stays.
        assert decoded((await other.get(small["thumbnail_url"])).content).size == (100, 50)


async def test_file_and_thumbnail_headers(client: httpx.AsyncClient) -> None:
    series = await make_series(client, "Headers")
    data = image_bytes(30, 30, "JPEG")
    image = await upload_one(client, series["id"], "photo.jpg", data, "image/jpeg")

    # The image's file changes with each new version, so browsers ask again (a cheap 304);
    # the file of one version never changes, so they may keep it.
    version = f"/api/images/{image['id']}/versions/1"
    for url, mime, cache in (
        (image["file_url"], "image/jpeg", "private, no-cache"),
        (image["thumbnail_url"], "image/webp", "private, no-cache"),
        (f"{version}/file", "image/jpeg", "private, max-age=31536000, immutable"),
        (f"{version}/thumbnail", "image/webp", "private, max-age=31536000, immutable"),
    ):
        response = await client.get(url)
        assert response.status_code == 200
        assert response.headers["content-type"] == mime
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["cache-control"] == cache
        etag = response.headers["etag"]
        assert etag.startswith('"') and etag.endswith('"')

        cached = await client.get(url, headers={"If-None-Match": etag})
        assert cached.status_code == 304
        assert cached.content == b""
        assert cached.headers["etag"] == etag
        listed = await client.get(url, headers={"If-None-Match": f'"other", {etag}'})
        assert listed.status_code == 304
        stale = await client.get(url, headers={"If-None-Match": '"other"'})
        assert stale.status_code == 200
        assert stale.content == response.content

    file_response = await client.get(image["file_url"])
    assert file_response.headers["etag"] == f'"{hashlib.sha256(data).hexdigest()}"'
    assert file_response.headers["content-length"] == str(len(data))


# --- refusals -----------------------------------------------------------------------------------


def _truncated(data: bytes) -> bytes:
    return data[: len(data) * 2 // 3]


# case: (file name, bytes, declared type, status, a word the detail must hold); the bytes are
# made when the test runs.
REFUSALS: dict[str, tuple[str, Callable[[], bytes], str, int, str]] = {
    "plain text": ("notes.txt", lambda: b"just some words\n" * 20, "text/plain", 415, "PNG"),
    "text named and declared png": ("x.png", lambda: b"hello, I am text", "image/png", 415, "PNG"),
    "bmp": ("old.bmp", lambda: image_bytes(20, 20, "BMP"), "image/bmp", 415, "BMP"),
    "tiff": ("scan.tiff", lambda: image_bytes(20, 20, "TIFF"), "image/tiff", 415, "TIFF"),
    "truncated png": (
        "cut.png",
        lambda: _truncated(noisy_png(60, 60)),
        "image/png",
        422,
        "truncated",
    ),
    "truncated jpeg": (
        "cut.jpg",
        lambda: _truncated(image_bytes(200, 200, "JPEG", quality=95)),
        "image/jpeg",
        422,
        "truncated",
    ),
    "zero bytes": ("empty.png", lambda: b"", "image/png", 422, "empty"),
    "bomb of 400 MP": (
        "bomb.png",
        lambda: png_bomb(20_000, 20_000),
        "image/png",
        413,
        "64 megapixels",
    ),
    "bomb of 81 MP": (
        "bomb.png",
        lambda: png_bomb(9_000, 9_000),
        "image/png",
        413,
        "(81 megapixels)",
    ),
}


async def test_a_refused_upload_leaves_nothing_behind(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    series = await make_series(client, "Refusals")
    kept = await make_image(client, series["id"])
    keys_before = stored_keys(store_root(settings))

    for case, (name, make_bytes, mime, status, word) in REFUSALS.items():
        response = await upload(client, series["id"], (name, make_bytes(), mime))
        assert response.status_code == status, (case, response.text)
        body = assert_refused(response, status)
        assert word.lower() in body["detail"].lower(), (case, body["detail"])
        assert body["files"] == [
            {"filename": name, "status": status, "error": body["files"][0]["error"]}
        ], case
        assert body["files"][0]["error"] in body["detail"]

        assert await image_ids(client, series["id"]) == [kept["id"]], case
        assert await image_count(client, series["id"]) == 1, case
        assert stored_keys(store_root(settings)) == keys_before, case


async def test_a_60_mb_file_is_refused_with_413(
    client: httpx.AsyncClient, settings: Settings, tmp_path: Path
) -> None:
    assert settings.max_upload_bytes == 50 * MB  # the real default
    series = await make_series(client, "Big")
    big = tmp_path / "big.png"
    big.write_bytes(padded_png(60 * MB))
    keys_before = stored_keys(store_root(settings))

    with big.open("rb") as fp:
        response = await client.post(
            f"/api/series/{series['id']}/images", files=[("files", ("big.png", fp, "image/png"))]
        )
    body = assert_refused(response, 413)
    assert "big.png" in body["detail"]
    assert "The file is 60 MB; the largest accepted is 50 MB." in body["detail"]
    assert await image_ids(client, series["id"]) == []
    assert stored_keys(store_root(settings)) == keys_before == []


async def test_a_batch_with_one_bad_file_stores_none(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    series = await make_series(client, "Batch")
    response = await upload(
        client,
        series["id"],
        ("good-1.png", image_bytes(10, 10), "image/png"),
        ("readme.png", b"# not an image at all\n", "image/png"),
        ("good-2.jpg", image_bytes(10, 10, "JPEG"), "image/jpeg"),
    )
    body = assert_refused(response, 415)
    assert "readme.png" in body["detail"]
    assert "good-1.png" not in body["detail"]
    assert "nothing was stored" in body["detail"]
    assert [(f["filename"], f["status"]) for f in body["files"]] == [("readme.png", 415)]
    assert "not an image" in body["files"][0]["error"]

    assert await image_ids(client, series["id"]) == []
    assert await image_count(client, series["id"]) == 0
    assert stored_keys(store_root(settings)) == []


async def test_a_batch_with_several_bad_files_names_each(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    series = await make_series(client, "Batch")
    response = await upload(
        client,
        series["id"],
        ("cut.png", _truncated(noisy_png(40, 40)), "image/png"),
        ("good.png", image_bytes(10, 10), "image/png"),
        ("empty.gif", b"", "image/gif"),
    )
    body = assert_refused(response, 422)
    assert [(f["filename"], f["status"]) for f in body["files"]] == [
        ("cut.png", 422),
        ("empty.gif", 422),
    ]
    assert "cut.png" in body["detail"] and "empty.gif" in body["detail"]
    assert await image_ids(client, series["id"]) == []
    assert stored_keys(store_root(settings)) == []


async def test_a_store_failing_mid_upload_leaves_neither_rows_nor_files(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    series = await make_series(client, "Broken store")
    kept = await make_image(client, series["id"])
    root = store_root(settings)
    keys_before = stored_keys(root)
    # Thumbnails cannot be written once `thumbs` is a file: each original is written first,
    # then its thumbnail fails, and the whole batch has to be undone.
    shutil.rmtree(root / "thumbs")
    (root / "thumbs").write_bytes(b"in the way")

    response = await upload(
        client,
        series["id"],
        ("a.png", image_bytes(10, 10), "image/png"),
        ("b.png", image_bytes(12, 12), "image/png"),
    )
    assert response.status_code == 503, response.text
    assert "could not write the file to its image store" in response.json()["detail"]
    assert "nothing was kept" in response.json()["detail"]

    assert await image_ids(client, series["id"]) == [kept["id"]]
    assert await image_count(client, series["id"]) == 1
    assert [k for k in stored_keys(root) if k.startswith("images/")] == [
        k for k in keys_before if k.startswith("images/")
    ]


async def test_an_upload_without_files_is_refused(client: httpx.AsyncClient) -> None:
    series = await make_series(client, "Nothing")
    assert_refused(await client.post(f"/api/series/{series['id']}/images"), 422)
    response = await client.post(
        f"/api/series/{series['id']}/images",
        files=[("other", ("a.png", image_bytes(), "image/png"))],
    )
    assert_refused(response, 422)
    assert await image_ids(client, series["id"]) == []


async def test_upload_to_an_unknown_series_is_refused(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    response = await upload(client, str(uuid.uuid4()), ("a.png", image_bytes(), "image/png"))
    assert_refused(response, 404)
    assert stored_keys(store_root(settings)) == []
    assert_refused(await upload(client, "nope", ("a.png", image_bytes(), "image/png")), 422)


@pytest.fixture
async def strict_client(
    tmp_path: Path, database_url: str
) -> AsyncIterator[tuple[httpx.AsyncClient, Settings]]:
    """An app with small limits: 3,000 pixels, 20 kB and two files per upload."""
    settings = make_settings(
        tmp_path,
        database_url=database_url,
        storage_url=(tmp_path / "strict-storage").as_uri(),
        max_image_pixels=3_000,
        max_upload_bytes=20_000,
        max_files_per_upload=2,
    )
    async for client in open_client(create_app(settings)):
        yield client, settings


async def test_configured_limits_are_enforced(
    strict_client: tuple[httpx.AsyncClient, Settings],
) -> None:
    client, settings = strict_client
    series = await make_series(client, "Limits")
    ok = await upload_one(client, series["id"], "ok.png", image_bytes(50, 60))  # 3,000 pixels
    keys = stored_keys(store_root(settings))
    assert len(keys) == 2

    too_many_pixels = await upload(
        client, series["id"], ("wide.png", image_bytes(61, 50), "image/png")
    )
    detail = assert_refused(too_many_pixels, 413)["detail"]
    assert "The image is 61x50 (3,050 pixels); the largest accepted is 3,000 pixels." in detail
    too_many_bytes = await upload(
        client, series["id"], ("padded.png", padded_png(25_000), "image/png")
    )
    detail = assert_refused(too_many_bytes, 413)["detail"]
    assert "The file is 24.4 KB; the largest accepted is 19.5 KB." in detail
    too_many_files = await upload(
        client, series["id"], *[(f"{i}.png", image_bytes(5, 5), "image/png") for i in range(3)]
    )
    assert "at most 2" in assert_refused(too_many_files, 413)["detail"]

    assert await image_ids(client, series["id"]) == [ok["id"]]
    assert stored_keys(store_root(settings)) == keys


# --- listing ------------------------------------------------------------------------------------


async def test_listing_is_newest_first_and_pages_each_image_once(
    client: httpx.AsyncClient,
) -> None:
    series = await make_series(client, "Many")
    other = await make_series(client, "Other")
    await make_image(client, other["id"])
    uploaded = [(await make_image(client, series["id"], f"{i}.png"))["id"] for i in range(25)]

    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 7, **({"cursor": cursor} if cursor else {})}
        page = await get_ok(client, f"/api/series/{series['id']}/images", **params)
        pages += 1
        assert len(page["items"]) == (7 if page["next_cursor"] else 4)
        seen.extend(item["id"] for item in page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert pages == 4
    assert seen == list(reversed(uploaded))


async def test_images_of_one_batch_page_without_gaps(client: httpx.AsyncClient) -> None:
    series = await make_series(client, "Batch")
    response = await upload(
        client, series["id"], *[(f"{i}.png", image_bytes(4, 4), "image/png") for i in range(9)]
    )
    assert response.status_code == 201, response.text
    uploaded = {item["id"] for item in response.json()["items"]}
    seen: list[str] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = await get_ok(client, f"/api/series/{series['id']}/images", **params)
        seen.extend(item["id"] for item in page["items"])
        if (cursor := page["next_cursor"]) is None:
            break
    assert len(seen) == len(set(seen)) == 9
    assert set(seen) == uploaded


async def test_listing_refuses_bad_paging_and_unknown_series(client: httpx.AsyncClient) -> None:
    series = await make_series(client, "Paged")
    url = f"/api/series/{series['id']}/images"
    for limit in ("0", "10000", "many"):
        assert (
            "limit" in assert_refused(await client.get(url, params={"limit": limit}), 422)["detail"]
        )
    for cursor in ("garbage", "WyIyMDI0LTAxLTAxVDAwOjAwOjAwIiwgNV0", "WyJhIiwgImIiXQ"):
        body = assert_refused(await client.get(url, params={"cursor": cursor}), 422)
        assert "cursor" in body["detail"]
    assert_refused(await client.get(f"/api/series/{uuid.uuid4()}/images"), 404)


# --- edits and moves ----------------------------------------------------------------------------


async def test_move_an_image_to_another_series(client: httpx.AsyncClient) -> None:
    source = await make_series(client, "Source")
    target = await make_series(client, "Target")
    image = await make_image(client, source["id"])
    await make_image(client, source["id"])

    response = await client.patch(f"/api/images/{image['id']}", json={"series_id": target["id"]})
    assert response.status_code == 200, response.text
    assert response.json()["series_id"] == target["id"]
    assert await image_count(client, source["id"]) == 1
    assert await image_count(client, target["id"]) == 1
    assert await image_ids(client, target["id"]) == [image["id"]]
    assert image["id"] not in await image_ids(client, source["id"])
    assert (await client.get(image["file_url"])).status_code == 200


async def test_edit_metadata_and_file_name(client: httpx.AsyncClient) -> None:
    series = await make_series(client, "Edits")
    image = await make_image(client, series["id"], "before.png")
    metadata = {"rating": 5, "notes": "keep", "nested": {"tags": ["a", "b"]}}

    response = await client.patch(
        f"/api/images/{image['id']}",
        json={"metadata": metadata, "original_filename": "dir/after.png"},
    )
    assert response.status_code == 200, response.text
    assert response.json()["metadata"] == metadata
    assert response.json()["original_filename"] == "after.png"
    fetched = await get_ok(client, f"/api/images/{image['id']}")
    assert (fetched["metadata"], fetched["original_filename"]) == (metadata, "after.png")
    assert fetched["series_id"] == series["id"]
    assert fetched["sha256"] == image["sha256"]

    response = await client.patch(f"/api/images/{image['id']}", json={"metadata": {}})
    assert response.json()["metadata"] == {}
    assert response.json()["original_filename"] == "after.png"


async def test_bad_image_edits_are_refused(client: httpx.AsyncClient) -> None:
    series = await make_series(client, "Edits")
    image = await make_image(client, series["id"])
    url = f"/api/images/{image['id']}"

    missing_series = str(uuid.uuid4())
    assert (
        missing_series
        in assert_refused(await client.patch(url, json={"series_id": missing_series}), 404)[
            "detail"
        ]
    )
    assert (
        "series_id"
        in assert_refused(await client.patch(url, json={"series_id": None}), 422)["detail"]
    )
    assert (
        "metadata"
        in assert_refused(await client.patch(url, json={"metadata": None}), 422)["detail"]
    )
    assert (
        "metadata" in assert_refused(await client.patch(url, json={"metadata": [1]}), 422)["detail"]
    )
    assert (
        "sha256"
        in assert_refused(await client.patch(url, json={"sha256": "0" * 64}), 422)["detail"]
    )
    assert_refused(
        await client.patch(url, content=b"{", headers={"content-type": "application/json"}), 422
    )
    assert await get_ok(client, url) == image


async def test_metadata_no_database_can_store_is_refused(client: httpx.AsyncClient) -> None:
    series = await make_series(client, "Edits")
    image = await make_image(client, series["id"])
    url = f"/api/images/{image['id']}"
    kept = await client.patch(url, json={"metadata": {"ok": [1.5, "fine"]}})
    assert kept.status_code == 200, kept.text
    headers = {"content-type": "application/json"}
    for metadata, where in [
        ('{"a": NaN}', "metadata.a"),
        ('{"a": [1, -Infinity]}', "metadata.a[1]"),
        ('{"a": 1e400}', "metadata.a"),
        ('{"a": {"b": "x\\u0000"}}', "metadata.a.b"),
        ('{"k\\u0000": 1}', "metadata"),
        ('{"a": "\\ud800"}', "metadata.a"),
    ]:
        body = f'{{"metadata": {metadata}}}'.encode()
        detail = assert_refused(await client.patch(url, content=body, headers=headers), 422)
        assert where in detail["detail"], (metadata, detail)
    response = await client.patch(url, json={"original_filename": "a\x00.png"})
    assert_refused(response, 422)
    assert (await get_ok(client, url))["metadata"] == {"ok": [1.5, "fine"]}


async def test_unknown_and_malformed_image_ids(client: httpx.AsyncClient) -> None:
    missing = uuid.uuid4()
    for suffix in ("", "/file", "/thumbnail"):
        body = assert_refused(await client.get(f"/api/images/{missing}{suffix}"), 404)
        assert str(missing) in body["detail"]
        # Image routes only match ids, so `/api/images/batch` and `/api/images/export` are never
        # taken for an image: anything else is no image at all.
        assert_refused(await client.get(f"/api/images/not-an-id{suffix}"), 404)
    assert_refused(await client.patch(f"/api/images/{missing}", json={"metadata": {}}), 404)
    assert_refused(await client.delete(f"/api/images/{missing}"), 404)
    assert_refused(await client.delete("/api/images/123"), 404)
    refused = assert_refused(await client.patch("/api/images/batch", json={}), 405)
    assert (
        refused["detail"] and "POST" in (await client.patch("/api/images/batch")).headers["allow"]
    )


# --- delete -------------------------------------------------------------------------------------


async def test_delete_removes_the_row_and_both_stored_objects(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    series = await make_series(client, "Deletes")
    doomed = await make_image(client, series["id"])
    kept = await make_image(client, series["id"])
    root = store_root(settings)
    assert len(stored_keys(root)) == 4

    response = await client.delete(f"/api/images/{doomed['id']}")
    assert response.status_code == 204
    assert response.content == b""

    assert_refused(await client.get(f"/api/images/{doomed['id']}"), 404)
    assert_refused(await client.get(f"/api/images/{doomed['id']}/file"), 404)
    assert_refused(await client.get(f"/api/images/{doomed['id']}/thumbnail"), 404)
    assert_refused(await client.delete(f"/api/images/{doomed['id']}"), 404)
    assert await image_ids(client, series["id"]) == [kept["id"]]
    assert await image_count(client, series["id"]) == 1
    remaining = stored_keys(root)
    assert len(remaining) == 2
    assert all(kept["id"] in key for key in remaining)


# --- against the S3 store -----------------------------------------------------------------------


@pytest.mark.s3
class TestOnS3:
    """The same API with images kept in a bucket of a real S3-compatible server."""

    @pytest.fixture
    async def s3_client(
        self, tmp_path: Path, database_url: str, s3_storage: dict[str, str]
    ) -> AsyncIterator[httpx.AsyncClient]:
        settings = make_settings(tmp_path, database_url=database_url, **s3_storage)
        async for client in open_client(create_app(settings)):
            yield client

    @pytest.fixture
    def bucket_keys(self, s3_storage: dict[str, str]) -> Any:
        s3 = boto3.client(
            "s3",
            endpoint_url=s3_storage["s3_endpoint_url"],
            region_name="us-east-1",
            aws_access_key_id="test",
            aws_secret_access_key="test",
        )
        prefix = urlparse(s3_storage["storage_url"]).path.strip("/") + "/"

        def keys() -> list[str]:
            listed = s3.list_objects_v2(Bucket="cog-images", Prefix=prefix)
            return sorted(item["Key"][len(prefix) :] for item in listed.get("Contents", []))

        def read(key: str) -> bytes:
            body: bytes = s3.get_object(Bucket="cog-images", Key=prefix + key)["Body"].read()
            return body

        keys.read = read  # type: ignore[attr-defined]
        return keys

    async def test_upload_fetch_thumbnail_delete(
        self, s3_client: httpx.AsyncClient, bucket_keys: Any
    ) -> None:
        client = s3_client
        series = await make_series(client, "Cloud")
        data = image_bytes(700, 300, "JPEG")
        image = await upload_one(client, series["id"], "../cloud.jpg", data, "image/jpeg")
        assert image["original_filename"] == "cloud.jpg"
        file_key = f"images/{image['id'][:2]}/{image['id']}.jpg"
        thumb_key = f"thumbs/{image['id'][:2]}/{image['id']}.webp"
        assert bucket_keys() == [file_key, thumb_key]
        assert bucket_keys.read(file_key) == data

        fetched = await client.get(image["file_url"])
        assert fetched.status_code == 200
        assert fetched.content == data
        assert fetched.headers["content-type"] == "image/jpeg"
        assert fetched.headers["etag"] == f'"{hashlib.sha256(data).hexdigest()}"'

        thumb = await client.get(image["thumbnail_url"])
        assert thumb.status_code == 200
        assert decoded(thumb.content).size == (512, 219)
        assert bucket_keys.read(thumb_key) == thumb.content

        response = await client.delete(f"/api/images/{image['id']}")
        assert response.status_code == 204
        assert bucket_keys() == []
        assert_refused(await client.get(image["file_url"]), 404)

    async def test_refusals_and_recursive_delete_leave_the_bucket_clean(
        self, s3_client: httpx.AsyncClient, bucket_keys: Any
    ) -> None:
        client = s3_client
        parent = await make_series(client, "Parent")
        child = await make_series(client, "Child", parent_id=parent["id"])
        kept_series = await make_series(client, "Kept")
        kept = await make_image(client, kept_series["id"])
        response = await upload(
            client,
            child["id"],
            ("good.png", image_bytes(), "image/png"),
            ("cut.png", _truncated(noisy_png(30, 30)), "image/png"),
        )
        assert_refused(response, 422)
        assert len(bucket_keys()) == 2

        await make_image(client, child["id"])
        await make_image(client, parent["id"])
        assert len(bucket_keys()) == 6
        response = await client.delete(f"/api/series/{parent['id']}?recursive=true")
        assert response.status_code == 204
        remaining = bucket_keys()
        assert len(remaining) == 2
        assert all(kept["id"] in key for key in remaining)
        assert (await client.get(kept["file_url"])).status_code == 200


async def test_a_new_image_is_its_own_first_version(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    series = await make_series(client, "Versions")
    data = image_bytes(20, 10)
    response = await upload(client, series["id"], ("first.png", data, "image/png"))
    image = response.json()["items"][0]
    engine = make_engine(settings.database_url)
    try:
        async with engine.connect() as conn:
            versions = (await conn.execute(sa.select(ImageVersion))).all()
    finally:
        await engine.dispose()
    assert len(versions) == 1
    version = versions[0]
    assert (str(version.id), str(version.image_id), version.number) == (image["id"],) * 2 + (1,)
    assert (version.source, version.original_filename, version.sha256) == (
        "upload",
        "first.png",
        hashlib.sha256(data).hexdigest(),
    )
