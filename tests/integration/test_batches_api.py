"""Batches through the API: a job run once per image, against Gemini (the real SDK at the fake
server on loopback), on SQLite and PostgreSQL: progress, an injected failure, the input image
sent as the reference and rendered into prompts, lineage, the concurrency limit, cancel, and
the refusals."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

from cog.config import Settings
from cog.db import lineage as lineage_db
from cog.db import runs as runs_db
from cog.db.models import Batch
from cog.db.session import make_engine, make_sessionmaker
from cog.services import batches as batches_service
from cog.web.app import create_app
from tests.api import make_job, ok, put_steps, run_job, wait_for_batch
from tests.conftest import make_settings, open_client
from tests.factories import make_image, make_series

BATCH_STEPS = [
    {
        "kind": "image",
        "prompt": "Repaint {{ input.prompt }} ({{ input.width }}x{{ input.height }}, "
        "from {{ input.series }})",
        "config": {"input_images": ["input"]},
    }
]


async def wait_until(
    client: httpx.AsyncClient, batch_id: str, done: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    for _ in range(500):
        batch: dict[str, Any] = ok(await client.get(f"/api/batches/{batch_id}"))
        if done(batch):
            return batch
        await asyncio.sleep(0.02)
    raise AssertionError(f"batch {batch_id} never got there: {batch}")


def most_at_once(runs: list[dict[str, Any]]) -> int:
    """The most runs that were running at the same moment, from their start and end times."""
    edges: list[tuple[dt.datetime, int]] = []
    for run in runs:
        if run["started_at"]:
            edges.append((dt.datetime.fromisoformat(run["started_at"]), 1))
            edges.append((dt.datetime.fromisoformat(run["finished_at"]), -1))
    at_once = most = 0
    for _, step in sorted(edges):  # an end sorts before a start at the same instant
        at_once += step
        most = max(most, at_once)
    return most


async def made_inputs(
    client: httpx.AsyncClient, series_id: str, prompts: list[str]
) -> list[dict[str, Any]]:
    """Generated images with the given prompts (one plain run each), oldest first."""
    job = await make_job(client, series_id, title="Inputs")
    ok(await put_steps(client, job["id"], [{"kind": "image", "prompt": "{{ base_prompt }}"}]))
    images = []
    for prompt in prompts:
        ok(await client.patch(f"/api/jobs/{job['id']}", json={"base_prompt": prompt}))
        run = await run_job(client, job["id"])
        assert run["status"] == "succeeded", run
        images.append(ok(await client.get(f"/api/images/{run['steps'][0]['image_ids'][0]}")))
    return images


async def test_a_batch_of_five_with_one_injected_failure(
    gemini_client: httpx.AsyncClient, gemini: Any, gemini_settings: Settings
) -> None:
    portraits = await make_series(gemini_client, "Portraits")
    prompts = ["a heron", "a lynx", "an owl", "a hare", "a wren"]
    inputs = await made_inputs(gemini_client, portraits["id"], prompts)
    files = {
        i["id"]: (await gemini_client.get(f"/api/images/{i['id']}/file")).content for i in inputs
    }
    # The made images go to the job's own series, not to the inputs'.
    restyled = await make_series(gemini_client, "Restyled")
    job = await make_job(gemini_client, restyled["id"], title="Watercolour")
    ok(await put_steps(gemini_client, job["id"], BATCH_STEPS))

    gemini.reset()
    gemini.latency_s = 0.3  # long enough for runs to overlap, if the limit let them
    gemini.fail_next(1, status=400)  # not retried: one run fails at once
    started = ok(
        await gemini_client.post(
            f"/api/jobs/{job['id']}/batches", json={"image_ids": [i["id"] for i in inputs]}
        ),
        202,
    )
    assert started["status"] == "running" and started["total"] == 5
    assert started["queued"] + started["running"] == 5 and started["done"] == 0

    batch = await wait_for_batch(gemini_client, started["id"])
    assert batch["status"] == "failed", batch
    assert (batch["succeeded"], batch["failed"], batch["cancelled"]) == (4, 1, 0)
    assert (batch["done"], batch["running"], batch["queued"]) == (5, 0, 0)
    assert batch["finished_at"] is not None
    # One run per image, in the order given.
    assert [r["input_image_id"] for r in batch["runs"]] == [i["id"] for i in inputs]
    # Never more than COG_BATCH_CONCURRENCY (2) runs of the batch at once; and two did overlap.
    assert gemini_settings.batch_concurrency == 2
    assert most_at_once(batch["runs"]) == 2

    # The server saw one call per run: the input image's file as the reference, and the
    # prompt rendered from it.
    requests = gemini.requests
    assert len(requests) == 5
    by_prompt = {r.prompt: r for r in requests}
    for image in inputs:
        request = by_prompt[
            f"Repaint {image['prompt']} ({image['width']}x{image['height']}, from Portraits)"
        ]
        assert [i.data for i in request.images] == [files[image["id"]]]

    engine = make_engine(gemini_settings.database_url)
    try:
        async with make_sessionmaker(engine)() as session:
            for summary in batch["runs"]:
                run = ok(await gemini_client.get(f"/api/runs/{summary['id']}"))
                assert run["batch_id"] == batch["id"]
                assert run["input_image_id"] == summary["input_image_id"]
                if run["status"] == "failed":
                    assert "400" in run["error"] and summary["image_ids"] == []
                    continue
                assert run["status"] == "succeeded"
                (made,) = summary["image_ids"]
                assert run["steps"][0]["image_ids"] == [made]
                image = ok(await gemini_client.get(f"/api/images/{made}"))
                assert image["series_id"] == restyled["id"]
                assert image["job_id"] == job["id"] and image["run_id"] == run["id"]
                links = await lineage_db.parents_of(session, uuid.UUID(made))
                assert [(str(p.id), link.role) for link, p in links] == [
                    (run["input_image_id"], "input")
                ]
    finally:
        await engine.dispose()
    listing = ok(await gemini_client.get(f"/api/series/{restyled['id']}/images"))
    assert len(listing["items"]) == 4


async def test_cancel_a_batch(gemini_client: httpx.AsyncClient, gemini: Any) -> None:
    series = await make_series(gemini_client, "Birds")
    inputs = [await make_image(gemini_client, series["id"], f"b{n}.png") for n in range(6)]
    job = await make_job(gemini_client, series["id"])
    steps = [
        {
            "kind": "image",
            "prompt": "Redraw {{ input.filename }}",
            "config": {"input_images": ["input"]},
        }
    ]
    ok(await put_steps(gemini_client, job["id"], steps))
    gemini.latency_s = 1.0
    started = ok(
        await gemini_client.post(
            f"/api/jobs/{job['id']}/batches", json={"image_ids": [i["id"] for i in inputs]}
        ),
        202,
    )
    await wait_until(gemini_client, started["id"], lambda b: b["running"] == 2)
    cancelled = ok(await gemini_client.post(f"/api/batches/{started['id']}/cancel"))
    # The runs that had not started are cancelled at once; the two running stop shortly.
    assert cancelled["cancel_requested"] is True
    assert cancelled["queued"] == 0 and cancelled["cancelled"] >= 4
    batch = await wait_for_batch(gemini_client, started["id"], seconds=5)
    gemini.latency_s = 0.0
    assert batch["status"] == "cancelled", batch
    assert batch["cancelled"] == 6 and batch["succeeded"] == 0
    assert {r["status"] for r in batch["runs"]} == {"cancelled"}
    never = [r for r in batch["runs"] if r["started_at"] is None]
    assert len(never) == 4
    for summary in never:
        run = ok(await gemini_client.get(f"/api/runs/{summary['id']}"))
        assert run["error"] == "Cancelled before it started."
        assert {s["status"] for s in run["steps"]} == {"cancelled"}
    again = await gemini_client.post(f"/api/batches/{started['id']}/cancel")
    assert again.status_code == 409 and "already ended" in again.json()["detail"]


async def test_a_plain_run_of_steps_that_use_input_is_refused(client: httpx.AsyncClient) -> None:
    series = await make_series(client)
    job = await make_job(client, series["id"])
    saved = await put_steps(
        client, job["id"], [{"kind": "llm", "prompt": "Describe {{ input.tags | join(', ') }}"}]
    )
    assert saved.status_code == 200, saved.text
    refused = await client.post(f"/api/jobs/{job['id']}/runs")
    assert refused.status_code == 422
    assert "run it as a batch" in refused.json()["detail"]
    # The reference alone counts too.
    image = await make_image(client, series["id"])
    saved = await put_steps(
        client,
        job["id"],
        [
            {
                "kind": "image",
                "prompt": "{{ base_prompt }}",
                "config": {"input_images": ["input", image["id"]]},
            }
        ],
    )
    assert saved.status_code == 200, saved.text
    assert (await client.post(f"/api/jobs/{job['id']}/runs")).status_code == 422
    assert ok(await client.get(f"/api/jobs/{job['id']}/runs"))["items"] == []
    # A typo among the references is named.
    typo = await put_steps(
        client, job["id"], [{"kind": "image", "prompt": "x", "config": {"input_images": ["inptu"]}}]
    )
    assert typo.status_code == 422 and "'inptu'" in typo.json()["detail"]


async def test_refusals_start_nothing(client: httpx.AsyncClient) -> None:
    series = await make_series(client)
    image = await make_image(client, series["id"])
    job = await make_job(client, series["id"])
    url = f"/api/jobs/{job['id']}/batches"

    no_steps = await client.post(url, json={"image_ids": [image["id"]]})
    assert no_steps.status_code == 422 and "no steps" in no_steps.json()["detail"]
    ok(await put_steps(client, job["id"], [{"kind": "llm", "prompt": "{{ base_prompt }}"}]))
    unused = await client.post(url, json={"image_ids": [image["id"]]})
    assert unused.status_code == 422 and "input.prompt" in unused.json()["detail"]

    ok(await put_steps(client, job["id"], [{"kind": "llm", "prompt": "Caption {{ input }}"}]))
    ghosts = [str(uuid.uuid4()), str(uuid.uuid4())]
    unknown = await client.post(url, json={"image_ids": [image["id"], *ghosts]})
    assert unknown.status_code == 422
    body = unknown.json()
    assert all(g in body["detail"] for g in ghosts) and image["id"] not in body["detail"]
    assert body["unknown_image_ids"] == ghosts
    for wrong in ({}, {"image_ids": [image["id"]], "series_id": series["id"]}):
        answer = await client.post(url, json=wrong)
        assert answer.status_code == 422 and "image_ids" in answer.json()["detail"]
    empty = await client.post(url, json={"image_ids": []})
    assert empty.status_code == 422 and "at least one" in empty.json()["detail"]
    bare = await make_series(client, "Bare")
    none = await client.post(url, json={"series_id": bare["id"]})
    assert none.status_code == 422 and "no images" in none.json()["detail"]
    missing = await client.post(url, json={"series_id": str(uuid.uuid4())})
    assert missing.status_code == 404
    nojob = await client.post(
        f"/api/jobs/{uuid.uuid4()}/batches", json={"image_ids": [image["id"]]}
    )
    assert nojob.status_code == 404
    assert (await client.get(f"/api/batches/{uuid.uuid4()}")).status_code == 404

    assert ok(await client.get(url))["items"] == []
    assert ok(await client.get(f"/api/jobs/{job['id']}/runs"))["items"] == []


async def test_a_batch_over_a_series_and_its_subseries(client: httpx.AsyncClient) -> None:
    """With the preview provider: no key needed, the flow is the same."""
    top = await make_series(client, "Top")
    child = await make_series(client, "Child", parent_id=top["id"])
    own = [await make_image(client, top["id"], f"t{n}.png") for n in range(2)]
    below = await make_image(client, child["id"], "c.png")
    job = await make_job(client, top["id"])
    ok(
        await put_steps(
            client, job["id"], [{"kind": "llm", "prompt": "Caption {{ input.filename }}"}]
        )
    )
    url = f"/api/jobs/{job['id']}/batches"

    first = ok(await client.post(url, json={"series_id": top["id"]}), 202)
    assert first["total"] == 2
    second = ok(
        await client.post(url, json={"series_id": top["id"], "include_subseries": True}), 202
    )
    assert second["total"] == 3
    done = await wait_for_batch(client, second["id"])
    assert done["status"] == "succeeded" and done["succeeded"] == 3
    # Oldest first, the series' own images before those below.
    assert [r["input_image_id"] for r in done["runs"]] == [own[0]["id"], own[1]["id"], below["id"]]
    for summary in done["runs"]:
        run = ok(await client.get(f"/api/runs/{summary['id']}"))
        assert run["steps"][0]["rendered_prompt"].startswith("Caption ")
    assert (await wait_for_batch(client, first["id"]))["status"] == "succeeded"

    # Newest first, a page at a time; the job's history lists the runs with their batch.
    page = ok(await client.get(f"{url}?limit=1"))
    assert [b["id"] for b in page["items"]] == [second["id"]]
    rest = ok(await client.get(f"{url}?limit=1&cursor={page['next_cursor']}"))
    assert [b["id"] for b in rest["items"]] == [first["id"]] and rest["next_cursor"] is None
    runs = ok(await client.get(f"/api/jobs/{job['id']}/runs"))["items"]
    assert len(runs) == 5 and {r["batch_id"] for r in runs} == {first["id"], second["id"]}


async def test_a_batch_over_the_images_of_a_series_with_a_tag(client: httpx.AsyncClient) -> None:
    """A tag narrows a series (and its sub-series) to the images tagged so: one run each,
    oldest first. A tag alone, or one no image has, starts nothing and says why."""
    top = await make_series(client, "Top")
    child = await make_series(client, "Child", parent_id=top["id"])
    images = [await make_image(client, top["id"], f"t{n}.png") for n in range(3)]
    below = await make_image(client, child["id"], "c.png")
    for image in (images[0], images[2], below):
        ok(await client.patch(f"/api/images/{image['id']}", json={"tags": ["Portrait"]}))
    job = await make_job(client, top["id"])
    ok(
        await put_steps(
            client, job["id"], [{"kind": "llm", "prompt": "Caption {{ input.filename }}"}]
        )
    )
    url = f"/api/jobs/{job['id']}/batches"

    alone = await client.post(url, json={"tag": "portrait"})
    assert alone.status_code == 422 and "give the series too" in alone.json()["detail"]
    nothing = await client.post(url, json={"series_id": top["id"], "tag": "landscape"})
    assert nothing.status_code == 422
    assert "no images tagged “landscape” in the series" in nothing.json()["detail"]
    assert ok(await client.get(url))["items"] == []

    # Tags are matched as they are kept: trimmed, lower case.
    tagged = ok(await client.post(url, json={"series_id": top["id"], "tag": " PORTRAIT "}), 202)
    assert tagged["total"] == 2
    done = await wait_for_batch(client, tagged["id"])
    assert done["status"] == "succeeded"
    assert [r["input_image_id"] for r in done["runs"]] == [images[0]["id"], images[2]["id"]]
    deep = ok(
        await client.post(
            url, json={"series_id": top["id"], "include_subseries": True, "tag": "portrait"}
        ),
        202,
    )
    done = await wait_for_batch(client, deep["id"])
    assert [r["input_image_id"] for r in done["runs"]] == [
        images[0]["id"],
        images[2]["id"],
        below["id"],
    ]


async def test_a_plain_run_is_not_held_behind_a_batch(
    tmp_path: Path, database_url: str, gemini: Any
) -> None:
    """A batch of six, one at a time, queued before a plain run: the plain run starts while the
    batch is still going, and the batch never has two runs at once."""
    settings = make_settings(
        tmp_path,
        database_url=database_url,
        provider="gemini",
        gemini_base_url=gemini.base_url,
        batch_concurrency=1,
        run_concurrency=3,
    )
    async for client in open_client(create_app(settings)):
        series = await make_series(client)
        inputs = [await make_image(client, series["id"], f"i{n}.png") for n in range(6)]
        batch_job = await make_job(client, series["id"])
        ok(
            await put_steps(
                client, batch_job["id"], [{"kind": "llm", "prompt": "About {{ input.filename }}"}]
            )
        )
        plain_job = await make_job(client, series["id"])
        ok(
            await put_steps(
                client, plain_job["id"], [{"kind": "llm", "prompt": "{{ base_prompt }}"}]
            )
        )
        gemini.latency_s = 0.3
        started = ok(
            await client.post(
                f"/api/jobs/{batch_job['id']}/batches",
                json={"image_ids": [i["id"] for i in inputs]},
            ),
            202,
        )
        plain = await run_job(client, plain_job["id"])
        assert plain["status"] == "succeeded"
        batch = await wait_for_batch(client, started["id"])
        gemini.latency_s = 0.0
        assert batch["status"] == "succeeded"
        assert plain["finished_at"] < batch["finished_at"]
        assert most_at_once(batch["runs"]) == 1


async def test_only_one_claimer_takes_the_last_slot(settings: Settings) -> None:
    """Two executors claim runs of one batch at the same moment, one slot free: one wins."""
    async for client in open_client(create_app(settings)):
        series = await make_series(client)
        inputs = [await make_image(client, series["id"], f"i{n}.png") for n in range(3)]
        job = await make_job(client, series["id"])
        ok(await put_steps(client, job["id"], [{"kind": "llm", "prompt": "{{ input }}"}]))
    # The app has stopped: no executor of its own takes the runs.
    engine = make_engine(settings.database_url)
    sessions = make_sessionmaker(engine)
    try:
        async with sessions() as session:
            batch = await batches_service.start(
                session,
                uuid.UUID(job["id"]),
                image_ids=[uuid.UUID(i["id"]) for i in inputs],
                concurrency=1,
            )
            ids = [
                uuid.UUID(r["id"])
                for r in (await batches_service.detail(session, batch.id))["runs"]
            ]

        async def claim(run_id: uuid.UUID, name: str) -> bool:
            async with sessions() as session:
                return await runs_db.claim(session, run_id, name, batch_limit=1)

        # Both claims start while another transaction holds the batch's row (and, on SQLite,
        # the write lock); they are let go at the same moment.
        async with sessions() as holder:
            await holder.execute(
                sa.update(Batch).where(Batch.id == batch.id).values(cancel_requested=False)
            )
            claims = asyncio.gather(claim(ids[1], "a"), claim(ids[2], "b"))
            await asyncio.sleep(0.3)
            assert not claims.done()  # each waits for the batch: they count one at a time
            await holder.commit()
        assert sorted(await claims) == [False, True]
        async with sessions() as session:
            view = await batches_service.view(session, batch.id)
            assert (view["running"], view["queued"]) == (1, 2)
            # A full batch offers nothing more to claim; a free slot offers its oldest run.
            assert await runs_db.queued(session, 10, batch_limit=1) == []
            assert await runs_db.queued(session, 10, batch_limit=2) == [ids[0]]
    finally:
        await engine.dispose()
