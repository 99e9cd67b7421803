"""`cog jobs batch` and `cog batches ...`: a job run once for each image of a selection."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
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
from cog.cli.jobs import STATUS_STYLE
from cog.db import batches as batches_db
from cog.db import runs as runs_db
from cog.domain import BatchStatus
from cog.engine.executor import RunExecutor, worker_name
from cog.errors import Conflict
from cog.services import batches as batches_service
from cog.services import restyle as restyle_service

batches_app = typer.Typer(help="Batches: a job run once for each image.", no_args_is_help=True)


def _summary(view: dict[str, Any]) -> str:
    style = STATUS_STYLE.get(view["status"], "")
    parts = [f"{view['succeeded']} succeeded", f"{view['failed']} failed"]
    if view["cancelled"]:
        parts.append(f"{view['cancelled']} cancelled")
    return (
        f"Batch {view['id']} [{style}]{view['status']}[/{style}]: "
        f"{view['done']}/{view['total']} done, " + ", ".join(parts) + "."
    )


def jobs_batch(
    job_id: str,
    image_ids: Annotated[
        list[str] | None, typer.Argument(help="Images to run the job for (any series).")
    ] = None,
    series: Annotated[
        str | None, typer.Option("--series", help="Run it for each image of this series.")
    ] = None,
    recursive: Annotated[
        bool, typer.Option("--recursive", "-r", help="With --series: its sub-series' images too.")
    ] = False,
    tag: Annotated[
        str | None, typer.Option("--tag", help="With --series: only its images with this tag.")
    ] = None,
    wait: Annotated[
        bool, typer.Option("--wait", help="Run it here and show its progress until it ends.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the batch as JSON.")] = False,
) -> None:
    """Run the job once for each image: the IMAGE_IDs given, or those of --series (with --tag,
    only those tagged so). Each run gets its image as `input` ({{ input.prompt }}, the
    reference "input"). With --wait the runs execute in this terminal (COG_BATCH_CONCURRENCY at
    a time) with a progress bar; without, they are queued for `cog serve` (or `cog worker`)."""
    jid = parse_id(job_id, "job")
    if bool(image_ids) == (series is not None):
        fail("Give image ids, or --series SERIES (not both).", 2)
    if (recursive or tag is not None) and series is None:
        fail("--recursive and --tag go with --series.", 2)
    ids = [parse_id(i, "image") for i in image_ids or []]
    sid = parse_id(series, "series") if series is not None else None

    async def work(ctx: Context) -> dict[str, Any]:
        settings = ctx.settings
        batch = await batches_service.start(
            ctx.session,
            jid,
            image_ids=ids or None,
            series_id=sid,
            include_subseries=recursive,
            tag=tag,
            concurrency=settings.batch_concurrency,
            enqueue=settings.uses_queue and not wait,
        )
        if wait:
            await _run_here(ctx, batch.id)
        async with ctx.runtime.sessions() as session:
            return await batches_service.detail(session, batch.id)

    _report(run(work), wait=wait, as_json=as_json)


async def _run_here(ctx: Context, batch_id: uuid.UUID) -> None:
    """Execute the batch's runs in this process, at most COG_BATCH_CONCURRENCY at a time, with a
    progress bar. Another Cog sharing the database may take some of them; the bar counts them
    all. Ctrl-C cancels the batch: what finished is kept."""
    runtime = ctx.runtime
    limit = ctx.settings.batch_concurrency
    executor = RunExecutor(
        runtime.runner_deps(), stale_after_s=ctx.settings.run_stale_after_s, name=worker_name("cli")
    )
    here: dict[asyncio.Task[Any], uuid.UUID] = {}
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("[green]{task.fields[ok]} ok[/green] [red]{task.fields[failed]} failed[/red]"),
        TimeElapsedColumn(),
    )
    try:
        with Progress(*columns, console=err) as progress:
            bar = progress.add_task("batch", total=None, ok=0, failed=0)
            while True:
                async with runtime.sessions() as session:
                    free = limit - len(here)
                    queued = await batches_db.queued_runs(session, batch_id, free) if free else []
                    for run_id in queued:
                        if await runs_db.claim(session, run_id, executor.name, batch_limit=limit):
                            here[asyncio.create_task(executor.run_claimed(run_id))] = run_id
                    view = await batches_service.view(session, batch_id)
                progress.update(
                    bar,
                    total=view["total"],
                    completed=view["done"],
                    ok=view["succeeded"],
                    failed=view["failed"],
                    description=f"batch {view['id'][:8]} {view['status']}",
                )
                if view["status"] != BatchStatus.running and not here:
                    break
                if here:
                    await asyncio.wait(here, timeout=0.5, return_when=asyncio.FIRST_COMPLETED)
                else:  # the rest runs elsewhere, or waits for a slot
                    await asyncio.sleep(0.5)
                for task in [t for t in here if t.done()]:
                    del here[task]
                    task.result()
    except BaseException:
        # Ctrl-C (or a failure here): the batch stops, rather than going back to the queue for
        # whichever `cog serve` starts next.
        if here:
            with contextlib.suppress(Conflict):
                async with runtime.sessions() as session:
                    await batches_service.request_cancel(session, batch_id)
            for run_id in here.values():
                executor.cancel_local(run_id)
            await asyncio.gather(*here, return_exceptions=True)
            err.print(f"Cancelled batch {batch_id}; the runs that finished are kept.")
        raise


@batches_app.command("restyle")
def batches_restyle(
    style: Annotated[str, typer.Option("--style", help="The series whose style the images take.")],
    to: Annotated[
        str | None, typer.Option("--to", help="The series the restyled images go to.")
    ] = None,
    to_new: Annotated[
        str | None,
        typer.Option("--to-new", help="Instead of --to: a new series with this title for them."),
    ] = None,
    image_ids: Annotated[
        list[str] | None, typer.Argument(help="Images to restyle (any series).")
    ] = None,
    series: Annotated[
        str | None, typer.Option("--series", help="Restyle each image of this series.")
    ] = None,
    recursive: Annotated[
        bool, typer.Option("--recursive", "-r", help="With --series: its sub-series' images too.")
    ] = False,
    tag: Annotated[
        str | None, typer.Option("--tag", help="With --series: only its images with this tag.")
    ] = None,
    prompt: Annotated[str, typer.Option("--prompt", help="Words added to every prompt.")] = "",
    style_image: Annotated[
        list[str] | None,
        typer.Option(
            "--style-image", help="An image of the style series to send; repeat for several."
        ),
    ] = None,
    style_count: Annotated[
        int,
        typer.Option(
            "--style-count", min=0, max=13, help="Without --style-image: how many to sample."
        ),
    ] = 3,
    wait: Annotated[
        bool, typer.Option("--wait", help="Run it here and show its progress until it ends.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the batch as JSON.")] = False,
) -> None:
    """Re-render images in the style of another series (--style) into a target series (--to,
    or a new one: --to-new TITLE): the IMAGE_IDs given, or those of --series (with --tag, only
    those tagged so). Each image is sent with style images of the style series (--style-image,
    or a sample of --style-count) and its style profile; each result records its source image
    and the style in its lineage and metadata. With --wait the runs execute in this terminal
    with a progress bar; without, they are queued for `cog serve` (or `cog worker`)."""
    if bool(image_ids) == (series is not None):
        fail("Give image ids, or --series SERIES (not both).", 2)
    if (recursive or tag is not None) and series is None:
        fail("--recursive and --tag go with --series.", 2)
    ids = [parse_id(i, "image") for i in image_ids or []]
    sid = parse_id(series, "series") if series is not None else None
    if (to is None) == (to_new is None):
        fail("Give --to SERIES, or --to-new TITLE for a new series (not both).", 2)
    style_id = parse_id(style, "series")
    target_id = parse_id(to, "series") if to is not None else None
    picked = [parse_id(i, "image") for i in style_image or []]

    async def work(ctx: Context) -> dict[str, Any]:
        settings = ctx.settings
        batch = await restyle_service.start(
            ctx.session,
            style_series_id=style_id,
            target_series_id=target_id,
            target_title=to_new,
            image_ids=ids or None,
            series_id=sid,
            include_subseries=recursive,
            tag=tag,
            prompt=prompt,
            style_image_ids=picked,
            style_image_count=style_count,
            concurrency=settings.batch_concurrency,
            enqueue=settings.uses_queue and not wait,
        )
        if wait:
            await _run_here(ctx, batch.id)
        async with ctx.runtime.sessions() as session:
            return await batches_service.detail(session, batch.id)

    _report(run(work), wait=wait, as_json=as_json)


def _report(view: dict[str, Any], *, wait: bool, as_json: bool) -> None:
    """What `jobs batch` and `batches restyle` print once the batch is started (or done)."""
    if as_json:
        print_json(view)
    elif not wait:
        out.print(
            f"Queued batch {view['id']}: {view['total']} run(s), one for each image. "
            f"Follow it with `cog batches show {view['id']}`."
        )
        return
    else:
        out.print(_summary(view))
        for r in view["runs"]:
            if r["error"]:
                err.print(f"run {r['id']} (image {r['input_image_id']}): {escape(r['error'])}")
    if wait and view["status"] != BatchStatus.succeeded:
        raise typer.Exit(1)


@batches_app.command("show")
def batches_show(batch_id: str, as_json: JsonOption = False) -> None:
    """Show a batch: its progress and each run (status, input image, images made, error)."""
    bid = parse_id(batch_id, "batch")

    async def work(ctx: Context) -> dict[str, Any]:
        return await batches_service.detail(ctx.session, bid)

    view = run(work)
    if as_json:
        print_json(view)
        return
    out.print(_summary(view))
    table = Table("#", "run", "status", id_column("input image"), "made", "error")
    for n, r in enumerate(view["runs"], 1):
        style = STATUS_STYLE.get(r["status"], "")
        table.add_row(
            str(n),
            r["id"][:8],
            f"[{style}]{r['status']}[/{style}]",
            r["input_image_id"] or "(deleted)",
            str(len(r["image_ids"])),
            escape(r["error"] or ""),
        )
    out.print(table)


@batches_app.command("list")
def batches_list(job_id: str, as_json: JsonOption = False) -> None:
    """List a job's batches, newest first."""
    jid = parse_id(job_id, "job")

    async def work(ctx: Context) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        cursor = None
        while True:
            page = await batches_service.listing(ctx.session, jid, limit=500, cursor=cursor)
            found += page.items
            if not (cursor := page.next_cursor):
                return found

    batches = run(work)
    if as_json:
        print_json(batches)
        return
    table = Table(id_column(), "status", "done", "succeeded", "failed", "created")
    for b in batches:
        style = STATUS_STYLE.get(b["status"], "")
        table.add_row(
            b["id"],
            f"[{style}]{b['status']}[/{style}]",
            f"{b['done']}/{b['total']}",
            str(b["succeeded"]),
            str(b["failed"]),
            b["created_at"][:19],
        )
    out.print(table if batches else "No batches.")


@batches_app.command("cancel")
def batches_cancel(batch_id: str) -> None:
    """Cancel a batch: runs not started are dropped, running ones stop (what finished stays)."""
    bid = parse_id(batch_id, "batch")

    async def work(ctx: Context) -> int:
        return len(await batches_service.request_cancel(ctx.session, bid))

    running = run(work)
    out.print(
        "Cancelled."
        if not running
        else f"Cancelled; {running} running run(s) will stop in the process running them."
    )
