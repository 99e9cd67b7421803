"""Faults from outside, met by real processes: the database going away in the middle of a run
and coming back, and the serving process killed in the middle of an upload."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from cog.testing.tcp_proxy import TcpProxy
from tests.e2e.processes import (
    Server,
    assert_each_image_once,
    ok,
    series_images,
    start_run,
    three_image_steps,
    wait_for_end,
)
from tests.factories import noisy_png, padded_png

pytestmark = pytest.mark.slow


OUTAGE_S = 4.0


def poll(http: httpx.Client, path: str) -> tuple[int, Any]:
    response = http.get(path)
    return response.status_code, response.json()


@pytest.mark.postgres
@pytest.mark.parametrize("server_database_url", ["postgres"], indirect=True)
def test_a_run_outlives_the_database_going_away_for_a_few_seconds(
    serve: Callable[..., Server], server_database_url: str
) -> None:
    """`cog serve` (running the run itself) reaches PostgreSQL through a proxy that the test
    takes away for OUTAGE_S in the middle of a run. Meanwhile the API says why it cannot answer;
    afterwards the run carries on from its last finished step and succeeds."""
    target = sa.make_url(server_database_url)
    with TcpProxy(target.host or "127.0.0.1", target.port or 5432) as proxy:
        through_proxy = target.set(port=proxy.port).render_as_string(hide_password=False)
        server = serve(COG_DATABASE_URL=through_proxy)
        with server.client() as http:
            series_id, run_id = start_run(http, three_image_steps())
            deadline = time.monotonic() + 15
            while True:
                _, run = poll(http, f"/api/runs/{run_id}")
                if [s["status"] for s in run["steps"]][:2] == ["succeeded", "running"]:
                    break
                assert time.monotonic() < deadline, run
                time.sleep(0.01)
            before = run

            proxy.cut()
            answers = []
            until = time.monotonic() + OUTAGE_S
            while time.monotonic() < until:
                answers.append(poll(http, f"/api/runs/{run_id}"))
                time.sleep(0.25)
            proxy.restore()
            # While the database was away, a clear 503, never a 500.
            away = [body for status, body in answers if status != 200]
            assert away, answers
            assert {status for status, _ in answers} <= {200, 503}, answers
            assert all("cannot reach its database" in body["detail"] for body in away), away

            run = wait_for_end(http, run_id, seconds=30)
            assert run["status"] == "succeeded", run
            assert [s["status"] for s in run["steps"]] == ["succeeded"] * 3
            assert run["steps"][0]["image_ids"] == before["steps"][0]["image_ids"]
            assert run["steps"][0]["finished_at"] == before["steps"][0]["finished_at"]
            assert_each_image_once(http, server_database_url, series_id, run, count=2)
            assert len(series_images(http, series_id)) == 6
            ok(http.get("/api/series"))
    assert "lost the database" in server.output(), server.output()


def multipart(boundary: str, name: str, data: bytes) -> tuple[bytes, bytes]:
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="{name}"\r\n'
        "Content-Type: image/png\r\n\r\n"
    ).encode()
    return head + data, f"\r\n--{boundary}--\r\n".encode()


def files_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


@pytest.mark.parametrize("server_database_url", ["sqlite"], indirect=True)
def test_killed_in_the_middle_of_uploads_leaves_no_half_file(
    serve: Callable[..., Server], tmp_path: Path
) -> None:
    """`cog serve` is SIGKILLed while one big upload is still arriving and others are landing.
    After a restart every image it lists is whole (its bytes hash to its sha256). A kill that
    lands between an upload's file and its row leaves that file without a row: `cog doctor
    --fix` puts it under quarantine, and then the store holds a file and a thumbnail for each
    listed image and nothing else. No file anywhere is partial."""
    server = serve()
    with server.client() as http:
        series = ok(http.post("/api/series", json={"title": "Cut short"}), 201)
        url = f"{server.base_url}/api/series/{series['id']}/images"
        body, tail = multipart("cogboundary", "big.png", padded_png(40 * 1024 * 1024))

        def slowly() -> Iterator[bytes]:
            view = memoryview(body)
            for start in range(0, len(view), 256 * 1024):
                yield bytes(view[start : start + 256 * 1024])
                time.sleep(0.02)  # about 12 MB/s: the kill lands in the middle
            yield tail

        def big() -> int | str:
            try:
                return httpx.post(
                    url,
                    content=slowly(),
                    headers={"content-type": "multipart/form-data; boundary=cogboundary"},
                    timeout=30,
                ).status_code
            except httpx.TransportError as exc:
                return type(exc).__name__

        smalls = [noisy_png(300, 300, seed=n) for n in range(8)]

        def small(n: int) -> int | str:
            try:
                files = {"files": (f"s{n}.png", smalls[n], "image/png")}
                return httpx.post(url, files=files, timeout=30).status_code
            except httpx.TransportError as exc:
                return type(exc).__name__

        with ThreadPoolExecutor(max_workers=9) as pool:
            pending = [pool.submit(big)]
            time.sleep(1.0)
            pending += [pool.submit(small, n) for n in range(8)]
            time.sleep(0.15)
            server.kill()
            answers = [f.result() for f in pending]
    assert answers[0] != 201, answers  # the big one never finished

    again = serve()
    with again.client() as http:
        listed = ok(http.get(f"/api/series/{series['id']}/images?limit=100"))["items"]
        for item in listed:
            data = http.get(f"/api/images/{item['id']}/file").content
            assert hashlib.sha256(data).hexdigest() == item["sha256"], item
        assert not [i for i in listed if i["original_filename"] == "big.png"]
        # Each 201 the clients saw is a listed image.
        assert len(listed) >= answers.count(201)
        fixed = subprocess.run(
            [sys.executable, "-m", "cog", "doctor", "--fix", "--grace-minutes", "0"],
            env=again.env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    # The store holds each listed image's file and thumbnail; files the kill left without a row
    # are in quarantine, each a whole upload.
    root = tmp_path / "data" / "storage"
    stored = files_under(root)
    ids = sorted(i["id"] for i in listed)
    assert sorted(Path(f).stem for f in stored if f.startswith("images/")) == ids, stored
    assert sorted(Path(f).stem for f in stored if f.startswith("thumbs/")) == ids, stored
    strays = [f for f in stored if not f.startswith(("images/", "thumbs/"))]
    assert all(f.startswith("quarantine/") for f in strays), stored
    uploaded = {hashlib.sha256(data).hexdigest() for data in smalls}
    for stray in strays:  # a thumbnail without its image is deleted, not kept
        assert hashlib.sha256((root / stray).read_bytes()).hexdigest() in uploaded, stray
