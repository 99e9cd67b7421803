"""What every command shares: settings, a runtime, the consoles, error handling."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Column
from sqlalchemy.ext.asyncio import AsyncSession

from cog import event_loop
from cog.config import Settings, load_settings
from cog.db import migrate
from cog.errors import CogError
from cog.runtime import Runtime
from cog.storage import ObjectStore

__all__ = [
    "Context",
    "JsonOption",
    "err",
    "escape",
    "fail",
    "id_column",
    "out",
    "parse_id",
    "print_json",
    "run",
]

out = Console()
err = Console(stderr=True)


# `--json`: what the command answers, as JSON on stdout, for scripts (progress stays on stderr).
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def id_column(header: str = "id") -> Column:
    """A table column of ids, never cut short: an id is there to be copied into the next
    command."""
    return Column(header, no_wrap=True, min_width=len(str(uuid.UUID(int=0))))


T = TypeVar("T")


@dataclass
class Context:
    settings: Settings
    session: AsyncSession
    store: ObjectStore
    runtime: Runtime


@asynccontextmanager
async def open_context() -> AsyncIterator[Context]:
    """A runtime without an executor: the CLI runs work itself, in the foreground."""
    runtime = Runtime.build(load_settings())
    try:
        await migrate.ensure_schema(runtime.engine, auto_upgrade=runtime.settings.is_sqlite)
        async with runtime.sessions() as session:
            yield Context(runtime.settings, session, runtime.store, runtime)
    finally:
        await runtime.stop()


def run(work: Callable[[Context], Awaitable[T]]) -> T:
    """Run one command's work; a CogError becomes a plain message and exit code 1."""

    async def main() -> T:
        async with open_context() as ctx:
            return await work(ctx)

    try:
        return event_loop.run(main())
    except CogError as exc:
        fail(exc.message, 1)


def fail(message: str, code: int = 1) -> NoReturn:
    """Print a plain error (never a traceback) and leave with `code`."""
    err.print(f"[red]error:[/red] {escape(message)}")
    raise typer.Exit(code)


def parse_id(value: str, what: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        fail(f"{value!r} is not a {what} id.", 2)


def print_json(data: Any) -> None:
    out.print_json(json.dumps(data, default=str))
