"""`cog` run as a person runs it, in subprocesses against one data dir, and the data those
tests make in-process before and check after."""

from __future__ import annotations

import asyncio
import io
import json
import re
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession

from cog.config import Settings
from cog.db import runs as runs_db
from cog.db.migrate import ensure_schema
from cog.db.session import make_engine, make_sessionmaker
from cog.engine.executor import EmbeddedExecutor
from cog.runtime import Runtime
from cog.services import images as images_service
from cog.services import jobs as jobs_service
from cog.services import runs as runs_service
from cog.services import series as series_service
from cog.storage import ObjectStore, make_store
from cog.testing.gemini_server import GeminiTestServer
from tests.conftest import make_settings
from tests.factories import image_bytes

COMMAND = [sys.executable, "-m", "cog"]
MISSING = "00000000-0000-4000-8000-000000000000"


@dataclass(frozen=True)
class Result:
    args: tuple[str, ...]
    code: int
    stdout: str
    stderr: str

    @property
    def said(self) -> str:
        """Both streams with Rich's line wrapping undone, for looking for a message."""
        return " ".join((self.stdout + " " + self.stderr).split())

    def json(self) -> Any:
        return json.loads(self.stdout)


class Call(NamedTuple):
    """One command of `Cli.each`: its arguments, settings of its own, and its stdin."""

    args: tuple[str, ...]
    env: dict[str, str]
    stdin: int = subprocess.DEVNULL


