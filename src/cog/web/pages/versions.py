"""The versions of an image on its page: edit by a prompt, replace the file, restore, split off,
and compare two versions side by side."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, Query, Request, UploadFile
from fastapi.responses import HTMLResponse, Response

from cog.errors import CogError, Invalid
from cog.services import series as series_service
from cog.services import versions as versions_service
from cog.services.images import IncomingFile
from cog.web.deps import SessionDep, StateDep, StoreDep
from cog.web.pages._common import hx_redirect, render, same_origin

router = APIRouter(include_in_schema=False)
Guarded = [Depends(same_origin)]


def _form_number(value: str) -> int | None:
    value = value.strip()
    if not value:
        return None
    if not value.isdigit() or int(value) < 1:
        raise Invalid("`version` is not a version number.")
    return int(value)


@router.post("/cog/images/{image_id}/edit", dependencies=Guarded, response_model=None)
async def edit_by_prompt(
    request: Request,
    image_id: uuid.UUID,
    session: SessionDep,
    store: StoreDep,
    state: StateDep,
    prompt: Annotated[str, Form()] = "",
    version: Annotated[str, Form()] = "",
) -> Response:
    """Edit the shown version by a prompt; the page loads again on its new version. A refusal
    is shown in the form, with the prompt kept, so it can be reworded."""
    number = _form_number(version)
    try:
        await versions_service.edit(
            session,
            store,
            state.settings,
            state.image_provider,
            image_id,
            prompt=prompt,
            from_number=number,
        )
    except CogError as exc:
        return render(
            request,
            "images/_edit_form.html",
            status_code=422,
            image_id=image_id,
            number=number,
            prompt=prompt,
            error=exc.message,
        )
    return hx_redirect(f"/cog/images/{image_id}?notice=image-edited")


@router.post("/cog/images/{image_id}/replace", dependencies=Guarded, response_model=None)
async def replace_file(
    request: Request,
    image_id: uuid.UUID,
    session: SessionDep,
    store: StoreDep,
    state: StateDep,
    file: Annotated[UploadFile | None, File()] = None,
) -> Response:
    try:
        if file is None or not file.filename:
            raise Invalid("Choose the file to upload in place of this one.")
        await versions_service.replace(
            session, store, state.settings, image_id, IncomingFile(file.filename, file.file)
        )
    except CogError as exc:
        return render(
            request,
            "images/_replace_form.html",
            status_code=422,
            image_id=image_id,
            error=exc.message,
        )
    return hx_redirect(f"/cog/images/{image_id}?notice=image-replaced")


@router.post(
    "/cog/images/{image_id}/versions/{number}/restore",
    dependencies=Guarded,
    response_model=None,
)
async def restore(
    image_id: uuid.UUID, number: int, session: SessionDep, store: StoreDep
) -> Response:
    await versions_service.restore(session, store, image_id, number)
    return hx_redirect(f"/cog/images/{image_id}?notice=version-restored")


@router.post(
    "/cog/images/{image_id}/versions/{number}/split",
    dependencies=Guarded,
    response_model=None,
)
async def split(image_id: uuid.UUID, number: int, session: SessionDep, store: StoreDep) -> Response:
    new = await versions_service.split(session, store, image_id, number)
    return hx_redirect(f"/cog/images/{new.id}?notice=version-split")


@router.get("/cog/images/{image_id}/compare", response_class=HTMLResponse)
async def compare(
    request: Request,
    image_id: uuid.UUID,
    session: SessionDep,
    a: Annotated[int | None, Query(ge=1)] = None,
    b: Annotated[int | None, Query(ge=1)] = None,
) -> HTMLResponse:
    """Two versions side by side (by default the one before the current, and the current),
    and the same two on top of each other with a slider."""
    image, versions = await versions_service.listing(session, image_id)
    by_number = {v.number: v for v in versions}
    right = b or image.version
    left = a or max(1, right - 1)
    for number in (left, right):
        if number not in by_number:
            await versions_service.require(session, image_id, number)  # the 404 with its words
    view = await series_service.view(session, image.series_id)
    return render(
        request,
        "images/compare.html",
        image=image,
        versions=versions,
        left=by_number[left],
        right=by_number[right],
        series=view.series,
        ancestors=view.ancestors,
    )
