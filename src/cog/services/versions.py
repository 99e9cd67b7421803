"""Versions of an image: edits by prompt, replacement files, restores and splits.

Stored files are never overwritten and history is never rewritten: every change adds a version
with a file of its own (its key is made from the version's id), and the image's row mirrors its
current version in the same transaction, so galleries read one row per image. A change that
fails on the way (the model refuses, the file is not an image, the store or the database
fails) leaves no version, no file and no change to the image.
"""

from __future__ import annotations

import functools
import io
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import IO, Any

from sqlalchemy.ext.asyncio import AsyncSession

from cog.config import Settings
from cog.db import lineage as lineage_db
from cog.db import versions as versions_db
from cog.db.base import utcnow
from cog.db.lineage import Link, Parent
from cog.db.models import Image, ImageVersion
from cog.domain import IMAGE_FORMATS, ImageSource, LineageRole, VersionSource
from cog.errors import CogError, Conflict, Invalid, NotFound, ProviderError
from cog.imaging import VerifiedImage, for_model
from cog.providers.base import ImageProvider, InputImage
from cog.services import images as images_service
from cog.services.images import IncomingFile, display_name
from cog.shield import to_the_end
from cog.storage import ObjectStore, StoredObjectMissing
from cog.storage.base import delete_quietly
from cog.storage.keys import image_key, thumbnail_key, version_key

MAX_PROMPT = 20_000
MAX_NUMBER = 2**31 - 1
_EXTENSIONS = dict(IMAGE_FORMATS.values())  # mime type -> extension


class EditRefused(Invalid):
    """The image model would not make the edit (a safety refusal, an answer without an image):
    the prompt is what to change, so this is the person's 422, not a fault of Cog's."""


class EditFailed(ProviderError):
    """The image model could not be reached or failed the call (after its retries): a 502."""


async def listing(session: AsyncSession, image_id: uuid.UUID) -> tuple[Image, list[ImageVersion]]:
    """The image and its versions, oldest first."""
    image = await images_service.require(session, image_id)
    return image, await versions_db.of_image(session, image.id)


async def require(
    session: AsyncSession, image_id: uuid.UUID, number: int
) -> tuple[Image, ImageVersion]:
    image = await images_service.require(session, image_id)
    # Numbers past the column's range (an INTEGER) are not versions either.
    version = await versions_db.get(session, image.id, number) if 0 < number <= MAX_NUMBER else None
    if version is None:
        raise NotFound(
            f"Image {image_id} has no version {number}; its versions are 1 to {image.version}."
        )
    return image, version


async def thumbnail(
    store: ObjectStore,
    settings: Settings,
    version: ImageVersion,
    kept: images_service.ThumbnailCache | None = None,
) -> bytes:
    return await images_service.stored_thumbnail(
        store,
        settings,
        version_id=version.id,
        storage_path=version.storage_path,
        size=(version.width, version.height),
        what=f"version {version.number} of image {version.image_id}",
        kept=kept,
    )


# --- changes ------------------------------------------------------------------------------------


async def edit(
    session: AsyncSession,
    store: ObjectStore,
    settings: Settings,
    provider: ImageProvider,
    image_id: uuid.UUID,
    *,
    prompt: str,
    from_number: int | None = None,
) -> ImageVersion:
    """Ask the image model to change a version (the current one unless `from_number` says)
    as `prompt` says; its answer becomes the image's new current version."""
    prompt = prompt.strip()
    if not prompt:
        raise Invalid("Say what to change, for example “make the sky stormy”.")
    if "\x00" in prompt:
        raise Invalid("The prompt cannot contain NUL characters.")
    if len(prompt) > MAX_PROMPT:
        raise Invalid(f"The prompt is {len(prompt):,} characters; at most {MAX_PROMPT:,} are.")
    image = await images_service.require(session, image_id)
    _, base = await require(session, image_id, from_number or image.version)
    # Nothing stays open in the database while the model works, which can take a minute.
    await session.commit()
    data, mime_type = await images_service.decoding(
        settings, functools.partial(for_model, await _read(store, base), base.mime_type)
    )
    try:
        result = await provider.generate_image(
            prompt=prompt,
            references=[InputImage(data=data, mime_type=mime_type)],
            model=settings.image_model,
        )
    except ProviderError as exc:
        raise _edit_error(exc) from exc
    try:
        verified = await images_service.verify(settings, io.BytesIO(result.data))
    except CogError as exc:
        raise EditFailed(
            f"The image model answered with a file Cog cannot keep: {exc.message} "
            "The image was not changed."
        ) from exc
    version = _new_version(
        image_id,
        verified,
        source=VersionSource.edit,
        prompt=prompt,
        model=result.model,
        provider=result.provider,
        meta={
            "model_text": result.text,
            "edited_from": base.number,
            "usage": {
                "prompt_tokens": result.usage.prompt_tokens,
                "output_tokens": result.usage.output_tokens,
                "total_tokens": result.usage.total_tokens,
            },
        },
    )
    return await _add(
        session,
        store,
        image_id,
        version,
        result.data,
        verified.thumbnail,
        parents=[Parent(image_id, base.id, LineageRole.edit)],
    )


