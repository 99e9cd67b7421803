"""Hostile uploads: a corpus of damaged, misleading and oversized files, made here with Pillow in
every accepted format, sent through the API on SQLite and PostgreSQL.

Each refusal has the status that says why, names the file, and leaves nothing behind: no row, no
stored object, no temporary file still open. What Cog decides for the files that are images
after all:

- An image with something after its end (a script appended to a PNG) is accepted. Trailing bytes
  are common in real files (phones append a video to a JPEG); the bytes are kept as they are,
  and served only as the image type they were sniffed as, with `nosniff`, a policy that runs no
  inline script, and a file name ending in that type's extension: never as HTML.
- A wrong extension or declared type does not matter: the bytes decide, and the file is stored
  and served as what they are.
- SVG is refused (415): it is a document that can carry script.
- A file missing only its end marker (a PNG's IEND) still has every pixel and is accepted, as
  browsers show it; the truncations here cut into the pixels.

The 200 MB body sent slowly to a real server, whose memory is measured, is in
tests/e2e/test_upload_stream.py.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import io
import os
import struct
import tempfile
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx
import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from PIL import Image as PILImage

from cog.config import Settings
from cog.db.models import Image
from cog.domain import IMAGE_FORMATS
from cog.runtime import Runtime
from cog.web.app import create_app
from tests.conftest import make_settings, open_client, stored_keys
from tests.factories import (
    apng_claiming_no_frames,
    avif_with_an_empty_item,
    image_bytes,
    make_series,
    noisy_png,
    png_bomb,
    png_chunk,
    png_with_chunk,
    upload,
)

SCRIPT = b"<script>alert(document.domain)</script>"
SVG = b'<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"><rect width="9"/></svg>'
HTML = b"<!doctype html><html><body><script>alert(document.cookie)</script></body></html>"


# --- the corpus ---------------------------------------------------------------------------------


def picture(fmt: str, width: int = 64, height: int = 48, seed: int = 0) -> bytes:
    """Noise saved as `fmt`: nothing compresses it away, so a cut or a scribble hits pixels."""
    image = PILImage.open(io.BytesIO(noisy_png(width, height, seed))).convert("RGB")
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def scribbled(fmt: str) -> bytes:
    """The image data overwritten with 0xFF from a third of the file on; for AVIF the whole
    payload (its AV1 decoder makes pictures of a partly scribbled one)."""
    data = picture(fmt)
    start = data.index(b"mdat") + 4 if fmt == "AVIF" else len(data) // 3
    return data[:start] + b"\xff" * (len(data) - start)


def claiming(fmt: str, width: int, height: int) -> bytes:
    """A tiny file whose header says it is `width` x `height` pixels."""
    if fmt == "PNG":
        return png_bomb(width, height)  # a whole, valid PNG, all black
    if fmt == "WEBP":
        data = bytearray(image_bytes(16, 16, "WEBP", lossless=True))
        at = data.index(b"VP8L") + 9  # 14 bits of width - 1, 14 of height - 1, then flags
        flags = int.from_bytes(data[at : at + 4], "little") & ~((1 << 28) - 1)
        data[at : at + 4] = (flags | (width - 1) | ((height - 1) << 14)).to_bytes(4, "little")
        return bytes(data)
    data = bytearray(image_bytes(16, 16, fmt))
    if fmt == "JPEG":
        at = data.index(b"\xff\xc0") + 5  # start of frame: precision, then height and width
        data[at : at + 4] = struct.pack(">HH", height, width)
    elif fmt == "GIF":
        data[6:10] = struct.pack("<HH", width, height)  # the logical screen
        at = data.index(b"\x2c") + 5  # the image descriptor
        data[at : at + 4] = struct.pack("<HH", width, height)
    elif fmt == "AVIF":
        at = data.index(b"ispe") + 8  # the image spatial extents property
        data[at : at + 8] = struct.pack(">II", width, height)
    else:  # pragma: no cover - a format added to IMAGE_FORMATS needs its case here
        raise AssertionError(f"no header recipe for {fmt}")
    return bytes(data)


def text_bomb() -> bytes:
    """A PNG whose compressed comment inflates to 200 MB."""
    comment = zlib.compress(b"A" * (200 * 1024 * 1024), 9)
    return png_with_chunk(png_chunk(b"zTXt", b"Comment\x00\x00" + comment))


@dataclass(frozen=True)
class Refusal:
    case: str
    filename: str
    data: bytes
    declared: str
    status: int
    says: str


@functools.cache
def refusals() -> tuple[Refusal, ...]:
    cases = []
    for fmt, (mime, ext) in IMAGE_FORMATS.items():
        whole = picture(fmt)
        cases += [
            Refusal(f"{fmt} cut to 60%", f"cut.{ext}", whole[: len(whole) * 6 // 10], mime, 422,
                    "damaged"),
            Refusal(f"{fmt} cut to 48 bytes", f"head.{ext}", whole[:48], mime, 422, "damaged"),
            Refusal(f"{fmt} scribbled", f"scribbled.{ext}", scribbled(fmt), mime, 422, "damaged"),
            Refusal(f"{fmt} of zero bytes", f"empty.{ext}", b"", mime, 422, "empty"),
            Refusal(f"{fmt} claiming 9000x8000", f"huge.{ext}", claiming(fmt, 9000, 8000), mime,
                    413, "The image is 9000x8000 (72 megapixels)"),
            Refusal(f"{fmt} claiming 16383x16383", f"bomb.{ext}", claiming(fmt, 16_383, 16_383),
                    mime, 413, "too many pixels to open safely"),
        ]  # fmt: skip
    return (
        *cases,
        Refusal("PNG with a 200 MB comment", "text.png", text_bomb(), "image/png", 422, "damaged"),
        Refusal("AVIF with an empty item", "void.avif", avif_with_an_empty_item(), "image/avif",
                422, "damaged"),
        Refusal("SVG", "drawing.svg", SVG, "image/svg+xml", 415, "SVG"),
        Refusal("SVG named and declared PNG", "drawing.png", SVG, "image/png", 415, "SVG"),
        Refusal("SVG after an XML prolog", "drawing.png", b'<?xml version="1.0"?>\n' + SVG,
                "image/png", 415, "XML"),
        Refusal("HTML named PNG", "page.png", HTML, "image/png", 415, "not an image"),
        Refusal("HTML with a PNG after it", "page.png", HTML + image_bytes(8, 8), "image/png",
                415, "not an image"),
    )  # fmt: skip


# --- what must not change -----------------------------------------------------------------------


def store_root(settings: Settings) -> Path:
    return Path(urlparse(settings.storage_url).path)


def open_temp_files() -> set[str]:
    """This process's open files that are deleted temporary files (rolled-over spools)."""
    found = set()
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(tempfile.gettempdir()) and target.endswith("(deleted)"):
            found.add(f"{fd}:{target}")
    return found


