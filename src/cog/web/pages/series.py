"""The series pages: `/cog` (the tree, search, create) and `/cog/series/{id}` (header, sub-series,
jobs, gallery), with the fragments htmx swaps into them."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from typing import Annotated, Any, Literal
from urllib.parse import urlencode, urlsplit

from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from cog.db.models import Series
from cog.db.pages import Page
from cog.db.series import SeriesStats
from cog.services import images as images_service
from cog.services import jobs as jobs_service
from cog.services import series as series_service
from cog.web.deps import SessionDep, StoreDep
from cog.web.pages._common import form_uuid, hx_redirect, is_htmx, render, same_origin, toast
from cog.web.schemas import JobCreate, SearchText, SeriesCreate

router = APIRouter(include_in_schema=False)
Guarded = [Depends(same_origin)]

GALLERY_PAGE = 60  # thumbnails per gallery page: a screenful or two, cheap to render
IMAGE_TAGS_SHOWN = 30  # image tags offered as gallery filters, most used first
TREE_LIMIT = 200  # series shown per level of the tree (and search results)


@dataclass(frozen=True)
class Row:
    """A series as the tree shows it."""

    series: Series
    image_count: int
    child_count: int
    cover: uuid.UUID | None
    trail: list[Series]


async def rows_of(
    session: AsyncSession,
    page: Page[Series],
    counts: dict[uuid.UUID, SeriesStats],
    *,
    with_trails: bool = False,
) -> list[Row]:
    ids = [s.id for s in page.items]
    covers = await series_service.covers(session, ids)
    trails = await series_service.trails(session, ids) if with_trails else {}
    return [
        Row(
            s,
            counts[s.id].image_count,
            counts[s.id].child_count,
            covers.get(s.id),
            trails.get(s.id, []),
        )
        for s in page.items
    ]


def gallery_url(series_id: uuid.UUID, cursor: str | None, tag: str = "") -> str | None:
    """Where the gallery's next page is (of the images with `tag`, if one), or None after the
    last."""
    if not cursor:
        return None
    query = {"cursor": cursor, **({"tag": tag} if tag else {})}
    return f"/cog/series/{series_id}/images?{urlencode(query)}"


def split_tags(text: str) -> list[str]:
    return [t for t in (part.strip() for part in text.split(",")) if t]


def form_errors(exc: ValidationError) -> dict[str, str]:
    """Pydantic's complaints about a form, by field name."""
    errors: dict[str, str] = {}
    for err in exc.errors():
        message = err["msg"].removeprefix("Value error, ")
        if err["loc"]:
            name = str(err["loc"][0])
        else:  # a check of the whole form names its field first: "tags[0]: ..."
            where, _, message = message.partition(": ")
            name = re.split(r"[\[.]", where)[0]
        if err["type"] == "string_too_short" and name == "title":
            message = "Give it a title."
        errors.setdefault(name, message)
    return errors


# --- /cog ---------------------------------------------------------------------------------------


@router.get("/cog", response_class=HTMLResponse)
async def series_list(
    request: Request,
    session: SessionDep,
    q: Annotated[SearchText, Query(max_length=200)] = "",
    tag: Annotated[SearchText, Query(max_length=64)] = "",
) -> HTMLResponse:
    searching = bool(q.strip() or tag.strip())
    page, counts = await series_service.listing(
        session, tag=tag or None, text=q or None, limit=TREE_LIMIT
    )
    rows = await rows_of(session, page, counts, with_trails=searching)
    context: dict[str, Any] = {
        "rows": rows,
        "q": q,
        "tag": tag,
        "searching": searching,
        "more": page.next_cursor is not None,
    }
    if is_htmx(request) and request.headers.get("hx-target") == "series-results":
        return render(request, "series/_results.html", **context)
    tags = sorted({t for r in rows for t in r.series.tags})
    return render(request, "series/list.html", tag_choices=tags, form={}, errors={}, **context)


@router.get("/cog/series/{series_id}/children", response_class=HTMLResponse)
async def series_children(
    request: Request, series_id: uuid.UUID, session: SessionDep
) -> HTMLResponse:
    page, counts = await series_service.listing(session, parent_id=series_id, limit=TREE_LIMIT)
    rows = await rows_of(session, page, counts)
    return render(
        request,
        "series/_tree_items.html",
        rows=rows,
        more_at=series_id if page.next_cursor else None,
    )


