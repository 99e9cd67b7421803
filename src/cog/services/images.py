"""Images: verified uploads, listing, edits, moves, deletion, and the bytes behind them."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import io
import logging
import os
import sys
import threading
import uuid
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import IO, Any, TypeVar

import anyio
from cachetools import LRUCache
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from cog.config import Settings
from cog.db import images as images_db
from cog.db import lineage as lineage_db
from cog.db.base import utcnow
from cog.db.models import Image, ImageVersion
from cog.db.pages import Page, check_limit
from cog.domain import ImageSource
from cog.errors import CogError, Conflict, Invalid, NotFound, TooLarge
from cog.imaging import (
    VerifiedImage,
    check_size,
    thumbnail_fits,
    thumbnail_from_bytes,
    verify_image,
)
from cog.providers.base import InputImage
from cog.services import series as series_service
from cog.services.image_commits import BeforeCommit, ImageCommits, NewImage
from cog.shield import to_the_end
from cog.storage import ObjectStore, StoredObjectMissing
from cog.storage.base import delete_quietly
from cog.storage.keys import image_key, thumbnail_key

log = logging.getLogger(__name__)

MAX_FILENAME = 255
UNSET: Any = series_service.UNSET


@dataclass(frozen=True)
class IncomingFile:
    """A file as a person sent it. `filename` is only ever recorded, never used as a path.

    `size`, when given, is how many bytes were sent: over `COG_MAX_UPLOAD_BYTES`, `file` holds
    none of them (a receiver does not keep what it would refuse)."""

    filename: str | None
    file: IO[bytes]
    size: int | None = None


class UploadRefused(CogError):
    """One or more files of a batch were refused; nothing of the batch was kept."""

    def __init__(self, refusals: list[tuple[str, CogError]], total: int) -> None:
        first = refusals[0][1]
        self.status_code = first.status_code
        lines = "; ".join(f"{name}: {err.message}" for name, err in refusals)
        super().__init__(
            f"{len(refusals)} of {total} file(s) refused, nothing was stored. {lines}",
            files=[
                {"filename": name, "status": err.status_code, "error": err.message}
                for name, err in refusals
            ],
        )


def display_name(filename: str | None, index: int) -> str:
    """The file name as the person will see it again: its last path part, printable, bounded."""
    if not filename:
        return f"file {index + 1}"
    base = filename.replace("\\", "/").rsplit("/", 1)[-1]
    clean = "".join(ch for ch in base if ch.isprintable()).strip()
    return clean[:MAX_FILENAME] or f"file {index + 1}"


T = TypeVar("T")

# Per event loop (a process has one), and per size asked for.
_DECODE_SLOTS: weakref.WeakKeyDictionary[
    asyncio.AbstractEventLoop, dict[int, anyio.CapacityLimiter]
] = weakref.WeakKeyDictionary()

# How much less CPU priority decoding threads get than the threads answering requests (a nice
# value; Linux sets it per thread). Decoding is bulk work: a 1.5 MB upload takes 60 ms of CPU to
# decode and thumbnail. On a busy machine the pages and the thumbnails already made are
# answered first, and the decoding gets what is left; on an idle one it runs at full speed.
DECODE_NICENESS = 10


def _lower_priority() -> None:
    if sys.platform == "linux":
        with contextlib.suppress(OSError):  # a sandbox may forbid it: the work runs all the same
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), DECODE_NICENESS)


# As many threads as slots, per size asked for. glibc gives each thread that allocates a
# malloc arena of its own, and keeps what is freed in it for that thread: pixels decoded on
# eight different threads, two at a time, leave eight arenas' worth of memory resident. With
# one thread per slot, the memory the slots take is what the process keeps.
_DECODERS: dict[int, concurrent.futures.ThreadPoolExecutor] = {}


def _decoders(size: int) -> concurrent.futures.ThreadPoolExecutor:
    pool = _DECODERS.get(size)
    if pool is None:
        pool = _DECODERS[size] = concurrent.futures.ThreadPoolExecutor(
            max_workers=size, thread_name_prefix="cog-decode", initializer=_lower_priority
        )
    return pool


async def decoding(settings: Settings, work: Callable[[], T]) -> T:
    """Run `work`, which decodes an image, in a decoding thread once one of the process's
    `decode_concurrency` slots is free. A decoded image holds its pixels in memory (a 64 MP
    one, hundreds of MB): however many uploads arrive at once, memory grows with the slots,
    and the rest wait their turn. Once started, the work is waited for even when the caller
    is cancelled, as `anyio.to_thread.run_sync` does: the file it reads stays open until then."""
    slots = _DECODE_SLOTS.setdefault(asyncio.get_running_loop(), {})
    limiter = slots.get(settings.decode_concurrency)
    if limiter is None:
        limiter = slots[settings.decode_concurrency] = anyio.CapacityLimiter(
            settings.decode_concurrency
        )
    async with limiter:
        done = asyncio.wrap_future(_decoders(settings.decode_concurrency).submit(work))
        return await to_the_end(done)


async def verify(settings: Settings, fp: IO[bytes], *, thumbnail: bool = True) -> VerifiedImage:
    check = functools.partial(
        verify_image,
        fp,
        max_bytes=settings.max_upload_bytes,
        max_pixels=settings.max_image_pixels,
        thumbnail_px=settings.thumbnail_px if thumbnail else None,
    )
    if not thumbnail:
        # The structure alone is checked, the pixels are not decoded: a run's images do not
        # wait behind large uploads for a decoding slot. A small one is checked on the loop.
        if _size(fp) <= CHECK_ON_LOOP_BYTES:
            return check()
        return await anyio.to_thread.run_sync(check)
    return await decoding(settings, check)


# Checking an image's structure reads every byte once (its hash, its chunk checksums): about
# 0.1 ms for 64 KiB. Up to that size the check costs less than handing it to a thread and
# waking the loop with the answer; a larger image is checked in a thread, off the loop.
CHECK_ON_LOOP_BYTES = 64 * 1024


def _size(fp: IO[bytes]) -> int:
    size = fp.seek(0, io.SEEK_END)
    fp.seek(0)
    return size


async def require(session: AsyncSession, image_id: uuid.UUID) -> Image:
    found = await images_db.get(session, image_id)
    if found is None:
        raise NotFound(f"There is no image {image_id}.")
    return found


def check_file_count(count: int, settings: Settings) -> None:
    if count > settings.max_files_per_upload:
        raise TooLarge(
            f"{count} files in one upload; at most {settings.max_files_per_upload} are "
            "accepted at once."
        )


async def upload(
    session: AsyncSession,
    store: ObjectStore,
    settings: Settings,
    series_id: uuid.UUID,
    files: Sequence[IncomingFile],
) -> list[Image]:
    """Verify every file, then store them all or none."""
    await series_service.require(session, series_id)
    if not files:
        raise Invalid("No files were sent; send one or more in parts named `files`.")
    check_file_count(len(files), settings)
    names = [display_name(f.filename, i) for i, f in enumerate(files)]
    verified: list[VerifiedImage] = []
    refusals: list[tuple[str, CogError]] = []
    for name, incoming in zip(names, files, strict=True):
        try:
            if incoming.size is not None:
                check_size(incoming.size, settings.max_upload_bytes)
            verified.append(await verify(settings, incoming.file))
        except CogError as err:
            refusals.append((name, err))
    if refusals:
        raise UploadRefused(refusals, len(files))
    images = [
        Image(
            id=uuid.uuid4(),
            series_id=series_id,
            source=ImageSource.upload,
            original_filename=(incoming.filename and name),
            mime_type=v.info.mime_type,
            width=v.info.width,
            height=v.info.height,
            size_bytes=v.info.size_bytes,
            sha256=v.info.sha256,
            meta={},
        )
        for name, incoming, v in zip(names, files, verified, strict=True)
    ]
    for image, v in zip(images, verified, strict=True):
        image.storage_path = image_key(image.id, v.info.extension)
    await _persist(
        session,
        store,
        [(img, f.file, v.thumbnail) for img, f, v in zip(images, files, verified, strict=True)],
    )
    return images


async def store_generated(
    store: ObjectStore,
    settings: Settings,
    commits: ImageCommits,
    *,
    series_id: uuid.UUID,
    data: bytes,
    prompt: str,
    model: str,
    provider: str,
    metadata: dict[str, Any],
    job_id: uuid.UUID | None = None,
    run_id: uuid.UUID | None = None,
    step_id: uuid.UUID | None = None,
    before_commit: BeforeCommit | None = None,
) -> NewImage:
    """Verify and keep an image a model made, with its provenance. Commits (through `commits`,
    with the other images ready at the same moment): the file and the rows stay, or neither.
    Answers the image's columns as committed.
    """
    with commits.preparing():  # the next transaction waits for this image to join it
        # The thumbnail is made on first request: a run should not wait for it.
        verified = await verify(settings, io.BytesIO(data), thumbnail=False)
        image_id = uuid.uuid4()
        # Plain values, not ORM objects: a run builds a few per step, and the rows go in
        # through one Core statement per table anyway.
        image: NewImage = {
            "id": image_id,
            "series_id": series_id,
            "source": ImageSource.generated,
            "storage_path": image_key(image_id, verified.info.extension),
            "original_filename": None,
            "mime_type": verified.info.mime_type,
            "width": verified.info.width,
            "height": verified.info.height,
            "size_bytes": verified.info.size_bytes,
            "sha256": verified.info.sha256,
            "prompt": prompt,
            "model": model,
            "provider": provider,
            "meta": metadata,
            "job_id": job_id,
            "run_id": run_id,
            "step_id": step_id,
            "created_at": utcnow(),
            "tags": [],
            "version": 1,
        }
        await store.put(image["storage_path"], data)
    await commits.commit(image, first_version_values(image), [image["storage_path"]], before_commit)
    return image


# What version 1 of a new image copies from it: its file and its provenance.
_FIRST_VERSION_COPIES = (
    "source",
    "storage_path",
    "original_filename",
    "mime_type",
    "width",
    "height",
    "size_bytes",
    "sha256",
    "prompt",
    "model",
    "provider",
    "meta",
    "job_id",
    "run_id",
    "step_id",
    "created_at",
)


def first_version_values(image: Mapping[str, Any]) -> NewImage:
    """Version 1 of a new image (given by its columns), under the image's id."""
    return {
        "id": image["id"],
        "image_id": image["id"],
        "number": 1,
        **{name: image[name] for name in _FIRST_VERSION_COPIES},
    }


