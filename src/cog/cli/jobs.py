"""`cog jobs ...` and `cog runs ...`"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shlex
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.console import Console
from rich.live import Live
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
from cog.db import runs as runs_db
from cog.domain import RunStatus
from cog.engine.executor import EmbeddedExecutor, worker_name
from cog.errors import Invalid
from cog.services import jobs as jobs_service
from cog.services import runs as runs_service

jobs_app = typer.Typer(
    help="Jobs: steps of LLM and image calls that share a base prompt.", no_args_is_help=True
)
runs_app = typer.Typer(help="Runs of jobs.", no_args_is_help=True)

STATUS_STYLE = {
    "pending": "dim",
    "queued": "dim",
    "running": "yellow",
    "succeeded": "green",
    "failed": "red",
    "cancelled": "magenta",
    "skipped": "dim",
}


async def _job_dict(ctx: Context, job_id: uuid.UUID) -> dict[str, Any]:
    job = await jobs_service.require(ctx.session, job_id)
    steps = await jobs_service.steps(ctx.session, job_id)
    history = await runs_service.history(ctx.session, job_id, limit=5)
    return {
        "id": str(job.id),
        "series_id": str(job.series_id),
        "title": job.title,
        "base_prompt": job.base_prompt,
        "status": job.status,
        "style_series_id": str(job.style_series_id) if job.style_series_id else None,
        "style_image_ids": list(job.style_image_ids),
        "style_image_count": job.style_image_count,
        "steps": [
            {
                "position": s.position,
                "kind": s.kind,
                "prompt": s.prompt,
                "model": s.model,
                "config": s.config,
                "when": s.condition,
                "for_each": s.for_each,
            }
            for s in steps
        ],
        "runs": history.items,
    }


def _print_job(job: dict[str, Any], *, as_json: bool = False) -> None:
    if as_json:
        print_json(job)
        return
    out.print(f"[bold]{escape(job['title'])}[/bold]  {job['id']}  ({job['status']})")
    out.print(f"[dim]base prompt:[/dim] {escape(job['base_prompt'])}")
    if job["style_series_id"]:
        picked = job["style_image_ids"]
        images = f"{len(picked)} picked" if picked else f"a sample of {job['style_image_count']}"
        out.print(f"[dim]style source:[/dim] series {job['style_series_id']} ({images} images)")
    branching = any(s["when"] or s["for_each"] for s in job["steps"])
    table = Table("#", "kind", "prompt", "model", "config")
    if branching:
        table.add_column("when / for each")
    for s in job["steps"]:
        row = [
            str(s["position"]),
            s["kind"],
            escape(s["prompt"]),
            escape(s["model"] or "default"),
            escape(json.dumps(s["config"])) if s["config"] else "",
        ]
        if branching:
            row.append(
                "\n".join(
                    escape(f"{label}: {s[key]}")
                    for key, label in (("when", "when"), ("for_each", "for each"))
                    if s[key]
                )
            )
        table.add_row(*row)
    out.print(
        table if job["steps"] else "[dim]No steps yet: `cog jobs draft` or `cog jobs edit`.[/dim]"
    )
    for r in job["runs"]:
        style = STATUS_STYLE.get(r["status"], "")
        out.print(
            f"run {r['id']}  [{style}]{r['status']}[/{style}]  {r['created_at'][:19]}"
            + (f"  {escape(r['error'])}" if r["error"] else "")
        )


StyleOption = Annotated[
    str | None,
    typer.Option(
        "--style",
        help="A series whose style profile and images the image steps are given "
        "(style.profile in templates, style references in each request).",
    ),
]
StyleImageOption = Annotated[
    list[str] | None,
    typer.Option("--style-image", help="An image of the style series to send (repeat it)."),
]
StyleCountOption = Annotated[
    int | None,
    typer.Option(
        "--style-count", help="With no --style-image: how many of its images to sample (0-14)."
    ),
]


def _style_fields(
    style: str | None, style_images: list[str] | None, style_count: int | None
) -> dict[str, Any]:
    """The style-source arguments of the jobs service, only those given."""
    fields: dict[str, Any] = {}
    if style is not None:
        fields["style_series_id"] = parse_id(style, "series")
    if style_images:
        fields["style_image_ids"] = [parse_id(i, "image") for i in style_images]
    if style_count is not None:
        fields["style_image_count"] = style_count
    return fields


@jobs_app.command("create")
def jobs_create(
    series_id: str,
    prompt: Annotated[str, typer.Option("--prompt", "-p", help="The base prompt.")],
    title: Annotated[str, typer.Option(help="A title for the job.")] = "",
    style: StyleOption = None,
    style_images: StyleImageOption = None,
    style_count: StyleCountOption = None,
    as_json: JsonOption = False,
) -> None:
    """Create a job in a series from a base prompt."""
    sid = parse_id(series_id, "series")
    fields = _style_fields(style, style_images, style_count)

    async def work(ctx: Context) -> dict[str, Any]:
        job = await jobs_service.create(ctx.session, sid, title=title, base_prompt=prompt, **fields)
        return await _job_dict(ctx, job.id)

    job = run(work)
    if as_json:
        print_json(job)
        return
    out.print(f"Created job [bold]{escape(job['title'])}[/bold] {job['id']}")
    out.print(
        f"Next: `cog jobs draft {job['id']}` to let the model write the steps, "
        f"or `cog jobs edit {job['id']}` to write them."
    )


@jobs_app.command("style")
def jobs_style(
    job_id: str,
    style: StyleOption = None,
    style_images: StyleImageOption = None,
    style_count: StyleCountOption = None,
    clear: Annotated[bool, typer.Option("--clear", help="No style source any more.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Set or change a job's style source (another series, or its own), or clear it."""
    jid = parse_id(job_id, "job")
    fields = _style_fields(style, style_images, style_count)
    if clear and fields:
        fail("--clear goes alone.", 2)
    if clear:
        fields = {"style_series_id": None}
    if not fields:
        fail("Give --style SERIES (with --style-image or --style-count), or --clear.", 2)

    async def work(ctx: Context) -> dict[str, Any]:
        await jobs_service.update(ctx.session, jid, **fields)
        return await _job_dict(ctx, jid)

    _print_job(run(work), as_json=as_json)


