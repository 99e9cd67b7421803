"""Style on the pages: a series' style profile (shown, drafted, edited by hand), a job's style
source, and the restyle dialog a gallery selection opens."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy.ext.asyncio import AsyncSession

from cog.db.models import Image, Job, Series
from cog.domain import MAX_REFERENCE_IMAGES
from cog.engine.style_profile import MAX_PROFILE_CHARS
from cog.errors import CogError, Invalid
from cog.services import jobs as jobs_service
from cog.services import series as series_service
from cog.services import style as style_service
from cog.web.deps import SessionDep, StateDep, StoreDep
from cog.web.pages._common import form_uuid, render, same_origin, toast

router = APIRouter(include_in_schema=False)
Guarded = [Depends(same_origin)]

# Images of the style series the job page offers to pick from, newest first.
PICKABLE = 48


def _profile(request: Request, series: Series, error: str | None = None) -> HTMLResponse:
    return render(
        request,
        "series/_style.html",
        series=series,
        error=error,
        status_code=422 if error else 200,
    )


@router.get("/cog/series/{series_id}/style", response_class=HTMLResponse)
async def style_panel(request: Request, series_id: uuid.UUID, session: SessionDep) -> HTMLResponse:
    return _profile(request, await series_service.require(session, series_id))


@router.get("/cog/series/{series_id}/style/edit", response_class=HTMLResponse)
async def style_form(request: Request, series_id: uuid.UUID, session: SessionDep) -> HTMLResponse:
    series = await series_service.require(session, series_id)
    return render(
        request,
        "series/_style_form.html",
        series=series,
        text=series.style_profile,
        error=None,
        max_chars=MAX_PROFILE_CHARS,
    )


@router.post("/cog/series/{series_id}/style", dependencies=Guarded, response_model=None)
async def style_save(
    request: Request,
    series_id: uuid.UUID,
    session: SessionDep,
    style_profile: Annotated[str, Form()] = "",
) -> Response:
    """Save the profile as written (an empty one clears it)."""
    series = await series_service.require(session, series_id)
    try:
        await series_service.update(
            session, series_id, style_profile=style_profile.replace("\r\n", "\n")
        )
    except Invalid as exc:
        return render(
            request,
            "series/_style_form.html",
            status_code=422,
            series=series,
            text=style_profile,
            error=exc.message,
            max_chars=MAX_PROFILE_CHARS,
        )
    return toast(_profile(request, series), "Saved the style profile.")


@router.post("/cog/series/{series_id}/style/draft", dependencies=Guarded, response_model=None)
async def style_draft(
    request: Request, series_id: uuid.UUID, session: SessionDep, store: StoreDep, state: StateDep
) -> Response:
    """The text model writes the profile; a failure leaves the one before and says why."""
    series = await series_service.require(session, series_id)
    try:
        series = await style_service.draft_profile(session, store, state.text_provider, series_id)
    except CogError as exc:
        await session.rollback()
        series = await series_service.require(session, series_id)
        return _profile(request, series, error=f"Drafting did not work: {exc.message}")
    return toast(_profile(request, series), "Drafted the style profile.")


# --- a job's style source ----------------------------------------------------------------------


async def _source_context(
    session: AsyncSession, job: Job, series_id: uuid.UUID | None
) -> dict[str, Any]:
    """What the style source form shows: the choices of series, and the images of the one
    chosen to pick from."""
    entries = await series_service.outline(session)
    chosen = await session.get(Series, series_id) if series_id else None
    images: list[Image] = []
    if chosen is not None:
        rows = await session.execute(
            sa.select(Image)
            .where(Image.series_id == chosen.id)
            .order_by(Image.created_at.desc(), Image.id.desc())
            .limit(PICKABLE)
        )
        images = list(rows.scalars())
    return {
        "job": job,
        "entries": entries,
        "chosen": chosen,
        "images": images,
        "picked": set(job.style_image_ids) if series_id == job.style_series_id else set(),
        "max_refs": MAX_REFERENCE_IMAGES,
    }


@router.get("/cog/jobs/{job_id}/style", response_class=HTMLResponse)
async def style_source(
    request: Request, job_id: uuid.UUID, session: SessionDep, series_id: str | None = None
) -> HTMLResponse:
    """The job's style source form; with `series_id`, as it would be with that series chosen."""
    job = await jobs_service.require(session, job_id)
    chosen = job.style_series_id if series_id is None else form_uuid(series_id, "series_id")
    context = await _source_context(session, job, chosen)
    return render(request, "jobs/_style_source.html", error=None, **context)


@router.post("/cog/jobs/{job_id}/style", dependencies=Guarded, response_model=None)
async def style_source_save(request: Request, job_id: uuid.UUID, session: SessionDep) -> Response:
    form = await request.form()
    job = await jobs_service.require(session, job_id)
    series_id = form_uuid(str(form.get("style_series_id", "")), "style_series_id")
    picked = [form_uuid(str(v), "style_image_ids") for v in form.getlist("style_image_ids")]
    try:
        count = int(str(form.get("style_image_count", "3")) or "3")
    except ValueError:
        count = -1
    try:
        job = await jobs_service.update(
            session,
            job_id,
            style_series_id=series_id,
            style_image_ids=[i for i in picked if i is not None] if series_id else [],
            style_image_count=count,
        )
    except Invalid as exc:
        await session.rollback()
        job = await jobs_service.require(session, job_id)
        context = await _source_context(session, job, series_id)
        return render(
            request, "jobs/_style_source.html", status_code=422, error=exc.message, **context
        )
    context = await _source_context(session, job, job.style_series_id)
    response = render(request, "jobs/_style_source.html", error=None, **context)
    return toast(response, "Saved the style source.")


# --- restyle from a gallery selection ----------------------------------------------------------


@router.get("/cog/series/{series_id}/restyle", response_class=HTMLResponse)
async def restyle_dialog(
    request: Request, series_id: uuid.UUID, session: SessionDep
) -> HTMLResponse:
    series = await series_service.require(session, series_id)
    entries = await series_service.outline(session)
    return render(
        request,
        "series/_restyle_dialog.html",
        series=series,
        entries=entries,
        max_style=MAX_REFERENCE_IMAGES - 1,
    )