@dataclass
class Ledger:
    """Rows of images, stored objects and open temporary files: a refusal changes none."""

    app: FastAPI
    settings: Settings

    async def rows(self) -> int:
        runtime: Runtime = self.app.state.cog
        async with runtime.engine.connect() as conn:
            found = await conn.execute(sa.select(sa.func.count()).select_from(Image))
            return int(found.scalar_one())

    async def snapshot(self) -> tuple[int, list[str], set[str]]:
        return await self.rows(), stored_keys(store_root(self.settings)), open_temp_files()


def refused(response: httpx.Response, status: int, case: str) -> dict[str, Any]:
    assert response.status_code == status, (case, response.status_code, response.text)
    assert response.headers["content-type"] == "application/json", case
    body: dict[str, Any] = response.json()
    assert isinstance(body["detail"], str) and body["detail"].strip(), case
    return body


@pytest.fixture
def ledger(app: FastAPI, settings: Settings) -> Ledger:
    return Ledger(app, settings)


# --- refused ------------------------------------------------------------------------------------


async def test_each_hostile_file_is_refused_with_its_status_and_leaves_nothing(
    client: httpx.AsyncClient, ledger: Ledger
) -> None:
    series = await make_series(client, "Hostile")
    kept = await upload(client, series["id"], ("kept.png", image_bytes(10, 10), "image/png"))
    assert kept.status_code == 201, kept.text
    before = await ledger.snapshot()
    assert before[0] == 1

    corpus = refusals()
    assert {c.case.split()[0] for c in corpus} >= set(IMAGE_FORMATS)
    for case in corpus:
        response = await upload(client, series["id"], (case.filename, case.data, case.declared))
        body = refused(response, case.status, case.case)
        assert case.says.lower() in body["detail"].lower(), (case.case, body["detail"])
        assert [(f["filename"], f["status"]) for f in body["files"]] == [
            (case.filename, case.status)
        ], case.case
        assert await ledger.snapshot() == before, case.case


async def test_the_whole_corpus_in_one_batch_names_every_refused_file_and_keeps_none(
    client: httpx.AsyncClient, ledger: Ledger
) -> None:
    series = await make_series(client, "Hostile batch")
    before = await ledger.snapshot()
    corpus = refusals()
    good = [("good-1.png", image_bytes(12, 12), "image/png"), ("good-2.gif", picture("GIF"), "")]
    sent = [(f"{i}-{c.filename}", c.data, c.declared) for i, c in enumerate(corpus)]
    response = await upload(client, series["id"], good[0], *sent, good[1])

    body = refused(response, corpus[0].status, "batch")  # the status of the first refusal
    assert [(f["filename"], f["status"]) for f in body["files"]] == [
        (name, c.status) for (name, _, _), c in zip(sent, corpus, strict=True)
    ]
    assert (
        f"{len(corpus)} of {len(corpus) + 2} file(s) refused, nothing was stored"
        in (body["detail"])
    )
    assert "good-" not in body["detail"]
    assert await ledger.snapshot() == before