async def replace(
    session: AsyncSession,
    store: ObjectStore,
    settings: Settings,
    image_id: uuid.UUID,
    incoming: IncomingFile,
) -> ImageVersion:
    """A file a person uploads in place of the current one: verified like any upload, kept as
    the new current version."""
    await images_service.require(session, image_id)
    await session.commit()
    verified = await images_service.verify(settings, incoming.file)
    version = _new_version(
        image_id,
        verified,
        source=VersionSource.upload,
        original_filename=display_name(incoming.filename, 0) if incoming.filename else None,
    )
    return await _add(session, store, image_id, version, incoming.file, verified.thumbnail)


async def restore(
    session: AsyncSession, store: ObjectStore, image_id: uuid.UUID, number: int
) -> ImageVersion:
    """Make an earlier version current again: a new version, a copy of it, that says which one
    it restores. The versions in between stay."""
    image, old = await require(session, image_id, number)
    if old.number == image.version:
        raise Conflict(f"Version {number} is already the current version of this image.")
    await session.commit()
    data = await _read(store, old)
    version = ImageVersion(
        id=uuid.uuid4(),
        image_id=image_id,
        source=VersionSource.restore,
        restored_from_id=old.id,
        **_copied(old),
    )
    version.storage_path = version_key(version.id, _EXTENSIONS[old.mime_type])
    return await _add(session, store, image_id, version, data, await _thumbnail_if_kept(store, old))


async def split(
    session: AsyncSession, store: ObjectStore, image_id: uuid.UUID, number: int
) -> Image:
    """Make a version an image of its own, in the same series: its version 1 is a copy of that
    version's file and provenance, and its lineage points back at the version."""
    image, old = await require(session, image_id, number)
    await session.commit()
    data = await _read(store, old)
    thumb = await _thumbnail_if_kept(store, old)
    copied = _copied(old)
    new = Image(
        id=uuid.uuid4(),
        series_id=image.series_id,
        version=1,
        # Uploads carry no provider; everything a model made (or a copy of it) does.
        source=ImageSource.upload if old.provider is None else ImageSource.generated,
        **copied,
    )
    new.meta = {**old.meta, "split_from": {"image_id": str(image_id), "version": old.number}}
    new.storage_path = image_key(new.id, _EXTENSIONS[old.mime_type])
    first = images_service.first_version(new)
    # An edit split off stays an edit; a restored copy is what it copied.
    if old.source == VersionSource.edit:
        first.source = VersionSource.edit
    written: list[str] = []
    try:
        written.append(new.storage_path)
        await store.put(new.storage_path, data)
        if thumb is not None:
            written.append(thumbnail_key(new.id))
            await store.put(thumbnail_key(new.id), thumb)
        session.add_all([new, first])
        await session.flush()
        await lineage_db.record(
            session,
            child_image_id=new.id,
            child_version_id=first.id,
            parents=[Parent(image_id, old.id, LineageRole.edit)],
        )
        await session.commit()
    except BaseException:
        await _undo(session, store, written)
        raise
    return new


# --- lineage --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Lineage:
    parents: list[Link]
    children: list[Link]


