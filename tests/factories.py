"""Builders for test data: real image bytes in every accepted format, series and images."""

from __future__ import annotations

import io
import struct
import zlib
from typing import Any

import httpx
from PIL import Image


def image_bytes(
    width: int = 64,
    height: int = 48,
    fmt: str = "PNG",
    color: tuple[int, int, int] = (200, 60, 40),
    **save: Any,
) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buffer, format=fmt, **save)
    return buffer.getvalue()


def noisy_png(width: int, height: int, seed: int = 0) -> bytes:
    """A PNG that does not compress: for tests that need large files."""
    import random

    rng = random.Random(seed)
    image = Image.frombytes("RGB", (width, height), rng.randbytes(width * height * 3))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=0)
    return buffer.getvalue()


async def make_series(
    client: httpx.AsyncClient, title: str = "Series", **fields: Any
) -> dict[str, Any]:
    response = await client.post("/api/series", json={"title": title, **fields})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def upload(
    client: httpx.AsyncClient, series_id: str, *files: tuple[str, bytes, str]
) -> httpx.Response:
    """POST files (name, bytes, declared type) to a series."""
    return await client.post(
        f"/api/series/{series_id}/images",
        files=[("files", (name, data, mime)) for name, data, mime in files],
    )


async def make_image(
    client: httpx.AsyncClient, series_id: str, name: str = "image.png", **kwargs: Any
) -> dict[str, Any]:
    response = await upload(client, series_id, (name, image_bytes(**kwargs), "image/png"))
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()["items"][0]
    return body


def png_bomb(width: int = 20_000, height: int = 20_000) -> bytes:
    """A real, whole PNG of `width` x `height` one-bit pixels, all black: tiny on disk, huge once
    decoded. Written by hand so building it costs no more than compressing the zero rows."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1-bit greyscale
    row = b"\x00" * (1 + (width + 7) // 8)  # filter byte, then the packed bits
    packer = zlib.compressobj(9)
    block = row * 1000
    parts = [packer.compress(block) for _ in range(height // 1000)]
    parts.append(packer.compress(row * (height % 1000)))
    parts.append(packer.flush())
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", b"".join(parts))
        + chunk(b"IEND", b"")
    )


def padded_png(total_bytes: int) -> bytes:
    """A valid PNG followed by zero bytes up to `total_bytes`: a big file that is cheap to make."""
    head = image_bytes(16, 16)
    return head + b"\x00" * (total_bytes - len(head))


def png_chunk(kind: bytes, body: bytes) -> bytes:
    return (
        struct.pack(">I", len(body))
        + kind
        + body
        + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
    )


def png_with_chunk(chunk: bytes) -> bytes:
    """A small PNG with `chunk` right after its header."""
    data = image_bytes(16, 16)
    return data[:33] + chunk + data[33:]  # signature (8) + IHDR (25)


def avif_with_an_empty_item() -> bytes:
    """An AVIF whose item location says its image is 0 bytes long (Pillow's AVIF plugin raised
    a RuntimeError for it: an answer of 500)."""
    data = bytearray(image_bytes(16, 16, "AVIF"))
    # `iloc` v0: flags (4), sizes (2), item count (2), item id (2), data reference (2),
    # extent count (2), extent offset (4), then the extent length.
    at = data.index(b"iloc") + 4 + 4 + 2 + 2 + 2 + 2 + 2 + 4
    data[at : at + 4] = bytes(4)
    return bytes(data)


def apng_claiming_no_frames() -> bytes:
    """A PNG with an animation control chunk that says it has no frames: Pillow warns and reads
    the still image (the warning was an error under strict warning filters)."""
    return png_with_chunk(png_chunk(b"acTL", struct.pack(">II", 0, 0)))


async def insert_images(database_url: str, series_id: str, *images: dict[str, Any]) -> list[str]:
    """Image rows as a run or an upload leaves them (prompt, model, tags, when), written straight
    to the database, with no file behind them: for what reads rows only, like search. Each dict
    may give `prompt`, `original_filename`, `tags`, `model`, `source` and `created_at`."""
    import datetime as dt
    import uuid

    import sqlalchemy as sa

    from cog.db.models import Image as ImageRow
    from cog.db.session import make_engine, make_sessionmaker

    now = dt.datetime.now(dt.UTC)
    rows = []
    for index, fields in enumerate(images):
        image_id = uuid.uuid4()
        generated = fields.get("source", "generated" if "prompt" in fields else "upload")
        rows.append(
            {
                "id": image_id,
                "series_id": uuid.UUID(series_id),
                "source": generated,
                "storage_path": f"images/{image_id}.png",
                "original_filename": fields.get("original_filename"),
                "mime_type": "image/png",
                "width": 64,
                "height": 48,
                "size_bytes": 1000,
                "sha256": image_id.hex * 2,
                "prompt": fields.get("prompt"),
                "model": fields.get("model"),
                "provider": "preview" if generated == "generated" else None,
                "meta": {},
                "tags": fields.get("tags", []),
                # Oldest first, a second apart, unless told.
                "created_at": fields.get(
                    "created_at", now - dt.timedelta(seconds=len(images) - index)
                ),
            }
        )
    engine = make_engine(database_url)
    try:
        async with make_sessionmaker(engine).begin() as session:  # ORM bulk INSERT
            await session.execute(sa.insert(ImageRow), rows)
    finally:
        await engine.dispose()
    return [str(row["id"]) for row in rows]