def first_version(image: Image) -> ImageVersion:
    """Version 1 of a new image: its file and provenance as they are, under the image's id."""
    image.created_at = image.created_at or utcnow()
    copied = {name: getattr(image, name) for name in ("id", *_FIRST_VERSION_COPIES)}
    return ImageVersion(**first_version_values(copied))


async def _persist(
    session: AsyncSession,
    store: ObjectStore,
    items: list[tuple[Image, bytes | IO[bytes], bytes | None]],
) -> None:
    """Write each image's file and thumbnail, then commit the rows: all of them or none."""
    written: list[str] = []
    try:
        for image, data, thumb in items:
            await store.put(image.storage_path, data)
            written.append(image.storage_path)
            if thumb is not None:
                await store.put(thumbnail_key(image.id), thumb)
                written.append(thumbnail_key(image.id))
        session.add_all([image for image, _, _ in items])
        session.add_all([first_version(image) for image, _, _ in items])
        await session.commit()
    except BaseException:
        # Whatever stopped us (a store error, the database, a cancelled request), nothing of
        # the batch may stay behind: no row without its file, no file without its row.
        await session.rollback()
        await to_the_end(delete_quietly(store, *written))
        raise


async def listing(
    session: AsyncSession,
    series_id: uuid.UUID,
    *,
    limit: int = 100,
    cursor: str | None = None,
    tag: str | None = None,
) -> Page[Image]:
    """The series' images, newest first; with `tag`, only those with that tag of their own."""
    check_limit(limit)
    page = await images_db.page_in_series(
        session, series_id, limit=limit, cursor=cursor, tag=series_service.normalize_tag(tag)
    )
    if not page.items:  # images prove their series exists; an empty page must look
        await series_service.require(session, series_id)
    return page