# --- accepted, as what the bytes are ------------------------------------------------------------


async def test_an_image_with_a_script_after_it_is_kept_and_served_only_as_an_image(
    client: httpx.AsyncClient, ledger: Ledger
) -> None:
    series = await make_series(client, "Polyglots")
    for fmt, (mime, ext) in IMAGE_FORMATS.items():
        data = picture(fmt, 40, 30) + SCRIPT
        response = await upload(client, series["id"], ("page.html", data, "text/html"))
        assert response.status_code == 201, (fmt, response.text)
        (image,) = response.json()["items"]
        assert (image["mime_type"], image["width"], image["height"]) == (mime, 40, 30), fmt
        assert image["sha256"] == hashlib.sha256(data).hexdigest(), fmt
        assert image["original_filename"] == "page.html", fmt

        served = await client.get(image["file_url"])
        assert served.status_code == 200, fmt
        assert served.content == data, fmt  # kept byte for byte
        assert served.headers["content-type"] == mime, fmt
        assert served.headers["x-content-type-options"] == "nosniff", fmt
        policy = served.headers["content-security-policy"]
        assert "script-src 'self'" in policy and "unsafe-inline" not in policy, fmt
        assert served.headers["content-disposition"] == (
            f"inline; filename*=UTF-8''page.html.{ext}"
        ), fmt
        thumb = await client.get(image["thumbnail_url"])
        assert thumb.headers["content-type"] == "image/webp", fmt
        assert SCRIPT not in thumb.content, fmt
    rows, keys, _ = await ledger.snapshot()
    assert rows == len(IMAGE_FORMATS)
    assert len(keys) == 2 * len(IMAGE_FORMATS)


async def test_a_wrong_extension_and_declared_type_are_ignored(
    client: httpx.AsyncClient, ledger: Ledger
) -> None:
    series = await make_series(client, "Misnamed")
    formats = list(IMAGE_FORMATS.items())
    for (fmt, (mime, ext)), (_, (wrong_mime, wrong_ext)) in zip(
        formats, formats[1:] + formats[:1], strict=True
    ):
        data = picture(fmt, 20, 10)
        name = f"photo.{wrong_ext}"
        response = await upload(client, series["id"], (name, data, wrong_mime))
        assert response.status_code == 201, (fmt, response.text)
        (image,) = response.json()["items"]
        assert image["mime_type"] == mime, fmt
        assert image["original_filename"] == name, fmt
        served = await client.get(image["file_url"])
        assert served.headers["content-type"] == mime, fmt
        # Saved under the type the bytes are: photo.jpg holding a PNG is saved as photo.png.
        assert served.headers["content-disposition"].endswith(f"''photo.{ext}"), fmt
        assert f"images/{image['id'][:2]}/{image['id']}.{ext}" in stored_keys(
            store_root(ledger.settings)
        ), fmt

    apng = apng_claiming_no_frames()
    response = await upload(client, series["id"], ("still.png", apng, "image/png"))
    assert response.status_code == 201, response.text
    assert response.json()["items"][0]["mime_type"] == "image/png"
    assert (await ledger.snapshot())[0] == len(formats) + 1


# --- many files ---------------------------------------------------------------------------------


async def test_more_files_than_allowed_are_refused_whole(
    client: httpx.AsyncClient, settings: Settings, ledger: Ledger
) -> None:
    series = await make_series(client, "Too many")
    before = await ledger.snapshot()
    tiny = image_bytes(2, 2)
    limit = settings.max_files_per_upload
    for count in (limit + 1, 1_500):
        files = [(f"{i}.png", tiny, "image/png") for i in range(count)]
        body = refused(await upload(client, series["id"], *files), 413, f"{count} files")
        assert body["detail"] == (
            f"{count} files in one upload; at most {limit} are accepted at once."
        )
        assert await ledger.snapshot() == before


