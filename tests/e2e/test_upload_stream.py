"""A 200 MB upload sent slowly to a real `cog serve`: refused with a 413 that names the file, in
bounded memory (measured on the server process), keeping on disk no more than the limit while it
arrives, and leaving nothing behind: no row, no stored object, no temporary file."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.conftest import pg_url
from tests.e2e.cli import Cli, CliServer
from tests.factories import image_bytes

pytestmark = pytest.mark.slow

MB = 1024 * 1024
BODY_BYTES = 200 * MB
CHUNK = 128 * 1024
PAUSE_S = 0.002  # between chunks: 1,600 of them, so the body takes several seconds
LIMIT = 50 * MB  # COG_MAX_UPLOAD_BYTES's default
BOUNDARY = "cog-slow-upload"


def status_kb(pid: int, field_name: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field_name}:"):
            return int(line.split()[1])
    raise AssertionError(f"no {field_name} for process {pid}")


def deleted_files(pid: int) -> dict[str, int]:
    """The process's open files that are already deleted (spooled uploads), with their sizes."""
    found = {}
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            if target.endswith("(deleted)"):
                found[f"{fd}:{target}"] = os.stat(f"/proc/{pid}/fd/{fd}").st_size
        except OSError:
            continue  # closed meanwhile
    return found


@dataclass
class Watch:
    """Polls the server while the body is sent: the largest deleted file it holds open."""

    pid: int
    largest_spool: int = 0
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        while not self.stop.wait(0.02):
            sizes = deleted_files(self.pid).values()
            self.largest_spool = max([self.largest_spool, *sizes])


def slow_body() -> Iterator[bytes]:
    yield (
        f"--{BOUNDARY}\r\n"
        'Content-Disposition: form-data; name="files"; filename="big.png"\r\n'
        "Content-Type: image/png\r\n\r\n"
    ).encode()
    yield image_bytes(16, 16)  # it starts like an image
    chunk = b"\x00" * CHUNK
    for _ in range(BODY_BYTES // CHUNK):
        yield chunk
        time.sleep(PAUSE_S)
    yield f"\r\n--{BOUNDARY}--\r\n".encode()


def files_in(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def server_env(request: pytest.FixtureRequest) -> dict[str, str]:
    if request.param == "sqlite":
        return {}
    return {"COG_DATABASE_URL": pg_url(request.getfixturevalue("pg_database"))}


def test_a_200_mb_upload_sent_slowly_is_refused_in_bounded_memory(
    server_env: dict[str, str],  # first: its database outlives the server
    cli: Cli,
    cog_serve: Callable[..., CliServer],
    request: pytest.FixtureRequest,
) -> None:
    server = cog_serve(env=server_env)
    pid = server.proc.pid
    with httpx.Client(base_url=server.base_url, timeout=120) as http:
        series = http.post("/api/series", json={"title": "Slow"}).json()
        url = f"/api/series/{series['id']}/images"
        # One upload first, so what any upload loads (Pillow's plugins) is there before measuring.
        warm = http.post(url, files=[("files", ("warm.png", image_bytes(), "image/png"))])
        assert warm.status_code == 201, warm.text
        files_before = files_in(cli.data_dir)
        spools_before = deleted_files(pid)
        rss_before = status_kb(pid, "VmRSS")

        watch = Watch(pid)
        watcher = threading.Thread(target=watch.run, daemon=True)
        watcher.start()
        started = time.monotonic()
        try:
            response = http.post(
                url,
                content=slow_body(),
                headers={"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"},
            )
        finally:
            watch.stop.set()
            watcher.join()
        took = time.monotonic() - started
        peak = status_kb(pid, "VmHWM")

        assert response.status_code == 413, response.text
        body = response.json()
        assert body["files"] == [
            {
                "filename": "big.png",
                "status": 413,
                "error": "The file is 200 MB; the largest accepted is 50 MB.",
            }
        ]
        assert "nothing was stored" in body["detail"]
        assert took > BODY_BYTES // CHUNK * PAUSE_S  # it was sent slowly, and read to its end

        growth_mb = (peak - rss_before) / 1024
        # The figures, for a report (`--junitxml`): memory before, at its peak, and the time.
        request.node.user_properties += [
            ("rss_before_mb", round(rss_before / 1024, 1)),
            ("peak_rss_mb", round(peak / 1024, 1)),
            ("peak_growth_mb", round(growth_mb, 1)),
            ("seconds", round(took, 1)),
        ]
        assert growth_mb < 100, f"the server grew by {growth_mb:.0f} MB for a 200 MB body"
        # On disk, no more of the file than the limit was ever kept.
        assert watch.largest_spool <= LIMIT + CHUNK, watch.largest_spool

        # Nothing is left: no temporary file held open, no file in the data dir, no row.
        assert deleted_files(pid) == spools_before
        assert files_in(cli.data_dir) - files_before == set()
        listed = http.get(url).json()
        assert [i["original_filename"] for i in listed["items"]] == ["warm.png"]
        assert http.get(f"/api/series/{series['id']}").json()["image_count"] == 1
        # And the server still serves.
        again = http.post(url, files=[("files", ("after.png", image_bytes(), "image/png"))])
        assert again.status_code == 201, again.text
