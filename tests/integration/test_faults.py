"""Faults met in process: a model provider answering many calls with 429 or 503, and an image
store refusing writes. What a person sees afterwards: runs that ended with the reason, and no
row that points at a missing file, no file that no row points at."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest

from cog.config import Settings
from cog.web.app import create_app
from tests.api import make_job, put_steps
from tests.conftest import open_client, stored_keys, wait_for_run
from tests.factories import make_series

RUNS = 50


@pytest.fixture
def flaky_settings(gemini_settings: Settings) -> Settings:
    # With 30% of calls failing, ten attempts leave a call failing for good once in 170,000.
    return gemini_settings.model_copy(update={"provider_max_attempts": 10, "run_concurrency": 8})


async def test_fifty_runs_all_succeed_when_30_percent_of_calls_fail(
    flaky_settings: Settings, gemini: Any
) -> None:
    gemini.fault_rate = 0.3
    gemini.retry_delay_s = 0.01
    async for client in open_client(create_app(flaky_settings)):
        series = await make_series(client, "Under load")
        job = await make_job(client, series["id"])
        steps = [
            {"kind": "llm", "prompt": "Describe {{ base_prompt }} in one line."},
            {"kind": "image", "prompt": "{{ steps[0].text }}", "config": {"count": 2}},
        ]
        assert (await put_steps(client, job["id"], steps)).status_code == 200
        started = []
        for _ in range(RUNS):
            response = await client.post(f"/api/jobs/{job['id']}/runs")
            assert response.status_code == 202, response.text
            started.append(response.json()["id"])
        runs = await asyncio.gather(*(wait_for_run(client, r, seconds=120) for r in started))

        assert [r["status"] for r in runs] == ["succeeded"] * RUNS, [
            (r["status"], r["error"]) for r in runs if r["status"] != "succeeded"
        ]
        attempts = [a for r in runs for s in r["steps"] for a in s["attempt_log"]]
        refused = [a for a in attempts if a["status_code"] in (429, 503)]
        # Every refused attempt was recorded and tried again; about 30% of calls were refused.
        assert len(attempts) == RUNS * 3 + len(refused)
        assert 0.2 < len(refused) / len(attempts) < 0.4, (len(refused), len(attempts))
        images = [i for r in runs for i in r["steps"][1]["image_ids"]]
        assert len(images) == len(set(images)) == RUNS * 2
        listed: list[dict[str, Any]] = []
        cursor = None
        while True:
            query = f"?limit=100&cursor={cursor}" if cursor else "?limit=100"
            page = (await client.get(f"/api/series/{series['id']}/images{query}")).json()
            listed += page["items"]
            if not (cursor := page["next_cursor"]):
                break
        assert sorted(i["id"] for i in listed) == sorted(images)


def break_store(root: Path) -> None:
    """Make every write of an image fail, as a full or read-only disk would: the folder the
    store writes images into is put aside and a plain file takes its place."""
    if (root / "images").exists():
        (root / "images").rename(root / "images-aside")
    (root / "images").write_bytes(b"not a folder")


def mend_store(root: Path) -> None:
    (root / "images").unlink()
    if (root / "images-aside").exists():
        (root / "images-aside").rename(root / "images")


def storage_root(settings: Settings) -> Path:
    assert settings.storage_url is not None
    return Path(settings.storage_url.removeprefix("file://"))


async def assert_rows_match_files(client: httpx.AsyncClient, series_id: str, root: Path) -> None:
    items = (await client.get(f"/api/series/{series_id}/images?limit=100")).json()["items"]
    for item in items:
        response = await client.get(f"/api/images/{item['id']}/file")
        assert response.status_code == 200, (item, response.text)
    files = [k for k in stored_keys(root) if k.startswith("images/")]
    assert sorted(f.split("/")[-1].split(".")[0] for f in files) == sorted(i["id"] for i in items)


async def test_a_run_whose_images_the_store_refuses_fails_with_the_reason(
    gemini_settings: Settings, gemini_client: httpx.AsyncClient, gemini: Any
) -> None:
    root = storage_root(gemini_settings)
    series = await make_series(gemini_client, "Disk full")
    job = await make_job(gemini_client, series["id"])
    steps = [
        {"kind": "image", "prompt": "{{ base_prompt }}", "config": {"count": 2}},
        {"kind": "image", "prompt": "{{ base_prompt }}, closer", "config": {"count": 2}},
    ]
    assert (await put_steps(gemini_client, job["id"], steps)).status_code == 200
    gemini.latency_s = 0.3
    response = await gemini_client.post(f"/api/jobs/{job['id']}/runs")
    run_id = response.json()["id"]
    while True:  # break the store once the first step has kept its images
        run = (await gemini_client.get(f"/api/runs/{run_id}")).json()
        if run["steps"][0]["status"] == "succeeded":
            break
        assert run["status"] in ("queued", "running"), run
        await asyncio.sleep(0.01)
    kept = set(run["steps"][0]["image_ids"])
    break_store(root)
    run = await wait_for_run(gemini_client, run_id)
    assert run["status"] == "failed", run
    assert "could not write the file to its image store" in run["error"], run
    assert run["steps"][0]["status"] == "succeeded"
    assert set(run["steps"][0]["image_ids"]) == kept
    assert run["steps"][1]["status"] == "failed"
    assert run["steps"][1]["image_ids"] == []
    listed = (await gemini_client.get(f"/api/series/{series['id']}/images")).json()["items"]
    assert {i["id"] for i in listed} == kept  # no row for an image whose file was refused
    mend_store(root)
    await assert_rows_match_files(gemini_client, series["id"], root)
