"""Queries on lineage: which image versions a version was made from, and what was made from an
image."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from cog.db.models import Image, ImageParent, ImageVersion


@dataclass(frozen=True)
class Parent:
    image_id: uuid.UUID
    version_id: uuid.UUID
    role: str  # "reference" | "input" | "edit"


async def current_versions(
    session: AsyncSession, image_ids: Iterable[uuid.UUID]
) -> dict[uuid.UUID, uuid.UUID]:
    """The id of each image's current version."""
    ids = list(set(image_ids))
    if not ids:
        return {}
    rows = await session.execute(
        sa.select(ImageVersion.image_id, ImageVersion.id)
        .join(Image, Image.id == ImageVersion.image_id)
        .where(ImageVersion.image_id.in_(ids), ImageVersion.number == Image.version)
    )
    return {row.image_id: row.id for row in rows}


async def record(
    session: AsyncSession,
    *,
    child_image_id: uuid.UUID,
    child_version_id: uuid.UUID,
    parents: Sequence[Parent],
) -> None:
    """Say what a new version was made from; the same parent twice is recorded once."""
    seen: set[uuid.UUID] = set()
    for parent in parents:
        if parent.version_id in seen:
            continue
        seen.add(parent.version_id)
        session.add(
            ImageParent(
                child_version_id=child_version_id,
                parent_version_id=parent.version_id,
                child_image_id=child_image_id,
                parent_image_id=parent.image_id,
                role=parent.role,
            )
        )
    await session.flush()


async def parents_of(session: AsyncSession, image_id: uuid.UUID) -> list[tuple[ImageParent, Image]]:
    """What any version of the image was made from, oldest link first."""
    rows = await session.execute(
        sa.select(ImageParent, Image)
        .join(Image, Image.id == ImageParent.parent_image_id)
        .where(ImageParent.child_image_id == image_id)
        .order_by(ImageParent.created_at, Image.id)
    )
    return [(link, image) for link, image in rows]


async def children_of(
    session: AsyncSession, image_id: uuid.UUID
) -> list[tuple[ImageParent, Image]]:
    """What was made from any version of the image, oldest first."""
    rows = await session.execute(
        sa.select(ImageParent, Image)
        .join(Image, Image.id == ImageParent.child_image_id)
        .where(ImageParent.parent_image_id == image_id)
        .order_by(ImageParent.created_at, Image.id)
    )
    return [(link, image) for link, image in rows]
