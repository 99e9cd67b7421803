"""`/cog/images/{id}`: one image large, its provenance, and what can be done with it."""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Form, Query, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import ValidationError

from cog.errors import Invalid
from cog.services import images as images_service
from cog.services import jobs as jobs_service
from cog.services import series as series_service
from cog.services import versions as versions_service
from cog.services.selection import Selection
from cog.web.api.exports import zip_response
from cog.web.deps import SessionDep, StateDep, StoreDep
from cog.web.pages._common import form_uuid, hx_redirect, render, same_origin, toast
from cog.web.pages.series import IMAGE_TAGS_SHOWN, form_errors, split_tags
from cog.web.schemas import ImageUpdate

router = APIRouter(include_in_schema=False)
Guarded = [Depends(same_origin)]

REFERENCE_JOBS = 50  # jobs offered for "use as reference", newest first


@router.get("/cog/images/{image_id}", response_class=HTMLResponse)
async def image_detail(
    request: Request,
    image_id: uuid.UUID,
    session: SessionDep,
    version: Annotated[int | None, Query(ge=1)] = None,
) -> HTMLResponse:
    """The image large (its current version, or `?version=N`), its versions and lineage."""
    image, versions = await versions_service.listing(session, image_id)
    shown = versions[-1]
    if version is not None:
        _, shown = await versions_service.require(session, image_id, version)
    view = await series_service.view(session, image.series_id)
    newer, older = await images_service.neighbours(session, image)
    job = await jobs_service.require(session, image.job_id) if image.job_id else None
    return render(
        request,
        "images/detail.html",
        image=image,
        versions=versions,
        shown=shown,
        lineage=await versions_service.lineage(session, image_id),
        series=view.series,
        ancestors=view.ancestors,
        newer=newer,
        older=older,
        job=job,
    )


@router.get("/cog/images/{image_id}/tags", response_class=HTMLResponse)
async def image_tags(request: Request, image_id: uuid.UUID, session: SessionDep) -> HTMLResponse:
    image = await images_service.require(session, image_id)
    return render(request, "images/_tags.html", image=image)


@router.get("/cog/images/{image_id}/tags/edit", response_class=HTMLResponse)
async def image_tags_form(
    request: Request, image_id: uuid.UUID, session: SessionDep
) -> HTMLResponse:
    image = await images_service.require(session, image_id)
    form = {"tags": ", ".join(image.tags or [])}
    return render(request, "images/_tags_form.html", image=image, form=form, errors={})


@router.post("/cog/images/{image_id}/tags", dependencies=Guarded, response_model=None)
async def image_tags_save(
    request: Request, image_id: uuid.UUID, session: SessionDep, tags: Annotated[str, Form()] = ""
) -> Response:
    image = await images_service.require(session, image_id)
    try:
        body = ImageUpdate.model_validate({"tags": split_tags(tags)})
    except ValidationError as exc:
        return render(
            request,
            "images/_tags_form.html",
            status_code=422,
            image=image,
            form={"tags": tags},
            errors=form_errors(exc),
        )
    image = await images_service.update(session, image_id, tags=body.tags or [])
    return toast(render(request, "images/_tags.html", image=image), "Saved.")


@router.post("/cog/images/export", dependencies=Guarded, response_model=None)
async def images_export(
    session: SessionDep, state: StateDep, ids: Annotated[str, Form()] = ""
) -> Response:
    """The gallery's download of its selected images: the ids, comma-separated, in a form (a
    browser downloads a form's answer as it streams, which a script cannot do as well)."""
    chosen = [form_uuid(part, "ids") for part in ids.split(",") if part.strip()]
    selection = Selection.of_ids([i for i in chosen if i is not None])
    return await zip_response(session, state, selection)


@router.get("/cog/selected/move", response_class=HTMLResponse)
async def selected_move_dialog(request: Request, session: SessionDep) -> HTMLResponse:
    """Where images selected outside a series' gallery (search results) can go."""
    entries = await series_service.outline(session)
    return render(request, "series/_batch_move.html", series=None, entries=entries)


@router.get("/cog/selected/tags", response_class=HTMLResponse)
async def selected_tags_dialog(
    request: Request,
    session: SessionDep,
    action: Annotated[Literal["tag", "untag"], Query()] = "tag",
) -> HTMLResponse:
    """The tags to add to (or remove from) images selected outside a series' gallery, with
    the tags used most offered as they are typed."""
    known = await images_service.tag_counts(session, None, limit=IMAGE_TAGS_SHOWN)
    return render(request, "series/_batch_tags.html", series=None, action=action, known=known)


@router.get("/cog/images/{image_id}/move", response_class=HTMLResponse)
async def image_move_dialog(
    request: Request, image_id: uuid.UUID, session: SessionDep
) -> HTMLResponse:
    image = await images_service.require(session, image_id)
    entries = await series_service.outline(session)
    return render(request, "images/_move_dialog.html", image=image, entries=entries)


@router.post("/cog/images/{image_id}/move", dependencies=Guarded, response_model=None)
async def image_move(
    image_id: uuid.UUID, session: SessionDep, series_id: Annotated[str, Form()] = ""
) -> Response:
    target = form_uuid(series_id, "series_id")
    if target is None:
        raise Invalid("Choose the series to move the image to.")
    await images_service.update(session, image_id, series_id=target)
    # The breadcrumbs and neighbours change with the series: the page loads again.
    return Response(status_code=204, headers={"HX-Refresh": "true"})


@router.post("/cog/images/{image_id}/delete", dependencies=Guarded, response_model=None)
async def image_delete(image_id: uuid.UUID, session: SessionDep, store: StoreDep) -> Response:
    image = await images_service.require(session, image_id)
    series_id = image.series_id
    await images_service.delete(session, store, image_id)
    return hx_redirect(f"/cog/series/{series_id}?notice=image-deleted")


@router.get("/cog/images/{image_id}/reference", response_class=HTMLResponse)
async def reference_form(
    request: Request, image_id: uuid.UUID, session: SessionDep
) -> HTMLResponse:
    """The steps this image can feed: those of the jobs of its own series."""
    image = await images_service.require(session, image_id)
    jobs = await jobs_service.listing(session, image.series_id, limit=REFERENCE_JOBS)
    targets = [(job, await jobs_service.steps(session, job.id)) for job in jobs.items]
    targets = [(job, steps) for job, steps in targets if steps]
    return render(request, "images/_reference.html", image=image, targets=targets, done=None)


@router.post("/cog/images/{image_id}/reference", dependencies=Guarded, response_class=HTMLResponse)
async def use_as_reference(
    request: Request, image_id: uuid.UUID, session: SessionDep, target: Annotated[str, Form()] = ""
) -> HTMLResponse:
    job_text, _, position = target.partition("/")
    job_id = form_uuid(job_text, "target")
    if job_id is None or not position.isdigit():
        raise Invalid("Choose a job's step to add the image to.")
    await images_service.require(session, image_id)
    job = await jobs_service.add_input_image(session, job_id, int(position), image_id)
    return render(
        request, "images/_reference.html", image=None, targets=[], done=(job, int(position))
    )
