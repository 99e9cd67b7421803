"""`cog doctor`: check the database against the store, and repair what is safe to repair."""

from __future__ import annotations

import datetime as dt
import inspect
from collections import Counter
from typing import Annotated

import typer
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from cog.cli.common import Context, err, escape, fail, out, print_json, run
from cog.imaging import bytes_text
from cog.services import doctor as doctor_service
from cog.services.doctor import Finding, Outcome, Report

OUTCOME_STYLE = {
    Outcome.fixed: "green",
    Outcome.gone: "green",
    Outcome.left: "yellow",
    Outcome.failed: "red",
}


class _Bar:
    """A rich progress bar on stderr for the service's long parts."""

    def __init__(self) -> None:
        self._progress: Progress | None = None
        self._task: TaskID | None = None

    def begin(self, description: str, total: int, *, in_bytes: bool) -> None:
        columns: list[ProgressColumn] = [
            TextColumn("[progress.description]{task.description}"),
            BarColumn(),
        ]
        if in_bytes:
            columns += [DownloadColumn(), TransferSpeedColumn()]
        else:
            columns.append(MofNCompleteColumn())
        columns.append(TimeRemainingColumn())
        self._progress = Progress(*columns, console=err)
        self._progress.start()
        self._task = self._progress.add_task(description, total=total)

    def advance(self, amount: int) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.advance(self._task, amount)

    def end(self) -> None:
        if self._progress is not None:
            self._progress.stop()
        self._progress = self._task = None


def doctor(
    fix: Annotated[
        bool, typer.Option("--fix", help="Repair what can be repaired safely (see above).")
    ] = False,
    drop_missing: Annotated[
        bool,
        typer.Option(
            "--drop-missing",
            help="With --fix: also delete the rows of images whose file is gone from the store.",
        ),
    ] = False,
    quick: Annotated[
        bool,
        typer.Option(
            "--quick", help="Read no file: compare sizes from the store's listing, not sha256."
        ),
    ] = False,
    grace_minutes: Annotated[
        float,
        typer.Option(
            "--grace-minutes",
            min=0,
            help="Files without a row are left alone until this old (an upload may be about to "
            "commit its row).",
        ),
    ] = doctor_service.DEFAULT_GRACE.total_seconds() / 60,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Check the database against the store: files no image refers to, images whose file is
    missing or changed (sha256), thumbnails, and runs no executor looks after.

    --fix moves files no image refers to under quarantine/ (never deletes them), deletes
    thumbnails of no image, makes thumbnails again, and resumes or fails abandoned runs. It never
    deletes an image whose file exists, and never changes a file.

    Exit status: 0 when no problem is left (notices do not count), 1 when problems remain (or
    the check could not finish), 2 on bad usage.
    """
    if drop_missing and not fix:
        fail("--drop-missing only works with --fix.", 2)
    options = doctor_service.Options(
        grace=dt.timedelta(minutes=grace_minutes), quick=quick, drop_missing=drop_missing
    )
    bar = None if as_json else _Bar()

    async def work(ctx: Context) -> Report:
        sessions = ctx.runtime.sessions
        report = await doctor_service.check(sessions, ctx.store, ctx.settings, options, bar)
        if fix:
            await doctor_service.repair(sessions, ctx.store, ctx.settings, report, options, bar)
        return report

    report = run(work)
    if as_json:
        print_json(report.to_dict())
    else:
        _print_report(report)
    if not report.healthy:
        raise typer.Exit(1)


def _print_report(report: Report) -> None:
    read = (
        "compared sizes only (--quick)"
        if report.quick
        else f"read {report.files_read} file(s), {bytes_text(report.bytes_read)}"
    )
    out.print(
        f"Checked {report.images} image(s) and {report.objects} stored file(s) in "
        f"{escape(report.store)}; {read}; {report.runs} unfinished run(s)."
    )
    table = Table("check", "found", "after --fix" if report.repaired else "--fix")
    for kind in report.kinds():
        found = report.of(kind)
        style = "green" if not found else "red" if kind.is_problem else "yellow"
        if not report.repaired:
            action = kind.fix if found else ""
        else:
            counts = Counter(f.outcome for f in found if f.outcome is not None)
            action = ", ".join(f"{n} {o.value}" for o, n in counts.items())
        table.add_row(kind.label, f"[{style}]{len(found)}[/{style}]", escape(action))
    out.print(table)
    for kind in report.kinds():
        if found := report.of(kind):
            out.print(f"\n[bold]{kind.label}[/bold] ({len(found)})")
            for finding in found:
                _print_finding(finding)
    out.print()
    problems = report.problems
    notices = [f for f in report.findings if not f.kind.is_problem]
    if problems:
        out.print(f"[red]{len(problems)} problem(s)[/red] left.", end=" ")
        if report.repaired:
            out.print("--fix could not repair them; see above for what to do.")
        else:
            out.print("`cog doctor --fix` repairs what can be repaired safely.")
    elif notices:
        out.print(f"[green]No problem[/green] ({len(notices)} notice(s)).")
    else:
        out.print("[green]No problem found.[/green]")


def _print_finding(finding: Finding) -> None:
    head = escape(finding.subject)
    if finding.key and finding.key != finding.subject:
        head += f"  [dim]{escape(finding.key)}[/dim]"
    out.print(f"  {head}")
    out.print(f"    {escape(finding.detail)}")
    if finding.outcome is None:
        out.print(f"    [dim]--fix:[/dim] {escape(finding.remedy)}")
    else:
        style = OUTCOME_STYLE[finding.outcome]
        out.print(f"    [{style}]{finding.outcome.value}:[/{style}] {escape(finding.note)}")


# Typer keeps the line breaks of a docstring's later paragraphs; the help joins them itself.
DOCTOR_HELP = "\n\n".join(
    " ".join(part.split()) for part in inspect.cleandoc(doctor.__doc__ or "").split("\n\n")
)
