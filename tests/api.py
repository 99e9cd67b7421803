"""Helpers that drive Cog's API and pages in tests: jobs, their steps and runs, batches, series
with images, and the job editor's form."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from tests.conftest import wait_for_run
from tests.factories import image_bytes, make_series, upload

# htmx's request header: pages answer with the fragment it swaps in.
HX = {"HX-Request": "true"}
COLORS = [(200, 40, 40), (40, 200, 40), (40, 40, 200), (200, 200, 40)]
# A structured answer listing scenes, for loops and conditions.
SCENES = {
    "type": "object",
    "properties": {
        "scenes": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"title": {"type": "string"}, "mood": {"type": "string"}},
                "required": ["title", "mood"],
            },
        },
        "needs_detail": {"type": "boolean"},
    },
    "required": ["scenes", "needs_detail"],
}


def ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json()


async def make_job(client: httpx.AsyncClient, series_id: str, **fields: Any) -> dict[str, Any]:
    body = {"title": "Dawn", "base_prompt": "a fox in a misty forest at dawn", **fields}
    response = await client.post(f"/api/series/{series_id}/jobs", json=body)
    assert response.status_code == 201, response.text
    job: dict[str, Any] = response.json()
    return job


async def put_steps(client: httpx.AsyncClient, job_id: str, steps: list[Any]) -> httpx.Response:
    return await client.put(f"/api/jobs/{job_id}/steps", json={"steps": steps})


async def run_job(client: httpx.AsyncClient, job_id: str) -> dict[str, Any]:
    response = await client.post(f"/api/jobs/{job_id}/runs")
    assert response.status_code == 202, response.text
    return await wait_for_run(client, response.json()["id"])


async def wait_for_batch(
    client: httpx.AsyncClient, batch_id: str, *, seconds: float = 30.0
) -> dict[str, Any]:
    deadline = asyncio.get_running_loop().time() + seconds
    while True:
        batch: dict[str, Any] = ok(await client.get(f"/api/batches/{batch_id}"))
        if batch["status"] != "running":
            return batch
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"batch {batch_id} did not end in {seconds}s: {batch}")
        await asyncio.sleep(0.05)


async def series_with_images(
    client: httpx.AsyncClient, title: str, count: int, **fields: Any
) -> tuple[dict[str, Any], list[dict[str, Any]], list[bytes]]:
    series = await make_series(client, title, **fields)
    images, files = [], []
    for n in range(count):
        data = image_bytes(40 + n, 30, color=COLORS[n % len(COLORS)])
        response = await upload(client, series["id"], (f"{title}-{n}.png", data, "image/png"))
        assert response.status_code == 201, response.text
        images.append(response.json()["items"][0])
        files.append(data)
    return series, images, files


def editor_form(
    *steps: dict[str, str], title: str = "Job", base: str = "a lighthouse"
) -> dict[str, Any]:
    form: dict[str, Any] = {"title": title, "base_prompt": base}
    for i, step in enumerate(steps):
        form.update({f"steps-{i}-{key}": value for key, value in step.items()})
    return form
