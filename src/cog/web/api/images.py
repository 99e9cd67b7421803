"""/api/series/{id}/images and /api/images"""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response, status
from fastapi.responses import StreamingResponse

from cog.errors import Invalid
from cog.services import batch as batch_service
from cog.services import images as images_service
from cog.services.batch import BatchAction
from cog.web.api._files import (
    CACHE_REVALIDATE,
    StoredFile,
    download_name,
    serve_file,
    serve_thumbnail,
)
from cog.web.deps import SessionDep, SettingsDep, StateDep, StoreDep
from cog.web.schemas import (
    ImageBatchIn,
    ImageBatchOut,
    ImageList,
    ImageOut,
    ImageUpdate,
    SearchText,
    error_response,
    error_responses,
)
from cog.web.uploads import receive_files

router = APIRouter(prefix="/api", tags=["images"], responses=error_responses(401, 404, 422))


# The body is read by `receive_files`, as it arrives; this is what the docs show of it.
UPLOAD_BODY = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": ["files"],
                "properties": {
                    "files": {
                        "type": "array",
                        "items": {"type": "string", "format": "binary"},
                        "description": "One or more images.",
                    }
                },
            }
        }
    },
}


@router.post(
    "/series/{series_id}/images",
    response_model=ImageList,
    status_code=status.HTTP_201_CREATED,
    openapi_extra={"requestBody": UPLOAD_BODY},
    responses={
        **error_response(400, "The request is not a well-formed multipart upload."),
        **error_response(413, "A file or the batch is too large."),
        **error_response(415, "A file is not an accepted image type."),
        **error_response(422, "No files, or a file is empty, damaged or truncated."),
    },
)
async def upload_images(
    series_id: uuid.UUID,
    request: Request,
    session: SessionDep,
    store: StoreDep,
    settings: SettingsDep,
) -> ImageList:
    """Upload images. Every file is verified; if one is refused, none is kept."""
    async with receive_files(request, settings) as incoming:
        images = await images_service.upload(session, store, settings, series_id, incoming)
    return ImageList(items=[ImageOut.of(i) for i in images], next_cursor=None)


@router.get("/series/{series_id}/images", response_model=ImageList)
async def list_images(
    series_id: uuid.UUID,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    cursor: str | None = None,
    tag: Annotated[
        SearchText | None, Query(description="Only images with this tag of their own.")
    ] = None,
) -> ImageList:
    """The series' images, newest first."""
    page = await images_service.listing(session, series_id, limit=limit, cursor=cursor, tag=tag)
    return ImageList(items=[ImageOut.of(i) for i in page.items], next_cursor=page.next_cursor)


@router.post(
    "/images/batch",
    response_model=ImageBatchOut,
    responses={
        **error_responses(400),
        **error_response(404, "An image or the target series does not exist; nothing changed."),
        **error_response(413, "Too many ids, or a filter matching too many images."),
        **error_response(422, "The batch cannot be done as asked; nothing changed."),
    },
)
async def batch_images(body: ImageBatchIn, session: SessionDep, store: StoreDep) -> ImageBatchOut:
    """Move, tag, untag or delete many images at once: those named by `ids` (at most 10,000) or
    every image a `filter` matches (at most 100,000). All or nothing: everything is checked
    first, and when anything is wrong nothing changes."""
    outcome = await batch_service.apply(
        session,
        store,
        body.selection(),
        BatchAction(body.action),
        series_id=body.series_id,
        tags=body.tags,
    )
    return ImageBatchOut(
        action=outcome.action,
        count=len(outcome.changed),
        ids=outcome.changed,
        matched=outcome.matched,
        series_id=outcome.series_id,
        tags=outcome.tags or None,
    )


@router.get("/images/{image_id:uuid}", response_model=ImageOut)
async def get_image(image_id: uuid.UUID, session: SessionDep) -> ImageOut:
    return ImageOut.of(await images_service.require(session, image_id))


@router.patch("/images/{image_id:uuid}", response_model=ImageOut, responses=error_responses(400))
async def update_image(image_id: uuid.UUID, body: ImageUpdate, session: SessionDep) -> ImageOut:
    sent = body.model_fields_set
    for field in ("series_id", "metadata", "tags"):
        if field in sent and getattr(body, field) is None:
            raise Invalid(f"`{field}` cannot be null.")
    image = await images_service.update(
        session, image_id, **{field: getattr(body, field) for field in sent}
    )
    return ImageOut.of(image)


@router.delete("/images/{image_id:uuid}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_image(image_id: uuid.UUID, session: SessionDep, store: StoreDep) -> Response:
    await images_service.delete(session, store, image_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get(
    "/images/{image_id:uuid}/file",
    response_class=StreamingResponse,
    responses={200: {"content": {"image/*": {}}}, 304: {"description": "Not modified"}},
)
async def image_file(
    image_id: uuid.UUID, request: Request, session: SessionDep, store: StoreDep
) -> Response:
    """The file of the image's current version, as uploaded, generated or edited."""
    image = await images_service.require(session, image_id)
    return await serve_file(
        request,
        store,
        StoredFile(
            storage_path=image.storage_path,
            mime_type=image.mime_type,
            size_bytes=image.size_bytes,
            sha256=image.sha256,
            filename=download_name(image.original_filename, image.id, image.storage_path),
            what=f"image {image.id}",
        ),
        cache=CACHE_REVALIDATE,
    )


@router.get(
    "/images/{image_id:uuid}/thumbnail",
    response_class=Response,
    responses={200: {"content": {"image/webp": {}}}, 304: {"description": "Not modified"}},
)
async def image_thumbnail(image_id: uuid.UUID, request: Request, state: StateDep) -> Response:
    """A WebP thumbnail of the current version, its longest side `COG_THUMBNAIL_PX`."""
    facts = await images_service.file_of(state.engine, image_id)

    async def make() -> bytes:
        return await images_service.thumbnail_of(
            state.store, state.settings, facts, state.thumbnails
        )

    return await serve_thumbnail(
        request, state.settings, facts.sha256, make, cache=CACHE_REVALIDATE
    )
