"""Queries on images."""

from __future__ import annotations

import uuid
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from cog.db import series as series_db
from cog.db.base import tag_filter
from cog.db.models import Image, ImageVersion
from cog.db.pages import Page, newest_first
from cog.storage.keys import version_objects

# Rows bound in one IN (...) list: far under SQLite's and asyncpg's limits on parameters.
CHUNK = 5000


def chunked(values: Sequence[Any], size: int = CHUNK) -> Iterable[Sequence[Any]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


@dataclass(frozen=True)
class ImageFilter:
    """Images by where they are and how they are tagged. `series_id` alone is one series;
    with `include_subseries`, its whole subtree. Without `series_id`, every series."""

    series_id: uuid.UUID | None = None
    include_subseries: bool = False
    tag: str | None = None


def matching(where: ImageFilter) -> list[sa.ColumnElement[bool]]:
    """The conditions on `Image` that make up a filter."""
    conditions: list[sa.ColumnElement[bool]] = []
    if where.series_id is not None:
        if where.include_subseries:
            conditions.append(Image.series_id.in_(series_db.subtree_select(where.series_id)))
        else:
            conditions.append(Image.series_id == where.series_id)
    if where.tag:
        conditions.append(tag_filter(Image.tags, where.tag))
    return conditions


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


# On the bare tables, not the mapped classes: a gallery asks for dozens of thumbnails a page,
# and this skips the ORM's work for each (a third of the lookup's time).
_IMAGES = Image.__table__
_VERSIONS = ImageVersion.__table__
# The columns of `FileFacts` but the last, and how an image meets its current version.
_FILE_COLUMNS = (
    _IMAGES.c.id,
    _IMAGES.c.storage_path,
    _IMAGES.c.size_bytes,
    _IMAGES.c.sha256,
    _IMAGES.c.width,
    _IMAGES.c.height,
)
_CURRENT_VERSION = sa.and_(
    _VERSIONS.c.image_id == _IMAGES.c.id, _VERSIONS.c.number == _IMAGES.c.version
)
_FILE_OF = sa.select(
    *_FILE_COLUMNS,
    sa.func.coalesce(_VERSIONS.c.id, _IMAGES.c.id),  # version 1 has the image's id
).outerjoin(_VERSIONS, _CURRENT_VERSION)
# Built once: every thumbnail asks it, and building the statement (and its cache key) for each
# call cost more CPU than running it.
_FILE_OF_ONE = _FILE_OF.where(_IMAGES.c.id == sa.bindparam("image_id"))


async def file_of(conn: AsyncConnection, image_id: uuid.UUID) -> FileFacts | None:
    """One image's file facts, in one query on a connection (no session)."""
    row = (await conn.execute(_FILE_OF_ONE, {"image_id": image_id})).first()
    return None if row is None else FileFacts(*row)


async def page_in_series(
    session: AsyncSession,
    series_id: uuid.UUID,
    *,
    limit: int,
    cursor: str | None,
    tag: str | None = None,
) -> Page[Image]:
    """The series' images (with `tag`, those tagged so), newest first."""
    return await page_matching(
        session, ImageFilter(series_id=series_id, tag=tag), limit=limit, cursor=cursor
    )


async def page_matching(
    session: AsyncSession, where: ImageFilter, *, limit: int, cursor: str | None
) -> Page[Image]:
    query = sa.select(Image).where(*matching(where))
    return await newest_first(session, query, Image, limit=limit, cursor=cursor)


async def count_matching(session: AsyncSession, where: ImageFilter) -> tuple[int, int]:
    """How many images match, and their bytes."""
    row = (
        await session.execute(
            sa.select(sa.func.count(), sa.func.coalesce(sa.func.sum(Image.size_bytes), 0)).where(
                *matching(where)
            )
        )
    ).one()
    return int(row[0]), int(row[1])


async def ids_matching(
    session: AsyncSession,
    where: ImageFilter,
    *,
    oldest_first: bool = False,
    limit: int | None = None,
) -> list[uuid.UUID]:
    """The ids of the images that match, newest first (or oldest first: the order they were
    added in)."""
    order = (Image.created_at, Image.id) if oldest_first else (Image.created_at.desc(), Image.id)
    rows = await session.execute(
        sa.select(Image.id).where(*matching(where)).order_by(*order).limit(limit)
    )
    return list(rows.scalars())


async def by_ids(session: AsyncSession, ids: Sequence[uuid.UUID]) -> list[Image]:
    """The images among `ids` that exist, newest first."""
    found: list[Image] = []
    for part in chunked(ids):
        found += (await session.execute(sa.select(Image).where(Image.id.in_(part)))).scalars()
    found.sort(key=lambda i: (i.created_at, i.id), reverse=True)
    return found


async def sizes_of(session: AsyncSession, ids: Sequence[uuid.UUID]) -> tuple[int, int]:
    """How many of `ids` exist, and their bytes."""
    count = total = 0
    for part in chunked(ids):
        row = (
            await session.execute(
                sa.select(
                    sa.func.count(), sa.func.coalesce(sa.func.sum(Image.size_bytes), 0)
                ).where(Image.id.in_(part))
            )
        ).one()
        count, total = count + int(row[0]), total + int(row[1])
    return count, total


async def placement(
    session: AsyncSession, ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, tuple[uuid.UUID, list[str]]]:
    """The series and tags of each image among `ids` that exists."""
    found: dict[uuid.UUID, tuple[uuid.UUID, list[str]]] = {}
    for part in chunked(ids):
        rows = await session.execute(
            sa.select(Image.id, Image.series_id, Image.tags).where(Image.id.in_(part))
        )
        for image_id, series_id, tags in rows:
            found[image_id] = (series_id, list(tags or []))
    return found


async def move(session: AsyncSession, ids: Sequence[uuid.UUID], series_id: uuid.UUID) -> int:
    """Put the images in another series; answers how many rows changed."""
    changed = 0
    for part in chunked(ids):
        result = await session.execute(
            sa.update(Image)
            .where(Image.id.in_(part))
            .values(series_id=series_id)
            .execution_options(synchronize_session=False)
        )
        changed += _rowcount(result)
    return changed


async def set_tags(session: AsyncSession, tags_by_id: dict[uuid.UUID, list[str]]) -> int:
    """Give each image its new list of tags; answers how many rows changed. Images that end
    with the same list (one tag added to images that had the same ones, the usual case) change
    together, a few thousand per statement, rather than one statement each."""
    groups: dict[tuple[str, ...], list[uuid.UUID]] = defaultdict(list)
    for image_id, tags in tags_by_id.items():
        groups[tuple(tags)].append(image_id)
    changed = 0
    for shared, ids in groups.items():
        for part in chunked(ids):
            result = await session.execute(
                sa.update(Image)
                .where(Image.id.in_(part))
                .values(tags=list(shared))
                .execution_options(synchronize_session=False)
            )
            changed += _rowcount(result)
    return changed


async def file_keys(session: AsyncSession, ids: Sequence[uuid.UUID]) -> list[str]:
    """The stored objects of the images: every version's file and thumbnail (the current
    version among them)."""
    paths: list[str] = []
    versions: list[tuple[uuid.UUID, str]] = []
    for part in chunked(ids):
        paths += (
            (await session.execute(sa.select(Image.storage_path).where(Image.id.in_(part))))
            .scalars()
            .all()
        )
        rows = await session.execute(
            sa.select(ImageVersion.id, ImageVersion.storage_path).where(
                ImageVersion.image_id.in_(part)
            )
        )
        versions += [(row.id, row.storage_path) for row in rows]
    return sorted(version_objects(versions, paths))


async def delete_many(session: AsyncSession, ids: Sequence[uuid.UUID]) -> int:
    """Delete the image rows (their versions and lineage go with them); answers how many."""
    deleted = 0
    for part in chunked(ids):
        result = await session.execute(
            sa.delete(Image).where(Image.id.in_(part)).execution_options(synchronize_session=False)
        )
        deleted += _rowcount(result)
    return deleted


async def sha256_in_series(session: AsyncSession, series_id: uuid.UUID) -> dict[str, uuid.UUID]:
    """The oldest image of the series with each file content (by SHA-256)."""
    rows = await session.execute(
        sa.select(Image.sha256, Image.id)
        .where(Image.series_id == series_id)
        .order_by(Image.created_at.desc(), Image.id.desc())
    )
    return dict(rows.all())


async def tags_in(
    session: AsyncSession, where: ImageFilter, *, limit: int
) -> list[tuple[str, int]]:
    """The tags of the images that match with how many of them carry each, most used first."""
    if session.get_bind().dialect.name == "postgresql":
        tag = sa.func.unnest(Image.tags).table_valued("value").render_derived(name="tag")
    else:
        tag = sa.func.json_each(Image.tags).table_valued("value").alias("tag")
    count = sa.func.count().label("n")
    rows = await session.execute(
        sa.select(tag.c.value, count)
        .select_from(Image)
        .join(tag, sa.true())
        .where(*matching(where))
        .group_by(tag.c.value)
        .order_by(count.desc(), tag.c.value)
        .limit(limit)
    )
    return [(str(value), int(n)) for value, n in rows]


def _rowcount(result: Any) -> int:
    return int(getattr(result, "rowcount", 0) or 0)


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
    query = sa.select(*_FILE_COLUMNS, _VERSIONS.c.id).join(_VERSIONS, _CURRENT_VERSION)
    if after is not None:
        query = query.where(_IMAGES.c.id > after)
    rows = await session.execute(query.order_by(_IMAGES.c.id).limit(limit))
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
