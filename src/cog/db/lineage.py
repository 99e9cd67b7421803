"""Queries on lineage: which image versions a version was made from, and what was made from an
image."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from cog.db.models import Image, ImageParent, ImageVersion, Job, StepRun


@dataclass(frozen=True)
class Parent:
    image_id: uuid.UUID
    version_id: uuid.UUID
    role: str  # "reference" | "input" | "edit" | "style"


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
    if not parents:
        return
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


@dataclass(frozen=True)
class Link:
    """One lineage link seen from one image: the image at the other end and the versions it
    joins, with what made the child version (null where the job or run has been deleted)."""

    role: str
    created_at: dt.datetime
    other: Image
    other_version_id: uuid.UUID
    other_version: int
    own_version_id: uuid.UUID
    own_version: int
    job_id: uuid.UUID | None
    job_title: str | None
    run_id: uuid.UUID | None
    step_id: uuid.UUID | None
    step_position: int | None


async def links(
    session: AsyncSession, image_id: uuid.UUID, direction: Literal["parents", "children"]
) -> list[Link]:
    """What the image's versions were made from ("parents"), or what was made from them
    ("children"), oldest link first. Links between versions of the image itself (its edits)
    belong to its version history, not here."""
    child = aliased(ImageVersion)
    parent = aliased(ImageVersion)
    if direction == "parents":
        own, other, where = child, parent, ImageParent.child_image_id == image_id
        other_image_id = ImageParent.parent_image_id
    else:
        own, other, where = parent, child, ImageParent.parent_image_id == image_id
        other_image_id = ImageParent.child_image_id
    rows = await session.execute(
        sa.select(
            ImageParent.role,
            ImageParent.created_at,
            Image,
            other.id.label("other_version_id"),
            other.number.label("other_version"),
            own.id.label("own_version_id"),
            own.number.label("own_version"),
            child.job_id,
            Job.title.label("job_title"),
            child.run_id,
            child.step_id,
            StepRun.position.label("step_position"),
        )
        .select_from(ImageParent)
        .join(child, child.id == ImageParent.child_version_id)
        .join(parent, parent.id == ImageParent.parent_version_id)
        .join(Image, Image.id == other_image_id)
        .outerjoin(Job, Job.id == child.job_id)
        .outerjoin(StepRun, StepRun.id == child.step_id)
        .where(where, ImageParent.child_image_id != ImageParent.parent_image_id)
        .order_by(ImageParent.created_at, Image.id, other.number)
    )
    return [
        Link(
            role=row.role,
            created_at=row.created_at,
            other=row.Image,
            other_version_id=row.other_version_id,
            other_version=row.other_version,
            own_version_id=row.own_version_id,
            own_version=row.own_version,
            job_id=row.job_id,
            job_title=row.job_title,
            run_id=row.run_id,
            step_id=row.step_id,
            step_position=row.step_position,
        )
        for row in rows
    ]