@dataclass
class Cli:
    """Runs `cog` against one data dir, with no token and no other COG_* setting."""

    tmp_path: Path
    env: dict[str, str] = field(default_factory=dict)

    @property
    def data_dir(self) -> Path:
        return self.tmp_path / "data"

    @property
    def storage_dir(self) -> Path:
        return self.data_dir / "storage"

    def settings(self) -> Settings:
        return make_settings(self.tmp_path)  # data_dir = tmp_path / "data", as in `env`

    def start(
        self, *args: str, env: dict[str, str] | None = None, stdin: int = subprocess.DEVNULL
    ) -> subprocess.Popen[str]:
        """Stdin is /dev/null unless told otherwise: never the terminal pytest may run in,
        where a command that asked a question would wait for an answer."""
        return subprocess.Popen(
            [*COMMAND, *args],
            env={**self.env, **(env or {})},
            cwd=self.tmp_path,  # so no .env file of the repository is read
            stdin=stdin,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def many(
        self, *commands: tuple[str, ...], env: dict[str, str] | None = None, timeout: float = 60
    ) -> list[Result]:
        """Run independent commands at the same time (each takes a second or two to start)."""
        return self.each(*(Call(args, env or {}) for args in commands), timeout=timeout)

    def each(self, *calls: Call, timeout: float = 60) -> list[Result]:
        """Like `many`, each command with settings and a stdin of its own."""
        procs = [(c.args, self.start(*c.args, env=c.env, stdin=c.stdin)) for c in calls]
        results = []
        try:
            for args, proc in procs:
                stdout, stderr = proc.communicate(timeout=timeout)
                results.append(Result(args, proc.returncode, stdout, stderr))
        finally:  # none outlives the test, whatever happened
            for _, proc in procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        for result in results:
            # Whatever happens, a person sees a message, never a Python traceback.
            assert "Traceback" not in result.stderr, result
        return results

    def __call__(
        self, *args: str, env: dict[str, str] | None = None, timeout: float = 60
    ) -> Result:
        return self.many(args, env=env, timeout=timeout)[0]


@dataclass
class CliServer:
    """A `cog serve` started by `cog_serve`."""

    proc: subprocess.Popen[str]
    base_url: str
    log: Path

    def output(self) -> str:
        return self.log.read_text()


@asynccontextmanager
async def open_data(settings: Settings) -> AsyncIterator[tuple[AsyncSession, ObjectStore]]:
    engine = make_engine(settings.database_url)
    try:
        await ensure_schema(engine, auto_upgrade=True)
        async with make_sessionmaker(engine)() as session:
            yield session, make_store(settings)
    finally:
        await engine.dispose()


def seed_data(cli: Cli, work: Callable[[AsyncSession, ObjectStore], Any]) -> Any:
    async def main() -> Any:
        async with open_data(cli.settings()) as (session, store):
            return await work(session, store)

    return asyncio.run(main())


async def add_series(session: AsyncSession, title: str, **fields: Any) -> str:
    return str((await series_service.create(session, title=title, **fields)).id)


async def add_image(
    session: AsyncSession, store: ObjectStore, settings: Settings, series_id: str, name: str
) -> str:
    incoming = images_service.IncomingFile(name, io.BytesIO(image_bytes(32, 24)))
    stored = await images_service.upload(session, store, settings, uuid.UUID(series_id), [incoming])
    return str(stored[0].id)


def stored_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


T = TypeVar("T")
UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
# Text that reads as Rich markup; Cog must print it as it is, never style it or choke on it.
MARKUP = "[/x] [bold]"
TWO_STEPS: list[dict[str, Any]] = [
    {"kind": "llm", "prompt": "Describe {{ base_prompt }} in one line."},
    {"kind": "image", "prompt": "{{ steps[0].text }}", "config": {"count": 2}},
]


def gemini_env(server: GeminiTestServer) -> dict[str, str]:
    return {
        "COG_PROVIDER": "gemini",
        "COG_GEMINI_BASE_URL": server.base_url,
        "GOOGLE_API_KEY": "test",
        "COG_PROVIDER_RETRY_INITIAL_S": "0.01",
    }


# --- data made in-process -----------------------------------------------------------------------


def seed(settings: Settings, work: Callable[[Runtime, AsyncSession], Awaitable[T]]) -> T:
    """Run `work` on a runtime (preview providers unless `settings` say otherwise)."""

    async def main() -> T:
        runtime = Runtime.build(settings)
        try:
            await ensure_schema(runtime.engine, auto_upgrade=True)
            async with runtime.sessions() as session:
                return await work(runtime, session)
        finally:
            await runtime.stop()

    return asyncio.run(main())


async def add_job(
    session: AsyncSession,
    series_id: uuid.UUID,
    steps: list[dict[str, Any]] = TWO_STEPS,
    base_prompt: str = "a lighthouse at dusk",
) -> str:
    job = await jobs_service.create(session, series_id, title="", base_prompt=base_prompt)
    await jobs_service.replace_steps(session, job.id, steps)
    return str(job.id)


async def run_here(runtime: Runtime, job_id: str) -> dict[str, Any]:
    """Run a job to its end in this process, as `cog jobs run --wait` does."""
    async with runtime.sessions() as session:
        started = await runs_service.start(session, uuid.UUID(job_id))
        executor = EmbeddedExecutor(runtime.runner_deps(), name="test")
        assert await runs_db.claim(session, started.id, executor.name, batch_limit=1)
    await executor.run_claimed(started.id)
    async with runtime.sessions() as session:
        return await runs_service.view(session, started.id)


async def job_runs(session: AsyncSession, job_id: str) -> list[dict[str, Any]]:
    return (await runs_service.history(session, uuid.UUID(job_id))).items


async def saved_steps(session: AsyncSession, job_id: str) -> list[dict[str, Any]]:
    rows = await jobs_service.steps(session, uuid.UUID(job_id))
    return [{"kind": r.kind, "prompt": r.prompt, "config": r.config} for r in rows]


def flat(text: str) -> str:
    """Text with Rich's padding and line wrapping undone."""
    return " ".join(text.split())


def run_line(result: Result) -> tuple[str, str, int]:
    """The run id, status and image count from `jobs run --wait`'s last word."""
    found = re.search(rf"Run ({UUID}) (\w+): (\d+) image\(s\) made\.", result.said)
    assert found, result
    return found[1], found[2], int(found[3])


EDITOR = '''\
"""A scripted editor: keeps a copy of what it is given, then writes the next of CALLS in
its place (None: leaves the file as it is; a str: written as it is)."""
import json, shutil, sys
from pathlib import Path

import yaml

path, me = Path(sys.argv[-1]), Path(__file__)
counter = me.with_suffix(".calls")
n = int(counter.read_text()) if counter.exists() else 0
counter.write_text(str(n + 1))
shutil.copy(path, me.with_suffix(f".seen{n}{path.suffix}"))
steps = CALLS[n]
if isinstance(steps, str):
    path.write_text(steps)
elif steps is not None and path.suffix == ".json":
    path.write_text(json.dumps({"steps": steps}))
elif steps is not None:
    path.write_text(yaml.safe_dump({"steps": steps}))
'''


def editor(tmp_path: Path, name: str, *calls: list[dict[str, Any]] | str | None) -> dict[str, str]:
    """$EDITOR for a script whose n-th opening writes `calls[n]`."""
    script = tmp_path / f"editor_{name}.py"  # named so it shadows no module on sys.path
    script.write_text(EDITOR.replace("CALLS", repr(list(calls))))
    return {"EDITOR": f"{sys.executable} {script}"}


def seen(tmp_path: Path, name: str, n: int, suffix: str = ".yaml") -> str:
    """What the editor `name` was given on its n-th opening."""
    return (tmp_path / f"editor_{name}.seen{n}{suffix}").read_text()
