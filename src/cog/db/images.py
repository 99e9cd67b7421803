"""Queries on images."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from cog.db.models import Image, ImageVersion
from cog.db.pages import Page, newest_first


@dataclass(frozen=True)
class FileFacts:
    """What an image row says about its file."""

    id: uuid.UUID
    storage_path: str
    size_bytes: int
    sha256: str
    width: int
    height: int
    version_id: uuid.UUID  # of the current version, whose id keys the thumbnail


async def get(session: AsyncSession, image_id: uuid.UUID) -> Image | None:
    return await session.get(Image, image_id)


async def page_in_series(
    session: AsyncSession, series_id: uuid.UUID, *, limit: int, cursor: str | None
) -> Page[Image]:
    """The series' images, newest first."""
    query = sa.select(Image).where(Image.series_id == series_id)
    return await newest_first(session, query, Image, limit=limit, cursor=cursor)


async def neighbours(
    session: AsyncSession, image: Image
) -> tuple[uuid.UUID | None, uuid.UUID | None]:
    """The images just newer and just older than `image` in its series (gallery order)."""
    key = sa.tuple_(Image.created_at, Image.id)
    here = sa.tuple_(image.created_at, image.id)
    in_series = Image.series_id == image.series_id
    newer = await session.execute(
        sa.select(Image.id)
        .where(in_series, key > here)
        .order_by(Image.created_at, Image.id)
        .limit(1)
    )
    older = await session.execute(
        sa.select(Image.id)
        .where(in_series, key < here)
        .order_by(Image.created_at.desc(), Image.id.desc())
        .limit(1)
    )
    return newer.scalar_one_or_none(), older.scalar_one_or_none()


async def file_facts(
    session: AsyncSession, *, after: uuid.UUID | None, limit: int
) -> list[FileFacts]:
    """Every image's file facts in id order, `limit` at a time from the id `after`."""
    query = sa.select(
        Image.id,
        Image.storage_path,
        Image.size_bytes,
        Image.sha256,
        Image.width,
        Image.height,
        ImageVersion.id,
    ).join(
        ImageVersion,
        sa.and_(ImageVersion.image_id == Image.id, ImageVersion.number == Image.version),
    )
    if after is not None:
        query = query.where(Image.id > after)
    rows = await session.execute(query.order_by(Image.id).limit(limit))
    return [FileFacts(*row) for row in rows]


async def uses_key(session: AsyncSession, key: str) -> bool:
    """Whether a version of an image (the current one included) is stored under `key`."""
    found = await session.scalar(
        sa.select(ImageVersion.id).where(ImageVersion.storage_path == key).limit(1)
    )
    return found is not None


async def version_exists(session: AsyncSession, version_id: uuid.UUID) -> bool:
    return await session.get(ImageVersion, version_id) is not None


async def earlier_version_keys(session: AsyncSession) -> list[tuple[uuid.UUID, str]]:
    """(version id, storage key) of every version that is not its image's current one."""
    rows = await session.execute(
        sa.select(ImageVersion.id, ImageVersion.storage_path)
        .join(Image, Image.id == ImageVersion.image_id)
        .where(ImageVersion.number != Image.version)
    )
    return [(row.id, row.storage_path) for row in rows]
