"""`cog images ...`"""

from __future__ import annotations

import contextlib
import sys
import uuid
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from cog.cli.common import (
    Context,
    JsonOption,
    err,
    escape,
    fail,
    id_column,
    out,
    parse_id,
    print_json,
    run,
)
from cog.imaging import bytes_text
from cog.services import batch as batch_service
from cog.services import export as export_service
from cog.services import images as images_service
from cog.services import imports as imports_service
from cog.services import selection as selection_service
from cog.services import series as series_service
from cog.services import versions as versions_service
from cog.services.batch import BatchAction, BatchOutcome
from cog.services.export import ExportPlan
from cog.services.images import IncomingFile
from cog.services.imports import ImportReport
from cog.services.selection import Selection
from cog.web.schemas import ImageOut, VersionOut

images_app = typer.Typer(help="Images in a series.", no_args_is_help=True)

IdsArg = Annotated[
    list[str] | None, typer.Argument(help="Image ids (or select with --series / --tag).")
]
SeriesOpt = Annotated[
    str | None, typer.Option("--series", "-s", help="Select the images of this series.")
]
RecursiveOpt = Annotated[
    bool, typer.Option("--recursive", "-r", help="With --series: its sub-series' images too.")
]
TagOpt = Annotated[str | None, typer.Option("--tag", help="Select only images with this tag.")]


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
    series_id: str,
    tag: TagOpt = None,
    as_json: JsonOption = False,
) -> None:
    """List a series' images, newest first."""
    sid = parse_id(series_id, "series")

    async def work(ctx: Context) -> list[ImageOut]:
        rows: list[ImageOut] = []
        cursor = None
        while True:
            page = await images_service.listing(ctx.session, sid, limit=500, cursor=cursor, tag=tag)
            rows += [ImageOut.of(i) for i in page.items]
            if not (cursor := page.next_cursor):
                return rows

    rows = run(work)
    if as_json:
        print_json([r.model_dump(mode="json") for r in rows])
        return
    table = Table(id_column(), "name / prompt", "size", "source", "tags", "added")
    for i in rows:
        label = i.original_filename or (i.prompt or "")[:60]
        table.add_row(
            str(i.id),
            escape(label),
            f"{i.width}x{i.height}",
            i.source,
            escape(", ".join(i.tags)),
            i.created_at.strftime("%Y-%m-%d %H:%M"),
        )
    out.print(table if rows else "No images.")


# --- many images at once ------------------------------------------------------------------------


@dataclass(frozen=True)
class Chosen:
    """What the command line named: ids, or a filter."""

    ids: list[uuid.UUID]
    series: uuid.UUID | None
    recursive: bool
    tag: str | None

    def selection(self) -> Selection:
        if self.ids:
            return Selection.of_ids(self.ids)
        return Selection.of_filter(
            series_id=self.series, include_subseries=self.recursive, tag=self.tag
        )


def _chosen(ids: list[str] | None, series: str | None, recursive: bool, tag: str | None) -> Chosen:
    if ids and (series or tag or recursive):
        fail("name images by id or select them with --series / --tag, not both.", 2)
    if not ids and not series and tag is None:
        fail("name the images: their ids, or --series ID [--recursive] [--tag TAG].", 2)
    if recursive and not series:
        fail("--recursive needs --series.", 2)
    return Chosen(
        [parse_id(i, "image") for i in ids or []],
        parse_id(series, "series") if series else None,
        recursive,
        tag,
    )


def _split(tags: str) -> list[str]:
    return [t.strip() for t in tags.split(",") if t.strip()]


def _already(outcome: BatchOutcome, words: str) -> str:
    rest = outcome.matched - len(outcome.changed)
    return f" ({rest} {words})" if rest else ""


@images_app.command("mv")
def images_mv(
    to: Annotated[str, typer.Option("--to", help="The series to move them to.")],
    ids: IdsArg = None,
    series: SeriesOpt = None,
    recursive: RecursiveOpt = False,
    tag: TagOpt = None,
) -> None:
    """Move images to another series: all of them, or none if one cannot move."""
    chosen = _chosen(ids, series, recursive, tag)
    target = parse_id(to, "series")

    async def work(ctx: Context) -> tuple[BatchOutcome, str]:
        outcome = await batch_service.apply(
            ctx.session, ctx.store, chosen.selection(), BatchAction.move, series_id=target
        )
        return outcome, (await series_service.require(ctx.session, target)).title

    outcome, title = run(work)
    where = _already(outcome, "already there")
    out.print(f"Moved {len(outcome.changed)} image(s) to {escape(title)}{where}.")


def _retag(action: BatchAction, tags: str, chosen: Chosen) -> BatchOutcome:
    async def work(ctx: Context) -> BatchOutcome:
        return await batch_service.apply(
            ctx.session, ctx.store, chosen.selection(), action, tags=_split(tags)
        )

    return run(work)


@images_app.command("tag")
def images_tag(
    tags: Annotated[str, typer.Argument(help="Tags to add, separated by commas.")],
    ids: IdsArg = None,
    series: SeriesOpt = None,
    recursive: RecursiveOpt = False,
    tag: TagOpt = None,
) -> None:
    """Add tags to images (trimmed, lower case, each once)."""
    outcome = _retag(BatchAction.tag, tags, _chosen(ids, series, recursive, tag))
    names = escape(", ".join(outcome.tags))
    rest = _already(outcome, "had them already")
    out.print(f"Tagged {len(outcome.changed)} image(s) with {names}{rest}.")


