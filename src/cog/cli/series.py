"""`cog series ...`"""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer
from rich.table import Table

from cog.cli.common import (
    Context,
    JsonOption,
    escape,
    fail,
    id_column,
    out,
    parse_id,
    print_json,
    run,
)
from cog.services import series as series_service
from cog.services import style as style_service
from cog.web.schemas import SeriesOut

series_app = typer.Typer(help="Series: nested collections of images.", no_args_is_help=True)

INHERIT_HELP = (
    "Whether its jobs see the descriptions and tags of the series above it "
    "({{ series.context }}, {{ series.ancestors }})."
)


def _series_table(rows: list[SeriesOut]) -> Table:
    table = Table(id_column(), "title", "tags", "images", "sub-series")
    for s in rows:
        table.add_row(
            str(s.id),
            escape(s.title),
            escape(", ".join(s.tags)),
            str(s.image_count),
            str(s.child_count),
        )
    return table


@series_app.command("create")
def series_create(
    title: str,
    description: Annotated[str, typer.Option("--description", "-d")] = "",
    tag: Annotated[
        list[str] | None, typer.Option("--tag", "-t", help="Repeat for several.")
    ] = None,
    parent: Annotated[str | None, typer.Option(help="Create inside this series.")] = None,
    inherit: Annotated[bool, typer.Option("--inherit/--no-inherit", help=INHERIT_HELP)] = True,
    as_json: JsonOption = False,
) -> None:
    """Create a series."""
    parent_id = parse_id(parent, "series") if parent else None

    async def work(ctx: Context) -> SeriesOut:
        created = await series_service.create(
            ctx.session,
            title=title,
            description=description,
            tags=tag or [],
            parent_id=parent_id,
            inherit_context=inherit,
        )
        return SeriesOut.of_view(await series_service.view(ctx.session, created.id))

    if not title.strip():
        fail("a series needs a title.", 2)
    created = run(work)
    if as_json:
        print_json(created.model_dump(mode="json"))
        return
    out.print(f"Created series [bold]{escape(created.title)}[/bold] {created.id}")


@series_app.command("list")
def series_list(
    parent: Annotated[str | None, typer.Option(help="List the children of this series.")] = None,
    tag: Annotated[
        str | None, typer.Option(help="Only series with this tag, at any depth.")
    ] = None,
    q: Annotated[str | None, typer.Option("-q", help="Search titles and descriptions.")] = None,
    as_json: JsonOption = False,
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
def series_show(series_id: str, as_json: JsonOption = False) -> None:
    """Show a series with its breadcrumbs and counts."""
    sid = parse_id(series_id, "series")

    async def work(ctx: Context) -> SeriesOut:
        return SeriesOut.of_view(await series_service.view(ctx.session, sid))

    s = run(work)
    if as_json:
        print_json(s.model_dump(mode="json"))
        return
    path = " / ".join([a.title for a in s.ancestors or []] + [s.title])
    out.print(f"[bold]{escape(path)}[/bold]  {s.id}")
    if s.description:
        out.print(escape(s.description))
    if s.tags:
        out.print("tags: " + escape(", ".join(s.tags)))
    out.print(f"{s.image_count} image(s), {s.child_count} sub-series")
    if not s.inherit_context:
        out.print("does not inherit the context of the series above it")
    if s.style_profile:
        out.print("style profile:\n" + escape(s.style_profile))


@series_app.command("edit")
def series_edit(
    series_id: str,
    title: Annotated[str | None, typer.Option("--title")] = None,
    description: Annotated[str | None, typer.Option("--description", "-d")] = None,
    tag: Annotated[
        list[str] | None,
        typer.Option("--tag", "-t", help="The tags, replacing those it has; repeat for several."),
    ] = None,
    inherit: Annotated[
        bool | None, typer.Option("--inherit/--no-inherit", help=INHERIT_HELP)
    ] = None,
) -> None:
    """Change a series' title, description, tags, or whether it inherits the context above it."""
    sid = parse_id(series_id, "series")
    changes: dict[str, Any] = {
        name: value
        for name, value in (
            ("title", title),
            ("description", description),
            ("tags", tag),
            ("inherit_context", inherit),
        )
        if value is not None
    }
    if not changes:
        fail("nothing to change: give --title, --description, --tag or --(no-)inherit.", 2)
    if title is not None and not title.strip():
        fail("a series needs a title.", 2)

    async def work(ctx: Context) -> SeriesOut:
        await series_service.update(ctx.session, sid, **changes)
        return SeriesOut.of_view(await series_service.view(ctx.session, sid))

    s = run(work)
    out.print(f"Saved series [bold]{escape(s.title)}[/bold] {s.id}")


@series_app.command("style")
def series_style(
    series_id: str,
    draft: Annotated[
        bool,
        typer.Option(
            "--draft",
            help="Have the text model write it from a sample of the series' images and its "
            "metadata (a series without images: from its metadata alone).",
        ),
    ] = False,
    set_to: Annotated[
        str | None,
        typer.Option("--set", help="Write it by hand; `-` reads it from standard input."),
    ] = None,
    clear: Annotated[bool, typer.Option("--clear", help="Remove it.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the series as JSON.")] = False,
) -> None:
    """Show a series' style profile (palette, medium, lighting, composition, mood), draft it
    with the text model, or set it by hand. Jobs with this series as their style source see it
    as {{ style.profile }}."""
    sid = parse_id(series_id, "series")
    if sum([draft, set_to is not None, clear]) > 1:
        fail("give one of --draft, --set and --clear.", 2)
    text = sys.stdin.read() if set_to == "-" else set_to
    if clear:
        text = ""

    async def work(ctx: Context) -> SeriesOut:
        if draft:
            await style_service.draft_profile(
                ctx.session, ctx.store, ctx.runtime.text_provider, sid
            )
        elif text is not None:
            await series_service.update(ctx.session, sid, style_profile=text)
        return SeriesOut.of_view(await series_service.view(ctx.session, sid))

    s = run(work)
    if as_json:
        print_json(s.model_dump(mode="json"))
    elif s.style_profile:
        written = s.style_profile_updated_at
        out.print(
            f"[bold]{escape(s.title)}[/bold] style profile"
            + (f" (written {written:%Y-%m-%d %H:%M} UTC)" if written else "")
        )
        out.print(escape(s.style_profile))
    else:
        out.print(
            f"{escape(s.title)} has no style profile. Draft one with "
            f"`cog series style {s.id} --draft`, or write it with --set."
        )


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
