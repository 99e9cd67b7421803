"""/api/series/{id}/images and /api/images"""

from __future__ import annotations

import uuid
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Query, Request, Response, status
from fastapi.responses import StreamingResponse

from cog.db.models import Image
from cog.errors import Invalid, NotFound
from cog.services import images as images_service
from cog.storage import StoredObjectMissing
from cog.web.deps import SessionDep, SettingsDep, StoreDep
from cog.web.schemas import ImageList, ImageOut, ImageUpdate
from cog.web.uploads import receive_files

router = APIRouter(prefix="/api", tags=["images"])

# Image bytes behind an id never change, so browsers may keep them; `private` because a token
# may guard them.
CACHE_FOREVER = "private, max-age=31536000, immutable"


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
        400: {"description": "The request is not a well-formed multipart upload."},
        413: {"description": "A file or the batch is too large."},
        415: {"description": "A file is not an accepted image type."},
        422: {"description": "No files, or a file is empty, damaged or truncated."},
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
) -> ImageList:
    """The series' images, newest first."""
    page = await images_service.listing(session, series_id, limit=limit, cursor=cursor)
    return ImageList(items=[ImageOut.of(i) for i in page.items], next_cursor=page.next_cursor)


@router.get("/images/{image_id}", response_model=ImageOut)
async def get_image(image_id: uuid.UUID, session: SessionDep) -> ImageOut:
    return ImageOut.of(await images_service.require(session, image_id))


@router.patch("/images/{image_id}", response_model=ImageOut)
async def update_image(image_id: uuid.UUID, body: ImageUpdate, session: SessionDep) -> ImageOut:
    sent = body.model_fields_set
    for field in ("series_id", "metadata"):
        if field in sent and getattr(body, field) is None:
            raise Invalid(f"`{field}` cannot be null.")
    image = await images_service.update(
        session, image_id, **{field: getattr(body, field) for field in sent}
    )
    return ImageOut.of(image)


@router.delete("/images/{image_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_image(image_id: uuid.UUID, session: SessionDep, store: StoreDep) -> Response:
    await images_service.delete(session, store, image_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


def _not_modified(request: Request, etag: str) -> bool:
    sent = request.headers.get("if-none-match", "")
    return etag in [tag.strip() for tag in sent.split(",")] or sent.strip() == "*"


# Extensions a saved file of each stored type may keep; any other gets the stored one added.
_SAME_TYPE = {"jpg": {"jpg", "jpeg", "jpe", "jfif"}}


def served_name(image: Image) -> str:
    """The name a browser saves the file under: the person's, ending in the extension of what
    the bytes are. A saved file then never opens as something else: `page.html` holding a PNG
    with a script after it is saved as `page.html.png`."""
    extension = image.storage_path.rsplit(".", 1)[-1]
    name = image.original_filename or f"{image.id}.{extension}"
    own = name.rsplit(".", 1)[-1].lower() if "." in name else ""
    return name if own in _SAME_TYPE.get(extension, {extension}) else f"{name}.{extension}"


def _file_headers(image: Image, etag: str) -> dict[str, str]:
    name = served_name(image)
    return {
        "ETag": etag,
        "Cache-Control": CACHE_FOREVER,
        "Content-Disposition": f"inline; filename*=UTF-8''{quote(name)}",
    }


@router.get(
    "/images/{image_id}/file",
    response_class=StreamingResponse,
    responses={200: {"content": {"image/*": {}}}, 304: {"description": "Not modified"}},
)
async def image_file(
    image_id: uuid.UUID, request: Request, session: SessionDep, store: StoreDep
) -> Response:
    """The original file, as uploaded or generated."""
    image = await images_service.require(session, image_id)
    etag = f'"{image.sha256}"'
    headers = _file_headers(image, etag)
    if _not_modified(request, etag):
        return Response(status_code=status.HTTP_304_NOT_MODIFIED, headers=headers)
    stream = store.stream(image.storage_path)
    try:
        first = await anext(stream)
    except StopAsyncIteration:
        first = b""
    except StoredObjectMissing as exc:
        raise NotFound(f"The file of image {image.id} is missing from the store.") from exc

    async def body() -> object:
        yield first
        async for chunk in stream:
            yield chunk

    headers["Content-Length"] = str(image.size_bytes)
    return StreamingResponse(body(), media_type=image.mime_type, headers=headers)  # type: ignore[arg-type]


@router.get(
    "/images/{image_id}/thumbnail",
    response_class=Response,
    responses={200: {"content": {"image/webp": {}}}, 304: {"description": "Not modified"}},
)
async def image_thumbnail(
    image_id: uuid.UUID,
    request: Request,
    session: SessionDep,
    store: StoreDep,
    settings: SettingsDep,
) -> Response:
    """A WebP thumbnail, its longest side `COG_THUMBNAIL_PX`."""
    image = await images_service.require(session, image_id)
    etag = f'"t{settings.thumbnail_px}-{image.sha256}"'
    headers = {"ETag": etag, "Cache-Control": CACHE_FOREVER}
    if _not_modified(request, etag):
        return Response(status_code=status.HTTP_304_NOT_MODIFIED, headers=headers)
    data = await images_service.thumbnail(store, settings, image)
    return Response(data, media_type="image/webp", headers=headers)