@images_app.command("untag")
def images_untag(
    tags: Annotated[str, typer.Argument(help="Tags to remove, separated by commas.")],
    ids: IdsArg = None,
    series: SeriesOpt = None,
    recursive: RecursiveOpt = False,
    tag: TagOpt = None,
) -> None:
    """Remove tags from images."""
    outcome = _retag(BatchAction.untag, tags, _chosen(ids, series, recursive, tag))
    names = escape(", ".join(outcome.tags))
    rest = _already(outcome, "did not have them")
    out.print(f"Removed {names} from {len(outcome.changed)} image(s){rest}.")


@images_app.command("rm")
def images_rm(
    ids: IdsArg = None,
    series: SeriesOpt = None,
    recursive: RecursiveOpt = False,
    tag: TagOpt = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask before deleting.")] = False,
) -> None:
    """Delete images with their files. More than one asks first (--yes does not)."""
    chosen = _chosen(ids, series, recursive, tag)
    interactive = sys.stdin is not None and sys.stdin.isatty()

    async def work(ctx: Context) -> BatchOutcome | None:
        selection = chosen.selection()
        await selection_service.check(ctx.session, selection)
        count, total = await selection_service.size(ctx.session, selection)
        # One image named by its id is deleted as asked; anything wider is confirmed.
        if not yes and (count > 1 or not chosen.ids):
            question = f"Delete {count} image(s) ({bytes_text(total)}) and their files for good?"
            if not interactive:
                fail(f"{question} Add --yes to delete without a terminal to ask on.", 1)
            if not typer.confirm(question, default=False, err=True):
                return None
        return await batch_service.apply(ctx.session, ctx.store, selection, BatchAction.delete)

    outcome = run(work)
    if outcome is None:
        out.print("Nothing was deleted.")
    elif len(chosen.ids) == 1 and len(outcome.changed) == 1:
        out.print(f"Deleted image {outcome.changed[0]}.")
    else:
        out.print(f"Deleted {len(outcome.changed)} image(s).")


# --- versions -----------------------------------------------------------------------------------


@images_app.command("versions")
def images_versions(image_id: str, as_json: JsonOption = False) -> None:
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


@images_app.command("export")
def images_export(
    ids: IdsArg = None,
    series: SeriesOpt = None,
    recursive: RecursiveOpt = False,
    tag: TagOpt = None,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="The zip to write (default: a name of the series)."),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace the file if it exists.")] = False,
) -> None:
    """Write images to a zip, one folder per series, with manifest.json and manifest.csv."""
    chosen = _chosen(ids, series, recursive, tag)

    async def work(ctx: Context) -> tuple[Path, ExportPlan, int]:
        plan = await export_service.plan(ctx.session, chosen.selection())
        await ctx.session.close()
        target = output or Path(plan.filename)
        if target.exists() and not force:
            fail(f"{target} exists; add --force to replace it.", 1)
        partial = target.with_name(target.name + ".part")
        written = 0
        columns = (
            TextColumn("[progress.description]{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
        )
        try:
            with partial.open("wb") as sink, Progress(*columns, console=err) as progress:
                task = progress.add_task(
                    f"Exporting {plan.count} image(s)", total=plan.total_bytes or None
                )
                body = export_service.stream(
                    ctx.runtime.sessions,
                    ctx.store,
                    plan,
                    progress=lambda n: progress.advance(task, n),
                )
                async for chunk in body:
                    sink.write(chunk)
                    written += len(chunk)
            partial.replace(target)
        finally:
            partial.unlink(missing_ok=True)
        return target, plan, written

    target, plan, written = run(work)
    out.print(f"Wrote {plan.count} image(s) to {escape(str(target))} ({bytes_text(written)}).")


@images_app.command("import")
def images_import(
    series_id: str,
    path: Annotated[
        Path, typer.Argument(exists=True, readable=True, help="A folder (searched) or a .zip.")
    ],
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Import a folder (with its sub-folders) or a zip of images into a series. Files already
    in the series (the same bytes) are skipped; files that are not acceptable images are
    refused and listed, and the others are kept."""
    sid = parse_id(series_id, "series")
    if not path.is_dir() and not zipfile.is_zipfile(path):
        fail(f"{path} is neither a folder nor a zip archive.", 2)

    async def work(ctx: Context) -> ImportReport:
        await series_service.require(ctx.session, sid)
        with contextlib.ExitStack() as stack:
            if path.is_dir():
                sources = imports_service.folder_sources(path)
            else:
                sources = stack.enter_context(imports_service.zip_sources(path, ctx.settings))
            columns = (
                TextColumn("[progress.description]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeRemainingColumn(),
            )
            with Progress(*columns, console=err) as progress:
                task = progress.add_task("Importing", total=len(sources))
                return await imports_service.import_files(
                    ctx.session,
                    ctx.store,
                    ctx.settings,
                    sid,
                    sources,
                    progress=lambda done: progress.update(
                        task, advance=1, description=f"Importing {escape(done.name[-40:])}"
                    ),
                )

    report = run(work)
    if as_json:
        print_json(
            {
                "imported": [{"file": n, "id": str(i)} for n, i in report.imported],
                "skipped": [{"file": n, "duplicate_of": str(i)} for n, i in report.skipped],
                "refused": [{"file": n, "reason": r} for n, r in report.refused],
            }
        )
    else:
        out.print(
            f"Imported {len(report.imported)} image(s), skipped {len(report.skipped)} "
            f"duplicate(s), refused {len(report.refused)} file(s)."
        )
        for name, image_id in report.skipped:
            out.print(f"[dim]skipped[/dim] {escape(name)}: the same file as image {image_id}")
        for name, reason in report.refused:
            err.print(f"[yellow]refused[/yellow] {escape(name)}: {escape(reason)}")
    if report.refused:
        raise typer.Exit(1)
