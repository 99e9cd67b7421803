"""Many large images uploaded at once: `cog serve` decodes a few at a time
(`COG_DECODE_CONCURRENCY`), so its memory grows with that number, not with the uploads
waiting. Measured on a real server process, from its peak resident memory."""

from __future__ import annotations

import io
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from PIL import Image

from tests.e2e.processes import Server, ok

pytestmark = pytest.mark.slow

WIDTH, HEIGHT = 6000, 4000  # 24 MP: 72 MB of pixels once decoded, from a file of a few KB
UPLOADS = 8


def peak_rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmHWM for process {pid}")


def flat_png(width: int, height: int, shade: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (shade, 90, 160)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_uploads_at_once_are_decoded_a_few_at_a_time(serve: Callable[..., Server]) -> None:
    server = serve(COG_DECODE_CONCURRENCY="2")
    files = [flat_png(WIDTH, HEIGHT, 10 + n) for n in range(UPLOADS)]
    with server.client() as http:
        series = ok(http.post("/api/series", json={"title": "Large"}), 201)
        url = f"/api/series/{series['id']}/images"
        # One upload first: what any upload allocates once (buffers, imports) is in the baseline.
        warm = [("files", ("warm.png", flat_png(WIDTH, HEIGHT, 5), "image/png"))]
        ok(http.post(url, files=warm), 201)
    before = peak_rss_bytes(server.proc.pid)

    def upload(n: int) -> httpx.Response:
        with httpx.Client(base_url=server.base_url, timeout=120) as client:
            return client.post(url, files=[("files", (f"{n}.png", files[n], "image/png"))])

    with ThreadPoolExecutor(UPLOADS) as pool:
        answers = list(pool.map(upload, range(UPLOADS)))
    for answer in answers:
        image = ok(answer, 201)["items"][0]
        assert (image["width"], image["height"]) == (WIDTH, HEIGHT)

    growth = peak_rss_bytes(server.proc.pid) - before
    decoded = WIDTH * HEIGHT * 3
    # Two decodes at once, each with its working copies; eight at once would take 8 x 72 MB.
    assert growth < 4 * decoded, f"peak memory grew by {growth / 2**20:.0f} MB"
    with server.client() as http:
        listed = ok(http.get(f"{url}?limit=100"))["items"]
    assert len(listed) == UPLOADS + 1