@jobs_app.command("list")
def jobs_list(series_id: str, as_json: JsonOption = False) -> None:
    """List a series' jobs, newest first."""
    sid = parse_id(series_id, "series")

    async def work(ctx: Context) -> list[dict[str, Any]]:
        jobs: list[dict[str, Any]] = []
        cursor = None
        while True:
            page = await jobs_service.listing(ctx.session, sid, limit=500, cursor=cursor)
            jobs += [await _job_dict(ctx, j.id) for j in page.items]
            if not (cursor := page.next_cursor):
                return jobs

    jobs = run(work)
    if as_json:
        print_json(jobs)
        return
    table = Table(id_column(), "title", "steps", "last run")
    for j in jobs:
        last = j["runs"][0]["status"] if j["runs"] else ""
        table.add_row(j["id"], escape(j["title"]), str(len(j["steps"])), last)
    out.print(table if jobs else "No jobs.")


@jobs_app.command("show")
def jobs_show(job_id: str, as_json: JsonOption = False) -> None:
    """Show a job: its steps and its last runs."""
    jid = parse_id(job_id, "job")

    async def work(ctx: Context) -> dict[str, Any]:
        return await _job_dict(ctx, jid)

    _print_job(run(work), as_json=as_json)


@jobs_app.command("draft")
def jobs_draft(job_id: str, as_json: JsonOption = False) -> None:
    """Let the text model draft the steps from the base prompt and the series."""
    jid = parse_id(job_id, "job")

    async def work(ctx: Context) -> dict[str, Any]:
        with err.status(f"Drafting with {ctx.runtime.text_provider.name}…"):
            await jobs_service.draft(ctx.session, ctx.store, ctx.runtime.text_provider, jid)
        return await _job_dict(ctx, jid)

    _print_job(run(work), as_json=as_json)


