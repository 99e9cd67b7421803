"""Shared fixtures: settings under tmp_path, SQLite and PostgreSQL databases made from a
migrated template, a local S3-compatible server, and the app behind an in-process client."""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from fastapi import FastAPI

from cog.config import Settings
from cog.db.migrate import upgrade
from cog.db.session import make_engine
from cog.storage import ObjectStore, make_store
from cog.web.app import create_app

PG_HOST = os.environ.get("COG_TEST_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("COG_TEST_PG_PORT", "5432"))
PG_USER = os.environ.get("COG_TEST_PG_USER", "postgres")
# CI sets this so a missing server fails the run instead of skipping half the suite.
REQUIRE_POSTGRES = os.environ.get("COG_TEST_REQUIRE_POSTGRES") == "1"

_counter = itertools.count()


def pg_url(database: str, driver: str = "asyncpg") -> str:
    return f"postgresql+{driver}://{PG_USER}@{PG_HOST}:{PG_PORT}/{database}"


async def pg_admin(*statements: str) -> None:
    conn = await asyncpg.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, database="postgres")
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


def _postgres_reachable() -> bool:
    try:
        with socket.create_connection((PG_HOST, PG_PORT), timeout=1):
            return True
    except OSError:
        return False


def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No COG_* settings or Gemini keys from the machine."""
    for name in list(os.environ):
        if name.startswith("COG_") and not name.startswith("COG_TEST_"):
            monkeypatch.delenv(name)
    for name in ("GEMINI_API_KEY", "GOOGLE_API_KEY", "GOOGLE_GENAI_USE_VERTEXAI"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests see only the settings they make."""
    clean_environment(monkeypatch)


# --- databases ----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sqlite-template") / "cog.db"

    async def build() -> None:
        engine = make_engine(f"sqlite+aiosqlite:///{path}")
        await upgrade(engine)
        await engine.dispose()

    asyncio.run(build())
    return path


@pytest.fixture(scope="session")
def pg_template() -> Iterator[str]:
    if not _postgres_reachable():
        if REQUIRE_POSTGRES:
            pytest.fail(f"PostgreSQL is not reachable on {PG_HOST}:{PG_PORT}")
        pytest.skip(f"PostgreSQL is not reachable on {PG_HOST}:{PG_PORT}")
    name = f"cog_test_tmpl_{os.getpid()}"

    async def build() -> None:
        await pg_admin(f"DROP DATABASE IF EXISTS {name}", f"CREATE DATABASE {name}")
        engine = make_engine(pg_url(name))
        await upgrade(engine)
        await engine.dispose()

    asyncio.run(build())
    yield name
    asyncio.run(pg_admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))


@pytest.fixture
def pg_database(pg_template: str) -> Iterator[str]:
    """A fresh, migrated PostgreSQL database for one test; answers its name."""
    name = f"cog_test_{os.getpid()}_{next(_counter)}"
    asyncio.run(pg_admin(f"CREATE DATABASE {name} TEMPLATE {pg_template}"))
    yield name
    asyncio.run(pg_admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))


@pytest.fixture
def empty_pg_database() -> Iterator[str]:
    """A PostgreSQL database with nothing in it (for schema and migration tests)."""
    if not _postgres_reachable():
        if REQUIRE_POSTGRES:
            pytest.fail(f"PostgreSQL is not reachable on {PG_HOST}:{PG_PORT}")
        pytest.skip(f"PostgreSQL is not reachable on {PG_HOST}:{PG_PORT}")
    name = f"cog_test_empty_{os.getpid()}_{next(_counter)}"
    asyncio.run(pg_admin(f"CREATE DATABASE {name}"))
    yield name
    asyncio.run(pg_admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def dialect(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def database_url(dialect: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if dialect == "sqlite":
        template: Path = request.getfixturevalue("sqlite_template")
        target = tmp_path / "db" / "cog.db"
        target.parent.mkdir()
        shutil.copyfile(template, target)
        return f"sqlite+aiosqlite:///{target}"
    return pg_url(request.getfixturevalue("pg_database"))


# --- object storage -----------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """A real S3-compatible HTTP server (moto's standalone server) on loopback."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    import boto3

    boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
    ).create_bucket(Bucket="cog-images")
    yield endpoint
    server.stop()


@pytest.fixture
def s3_storage(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Settings for the S3 store, under a prefix of its own so tests never see each other."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    return {
        "storage_url": f"s3://cog-images/t-{uuid.uuid4().hex[:12]}",
        "s3_endpoint_url": s3_endpoint,
    }


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.s3)])
def storage_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def storage_settings(
    storage_kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> dict[str, str]:
    if storage_kind == "s3":
        result: dict[str, str] = request.getfixturevalue("s3_storage")
        return result
    return {"storage_url": (tmp_path / "storage").as_uri()}


# --- settings and the app -----------------------------------------------------------------------


def make_settings(tmp_path: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {"data_dir": tmp_path / "data", "_env_file": None}
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    """Settings on the parametrized database and a local folder store."""
    return make_settings(
        tmp_path, database_url=database_url, storage_url=(tmp_path / "storage").as_uri()
    )


@pytest.fixture
def store(settings: Settings) -> ObjectStore:
    return make_store(settings)


async def open_client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield client


@pytest.fixture
async def app(settings: Settings) -> FastAPI:
    return create_app(settings)


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async for c in open_client(app):
        yield c


def stored_keys(root: Path) -> list[str]:
    """Every file under a local store folder, as keys."""
    if not root.exists():
        return []
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


# --- Gemini over loopback -----------------------------------------------------------------------


@pytest.fixture(scope="session")
def gemini_server() -> Iterator[Any]:
    """The fake Gemini server (real HTTP on loopback, Gemini's REST wire format)."""
    from cog.testing.gemini_server import GeminiTestServer

    with GeminiTestServer() as server:
        yield server


def gemini_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The SDK's environment: a key, and nothing pointing it elsewhere."""
    monkeypatch.setenv("GOOGLE_API_KEY", "test-key")
    for name in (
        "GOOGLE_GEMINI_BASE_URL",
        "GOOGLE_GENAI_API_VERSION",
        "GOOGLE_GENAI_USE_ENTERPRISE",
    ):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def gemini(gemini_server: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A reset fake server, with the SDK's environment pointing at nothing else."""
    gemini_server.reset()
    gemini_environment(monkeypatch)
    return gemini_server


@pytest.fixture
def gemini_settings(tmp_path: Path, database_url: str, gemini: Any) -> Settings:
    """Settings for a Cog whose providers are Gemini through the SDK, at the fake server."""
    return make_settings(
        tmp_path,
        database_url=database_url,
        storage_url=(tmp_path / "storage").as_uri(),
        provider="gemini",
        gemini_base_url=gemini.base_url,
        provider_retry_initial_s=0.01,
        run_stale_after_s=2.0,
    )


@pytest.fixture
async def gemini_client(gemini_settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async for c in open_client(create_app(gemini_settings)):
        yield c


async def wait_for_run(
    client: httpx.AsyncClient, run_id: str, *, seconds: float = 20.0
) -> dict[str, Any]:
    """Poll a run until it ends; answers its final state."""
    deadline = asyncio.get_running_loop().time() + seconds
    while True:
        response = await client.get(f"/api/runs/{run_id}")
        assert response.status_code == 200, response.text
        run: dict[str, Any] = response.json()
        if run["status"] in ("succeeded", "failed", "cancelled"):
            return run
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"run {run_id} did not end in {seconds}s: {run}")
        await asyncio.sleep(0.05)