async def count(session: AsyncSession, series_id: uuid.UUID, *, tag: str | None = None) -> int:
    """How many images the series holds (with `tag`, how many of them have it)."""
    where = images_db.ImageFilter(series_id=series_id, tag=series_service.normalize_tag(tag))
    return (await images_db.count_matching(session, where))[0]


async def tag_counts(
    session: AsyncSession,
    series_id: uuid.UUID | None,
    *,
    include_subseries: bool = False,
    limit: int = 100,
) -> list[tuple[str, int]]:
    """The tags the series' images (with its sub-series', when asked; every image without a
    series) carry, most used first, with how many carry each."""
    where = images_db.ImageFilter(series_id, include_subseries)
    return await images_db.tags_in(session, where, limit=limit)


async def update(
    session: AsyncSession,
    image_id: uuid.UUID,
    *,
    series_id: uuid.UUID = UNSET,
    original_filename: str | None = UNSET,
    metadata: dict[str, Any] = UNSET,
    tags: list[str] = UNSET,
) -> Image:
    image = await require(session, image_id)
    if series_id is not UNSET and series_id != image.series_id:
        await series_service.require(session, series_id)
        image.series_id = series_id
    if original_filename is not UNSET:
        image.original_filename = display_name(original_filename, 0) if original_filename else None
    if metadata is not UNSET:
        image.meta = metadata
    if tags is not UNSET:
        image.tags = series_service.normalize_tags(tags)
    await session.commit()
    return image


async def delete(session: AsyncSession, store: ObjectStore, image_id: uuid.UUID) -> None:
    await require(session, image_id)
    await delete_many(session, store, [image_id])


