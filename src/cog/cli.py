"""The `cog` command: serve, migrate, and work with series and images from a terminal."""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table
from sqlalchemy.ext.asyncio import AsyncSession

from cog.config import Settings, is_loopback, load_settings
from cog.db import migrate
from cog.db.session import make_engine, make_sessionmaker
from cog.errors import CogError
from cog.services import images as images_service
from cog.services import series as series_service
from cog.storage import ObjectStore, make_store
from cog.web.schemas import ImageOut, SeriesOut

app = typer.Typer(help="Cog: make and organize AI-generated image series.", no_args_is_help=True)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
series_app = typer.Typer(help="Series: nested collections of images.", no_args_is_help=True)
images_app = typer.Typer(help="Images in a series.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(series_app, name="series")
app.add_typer(images_app, name="images")

out = Console()
err = Console(stderr=True)
T = TypeVar("T")


@dataclass
class Context:
    settings: Settings
    session: AsyncSession
    store: ObjectStore


@asynccontextmanager
async def open_context() -> AsyncIterator[Context]:
    settings = load_settings()
    engine = make_engine(settings.database_url)
    try:
        await migrate.ensure_schema(engine, auto_upgrade=settings.is_sqlite)
        async with make_sessionmaker(engine)() as session:
            yield Context(settings, session, make_store(settings))
    finally:
        await engine.dispose()


def run(work: Callable[[Context], Awaitable[T]]) -> T:
    """Run one command's work; a CogError becomes a plain message and exit code 1."""

    async def main() -> T:
        async with open_context() as ctx:
            return await work(ctx)

    try:
        return asyncio.run(main())
    except CogError as exc:
        err.print(f"[red]error:[/red] {exc.message}")
        raise typer.Exit(1) from None


def parse_id(value: str, what: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        err.print(f"[red]error:[/red] {value!r} is not a {what} id.")
        raise typer.Exit(2) from None


def print_json(data: Any) -> None:
    out.print_json(json.dumps(data, default=str))


# --- serve and db -------------------------------------------------------------------------------


@app.command()
def serve(
    host: Annotated[
        str | None, typer.Option(help="Address to listen on. [default: 127.0.0.1]")
    ] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on. [default: 8000]")] = None,
) -> None:
    """Start the web app and the API (http://127.0.0.1:8000/cog)."""
    import uvicorn

    from cog.web.app import create_app

    overrides: dict[str, Any] = {}
    if host is not None:
        overrides["host"] = host
    if port is not None:
        overrides["port"] = port
    settings = load_settings(**overrides)
    if not is_loopback(settings.host) and settings.token is None:
        err.print(
            f"[red]error:[/red] refusing to listen on {settings.host} without a token: "
            "set COG_API_TOKEN, or listen on 127.0.0.1."
        )
        raise typer.Exit(2)
    try:
        application = create_app(settings)
    except CogError as exc:
        err.print(f"[red]error:[/red] {exc.message}")
        raise typer.Exit(1) from None
    err.print(f"Cog on http://{settings.host}:{settings.port}/cog  (data: {settings.data_dir})")
    config = uvicorn.Config(application, host=settings.host, port=settings.port, log_level="info")
    server = uvicorn.Server(config)
    try:
        server.run()
    except CogError as exc:  # raised by the startup schema check
        err.print(f"[red]error:[/red] {exc.message}")
        raise typer.Exit(1) from None
    if not server.started:
        raise typer.Exit(1)


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Bring the database schema up to date."""
    settings = load_settings()

    async def main() -> tuple[str | None, str | None]:
        engine = make_engine(settings.database_url)
        try:
            before = await migrate.current_revision(engine)
            await migrate.upgrade(engine)
            return before, await migrate.current_revision(engine)
        finally:
            await engine.dispose()

    before, after = asyncio.run(main())
    if before == after:
        out.print(f"The schema is up to date (revision {after}).")
    else:
        out.print(f"Upgraded the schema from {before or 'empty'} to {after}.")


@db_app.command("sql")
def db_sql() -> None:
    """Print the whole schema as SQL for PostgreSQL (what schema.sql holds)."""
    sys.stdout.write(migrate.offline_sql())


# --- series -------------------------------------------------------------------------------------


def _series_table(rows: list[SeriesOut]) -> Table:
    table = Table("id", "title", "tags", "images", "sub-series")
    for s in rows:
        table.add_row(str(s.id), s.title, ", ".join(s.tags), str(s.image_count), str(s.child_count))
    return table


@series_app.command("create")
def series_create(
    title: str,
    description: Annotated[str, typer.Option("--description", "-d")] = "",
    tag: Annotated[
        list[str] | None, typer.Option("--tag", "-t", help="Repeat for several.")
    ] = None,
    parent: Annotated[str | None, typer.Option(help="Create inside this series.")] = None,
) -> None:
    """Create a series."""
    parent_id = parse_id(parent, "series") if parent else None

    async def work(ctx: Context) -> SeriesOut:
        created = await series_service.create(
            ctx.session, title=title, description=description, tags=tag or [], parent_id=parent_id
        )
        return SeriesOut.of_view(await series_service.view(ctx.session, created.id))

    if not title.strip():
        err.print("[red]error:[/red] a series needs a title.")
        raise typer.Exit(2)
    created = run(work)
    out.print(f"Created series [bold]{created.title}[/bold] {created.id}")


@series_app.command("list")
def series_list(
    parent: Annotated[str | None, typer.Option(help="List the children of this series.")] = None,
    tag: Annotated[
        str | None, typer.Option(help="Only series with this tag, at any depth.")
    ] = None,
    q: Annotated[str | None, typer.Option("-q", help="Search titles and descriptions.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List series."""
    parent_id = parse_id(parent, "series") if parent else None

    async def work(ctx: Context) -> list[SeriesOut]:
        rows: list[SeriesOut] = []
        cursor = None
        while True:
            page, counts = await series_service.listing(
                ctx.session, parent_id=parent_id, tag=tag, text=q, limit=500, cursor=cursor
            )
            rows += [
                SeriesOut.of(
                    s, image_count=counts[s.id].image_count, child_count=counts[s.id].child_count
                )
                for s in page.items
            ]
            if not (cursor := page.next_cursor):
                return rows

    rows = run(work)
    if as_json:
        print_json([r.model_dump(mode="json") for r in rows])
    elif rows:
        out.print(_series_table(rows))
    else:
        out.print("No series.")


@series_app.command("show")
def series_show(
    series_id: str, as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False
) -> None:
    """Show a series with its breadcrumbs and counts."""
    sid = parse_id(series_id, "series")

    async def work(ctx: Context) -> SeriesOut:
        return SeriesOut.of_view(await series_service.view(ctx.session, sid))

    s = run(work)
    if as_json:
        print_json(s.model_dump(mode="json"))
        return
    path = " / ".join([a.title for a in s.ancestors or []] + [s.title])
    out.print(f"[bold]{path}[/bold]  {s.id}")
    if s.description:
        out.print(s.description)
    if s.tags:
        out.print("tags: " + ", ".join(s.tags))
    out.print(f"{s.image_count} image(s), {s.child_count} sub-series")


@series_app.command("rm")
def series_rm(
    series_id: str,
    recursive: Annotated[
        bool, typer.Option("--recursive", "-r", help="Also delete its sub-series and images.")
    ] = False,
) -> None:
    """Delete a series (with --recursive, everything under it)."""
    sid = parse_id(series_id, "series")

    async def work(ctx: Context) -> int:
        return await series_service.delete(ctx.session, ctx.store, sid, recursive=recursive)

    removed = run(work)
    out.print(f"Deleted series {sid}" + (f" and {removed} image(s)." if removed else "."))


# --- images -------------------------------------------------------------------------------------


@images_app.command("upload")
def images_upload(
    series_id: str,
    files: Annotated[list[Path], typer.Argument(exists=True, dir_okay=False, readable=True)],
) -> None:
    """Upload image files into a series, with a progress bar. Refused files are listed."""
    sid = parse_id(series_id, "series")

    async def work(ctx: Context) -> tuple[int, list[tuple[Path, str]]]:
        await series_service.require(ctx.session, sid)
        stored = 0
        refused: list[tuple[Path, str]] = []
        columns = (
            TextColumn("[progress.description]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
        )
        with Progress(*columns, console=err) as progress:
            task = progress.add_task("Uploading", total=len(files))
            for path in files:
                progress.update(task, description=f"Uploading {path.name[:40]}")
                with path.open("rb") as fp:
                    try:
                        await images_service.upload(
                            ctx.session,
                            ctx.store,
                            ctx.settings,
                            sid,
                            [images_service.IncomingFile(path.name, fp)],
                        )
                        stored += 1
                    except images_service.UploadRefused as exc:
                        refused.append((path, exc.extra["files"][0]["error"]))
                progress.advance(task)
        return stored, refused

    stored, refused = run(work)
    out.print(f"Uploaded {stored} image(s).")
    for path, reason in refused:
        err.print(f"[yellow]refused[/yellow] {path}: {reason}")
    if refused:
        raise typer.Exit(1)


@images_app.command("list")
def images_list(
    series_id: str, as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False
) -> None:
    """List a series' images, newest first."""
    sid = parse_id(series_id, "series")

    async def work(ctx: Context) -> list[ImageOut]:
        rows: list[ImageOut] = []
        cursor = None
        while True:
            page = await images_service.listing(ctx.session, sid, limit=500, cursor=cursor)
            rows += [ImageOut.of(i) for i in page.items]
            if not (cursor := page.next_cursor):
                return rows

    rows = run(work)
    if as_json:
        print_json([r.model_dump(mode="json") for r in rows])
        return
    table = Table("id", "name / prompt", "size", "source", "added")
    for i in rows:
        label = i.original_filename or (i.prompt or "")[:60]
        table.add_row(
            str(i.id),
            label,
            f"{i.width}x{i.height}",
            i.source,
            i.created_at.strftime("%Y-%m-%d %H:%M"),
        )
    out.print(table if rows else "No images.")


@images_app.command("rm")
def images_rm(image_id: str) -> None:
    """Delete an image (its row and its file)."""
    iid = parse_id(image_id, "image")

    async def work(ctx: Context) -> None:
        await images_service.delete(ctx.session, ctx.store, iid)

    run(work)
    out.print(f"Deleted image {iid}.")


def main() -> None:
    app()