class _StepsDumper(yaml.SafeDumper):
    """Writes a prompt of several lines as a literal block, the way a person would type it."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    # PyYAML falls back to a quoted style where a block cannot hold the text exactly.
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_StepsDumper.add_representer(str, _represent_str)


def _edit_text(text: str, suffix: str) -> str:
    """Open `text` in the person's editor; answers what they saved. An editor that cannot start
    or that fails (`:cq` in vim) ends the command with a message: nothing is saved."""
    editor = os.environ.get("VISUAL") or os.environ.get("EDITOR") or "vi"
    with tempfile.NamedTemporaryFile("w", suffix=suffix, delete=False, encoding="utf-8") as fp:
        fp.write(text)
        path = Path(fp.name)
    try:
        try:
            done = subprocess.run([*shlex.split(editor), str(path)], check=False)
        except (OSError, ValueError) as exc:
            fail(f"Cannot start the editor {editor!r} ({exc}); set $EDITOR. Nothing was saved.")
        if done.returncode != 0:
            fail(f"The editor {editor!r} exited with status {done.returncode}; nothing was saved.")
        try:
            return path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            fail("The edited file is not UTF-8 text; nothing was saved.")
    finally:
        path.unlink(missing_ok=True)


def _parse_steps(text: str, fmt: str) -> list[Any]:
    try:
        data = yaml.safe_load(text) if fmt == "yaml" else json.loads(text)
    except (yaml.YAMLError, json.JSONDecodeError) as exc:
        raise Invalid(f"The file is not valid {fmt.upper()}: {exc}") from exc
    if isinstance(data, dict) and "steps" in data:
        data = data["steps"]
    if not isinstance(data, list):
        raise Invalid("The file must hold a list of steps (or `steps:` with a list).")
    return data


@jobs_app.command("edit")
def jobs_edit(
    job_id: str,
    fmt: Annotated[str, typer.Option("--format", help="yaml or json")] = "yaml",
) -> None:
    """Edit the steps in $EDITOR. A refused edit shows why and, at a terminal, can be edited
    again; without one (a script, CI) the command exits 1 and the steps stay as they were."""
    jid = parse_id(job_id, "job")
    if fmt not in ("yaml", "json"):
        err.print("[red]error:[/red] --format is yaml or json.")
        raise typer.Exit(2)

    async def load(ctx: Context) -> list[dict[str, Any]]:
        await jobs_service.require(ctx.session, jid)
        steps = await jobs_service.steps(ctx.session, jid)
        return [jobs_service.step_dict(s) for s in steps]

    steps = run(load)
    header = (
        "# Steps of the job, in order. Each: kind (llm | image), prompt (a template: "
        "{{ base_prompt }}, {{ series.title }}, {{ steps[0].text }}, {{ previous.text }},\n"
        "# in a batch {{ input.prompt }}), model (null: the default), config (count, "
        "aspect_ratio, image_size, temperature, input_images: ids, step:N or input;\n"
        "# llm steps: schema, a JSON Schema for a structured answer, read as steps[N].json),\n"
        "# and optionally when (an expression: the step is skipped when it is false) and "
        "for_each\n# (an expression giving a list: the step runs once per item, as {{ item }}).\n"
    )
    text = (
        header
        + yaml.dump(
            {"steps": steps}, Dumper=_StepsDumper, sort_keys=False, allow_unicode=True, width=100
        )
        if fmt == "yaml"
        else json.dumps({"steps": steps}, indent=2, ensure_ascii=False)
    )
    original = text
    # Asking "Edit again?" needs a person at a terminal: with stdin a pipe or /dev/null the
    # question would hang, or take a script's input for the answer.
    interactive = sys.stdin is not None and sys.stdin.isatty()
    while True:
        edited = _edit_text(text, f".{fmt}")
        if edited == original:
            out.print("No changes.")
            return

        async def save(ctx: Context, edited: str = edited) -> dict[str, Any]:
            await jobs_service.replace_steps(ctx.session, jid, _parse_steps(edited, fmt))
            return await _job_dict(ctx, jid)

        try:
            job = run(save)
        except typer.Exit:  # `run` has said why
            if not interactive:
                err.print("Nothing was saved; the steps are as they were.")
                raise
            if not typer.confirm("Edit again?", default=True, err=True):
                raise
            text = edited
            continue
        out.print("Saved.")
        _print_job(job)
        return


def _progress_table(view: dict[str, Any], console: Console) -> Table:
    style = STATUS_STYLE.get(view["status"], "")
    table = Table(title=f"run {view['id'][:8]}  [{style}]{view['status']}[/{style}]", expand=False)
    # The short columns keep their width on a narrow terminal; the output gives way (what the
    # others take with their padding and the borders: about 38 characters).
    table.add_column("#", no_wrap=True)
    table.add_column("kind", no_wrap=True, min_width=len("image"))
    table.add_column("status", no_wrap=True, min_width=len("succeeded"))
    table.add_column("images", no_wrap=True, min_width=len("images"))
    output_width = min(70, max(10, console.width - 38))
    table.add_column("output", max_width=output_width, overflow="ellipsis", no_wrap=True)
    for s in view["steps"]:
        st = STATUS_STYLE.get(s["status"], "")
        wanted = s["config"].get("count", 1) if s["kind"] == "image" else 0
        if wanted and s["iterations"]:  # a loop: that many for each item
            wanted *= len(s["iterations"])
        images = f"{len(s['image_ids'])}/{wanted}" if wanted else ""
        output = s["error"] or s["skip_reason"] or (s["text"] or "").replace("\n", " ")
        if s["iterations"]:
            done = sum(it["status"] == "succeeded" for it in s["iterations"])
            output = f"{done}/{len(s['iterations'])} items. {output}"
        table.add_row(
            str(s["position"]), s["kind"], f"[{st}]{s['status']}[/{st}]", images, escape(output)
        )
    return table


@contextlib.contextmanager
def _live_progress() -> Iterator[Live]:
    """A live display on stderr. Off a terminal Rich prints only its last frame, and without a
    line end: one is added so what follows starts on a line of its own."""
    try:
        with Live(console=err, refresh_per_second=8) as live:
            yield live
    finally:
        if not err.is_terminal:
            err.line()


@jobs_app.command("run")
def jobs_run(
    job_id: str,
    wait: Annotated[
        bool, typer.Option("--wait", help="Run it here and show its progress until it ends.")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Run the job. With --wait it runs in this terminal with live progress; without, it is
    queued for the `cog serve` (or `cog worker`) that shares this database."""
    jid = parse_id(job_id, "job")

    async def work(ctx: Context) -> dict[str, Any]:
        started = await runs_service.start(
            ctx.session, jid, enqueue=ctx.settings.uses_queue and not wait
        )
        if not wait:
            return started.view()
        runtime = ctx.runtime
        executor = EmbeddedExecutor(
            runtime.runner_deps(),
            stale_after_s=ctx.settings.run_stale_after_s,
            name=worker_name("cli"),
        )
        limit = ctx.settings.batch_concurrency
        if not await runs_db.claim(ctx.session, started.id, executor.name, batch_limit=limit):
            err.print(f"Another Cog process took run {started.id}; it runs there.")
            return await runs_service.view(ctx.session, started.id)

        task = asyncio.create_task(executor.run_claimed(started.id))
        try:
            with _live_progress() as live:
                while True:
                    # Read after looking, so the last frame shows the run as it ended.
                    ended = task.done()
                    async with runtime.sessions() as session:
                        view = await runs_service.view(session, started.id)
                    live.update(_progress_table(view, err))
                    if ended:
                        break
                    await runtime.notifier.wait(started.id, 0.5)
            await task
        except BaseException:
            # Ctrl-C (or a failure here): the run stops, rather than going back to the queue
            # for whichever `cog serve` starts next. What finished is kept.
            if not task.done():
                executor.cancel_local(started.id)
                with contextlib.suppress(asyncio.CancelledError):
                    await task
                err.print(f"Cancelled run {started.id}; the steps that finished are kept.")
            raise
        async with runtime.sessions() as session:
            return await runs_service.view(session, started.id)

    view = run(work)
    if as_json:
        print_json(view)
    elif not wait:
        out.print(f"Queued run {view['id']}. Follow it with `cog runs show {view['id']}`.")
    else:
        made = sum(len(s["image_ids"]) for s in view["steps"])
        style = STATUS_STYLE.get(view["status"], "")
        out.print(f"Run {view['id']} [{style}]{view['status']}[/{style}]: {made} image(s) made.")
    if not wait:
        return
    if view["error"]:
        err.print(escape(view["error"]))
    if view["status"] != RunStatus.succeeded:
        raise typer.Exit(1)


@jobs_app.command("rm")
def jobs_rm(job_id: str) -> None:
    """Delete a job and its runs. The images it made stay in the series."""
    jid = parse_id(job_id, "job")

    async def work(ctx: Context) -> None:
        await jobs_service.delete(ctx.session, jid)

    run(work)
    out.print(f"Deleted job {jid}; its images stay in the series.")


@runs_app.command("show")
def runs_show(run_id: str, as_json: JsonOption = False) -> None:
    """Show a run: each step's status, output, images and error."""
    rid = parse_id(run_id, "run")

    async def work(ctx: Context) -> dict[str, Any]:
        return await runs_service.view(ctx.session, rid)

    view = run(work)
    if as_json:
        print_json(view)
    else:
        out.print(_progress_table(view, out))
        if view["error"]:
            out.print(escape(view["error"]))


@runs_app.command("cancel")
def runs_cancel(run_id: str) -> None:
    """Cancel a run; the step in flight stops, what finished is kept."""
    rid = parse_id(run_id, "run")

    async def work(ctx: Context) -> bool:
        return await runs_service.request_cancel(ctx.session, rid)

    done = run(work)
    out.print("Cancelled." if done else "Cancel requested; the process running it will stop it.")
