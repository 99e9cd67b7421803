"""Serving stored image files and thumbnails: streaming, ETags and caching."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import quote

from fastapi import Request, Response, status
from fastapi.responses import StreamingResponse

from cog.config import Settings
from cog.domain import IMAGE_FORMATS
from cog.errors import NotFound
from cog.storage import ObjectStore, StoredObjectMissing

# The bytes of one version never change, so browsers may keep them; `private` because a token
# may guard them.
CACHE_FOREVER = "private, max-age=31536000, immutable"
# The current file of an image changes with each new version: browsers keep it but ask again
# (a cheap 304 while it is the same).
CACHE_REVALIDATE = "private, no-cache"

_IMAGE_SUFFIXES = {ext for _, ext in IMAGE_FORMATS.values()} | {"jpeg"}


@dataclass(frozen=True)
class StoredFile:
    storage_path: str
    mime_type: str
    size_bytes: int
    sha256: str
    filename: str
    what: str  # "image …", "version 2 of image …": for the error when the file is gone


def download_name(filename: str | None, ident: uuid.UUID | str, storage_path: str) -> str:
    """The name a download is saved under: the recorded file name, always ending in the
    extension of what the bytes are, so a saved file never opens as something else. A name
    that says another image type gets the right one (an edit of `photo.jpg` is a PNG); any
    other name gets it added (`page.html` holding a PNG with a script after it is saved as
    `page.html.png`)."""
    extension = storage_path.rsplit(".", 1)[-1]
    if not filename:
        return f"{ident}.{extension}"
    stem, dot, suffix = filename.rpartition(".")
    suffix = suffix.lower()
    if dot and (suffix == extension or {suffix, extension} <= {"jpeg", "jpg", "jpe", "jfif"}):
        return filename
    if dot and stem and suffix in _IMAGE_SUFFIXES:
        return f"{stem}.{extension}"
    return f"{filename}.{extension}"


def _not_modified(request: Request, etag: str) -> bool:
    sent = request.headers.get("if-none-match", "")
    return etag in [tag.strip() for tag in sent.split(",")] or sent.strip() == "*"


async def serve_file(
    request: Request, store: ObjectStore, file: StoredFile, *, cache: str
) -> Response:
    etag = f'"{file.sha256}"'
    headers = {
        "ETag": etag,
        "Cache-Control": cache,
        "Content-Disposition": f"inline; filename*=UTF-8''{quote(file.filename)}",
    }
    if _not_modified(request, etag):
        return Response(status_code=status.HTTP_304_NOT_MODIFIED, headers=headers)
    stream = store.stream(file.storage_path)
    try:
        first = await anext(stream)
    except StopAsyncIteration:
        first = b""
    except StoredObjectMissing as exc:
        raise NotFound(f"The file of {file.what} is missing from the store.") from exc

    async def body() -> AsyncIterator[bytes]:
        yield first
        async for chunk in stream:
            yield chunk

    headers["Content-Length"] = str(file.size_bytes)
    return StreamingResponse(body(), media_type=file.mime_type, headers=headers)


async def serve_thumbnail(
    request: Request,
    settings: Settings,
    sha256: str,
    make: Callable[[], Awaitable[bytes]],
    *,
    cache: str,
) -> Response:
    etag = f'"t{settings.thumbnail_px}-{sha256}"'
    headers = {"ETag": etag, "Cache-Control": cache}
    if _not_modified(request, etag):
        return Response(status_code=status.HTTP_304_NOT_MODIFIED, headers=headers)
    return Response(await make(), media_type="image/webp", headers=headers)