async def test_many_files_sent_at_once_each_land_exactly_once(
    client: httpx.AsyncClient, ledger: Ledger
) -> None:
    series = await make_series(client, "Crowd")
    rows_before = await ledger.rows()
    batches = [
        [(f"{b}-{i}.png", image_bytes(8 + b, 8 + i), "image/png") for i in range(5)]
        for b in range(10)
    ]
    responses = await asyncio.gather(*(upload(client, series["id"], *batch) for batch in batches))
    assert [r.status_code for r in responses] == [201] * len(batches), [r.text for r in responses]

    sent = sorted(hashlib.sha256(data).hexdigest() for batch in batches for _, data, _ in batch)
    items = [item for r in responses for item in r.json()["items"]]
    assert sorted(i["sha256"] for i in items) == sent
    assert len({i["id"] for i in items}) == len(sent)
    listed = await client.get(f"/api/series/{series['id']}/images", params={"limit": 500})
    assert sorted(i["sha256"] for i in listed.json()["items"]) == sent
    assert await ledger.rows() == rows_before + len(sent)
    assert len(stored_keys(store_root(ledger.settings))) == 2 * len(sent)


# --- the request itself -------------------------------------------------------------------------


@dataclass
class Strict:
    client: httpx.AsyncClient
    ledger: Ledger
    settings: Settings


@pytest.fixture
async def strict(tmp_path: Path, database_url: str) -> AsyncIterator[Strict]:
    """An app with small limits: 1.5 MB per file and two files per upload."""
    settings = make_settings(
        tmp_path,
        database_url=database_url,
        storage_url=(tmp_path / "strict-storage").as_uri(),
        max_upload_bytes=1_500_000,
        max_files_per_upload=2,
    )
    app = create_app(settings)
    async for client in open_client(app):
        yield Strict(client, Ledger(app, settings), settings)


def multipart(boundary: str, *parts: tuple[str, str | None, bytes]) -> bytes:
    """A multipart/form-data body of (field name, file name, bytes) parts, ended properly."""
    out = b""
    for name, filename, data in parts:
        disposition = f'form-data; name="{name}"' + (
            f'; filename="{filename}"' if filename is not None else ""
        )
        out += f"--{boundary}\r\nContent-Disposition: {disposition}\r\n\r\n".encode()
        out += data + b"\r\n"
    return out + f"--{boundary}--\r\n".encode()


async def test_an_oversized_file_is_refused_with_its_real_size_and_not_kept(
    strict: Strict,
) -> None:
    client, ledger = strict.client, strict.ledger
    series = await make_series(client, "Oversized")
    before = await ledger.snapshot()
    big = noisy_png(1000, 700)  # 2 MB: over the limit, spooled to disk before it is dropped
    assert 2 * 1024 * 1024 < len(big) < 2.05 * 1024 * 1024
    response = await upload(
        client, series["id"], ("small.png", image_bytes(10, 10), "image/png"), ("big.png", big, "")
    )
    body = refused(response, 413, "oversized")
    assert body["files"] == [
        {
            "filename": "big.png",
            "status": 413,
            "error": "The file is 2 MB; the largest accepted is 1.4 MB.",
        }
    ]
    assert await ledger.snapshot() == before


async def test_malformed_and_oversized_requests_are_refused_before_anything_is_kept(
    strict: Strict,
) -> None:
    client, ledger = strict.client, strict.ledger
    series = await make_series(client, "Requests")
    url = f"/api/series/{series['id']}/images"
    before = await ledger.snapshot()
    png = image_bytes(10, 10)
    form = "multipart/form-data; boundary=cogcogcog"
    whole = multipart("cogcogcog", ("files", "a.png", png))

    cases: list[tuple[str, dict[str, Any], int, str]] = [
        ("not multipart", {"content": png, "headers": {"content-type": "image/png"}}, 422,
         "No files were sent"),
        ("json", {"json": {"files": ["a.png"]}}, 422, "No files were sent"),
        ("no boundary", {"content": whole, "headers": {"content-type": "multipart/form-data"}},
         400, "no boundary"),
        ("cut off", {"content": whole[: len(whole) // 2], "headers": {"content-type": form}},
         400, "ended before its last part"),
        ("only other fields", {"content": multipart("cogcogcog", ("other", "a.png", png)),
                               "headers": {"content-type": form}}, 422, "No files were sent"),
        ("a text field as a file", {"content": multipart("cogcogcog", ("files", None, b"hi")),
                                    "headers": {"content-type": form}}, 415, "not an image"),
        ("a huge declared length",
         {"content": whole, "headers": {"content-type": form, "content-length": str(10**12)}},
         413, "larger than any Cog accepts"),
        ("a body larger than any batch",  # an ignored field: read, never kept, cut off
         {"content": multipart("cogcogcog", ("other", None, b"x" * 3_500_000)),
          "headers": {"content-type": form}}, 413, "larger than any Cog accepts"),
    ]  # fmt: skip
    for case, request, status, says in cases:
        body = refused(await client.post(url, **request), status, case)
        assert says in body["detail"], (case, body["detail"])
        assert await ledger.snapshot() == before, case

    # The same body, whole and well-formed, is accepted.
    ok = await client.post(url, content=whole, headers={"content-type": form})
    assert ok.status_code == 201, ok.text
