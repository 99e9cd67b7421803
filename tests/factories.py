"""Builders for test data: real image bytes in every accepted format, series and images."""

from __future__ import annotations

import io
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


async def make_series(client: httpx.AsyncClient, title: str = "Series", **fields: Any) -> dict[str, Any]:
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
