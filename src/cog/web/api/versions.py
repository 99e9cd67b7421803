"""/api/images/{id}/versions and /api/images/{id}/lineage"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request, Response, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import StreamingResponse
from pydantic import ValidationError
from starlette.datastructures import UploadFile

from cog.db.lineage import Link
from cog.errors import Invalid, UnsupportedMedia
from cog.services import versions as versions_service
from cog.services.images import IncomingFile
from cog.web.api._files import (
    CACHE_FOREVER,
    StoredFile,
    download_name,
    serve_file,
    serve_thumbnail,
)
from cog.web.deps import SessionDep, StateDep, StoreDep
from cog.web.schemas import (
    ERRORS,
    ImageOut,
    LineageOut,
    LinkOut,
    VersionEdit,
    VersionList,
    VersionOut,
    error_response,
    error_responses,
)

router = APIRouter(prefix="/api", tags=["versions"], responses=error_responses(401, 404, 422))

Number = Annotated[int, Path(ge=1, description="The version's number, from 1.")]

_NEW_VERSION_BODY: dict[str, Any] = {
    "required": True,
    "content": {
        "application/json": {"schema": VersionEdit.model_json_schema()},
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": ["file"],
                "properties": {
                    "file": {
                        "type": "string",
                        "format": "binary",
                        "description": "The new file; verified like any upload.",
                    }
                },
            }
        },
    },
}


@router.get("/images/{image_id:uuid}/versions", response_model=VersionList)
async def list_versions(image_id: uuid.UUID, session: SessionDep) -> VersionList:
    """Every version of the image, oldest first; `is_current` marks the one the image shows."""
    image, versions = await versions_service.listing(session, image_id)
    return VersionList(items=VersionOut.all_of(image, versions))


@router.post(
    "/images/{image_id:uuid}/versions",
    response_model=VersionOut,
    status_code=status.HTTP_201_CREATED,
    openapi_extra={"requestBody": _NEW_VERSION_BODY},
    responses={
        **error_response(400, ERRORS[400][1]),
        **error_response(413, "The new file is too large."),
        **error_response(
            415,
            "The new file is not an accepted image type, or the body is neither JSON nor a "
            "multipart form.",
        ),
        **error_response(
            422,
            "An empty prompt, a damaged file, or the image model refused the edit (its reason "
            "is in `detail`).",
        ),
        **error_response(502, "The image model failed or could not be reached."),
    },
)
async def add_version(
    image_id: uuid.UUID,
    request: Request,
    session: SessionDep,
    store: StoreDep,
    state: StateDep,
) -> VersionOut:
    """Add a version, which becomes the current one.

    - **Edit by prompt** — JSON `{"prompt": "make the sky stormy"}` (and `"version": N` to start
      from another version than the current one): the image model gets the file and the
      prompt, and its answer is the new version (`source: "edit"`, the model's words in
      `metadata.model_text`). This can take a minute.
    - **Replace the file** — a multipart form with the new file in a part named `file`
      (`source: "upload"`), verified like any upload.

    When anything is refused or fails, nothing changes: no version, no file.
    """
    kind = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if kind == "application/json":
        try:
            body = VersionEdit.model_validate_json(await request.body())
        except ValidationError as exc:
            raise RequestValidationError(exc.errors(include_url=False)) from exc
        version = await versions_service.edit(
            session,
            store,
            state.settings,
            state.image_provider,
            image_id,
            prompt=body.prompt,
            from_number=body.version,
        )
    elif kind == "multipart/form-data":
        async with request.form(max_files=1) as form:
            file = form.get("file")
            if not isinstance(file, UploadFile):
                raise Invalid("Send the new file in a multipart part named `file`.")
            version = await versions_service.replace(
                session, store, state.settings, image_id, IncomingFile(file.filename, file.file)
            )
    else:
        raise UnsupportedMedia(
            'Send JSON {"prompt": "..."} to edit the image by a prompt, or a multipart form '
            "with the new file in a part named `file` to replace it."
        )
    return VersionOut.of(version, current=version.number)


@router.get("/images/{image_id:uuid}/versions/{number}", response_model=VersionOut)
async def get_version(image_id: uuid.UUID, number: Number, session: SessionDep) -> VersionOut:
    image, versions = await versions_service.listing(session, image_id)
    for out in VersionOut.all_of(image, versions):
        if out.number == number:
            return out
    await versions_service.require(session, image_id, number)  # says which versions there are
    raise AssertionError("unreachable")


@router.get(
    "/images/{image_id:uuid}/versions/{number}/file",
    response_class=StreamingResponse,
    responses={200: {"content": {"image/*": {}}}, 304: {"description": "Not modified"}},
)
async def version_file(
    image_id: uuid.UUID, number: Number, request: Request, session: SessionDep, store: StoreDep
) -> Response:
    """The file of one version. It never changes, so it may be cached for good."""
    image, version = await versions_service.require(session, image_id, number)
    name = download_name(
        version.original_filename or image.original_filename,
        f"{image.id}-v{number}",
        version.storage_path,
    )
    return await serve_file(
        request,
        store,
        StoredFile(
            storage_path=version.storage_path,
            mime_type=version.mime_type,
            size_bytes=version.size_bytes,
            sha256=version.sha256,
            filename=name,
            what=f"version {number} of image {image.id}",
        ),
        cache=CACHE_FOREVER,
    )


@router.get(
    "/images/{image_id:uuid}/versions/{number}/thumbnail",
    response_class=Response,
    responses={200: {"content": {"image/webp": {}}}, 304: {"description": "Not modified"}},
)
async def version_thumbnail(
    image_id: uuid.UUID,
    number: Number,
    request: Request,
    session: SessionDep,
    state: StateDep,
) -> Response:
    """A WebP thumbnail of one version, its longest side `COG_THUMBNAIL_PX`."""
    _, version = await versions_service.require(session, image_id, number)

    async def make() -> bytes:
        return await versions_service.thumbnail(
            state.store, state.settings, version, state.thumbnails
        )

    return await serve_thumbnail(request, state.settings, version.sha256, make, cache=CACHE_FOREVER)


@router.post(
    "/images/{image_id:uuid}/versions/{number}/restore",
    response_model=VersionOut,
    status_code=status.HTTP_201_CREATED,
    responses=error_response(409, "The version is already the current one."),
)
async def restore_version(
    image_id: uuid.UUID, number: Number, session: SessionDep, store: StoreDep
) -> VersionOut:
    """Make an earlier version current again. This adds a new version, a copy of that one
    (`source: "restore"`, `restored_from: N`); the versions in between stay."""
    version = await versions_service.restore(session, store, image_id, number)
    return VersionOut.of(version, current=version.number, restored_from=number)


@router.post(
    "/images/{image_id:uuid}/versions/{number}/split",
    response_model=ImageOut,
    status_code=status.HTTP_201_CREATED,
)
async def split_version(
    image_id: uuid.UUID, number: Number, session: SessionDep, store: StoreDep
) -> ImageOut:
    """Make a version an image of its own in the same series (a copy of its file and
    provenance). The new image's lineage points back at the version, with role `edit`."""
    return ImageOut.of(await versions_service.split(session, store, image_id, number))


def link_out(link: Link) -> LinkOut:
    other = link.other
    return LinkOut(
        image_id=other.id,
        version=link.other_version,
        own_version=link.own_version,
        role=link.role,
        label=other.original_filename or other.prompt or "Image",
        thumbnail_url=f"/api/images/{other.id}/versions/{link.other_version}/thumbnail",
        job_id=link.job_id,
        run_id=link.run_id,
        step_id=link.step_id,
        step_position=link.step_position,
        created_at=link.created_at,
    )


@router.get("/images/{image_id:uuid}/lineage", response_model=LineageOut)
async def image_lineage(image_id: uuid.UUID, session: SessionDep) -> LineageOut:
    """What the image's versions were made from (reference images of the step that made it,
    the version an edit started from) and what was made from them. The links stay when the
    job that made an image is deleted; its `job_id`, `run_id` and `step_id` are then null."""
    found = await versions_service.lineage(session, image_id)
    return LineageOut(
        parents=[link_out(link) for link in found.parents],
        children=[link_out(link) for link in found.children],
    )
