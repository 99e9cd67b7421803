"""Fixtures of the end-to-end tests: real `cog serve` and fake Gemini processes, and Chromium."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, sync_playwright

from cog.testing.gemini_server import GeminiTestServer
from tests.conftest import free_port, pg_url
from tests.e2e.browser import CHROMIUM, CHROMIUM_ARGS, Cog, Watch, start_cog
from tests.e2e.cli import COMMAND, Cli, CliServer
from tests.e2e.processes import (
    LATENCY_MS,
    STALE_AFTER_S,
    START_WITHIN_S,
    Proc,
    Server,
    stop_process,
)


@pytest.fixture(scope="session")
def base_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The machine's environment without any Cog or Gemini setting. Compiled modules are
    cached in a folder of the test session (not in the virtualenv), so each process after the
    first starts in a second or two, even where PYTHONDONTWRITEBYTECODE is set."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("COG_", "GEMINI_", "GOOGLE_", "PYTHONDONTWRITEBYTECODE"))
    }
    env["PYTHONPYCACHEPREFIX"] = str(tmp_path_factory.mktemp("pycache"))
    return env


@pytest.fixture
def gemini_url(tmp_path: Path, base_env: dict[str, str]) -> Iterator[str]:
    """The fake Gemini server as a subprocess; every call takes LATENCY_MS."""
    log = tmp_path / "gemini.log"
    with log.open("wb") as sink:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "cog.testing.gemini_server",
                "--port",
                str(free_port()),
                "--latency-ms",
                str(LATENCY_MS),
            ],
            env=base_env,
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=sink,
        )
    fake = Proc(proc, log)
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().decode().strip()  # its first line is its URL
        assert url.startswith("http://127.0.0.1:"), fake.output()
        yield url
    finally:
        stop_process(fake.proc)
        if proc.stdout is not None:
            proc.stdout.close()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def server_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where the servers keep their data: SQLite in the data dir, or a fresh migrated
    PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'data' / 'cog.db'}"
    return pg_url(request.getfixturevalue("pg_database"))


@pytest.fixture
def serve(
    tmp_path: Path, base_env: dict[str, str], gemini_url: str, server_database_url: str
) -> Iterator[Callable[..., Server]]:
    """Start `cog serve` on one data dir and database; every server is stopped at the end."""
    started: list[Server] = []

    def start(**settings: str) -> Server:
        port = free_port()
        env = {
            **base_env,
            "COG_DATA_DIR": str(tmp_path / "data"),
            "COG_DATABASE_URL": server_database_url,
            "COG_PROVIDER": "gemini",
            "COG_GEMINI_BASE_URL": gemini_url,
            "GOOGLE_API_KEY": "test",
            "COG_RUN_STALE_AFTER_S": str(STALE_AFTER_S),
            "COG_PROVIDER_RETRY_INITIAL_S": "0.05",
            **settings,
        }
        log = tmp_path / f"serve-{len(started)}.log"
        with log.open("wb") as sink:
            proc = subprocess.Popen(
                [sys.executable, "-m", "cog", "serve", "--port", str(port)],
                env=env,
                cwd=tmp_path,  # so no .env file of the repository is read
                stdout=sink,
                stderr=subprocess.STDOUT,
            )
        server = Server(proc, log, f"http://127.0.0.1:{port}", env)
        started.append(server)
        deadline = time.monotonic() + START_WITHIN_S
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"cog serve exited with {proc.returncode}:\n{server.output()}")
            try:
                if httpx.get(f"{server.base_url}/api/series", timeout=1).status_code == 200:
                    return server
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        pytest.fail(f"cog serve did not answer within {START_WITHIN_S} s:\n{server.output()}")

    try:
        yield start
    finally:
        for server in started:
            stop_process(server.proc)
        for server in started:
            assert "Traceback" not in server.output(), server.output()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """A headless Chromium for a module; each test opens its own context. Not for the whole
    session: Playwright's sync API keeps an event loop running, which no test after it could
    then start (asyncio.run)."""
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        yield launched
        launched.close()


@pytest.fixture
def watch() -> Watch:
    return Watch()


@pytest.fixture(scope="module")
def browser_gemini(request: pytest.FixtureRequest) -> Iterator[GeminiTestServer]:
    """The fake Gemini server of a browser test module. Its latency is the module's
    `GEMINI_LATENCY_S`: slow enough that a person would see the progress being tested, fast
    enough for the suite."""
    with GeminiTestServer(latency_s=getattr(request.module, "GEMINI_LATENCY_S", 0.4)) as server:
        yield server


@pytest.fixture(scope="module")
def cog(
    tmp_path_factory: pytest.TempPathFactory, browser_gemini: GeminiTestServer
) -> Iterator[Cog]:
    """`cog serve` generating through the module's fake Gemini server."""
    server = start_cog(
        tmp_path_factory.mktemp("cog"),
        COG_PROVIDER="gemini",
        COG_GEMINI_BASE_URL=browser_gemini.base_url,
        GOOGLE_API_KEY="test",
        COG_PROVIDER_RETRY_INITIAL_S="0.01",
    )
    yield server
    server.stop()


# --- the command line -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pycache() -> str:
    """Where subprocesses keep compiled modules, so each after the first starts in a second or
    two even where PYTHONDONTWRITEBYTECODE is set (CI names its own folder)."""
    return os.environ.get("PYTHONPYCACHEPREFIX") or str(
        Path(tempfile.gettempdir()) / f"cog-test-pycache-{os.getuid()}"
    )


@pytest.fixture
def cli(tmp_path: Path, pycache: str) -> Cli:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("COG_", "GEMINI_", "GOOGLE_", "PYTHONDONTWRITEBYTECODE"))
        and k not in ("VISUAL", "EDITOR")
    }
    env.update(
        COG_DATA_DIR=str(tmp_path / "data"),
        NO_COLOR="1",
        COLUMNS="200",
        PYTHONPYCACHEPREFIX=pycache,
    )
    return Cli(tmp_path, env)


@pytest.fixture
def cog_serve(cli: Cli) -> Iterator[Callable[..., CliServer]]:
    """Start `cog serve` and wait until it answers; every server is stopped at the end."""
    started: list[CliServer] = []

    def start(*args: str, env: dict[str, str] | None = None, host: str = "127.0.0.1") -> CliServer:
        port = free_port()
        log = cli.tmp_path / f"serve-{port}.log"
        with log.open("w") as sink:
            proc = subprocess.Popen(
                [*COMMAND, "serve", "--port", str(port), *args],
                env={**cli.env, **(env or {})},
                cwd=cli.tmp_path,
                stdout=sink,
                stderr=subprocess.STDOUT,
                text=True,
            )
        server = CliServer(proc, f"http://{host}:{port}", log)
        started.append(server)
        deadline = time.monotonic() + START_WITHIN_S
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                pytest.fail(f"cog serve exited with {proc.returncode}:\n{server.output()}")
            try:
                httpx.get(f"{server.base_url}/cog/login", timeout=1)
                return server
            except httpx.TransportError:
                time.sleep(0.1)
        pytest.fail(f"cog serve did not answer within {START_WITHIN_S} s:\n{server.output()}")

    try:
        yield start
    finally:
        for server in started:
            stop_process(server.proc)
            assert "Traceback" not in server.output(), server.output()