@router.post("/cog/series", dependencies=Guarded, response_model=None)
async def create_series(
    request: Request,
    session: SessionDep,
    title: Annotated[str, Form()] = "",
    description: Annotated[str, Form()] = "",
    tags: Annotated[str, Form()] = "",
    parent_id: Annotated[str, Form()] = "",
) -> Response:
    form = {"title": title, "description": description, "tags": tags}
    parent = form_uuid(parent_id, "parent_id")
    try:
        body = SeriesCreate.model_validate(
            {
                "title": title,
                "description": description.replace("\r\n", "\n"),
                "tags": split_tags(tags),
                "parent_id": parent,
            }
        )
    except ValidationError as exc:
        return render(
            request,
            "series/_create_form.html",
            status_code=422,
            form=form,
            errors=form_errors(exc),
            parent_id=parent,
        )
    created = await series_service.create(
        session,
        title=body.title,
        description=body.description,
        tags=body.tags,
        parent_id=body.parent_id,
    )
    if parent is None:
        return hx_redirect(f"/cog/series/{created.id}")
    # A sub-series: stay on the parent's page; the form empties and the list shows the new one.
    children = await _children_rows(session, parent)
    response = render(
        request,
        "series/_create_form.html",
        form={},
        errors={},
        parent_id=parent,
        children=children,
        refresh_children=True,
    )
    return toast(response, f"Added the sub-series “{created.title}”.")


async def _children_rows(session: AsyncSession, series_id: uuid.UUID) -> list[Row]:
    page, counts = await series_service.listing(session, parent_id=series_id, limit=TREE_LIMIT)
    return await rows_of(session, page, counts)


# --- /cog/series/{id} ---------------------------------------------------------------------------


@router.get("/cog/series/{series_id}", response_class=HTMLResponse)
async def series_detail(
    request: Request,
    series_id: uuid.UUID,
    session: SessionDep,
    tag: Annotated[SearchText, Query(max_length=64)] = "",
) -> HTMLResponse:
    view = await series_service.view(session, series_id)
    children = await _children_rows(session, series_id)
    tag = _clean_tag(tag)
    images = await images_service.listing(session, series_id, limit=GALLERY_PAGE, tag=tag or None)
    matching = await images_service.count(session, series_id, tag=tag) if tag else view.image_count
    jobs = await jobs_service.listing(session, series_id, limit=100)
    last_runs = await jobs_service.last_runs(session, [j.id for j in jobs.items])
    return render(
        request,
        "series/detail.html",
        view=view,
        series=view.series,
        children=children,
        images=images.items,
        next_url=gallery_url(series_id, images.next_cursor, tag),
        jobs=jobs.items,
        last_runs=last_runs,
        form={},
        errors={},
        parent_id=series_id,
        series_id=series_id,
        tag=tag,
        matching=matching,
        tag_counts=await images_service.tag_counts(session, series_id, limit=IMAGE_TAGS_SHOWN),
    )


def _clean_tag(text: str) -> str:
    return series_service.normalize_tag(text) or ""


@router.get("/cog/series/{series_id}/images", response_class=HTMLResponse)
async def gallery_page(
    request: Request,
    series_id: uuid.UUID,
    session: SessionDep,
    cursor: str | None = None,
    tag: Annotated[SearchText, Query(max_length=64)] = "",
) -> HTMLResponse:
    """The next page of thumbnails, with the marker that loads the page after it."""
    tag = _clean_tag(tag)
    images = await images_service.listing(
        session, series_id, limit=GALLERY_PAGE, cursor=cursor, tag=tag or None
    )
    return render(
        request,
        "series/_gallery_page.html",
        images=images.items,
        next_url=gallery_url(series_id, images.next_cursor, tag),
        tag=tag,
    )


@router.get("/cog/series/{series_id}/images/move", response_class=HTMLResponse)
async def images_move_dialog(
    request: Request, series_id: uuid.UUID, session: SessionDep
) -> HTMLResponse:
    """Where the selected images of the gallery can go (cog.js sends the batch)."""
    series = await series_service.require(session, series_id)
    entries = await series_service.outline(session)
    return render(request, "series/_batch_move.html", series=series, entries=entries)


@router.get("/cog/series/{series_id}/images/tags", response_class=HTMLResponse)
async def images_tags_dialog(
    request: Request,
    series_id: uuid.UUID,
    session: SessionDep,
    action: Annotated[Literal["tag", "untag"], Query()] = "tag",
) -> HTMLResponse:
    """The tags to add to (or remove from) the selected images, with the series' image tags
    offered as they are typed."""
    series = await series_service.require(session, series_id)
    known = await images_service.tag_counts(session, series_id, limit=IMAGE_TAGS_SHOWN)
    return render(request, "series/_batch_tags.html", series=series, action=action, known=known)


@router.get("/cog/series/{series_id}/header", response_class=HTMLResponse)
async def series_header(
    request: Request, series_id: uuid.UUID, session: SessionDep
) -> HTMLResponse:
    view = await series_service.view(session, series_id)
    return render(request, "series/_header.html", view=view, series=view.series)


