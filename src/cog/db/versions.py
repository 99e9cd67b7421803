"""Queries on the versions of images."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from cog.db.models import Image, ImageVersion


async def of_image(session: AsyncSession, image_id: uuid.UUID) -> list[ImageVersion]:
    """Every version of the image, oldest first."""
    rows = await session.execute(
        sa.select(ImageVersion)
        .where(ImageVersion.image_id == image_id)
        .order_by(ImageVersion.number)
    )
    return list(rows.scalars())


async def get(session: AsyncSession, image_id: uuid.UUID, number: int) -> ImageVersion | None:
    rows = await session.execute(
        sa.select(ImageVersion).where(
            ImageVersion.image_id == image_id, ImageVersion.number == number
        )
    )
    return rows.scalar_one_or_none()


async def numbers(session: AsyncSession, version_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, int]:
    """The number of each version."""
    if not version_ids:
        return {}
    rows = await session.execute(
        sa.select(ImageVersion.id, ImageVersion.number).where(ImageVersion.id.in_(set(version_ids)))
    )
    return {row.id: row.number for row in rows}


async def make_current(
    session: AsyncSession, image_id: uuid.UUID, version: ImageVersion
) -> int | None:
    """Take the image's next version number and point its file columns at `version`, in one
    statement; answers the number, or None when the image is gone.

    One UPDATE both reads and bumps the number, so two changes of one image at the same time
    get two numbers (the second waits for the first's row lock) instead of clashing.
    """
    values: dict[str, object] = {
        "version": Image.version + 1,
        "storage_path": version.storage_path,
        "mime_type": version.mime_type,
        "width": version.width,
        "height": version.height,
        "size_bytes": version.size_bytes,
        "sha256": version.sha256,
        "prompt": version.prompt,
        "model": version.model,
        "provider": version.provider,
    }
    # A version that came as a named file (an upload, or a copy of one) names the image too;
    # an edit keeps the name the image has.
    if version.original_filename is not None:
        values["original_filename"] = version.original_filename
    result = await session.execute(
        sa.update(Image)
        .where(Image.id == image_id)
        .values(values)
        .returning(Image.version)
        .execution_options(synchronize_session=False)
    )
    number: int | None = result.scalar_one_or_none()
    return number


async def files_of_image(session: AsyncSession, image_id: uuid.UUID) -> list[tuple[uuid.UUID, str]]:
    """(version id, storage path) of every version of the image."""
    rows = await session.execute(
        sa.select(ImageVersion.id, ImageVersion.storage_path).where(
            ImageVersion.image_id == image_id
        )
    )
    return [(row.id, row.storage_path) for row in rows]


async def files_in_series(
    session: AsyncSession, series_ids: Sequence[uuid.UUID]
) -> list[tuple[uuid.UUID, str]]:
    """(version id, storage path) of every version of every image of the series."""
    rows = await session.execute(
        sa.select(ImageVersion.id, ImageVersion.storage_path)
        .join(Image, Image.id == ImageVersion.image_id)
        .where(Image.series_id.in_(series_ids))
    )
    return [(row.id, row.storage_path) for row in rows]
