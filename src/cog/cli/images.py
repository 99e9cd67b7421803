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
from cog.web.schemas import ImageOut

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