async def lineage(session: AsyncSession, image_id: uuid.UUID) -> Lineage:
    """What the image's versions were made from, and what was made from them."""
    await images_service.require(session, image_id)
    return Lineage(
        parents=await lineage_db.links(session, image_id, "parents"),
        children=await lineage_db.links(session, image_id, "children"),
    )


# --- the parts ------------------------------------------------------------------------------------


def _new_version(
    image_id: uuid.UUID,
    verified: VerifiedImage,
    *,
    source: VersionSource,
    original_filename: str | None = None,
    prompt: str | None = None,
    model: str | None = None,
    provider: str | None = None,
    meta: dict[str, Any] | None = None,
) -> ImageVersion:
    info = verified.info
    version = ImageVersion(
        id=uuid.uuid4(),
        image_id=image_id,
        source=source,
        original_filename=original_filename,
        mime_type=info.mime_type,
        width=info.width,
        height=info.height,
        size_bytes=info.size_bytes,
        sha256=info.sha256,
        prompt=prompt,
        model=model,
        provider=provider,
        meta=meta or {},
    )
    version.storage_path = version_key(version.id, info.extension)
    return version


def _copied(version: ImageVersion) -> dict[str, Any]:
    """The file facts and provenance of a version, for a copy of it (storage path excepted)."""
    return {
        "original_filename": version.original_filename,
        "mime_type": version.mime_type,
        "width": version.width,
        "height": version.height,
        "size_bytes": version.size_bytes,
        "sha256": version.sha256,
        "prompt": version.prompt,
        "model": version.model,
        "provider": version.provider,
        "meta": dict(version.meta),
        "job_id": version.job_id,
        "run_id": version.run_id,
        "step_id": version.step_id,
    }


async def _read(store: ObjectStore, version: ImageVersion) -> bytes:
    try:
        return await store.get(version.storage_path)
    except StoredObjectMissing as exc:
        raise NotFound(
            f"The file of version {version.number} of image {version.image_id} is missing "
            "from the store."
        ) from exc


async def _thumbnail_if_kept(store: ObjectStore, version: ImageVersion) -> bytes | None:
    """The version's stored thumbnail, to copy with its file; None: made when first asked."""
    try:
        return await store.get(thumbnail_key(version.id))
    except StoredObjectMissing:
        return None


async def _add(
    session: AsyncSession,
    store: ObjectStore,
    image_id: uuid.UUID,
    version: ImageVersion,
    data: bytes | IO[bytes],
    thumb: bytes | None,
    parents: Sequence[Parent] = (),
) -> ImageVersion:
    """Write the version's file (and thumbnail), then, in one transaction, number it, make it
    the image's current version and record its lineage. All of it or none."""
    written: list[str] = []
    try:
        written.append(version.storage_path)
        await store.put(version.storage_path, data)
        if thumb is not None:
            written.append(thumbnail_key(version.id))
            await store.put(thumbnail_key(version.id), thumb)
        number = await versions_db.make_current(session, image_id, version)
        if number is None:
            raise NotFound(f"There is no image {image_id}; it was deleted meanwhile.")
        version.number = number
        version.created_at = utcnow()
        session.add(version)
        await session.flush()
        if parents:
            await lineage_db.record(
                session, child_image_id=image_id, child_version_id=version.id, parents=parents
            )
        await session.commit()
    except BaseException:
        await _undo(session, store, written)
        raise
    return version


async def _undo(session: AsyncSession, store: ObjectStore, written: list[str]) -> None:
    # Whatever stopped the change (a store error, the database, a cancelled request), nothing
    # of it may stay behind: no row without its file, no file without its row.
    await session.rollback()
    await to_the_end(delete_quietly(store, *written))


def _edit_error(exc: ProviderError) -> CogError:
    reason = exc.message.rstrip(".")
    # Not retryable and no HTTP status: the call worked but the answer was a refusal or had no
    # image. Anything else is the provider failing (after its retries) or refusing Cog's key.
    if not exc.retryable and exc.extra.get("status_code") is None:
        return EditRefused(f"{reason}. The image was not changed.")
    return EditFailed(f"The image model failed: {reason}. The image was not changed.")
