"""With `COG_API_TOKEN` set, every route needs the token (bearer header or the login cookie);
without it, every route is open. Every answer carries the security headers.

The route list is walked from the app itself, so a route added later is covered by these tests
without anyone remembering to list it here.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from fastapi import FastAPI
from starlette.routing import BaseRoute, Mount, Route

from cog.web.app import create_app
from cog.web.security import COOKIE
from tests.conftest import make_settings, open_client
from tests.factories import make_image, make_series

TOKEN = "s3cret"
BEARER = {"Authorization": f"Bearer {TOKEN}"}
HTML = {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}

# The only ways in without the token: the login form and the static assets it uses.
OPEN = {
    ("GET", "/cog/login"),
    ("POST", "/cog/login"),
    ("GET", "/static/{path}"),
    ("HEAD", "/static/{path}"),
}
# A real file behind the static mount, to request in place of its `{path}`.
STATIC_FILE = "favicon.svg"


@dataclass(frozen=True)
class Endpoint:
    method: str
    path: str  # a template: "/api/series/{series_id}"

    @property
    def is_api(self) -> bool:
        return self.path.startswith("/api/") or self.path == "/openapi.json"

    @property
    def is_page(self) -> bool:
        """Part of the HTML app: a page, a fragment or a form target outside the JSON API."""
        return not self.is_api and not self.path.startswith("/static/")

    def url(self, ids: dict[str, str]) -> str:
        names = set(re.findall(r"{(\w+)}", self.path))
        missing = names - ids.keys()
        assert not missing, f"no value to fill {missing} of {self.path}: extend `ids`"
        return self.path.format(**ids)

    def __str__(self) -> str:
        return f"{self.method} {self.path}"


def walk_routes(routes: Sequence[BaseRoute], prefix: str = "") -> Iterator[Endpoint]:
    """Every (method, path) the app answers, through included routers and mounts.

    FastAPI 0.165 keeps an included router as an `_IncludedRouter` whose `original_router` holds
    the routes (their paths already carry the router's own prefix) and whose `include_context`
    holds the prefix given to `include_router`. Anything else unknown fails loudly, so a change
    in FastAPI cannot quietly shrink the list these tests check.
    """
    for route in routes:
        original = getattr(route, "original_router", None)
        if original is not None:
            yield from walk_routes(original.routes, prefix + route.include_context.prefix)  # type: ignore[attr-defined]
        elif isinstance(route, Route):
            assert route.methods, f"route {route.path} answers no method"
            for method in sorted(route.methods):
                # `path_format` drops convertors: `{image_id:uuid}` is `{image_id}`.
                yield Endpoint(method, prefix + route.path_format)
        elif isinstance(route, Mount):
            if route.routes:
                yield from walk_routes(route.routes, prefix + route.path)
            else:  # an ASGI app such as StaticFiles: it answers GET and HEAD under the mount
                for method in ("GET", "HEAD"):
                    yield Endpoint(method, f"{prefix}{route.path}/{{path}}")
        else:
            raise AssertionError(f"unknown route type {type(route).__name__}: extend walk_routes")


def endpoints(app: FastAPI) -> list[Endpoint]:
    found = list(dict.fromkeys(walk_routes(app.routes)))
    # The walk must see at least what the OpenAPI document lists, and the pages around it.
    listed = {
        Endpoint(method.upper(), path)
        for path, operations in app.openapi()["paths"].items()
        for method in operations
    }
    assert listed <= set(found), listed - set(found)
    for page in ("/", "/cog", "/cog/series/{series_id}", "/cog/images/{image_id}", "/docs"):
        assert Endpoint("GET", page) in found, page
    assert Endpoint("GET", "/openapi.json") in found
    assert {(e.method, e.path) for e in found} >= OPEN
    # Destructive calls last, so every other call meets the rows it names.
    return sorted(found, key=lambda e: e.method == "DELETE")


def guarded_app(tmp_path: Path, database_url: str, **overrides: Any) -> FastAPI:
    return create_app(
        make_settings(
            tmp_path,
            database_url=database_url,
            storage_url=(tmp_path / "storage").as_uri(),
            **overrides,
        )
    )


@dataclass
class Clients:
    app: FastAPI
    anon: httpx.AsyncClient
    authed: httpx.AsyncClient


async def _clients(app: FastAPI) -> AsyncIterator[Clients]:
    async for anon in open_client(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://testserver", headers=BEARER
        ) as authed:
            yield Clients(app, anon, authed)


@pytest.fixture
async def guarded(tmp_path: Path, database_url: str) -> AsyncIterator[Clients]:
    async for clients in _clients(guarded_app(tmp_path, database_url, api_token=TOKEN)):
        yield clients


@pytest.fixture
async def unguarded(tmp_path: Path, database_url: str) -> AsyncIterator[Clients]:
    async for clients in _clients(guarded_app(tmp_path, database_url)):
        yield clients


async def seed(client: httpx.AsyncClient) -> dict[str, str]:
    """A series with an image and a job that has run once: a value for every path parameter."""
    series = await make_series(client, "Guarded", tags=["t"])
    image = await make_image(client, series["id"])
    job = await client.post(
        f"/api/series/{series['id']}/jobs", json={"title": "J", "base_prompt": "a lighthouse"}
    )
    assert job.status_code == 201, job.text
    job_id = job.json()["id"]
    steps = [{"kind": "llm", "prompt": "Describe {{ base_prompt }}."}]
    assert (await client.put(f"/api/jobs/{job_id}/steps", json={"steps": steps})).is_success
    run = await client.post(f"/api/jobs/{job_id}/runs")
    assert run.status_code == 202, run.text
    run_id = run.json()["id"]
    for _ in range(200):  # the run ends by itself (the preview provider answers at once)
        if (await client.get(f"/api/runs/{run_id}")).json()["status"] not in ("queued", "running"):
            break
        await asyncio.sleep(0.05)
    batch_job = await client.post(
        f"/api/series/{series['id']}/jobs", json={"title": "B", "base_prompt": "ink"}
    )
    batch_steps = [{"kind": "llm", "prompt": "Describe {{ input.filename }}."}]
    batch_job_id = batch_job.json()["id"]
    assert (
        await client.put(f"/api/jobs/{batch_job_id}/steps", json={"steps": batch_steps})
    ).is_success
    batch = await client.post(
        f"/api/jobs/{batch_job_id}/batches", json={"image_ids": [image["id"]]}
    )
    assert batch.status_code == 202, batch.text
    return {
        "series_id": series["id"],
        "image_id": image["id"],
        "job_id": job_id,
        "run_id": run_id,
        "batch_id": batch.json()["id"],
        "position": "0",
        "number": "1",
        "path": STATIC_FILE,
    }


async def call(
    client: httpx.AsyncClient, endpoint: Endpoint, ids: dict[str, str], **kwargs: Any
) -> httpx.Response:
    if endpoint.method in ("POST", "PUT", "PATCH"):
        kwargs.setdefault("json", {})
    return await client.request(endpoint.method, endpoint.url(ids), **kwargs)


def assert_unauthorized(response: httpx.Response, endpoint: Endpoint) -> None:
    assert response.status_code == 401, (str(endpoint), response.status_code, response.text)
    assert response.headers["www-authenticate"].startswith("Bearer")
    if endpoint.method != "HEAD":
        assert "token" in response.json()["detail"]


def assert_login_redirect(response: httpx.Response, endpoint: Endpoint, url: str) -> None:
    assert response.status_code == 303, (str(endpoint), response.status_code, response.text)
    location = urlsplit(response.headers["location"])
    assert (location.scheme, location.netloc, location.path) == ("", "", "/cog/login")
    assert parse_qs(location.query)["next"] == [url]


# --- every route --------------------------------------------------------------------------------


async def test_every_route_needs_the_token(guarded: Clients) -> None:
    ids = await seed(guarded.authed)
    checked = 0
    every = endpoints(guarded.app)
    for endpoint in every:
        if (endpoint.method, endpoint.path) in OPEN:
            continue
        url = endpoint.url(ids)
        # No credentials at all: a JSON 401, or (a browser asking for a page) the login form.
        assert_unauthorized(await call(guarded.anon, endpoint, ids), endpoint)
        html = await call(guarded.anon, endpoint, ids, headers=HTML)
        if endpoint.is_page and endpoint.method == "GET":
            assert_login_redirect(html, endpoint, url)  # and back here once signed in
        elif endpoint.is_page and html.status_code == 303:  # a form sent after the cookie expired
            assert urlsplit(html.headers["location"]).path == "/cog/login", str(endpoint)
        else:
            assert_unauthorized(html, endpoint)
        # Wrong credentials of every kind.
        for headers in (
            {"Authorization": "Bearer wrong"},
            {"Authorization": f"Bearer {TOKEN}x"},
            {"Authorization": f"Basic {TOKEN}"},
            {"Authorization": TOKEN},
            {"Cookie": f"{COOKIE}={TOKEN}"},
            {"Cookie": f"{COOKIE}=0000"},
        ):
            assert_unauthorized(await call(guarded.anon, endpoint, ids, headers=headers), endpoint)
        # The token opens it: whatever it answers, it is neither 401 nor a server error.
        answer = await call(guarded.authed, endpoint, ids)
        assert answer.status_code != 401, (str(endpoint), answer.text)
        assert answer.status_code < 500, (str(endpoint), answer.text)
        checked += 1
    assert checked == len(every) - len(OPEN) >= 19


async def test_the_open_routes_stay_open(guarded: Clients) -> None:
    login = await guarded.anon.get("/cog/login")
    assert login.status_code == 200
    assert 'name="token"' in login.text
    static = await guarded.anon.get(f"/static/{STATIC_FILE}")
    assert static.status_code == 200
    # The open prefixes are exact: a look-alike path is still guarded.
    for path in ("/cog/loginx", "/static", "/cog/login/../../api/series"):
        assert (await guarded.anon.get(path)).status_code == 401, path


async def test_without_a_token_every_route_is_open(unguarded: Clients) -> None:
    ids = await seed(unguarded.anon)
    for endpoint in endpoints(unguarded.app):
        answer = await call(unguarded.anon, endpoint, ids)
        assert answer.status_code != 401, (str(endpoint), answer.text)
        assert answer.status_code < 500, (str(endpoint), answer.text)
    pages = await unguarded.anon.get("/cog", headers=HTML)
    assert pages.status_code == 200


async def test_the_bearer_scheme_is_case_insensitive(guarded: Clients) -> None:
    response = await guarded.anon.get("/api/series", headers={"Authorization": f"bearer {TOKEN}"})
    assert response.status_code == 200


# --- the login form -----------------------------------------------------------------------------


async def test_login_sets_a_strict_http_only_cookie_that_opens_pages_and_api(
    guarded: Clients,
) -> None:
    ids = await seed(guarded.authed)
    target = f"/cog/series/{ids['series_id']}"
    assert (await guarded.anon.get(target, headers=HTML)).status_code == 303

    response = await guarded.anon.post("/cog/login", data={"token": TOKEN, "next": target})
    assert response.status_code == 303
    assert response.headers["location"] == target
    cookie = response.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE}=")
    attributes = {part.strip().split("=")[0].lower() for part in cookie.split(";")}
    assert {"httponly", "samesite", "path"} <= attributes
    assert re.search(r"samesite=strict", cookie, re.IGNORECASE)
    assert TOKEN not in cookie  # the cookie proves the token without holding it

    # The client keeps the cookie: the pages and the API open.
    for url in ("/cog", target, f"/cog/images/{ids['image_id']}"):
        page = await guarded.anon.get(url, headers=HTML)
        assert page.status_code == 200, url
    assert (await guarded.anon.get("/api/series")).status_code == 200
    assert (await guarded.anon.get(f"/api/images/{ids['image_id']}/file")).status_code == 200


async def test_login_with_a_wrong_token_is_refused(guarded: Clients) -> None:
    response = await guarded.anon.post("/cog/login", data={"token": "nope", "next": "/cog"})
    assert response.status_code == 401
    assert response.headers["content-type"].startswith("text/html")
    assert "Wrong token" in response.text
    assert "set-cookie" not in response.headers
    assert (await guarded.anon.get("/api/series")).status_code == 401


async def test_login_without_a_token_field_is_refused(guarded: Clients) -> None:
    response = await guarded.anon.post("/cog/login", data={"next": "/cog"})
    assert response.status_code == 422
    assert "set-cookie" not in response.headers


EVIL_TARGETS = [
    "//evil.example",
    "//evil.example/cog",
    "https://evil.example",
    "https://evil.example/cog",
    "http:evil.example",
    "/\\evil.example",
    "\\\\evil.example",
    "/\t/evil.example",
    "/\n/evil.example",
    "javascript:alert(1)",
    "evil.example",
]


def assert_same_site(location: str) -> None:
    parts = urlsplit(location)
    assert parts.scheme == "" and parts.netloc == "", location
    assert location.startswith("/") and not location.startswith("//"), location
    assert "\\" not in location and "evil.example" not in parts.path.lstrip("/").split("/")[0]


@pytest.mark.parametrize("target", EVIL_TARGETS)
async def test_login_never_redirects_off_site(guarded: Clients, target: str) -> None:
    form = await guarded.anon.get("/cog/login", params={"next": target})
    assert form.status_code == 200
    hidden = re.search(r'name="next" value="([^"]*)"', form.text)
    assert hidden is not None
    assert "evil.example" not in hidden.group(1)

    response = await guarded.anon.post("/cog/login", data={"token": TOKEN, "next": target})
    assert response.status_code == 303
    assert_same_site(response.headers["location"])
    assert response.headers["location"] == "/cog"


async def test_the_redirect_to_login_keeps_the_page_asked_for(guarded: Clients) -> None:
    response = await guarded.anon.get("/cog", headers=HTML)
    assert_login_redirect(response, Endpoint("GET", "/cog"), "/cog")
    form = await guarded.anon.get(response.headers["location"])
    assert 'name="next" value="/cog"' in form.text


# --- security headers ---------------------------------------------------------------------------


def assert_security_headers(response: httpx.Response, *, page: bool) -> None:
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-frame-options"] == "DENY"
    if page:
        csp = response.headers["content-security-policy"]
        assert "default-src 'self'" in csp
        assert "frame-ancestors 'none'" in csp
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp


async def test_security_headers_on_every_kind_of_answer(guarded: Clients) -> None:
    ids = await seed(guarded.authed)
    pages = [
        await guarded.authed.get("/cog"),
        await guarded.authed.get(f"/cog/series/{ids['series_id']}"),
        await guarded.authed.get(f"/cog/images/{ids['image_id']}"),
        await guarded.anon.get("/cog/login"),
        await guarded.anon.post("/cog/login", data={"token": "nope"}),
    ]
    for response in pages:
        assert response.headers["content-type"].startswith("text/html")
        assert_security_headers(response, page=True)
    others = [
        await guarded.anon.get("/api/series"),  # the 401 itself
        await guarded.anon.get("/cog", headers=HTML),  # the redirect to login
        await guarded.authed.get("/api/series"),
        await guarded.authed.get(f"/api/images/{ids['image_id']}/file"),
        await guarded.authed.get(f"/api/images/{ids['image_id']}/thumbnail"),
        await guarded.authed.get("/api/series/00000000-0000-0000-0000-000000000000"),
        await guarded.authed.get("/docs"),
    ]
    for response in others:
        assert_security_headers(response, page=False)


async def test_another_sites_page_cannot_change_anything(client: httpx.AsyncClient) -> None:
    """Without a token, a page on another site could post to a Cog on loopback (CSRF)."""
    attempts = [
        {"sec-fetch-site": "cross-site"},
        {"sec-fetch-site": "same-site"},
        {"origin": "https://evil.example"},
        {"origin": "null"},
    ]
    for headers in attempts:
        response = await client.post("/api/series", json={"title": "Planted"}, headers=headers)
        assert response.status_code == 403, headers
        assert "Cross-site" in response.json()["detail"]
    assert (await client.get("/api/series")).json()["items"] == []
    # Cog's own pages (same origin) and scripts (no browser headers) are let through.
    own = await client.post(
        "/api/series",
        json={"title": "Mine"},
        headers={"sec-fetch-site": "same-origin", "origin": "http://testserver"},
    )
    assert own.status_code == 201, own.text
    script = await client.post("/api/series", json={"title": "Scripted"})
    assert script.status_code == 201
    # Reading is never refused: a cross-site GET cannot change anything.
    listing = await client.get("/api/series", headers={"sec-fetch-site": "cross-site"})
    assert listing.status_code == 200