async def delete_many(
    session: AsyncSession, store: ObjectStore, image_ids: Sequence[uuid.UUID]
) -> int:
    """Delete images with every file they have (each version's file and thumbnail).

    The rows go in one transaction, all of them or none; the files after it commits, so no
    row ever points at a missing file."""
    keys = await images_db.file_keys(session, image_ids)
    if await images_db.delete_many(session, image_ids) != len(image_ids):
        await session.rollback()
        raise changed_meanwhile()
    await session.commit()
    await delete_quietly(store, *keys)
    return len(image_ids)


def changed_meanwhile() -> Conflict:
    """Rows a change had checked were changed or deleted by someone else before it was made."""
    return Conflict("Some of the images changed meanwhile, so nothing was done; try again.")


async def file_of(engine: AsyncEngine, image_id: uuid.UUID) -> images_db.FileFacts:
    """What serving an image's thumbnail needs. On a connection of its own, held for the one
    query only: the store is read after it is back in the pool."""
    async with engine.connect() as conn:
        facts = await images_db.file_of(conn, image_id)
    if facts is None:
        raise NotFound(f"There is no image {image_id}.")
    return facts


# A version's thumbnail never changes: its bytes never do, and a process makes thumbnails at
# one `thumbnail_px`. So one kept in memory is never stale, and the lookup of the version that
# comes before it still answers 404 once the image is gone.
ThumbnailCache = LRUCache[uuid.UUID, bytes]


def thumbnail_cache(settings: Settings) -> ThumbnailCache | None:
    """Room for the thumbnails a process served last, `COG_THUMBNAIL_CACHE_MB` of them."""
    budget = settings.thumbnail_cache_mb * 1024 * 1024
    return LRUCache(maxsize=budget, getsizeof=len) if budget else None


async def thumbnail_of(
    store: ObjectStore,
    settings: Settings,
    facts: images_db.FileFacts,
    kept: ThumbnailCache | None = None,
) -> bytes:
    """The thumbnail of an image's current version, from its file facts."""
    return await stored_thumbnail(
        store,
        settings,
        version_id=facts.version_id,
        storage_path=facts.storage_path,
        size=(facts.width, facts.height),
        what=f"image {facts.id}",
        kept=kept,
    )


async def current_version_ids(
    session: AsyncSession, images: Sequence[Image]
) -> dict[uuid.UUID, uuid.UUID]:
    """The id of each image's current version. Version 1 has the image's id, so only images
    that were changed cost a lookup (most images never are)."""
    found = {image.id: image.id for image in images if image.version == 1}
    changed = [image.id for image in images if image.version != 1]
    found.update(await lineage_db.current_versions(session, changed))
    return found


async def thumbnails_for_model(
    session: AsyncSession, store: ObjectStore, images: Sequence[Image]
) -> list[InputImage]:
    """Thumbnails of what the images look like now, to show a text model their look at a
    fraction of the tokens; an image whose thumbnail is missing is left out."""
    current = await current_version_ids(session, images)
    found: list[InputImage] = []
    for image in images:
        try:
            thumb = await store.get(thumbnail_key(current[image.id]))
        except StoredObjectMissing:
            continue
        found.append(InputImage(thumb, "image/webp"))
    return found


async def stored_thumbnail(
    store: ObjectStore,
    settings: Settings,
    *,
    version_id: uuid.UUID,
    storage_path: str,
    size: tuple[int, int],
    what: str,
    kept: ThumbnailCache | None = None,
) -> bytes:
    """The stored WebP thumbnail of one version; made again (once) if it has gone missing or
    was made for another `thumbnail_px`. With `kept`, it comes from there when it can, and goes
    there once read."""
    if kept is not None and (data := kept.get(version_id)) is not None:
        return data
    key = thumbnail_key(version_id)
    try:
        stored: bytes | None = await store.get(key)
    except StoredObjectMissing:
        stored = None
    if stored is not None and thumbnail_fits(stored, settings.thumbnail_px, *size):
        data = stored
    else:
        try:
            original = await store.get(storage_path)
        except StoredObjectMissing as exc:
            raise NotFound(f"The file of {what} is missing from the store.") from exc
        data = await decoding(
            settings, functools.partial(thumbnail_from_bytes, original, settings.thumbnail_px)
        )
        await store.put(key, data)
    if kept is not None:
        kept[version_id] = data
    return data


async def neighbours(
    session: AsyncSession, image: Image
) -> tuple[uuid.UUID | None, uuid.UUID | None]:
    """The images just newer and just older in its series' gallery (for previous / next)."""
    return await images_db.neighbours(session, image)
