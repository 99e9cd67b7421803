"""API fuzzing: schemathesis against Cog's own OpenAPI document, on a live server on loopback.

uvicorn serves `create_app(settings)` on 127.0.0.1 in a background thread, with Gemini at the
fake server on loopback, so drafting and runs work; once on SQLite and once on PostgreSQL.
Schemathesis sends every operation of the document its coverage cases (boundary values, missing
and wrong-typed parameters, methods the path does not serve) and `MAX_EXAMPLES` generated
requests, valid and invalid, derandomized so that a run is the same every time. Every answer
must pass every built-in check: no 5xx, a status, content type, headers and body the document
declares, valid input accepted and invalid input refused (within `ALSO_REFUSED` below), and
two of Cog's own: a 4xx is JSON with a `detail`, a 405 names the methods the path serves.

Path parameters name seeded rows as well as random ids: a series with a sub-series and an image,
a job with steps and a finished run, and rows made on the spot for the operations that delete or
cancel, so those reach their real work too.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import socket
import tempfile
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
import uvicorn
from schemathesis.core import NotSet
from schemathesis.core.parameters import ParameterLocation

from cog.config import Settings
from cog.web.app import create_app
from tests.conftest import (
    clean_environment,
    gemini_environment,
    make_settings,
    pg_admin,
    pg_url,
)
from tests.factories import image_bytes

MAX_EXAMPLES = 30

# Answers the document cannot promise for valid input: each operation here may also refuse a
# request that matches its schema, for a reason no JSON schema states.
ALSO_REFUSED: dict[str, tuple[list[str], str]] = {
    "GET /api/series": (["422"], "`cursor` is opaque: only the server's own `next_cursor` pages"),
    "GET /api/series/{series_id}/images": (["422"], "`cursor` is opaque, as above"),
    "GET /api/series/{series_id}/jobs": (["422"], "`cursor` is opaque, as above"),
    "GET /api/jobs/{job_id}/runs": (["422"], "`cursor` is opaque, as above"),
    "POST /api/series/{series_id}/images": (
        ["413", "415", "422"],
        "a file's schema is bytes; only the bytes of a whole PNG, JPEG, WebP, GIF or AVIF pass",
    ),
    "PUT /api/jobs/{job_id}/steps": (
        ["422"],
        "a prompt must be a valid template, config keys depend on the kind, `input_images` name "
        "images of the series or earlier steps",
    ),
    "PATCH /api/jobs/{job_id}/steps/{position}": (["422"], "the step rules, as above"),
    "POST /api/jobs/{job_id}/draft": (["422"], "the job's base prompt may have been emptied"),
    "GET /api/images/export": (["422"], "exactly one of `ids` and a filter is needed"),
    "POST /api/images/export": (["422"], "exactly one of `ids` and `filter` is needed"),
    "POST /api/images/batch": (
        ["422"],
        "exactly one of `ids` and `filter`, and the fields the action needs (`series_id` for a "
        "move, `tags` to tag)",
    ),
    "GET /api/images/search": (
        ["422"],
        "`cursor` is opaque; a series must exist, `from` come before `to`, the words fit the "
        "limits",
    ),
    "GET /api/jobs/{job_id}/batches": (["422"], "`cursor` is opaque, as above"),
    "POST /api/jobs/{job_id}/batches": (
        ["422"],
        "exactly one of `image_ids` and `series_id`; the job's steps must use `input`; the "
        "images must exist",
    ),
    "POST /api/series/{series_id}/jobs": (
        ["422"],
        "a style source must be a series that exists; its picked images must be of it",
    ),
    "PATCH /api/jobs/{job_id}": (
        ["422"],
        "a style source as above; with the steps' own references, at most 14 images a step",
    ),
    "POST /api/restyles": (
        ["422"],
        "exactly one of `image_ids` and `series_id`; the images must exist; the style series "
        "needs images or a profile, and its picked images must be of it",
    ),
    "POST /api/images/{image_id}/versions": (
        ["413", "415", "422"],
        "a replacement's schema is bytes, as for uploads; an edit's prompt may be refused by "
        "the model",
    ),
}
ACCEPTED = ["2xx", "3xx", "401", "403", "404", "409", "429", "5xx"]


# --- the document, and Cog's own checks (beside the built-in ones) --------------------------------


def cog_document() -> dict[str, Any]:
    """The OpenAPI document `create_app` serves (the live server is checked to serve the same)."""
    with tempfile.TemporaryDirectory() as folder:
        document: dict[str, Any] = create_app(
            make_settings(Path(folder), provider="preview")
        ).openapi()
        return document


schema = schemathesis.openapi.from_dict(
    cog_document(),
    config=schemathesis.Config.from_dict(
        {
            "request-timeout": 10,
            "generation": {
                "max-examples": MAX_EXAMPLES,
                "deterministic": True,
                "database": "none",
                # No database stores NUL in text, so Cog refuses it in every field with a 422
                # that names the field (test_series_api.py pins that); schemathesis would
                # otherwise count a NUL as valid input for every string.
                "allow-x00": False,
            },
            "operations": [
                {
                    "include-name": name,
                    "checks": {
                        "positive_data_acceptance": {"expected-statuses": ACCEPTED + statuses}
                    },
                }
                for name, (statuses, _reason) in ALSO_REFUSED.items()
            ],
        }
    ),
)


def error_has_detail(
    ctx: schemathesis.CheckContext, response: schemathesis.Response, case: schemathesis.Case
) -> bool | None:
    """Every 4xx answer is JSON with a non-empty `detail`."""
    if not 400 <= response.status_code < 500:
        return None
    content_type = response.headers.get("content-type", [""])[0]
    assert content_type.startswith("application/json"), (
        f"a {response.status_code} answered {content_type!r}, not JSON"
    )
    body = response.json()
    assert isinstance(body, dict) and body.get("detail"), (
        f"a {response.status_code} has no `detail`: {body!r}"
    )
    return True


def allow_names_methods(
    ctx: schemathesis.CheckContext, response: schemathesis.Response, case: schemathesis.Case
) -> bool | None:
    """A 405 names the methods the path serves (`allow_header_conformance` checks which, but
    lets an empty `Allow` pass)."""
    if response.status_code != 405:
        return None
    allow = ", ".join(response.headers.get("allow", []))
    assert allow.strip(), "a 405 without the methods the path serves in `Allow`"
    return True


# --- the live server ----------------------------------------------------------------------------


class LiveServer:
    """`create_app(settings)` under uvicorn, on a free port of 127.0.0.1, in a thread."""

    def __init__(self, settings: Settings) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.base_url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        config = uvicorn.Config(
            create_app(settings),
            log_config=None,
            log_level="warning",
            access_log=False,
            ws="none",
            timeout_graceful_shutdown=2,
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, name="cog-live", daemon=True
        )

    def __enter__(self) -> LiveServer:
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the live Cog server did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)
        self.sock.close()


# --- seed data ----------------------------------------------------------------------------------

# A seeded value: an id (or a step position), or a function that makes a fresh row and answers
# its id.
Seed = str | int | Callable[[], str]


@dataclass
class Seeds:
    """Values path parameters may take besides random ones: `ids` by parameter name, and
    `by_operation` in place of those for one operation."""

    ids: dict[str, list[Seed]]
    by_operation: dict[str, dict[str, list[Seed]]]

    def pool(self, operation: str) -> dict[str, list[Seed]]:
        return self.by_operation.get(operation, self.ids)


def ok(response: httpx.Response, status: int = 200) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    return body


def seed(client: httpx.Client) -> Seeds:
    def series(title: str, **fields: Any) -> str:
        return str(ok(client.post("/api/series", json={"title": title, **fields}), 201)["id"])

    def image(series_id: str) -> str:
        files = [("files", ("seed.png", image_bytes(color=(10, 120, 30)), "image/png"))]
        response = client.post(f"/api/series/{series_id}/images", files=files)
        return str(ok(response, 201)["items"][0]["id"])

    def job(series_id: str, steps: list[dict[str, Any]]) -> str:
        body = {"title": "Dawn", "base_prompt": "a fox in a misty forest at dawn"}
        job_id = str(ok(client.post(f"/api/series/{series_id}/jobs", json=body), 201)["id"])
        ok(client.put(f"/api/jobs/{job_id}/steps", json={"steps": steps}))
        return job_id

    def start(job_id: str) -> str:
        return str(ok(client.post(f"/api/jobs/{job_id}/runs"), 202)["id"])

    def finished(run_id: str) -> str:
        deadline = time.monotonic() + 20
        while ok(client.get(f"/api/runs/{run_id}"))["status"] != "succeeded":
            assert time.monotonic() < deadline, f"run {run_id} did not succeed"
            time.sleep(0.05)
        return run_id

    main = series("Autumn", description="Low sun, fog", tags=["autumn", "forest"])
    child = series("Birches", parent_id=main)
    picture = image(main)
    describe = {"kind": "llm", "prompt": "Describe {{ base_prompt }} for {{ series.title }}."}
    paint = {
        "kind": "image",
        "prompt": "{{ previous.text }}",
        "config": {"aspect_ratio": "16:9", "input_images": [picture]},
    }
    the_job = job(main, [describe, paint])
    the_run = finished(start(the_job))
    # Only `POST .../runs` names this job, so no edit leaves it without steps.
    runnable = job(main, [describe])

    def fresh_series() -> str:
        made = series("Doomed")
        series("Doomed child", parent_id=made)
        image(made)
        return made

    def fresh_job() -> str:
        made = job(main, [describe])
        start(made)
        return made

    return Seeds(
        ids={
            "series_id": [main, child],
            "image_id": [picture],
            "job_id": [the_job],
            "run_id": [the_run],
            "position": [0, 1],
        },
        by_operation={
            "DELETE /api/series/{series_id}": {"series_id": [fresh_series]},
            "DELETE /api/images/{image_id}": {"image_id": [lambda: image(main)]},
            "DELETE /api/jobs/{job_id}": {"job_id": [fresh_job]},
            "POST /api/jobs/{job_id}/runs": {"job_id": [runnable]},
            "POST /api/runs/{run_id}/cancel": {"run_id": [the_run, lambda: start(runnable)]},
            "GET /api/runs/{run_id}/events": {"run_id": [the_run, lambda: start(runnable)]},
        },
    )


def with_seeded_ids(case: schemathesis.Case, seeds: Seeds) -> None:
    """Swap valid path parameters for seeded values in some cases. Which one (or none) follows
    from the generated request, so a derandomized run makes the same choices every time."""
    meta = case.meta
    if not case.path_parameters or (
        meta is not None and meta.is_negative_at(ParameterLocation.PATH)
    ):
        return
    pool = seeds.pool(case.operation.label)
    body = None if isinstance(case.body, NotSet) else case.body
    request = json.dumps([case.path_parameters, case.query, body], sort_keys=True, default=repr)
    chosen = dict(case.path_parameters)
    for name in case.path_parameters:
        if name in pool:
            options: list[Seed | None] = [None, *pool[name]]
            pick = options[zlib.crc32(f"{name} {request}".encode()) % len(options)]
            if pick is not None:
                chosen[name] = pick() if callable(pick) else pick
    case.path_parameters = chosen


# --- the test -----------------------------------------------------------------------------------


@dataclass
class Live:
    base_url: str
    seeds: Seeds


@pytest.fixture(
    scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def live(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, gemini_server: Any
) -> Iterator[Live]:
    """A seeded Cog on one database, under uvicorn on loopback, Gemini at the fake server."""
    dialect = str(request.param)
    folder = tmp_path_factory.mktemp(f"fuzz-{dialect}")
    with contextlib.ExitStack() as stack:
        if dialect == "sqlite":
            target = folder / "cog.db"
            shutil.copyfile(request.getfixturevalue("sqlite_template"), target)
            database_url = f"sqlite+aiosqlite:///{target}"
        else:
            name = f"cog_test_fuzz_{os.getpid()}"
            template = request.getfixturevalue("pg_template")
            asyncio.run(pg_admin(f"CREATE DATABASE {name} TEMPLATE {template}"))
            stack.callback(
                lambda: asyncio.run(pg_admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            )
            database_url = pg_url(name)
        # What the conftest's fixtures do for one test (this one outlives them): the app reads
        # its settings and the SDK its key when the app is made.
        environment = stack.enter_context(pytest.MonkeyPatch.context())
        clean_environment(environment)
        gemini_environment(environment)
        gemini_server.reset()
        settings = make_settings(
            folder,
            database_url=database_url,
            storage_url=(folder / "storage").as_uri(),
            provider="gemini",
            gemini_base_url=gemini_server.base_url,
            provider_retry_initial_s=0.01,
        )
        server = stack.enter_context(LiveServer(settings))
        client = stack.enter_context(httpx.Client(base_url=server.base_url, timeout=20))
        assert ok(client.get("/openapi.json")) == schema.raw_schema, "another document is served"
        yield Live(server.base_url, seed(client))


@schema.parametrize()
def test_api(case: schemathesis.Case, live: Live) -> None:
    with_seeded_ids(case, live.seeds)
    case.call_and_validate(
        base_url=live.base_url, additional_checks=[error_has_detail, allow_names_methods]
    )