@router.get("/cog/series/{series_id}/edit", response_class=HTMLResponse)
async def series_edit_form(
    request: Request, series_id: uuid.UUID, session: SessionDep
) -> HTMLResponse:
    series = await series_service.require(session, series_id)
    form = {
        "title": series.title,
        "description": series.description,
        "tags": ", ".join(series.tags),
        "inherit_context": series.inherit_context,
    }
    return render(request, "series/_header_form.html", series=series, form=form, errors={})


@router.post("/cog/series/{series_id}", dependencies=Guarded, response_model=None)
async def series_save(
    request: Request,
    series_id: uuid.UUID,
    session: SessionDep,
    title: Annotated[str, Form()] = "",
    description: Annotated[str, Form()] = "",
    tags: Annotated[str, Form()] = "",
    inherit_context: Annotated[str, Form()] = "",
) -> Response:
    series = await series_service.require(session, series_id)
    inherit = inherit_context == "on"  # the form always shows the box; unticked, it is not sent
    form = {"title": title, "description": description, "tags": tags, "inherit_context": inherit}
    try:
        body = SeriesCreate.model_validate(
            {
                "title": title,
                "description": description.replace("\r\n", "\n"),
                "tags": split_tags(tags),
            }
        )
    except ValidationError as exc:
        return render(
            request,
            "series/_header_form.html",
            status_code=422,
            series=series,
            form=form,
            errors=form_errors(exc),
        )
    await series_service.update(
        session,
        series_id,
        title=body.title,
        description=body.description,
        tags=body.tags,
        inherit_context=inherit,
    )
    view = await series_service.view(session, series_id)
    return toast(render(request, "series/_header.html", view=view, series=view.series), "Saved.")


@router.get("/cog/series/{series_id}/move", response_class=HTMLResponse)
async def series_move_dialog(
    request: Request, series_id: uuid.UUID, session: SessionDep
) -> HTMLResponse:
    series = await series_service.require(session, series_id)
    entries = await series_service.outline(session, exclude_subtree_of=series_id)
    return render(request, "series/_move_dialog.html", series=series, entries=entries)


@router.post("/cog/series/{series_id}/move", dependencies=Guarded, response_model=None)
async def series_move(
    series_id: uuid.UUID, session: SessionDep, parent_id: Annotated[str, Form()] = ""
) -> Response:
    target = form_uuid(parent_id, "parent_id")
    await series_service.update(session, series_id, parent_id=target)
    # The tree and the breadcrumbs both change: the page loads again.
    return Response(status_code=204, headers={"HX-Refresh": "true"})


@router.get("/cog/series/{series_id}/delete", response_class=HTMLResponse)
async def series_delete_dialog(
    request: Request, series_id: uuid.UUID, session: SessionDep
) -> HTMLResponse:
    series = await series_service.require(session, series_id)
    summary = await series_service.deletion_summary(session, series_id)
    return render(request, "series/_delete_dialog.html", series=series, summary=summary)


@router.post("/cog/series/{series_id}/delete", dependencies=Guarded, response_model=None)
async def series_delete(
    request: Request, series_id: uuid.UUID, session: SessionDep, store: StoreDep
) -> Response:
    series = await series_service.require(session, series_id)
    parent = series.parent_id
    await series_service.delete(session, store, series_id, recursive=True)
    # Deleted from its own page: go to its parent. Deleted from the parent's list: stay.
    here = urlsplit(request.headers.get("hx-current-url", "")).path
    if here == f"/cog/series/{series_id}" or not here:
        target = f"/cog/series/{parent}" if parent else "/cog"
        return hx_redirect(f"{target}?notice=series-deleted")
    return Response(status_code=204, headers={"HX-Refresh": "true"})


@router.post("/cog/series/{series_id}/jobs", dependencies=Guarded, response_model=None)
async def job_create(
    request: Request,
    series_id: uuid.UUID,
    session: SessionDep,
    title: Annotated[str, Form()] = "",
    base_prompt: Annotated[str, Form()] = "",
) -> Response:
    await series_service.require(session, series_id)
    form = {"title": title, "base_prompt": base_prompt}
    try:
        body = JobCreate.model_validate(
            {"title": title, "base_prompt": base_prompt.replace("\r\n", "\n")}
        )
    except ValidationError as exc:
        return render(
            request,
            "series/_job_form.html",
            status_code=422,
            series_id=series_id,
            form=form,
            errors=form_errors(exc),
        )
    job = await jobs_service.create(
        session, series_id, title=body.title, base_prompt=body.base_prompt
    )
    return hx_redirect(f"/cog/jobs/{job.id}")
