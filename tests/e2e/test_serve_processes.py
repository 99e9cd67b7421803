"""`cog serve --workers N`: several processes answer on one address, and every one of them also
executes runs. Each run is claimed by one process only, so none runs twice and no image is made
twice; what one process stored, another serves.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.e2e.processes import (
    Server,
    assert_each_image_once,
    ok,
    start_run,
    three_image_steps,
    wait_for_end,
)
from tests.factories import image_bytes

pytestmark = pytest.mark.slow

SERVING = r"Started server process \[(\d+)\]"  # what uvicorn logs as each process starts


def children(pid: int) -> list[int]:
    """The live processes whose parent is `pid`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(entry.name))
    return found


def test_several_serving_processes_run_each_run_once(
    serve: Callable[..., Server], server_database_url: str
) -> None:
    server = serve(COG_WEB_WORKERS="2")
    assert "2 processes" in " ".join(server.output().split())  # the line may be wrapped
    # The first process to start answers while the second may still be starting.
    deadline = time.monotonic() + 30
    while len(serving := set(re.findall(SERVING, server.output()))) < 2:
        assert time.monotonic() < deadline, server.output()
        time.sleep(0.1)
    # Both are processes of their own, started by the one the test started.
    assert {int(pid) for pid in serving} <= set(children(server.proc.pid)), server.output()

    with server.client() as http:
        started = [start_run(http, three_image_steps(count=2)) for _ in range(4)]
        for series_id, run_id in started:
            run = wait_for_end(http, run_id, seconds=60)
            assert run["status"] == "succeeded", run
            assert_each_image_once(http, server_database_url, series_id, run, count=2)

        # Uploads land in one process and are read back by whichever answers next.
        series = ok(http.post("/api/series", json={"title": "Uploads"}), 201)
        uploaded = []
        for n in range(6):
            body = image_bytes(40 + n, 30)
            files = [("files", (f"{n}.png", body, "image/png"))]
            answer = ok(http.post(f"/api/series/{series['id']}/images", files=files), 201)
            uploaded.append((answer["items"][0]["id"], body))
        for image_id, body in uploaded:
            for _ in range(3):
                assert http.get(f"/api/images/{image_id}/file").content == body
                assert http.get(f"/api/images/{image_id}/thumbnail").status_code == 200
