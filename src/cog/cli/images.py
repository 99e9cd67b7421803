"""`cog images ...`"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from cog.cli.common import Context, err, escape, out, parse_id, print_json, run
from cog.services import images as images_service
from cog.services import series as series_service
from cog.services import versions as versions_service
from cog.services.images import IncomingFile
from cog.web.schemas import ImageOut, VersionOut

images_app = typer.Typer(help="Images in a series.", no_args_is_help=True)


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
                progress.update(task, description=f"Uploading {escape(path.name[:40])}")
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
        err.print(f"[yellow]refused[/yellow] {escape(str(path))}: {escape(reason)}")
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
            escape(label),
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


# --- versions -----------------------------------------------------------------------------------


@images_app.command("versions")
def images_versions(
    image_id: str, as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False
) -> None:
    """List an image's versions, oldest first; the current one is marked."""
    iid = parse_id(image_id, "image")

    async def work(ctx: Context) -> list[VersionOut]:
        image, versions = await versions_service.listing(ctx.session, iid)
        return VersionOut.all_of(image, versions)

    rows = run(work)
    if as_json:
        print_json([r.model_dump(mode="json") for r in rows])
        return
    table = Table("#", "", "source", "prompt / file", "model", "size", "made")
    for v in rows:
        source = f"{v.source} of {v.restored_from}" if v.restored_from else v.source
        table.add_row(
            str(v.number),
            "current" if v.is_current else "",
            source,
            escape((v.prompt or v.original_filename or "")[:60]),
            escape(v.model or ""),
            f"{v.width}x{v.height}",
            v.created_at.strftime("%Y-%m-%d %H:%M"),
        )
    out.print(table)


@images_app.command("edit")
def images_edit(
    image_id: str,
    prompt: Annotated[str, typer.Option("--prompt", "-p", help="What to change.")],
    version: Annotated[
        int | None, typer.Option("--version", help="Start from this version (default: current).")
    ] = None,
) -> None:
    """Edit an image by a prompt: the image model's answer becomes its new version."""
    iid = parse_id(image_id, "image")

    async def work(ctx: Context) -> int:
        with err.status(f"{escape(ctx.settings.image_model)} is editing the image…"):
            made = await versions_service.edit(
                ctx.session,
                ctx.store,
                ctx.settings,
                ctx.runtime.image_provider,
                iid,
                prompt=prompt,
                from_number=version,
            )
        return made.number

    number = run(work)
    out.print(f"Image {iid} is now at version {number} (an edit).")


@images_app.command("replace")
def images_replace(
    image_id: str,
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, readable=True)],
) -> None:
    """Upload a file in place of an image's current one; it becomes a new version."""
    iid = parse_id(image_id, "image")

    async def work(ctx: Context) -> int:
        with file.open("rb") as fp:
            made = await versions_service.replace(
                ctx.session, ctx.store, ctx.settings, iid, IncomingFile(file.name, fp)
            )
        return made.number

    number = run(work)
    out.print(f"Image {iid} is now at version {number} ({escape(file.name)}).")


@images_app.command("restore")
def images_restore(image_id: str, number: int) -> None:
    """Make an earlier version current again (as a new version; none is lost)."""
    iid = parse_id(image_id, "image")

    async def work(ctx: Context) -> int:
        made = await versions_service.restore(ctx.session, ctx.store, iid, number)
        return made.number

    made = run(work)
    out.print(f"Image {iid} is now at version {made}, a copy of version {number}.")


@images_app.command("split")
def images_split(image_id: str, number: int) -> None:
    """Make a version an image of its own, in the same series."""
    iid = parse_id(image_id, "image")

    async def work(ctx: Context) -> str:
        return str((await versions_service.split(ctx.session, ctx.store, iid, number)).id)

    new_id = run(work)
    out.print(f"Version {number} of image {iid} is now image {new_id}.")
