"""Queries on the series tree."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from cog.db.base import tag_filter
from cog.db.models import Image, Job, Series
from cog.db.pages import Page, decode_cursor, encode_cursor


@dataclass(frozen=True)
class SeriesStats:
    image_count: int
    child_count: int


# Any fixed number: the key of the PostgreSQL advisory lock that serializes changes of the tree.
TREE_LOCK_KEY = 0x0C06_0002


async def get(session: AsyncSession, series_id: uuid.UUID) -> Series | None:
    return await session.get(Series, series_id)


async def lock_tree(session: AsyncSession) -> None:
    """Keep the tree's shape still until this transaction ends.

    Moves and deletions check the tree, then change it. Two at once (A under B while B goes
    under A) would each pass its check and together cut a cycle loose; with the lock they take
    turns, and the second checks what the first did. PostgreSQL takes an advisory lock; SQLite
    has one writer at a time, so a write (of nothing) makes this transaction the writer, and
    what it reads from then on is the latest."""
    if session.get_bind().dialect.name == "postgresql":
        await session.execute(sa.select(sa.func.pg_advisory_xact_lock(TREE_LOCK_KEY)))
    else:
        await session.execute(sa.update(Series).where(sa.false()).values(title=Series.title))


def _subtree_cte(root_id: uuid.UUID) -> sa.CTE:
    cte = sa.select(Series.id).where(Series.id == root_id).cte("subtree", recursive=True)
    return cte.union_all(sa.select(Series.id).join(cte, Series.parent_id == cte.c.id))


def subtree_select(root_id: uuid.UUID) -> sa.Select[uuid.UUID]:
    """The ids of a series and every series under it, as a subquery."""
    cte = _subtree_cte(root_id)
    return sa.select(cte.c.id)


async def with_ancestors(session: AsyncSession, ids: Sequence[uuid.UUID]) -> list[Series]:
    """The series of `ids` and every series above them."""
    if not ids:
        return []
    up = sa.select(Series.id, Series.parent_id).where(Series.id.in_(ids)).cte("up", recursive=True)
    up = up.union(sa.select(Series.id, Series.parent_id).join(up, Series.id == up.c.parent_id))
    rows = await session.execute(sa.select(Series).where(Series.id.in_(sa.select(up.c.id))))
    return list(rows.scalars())


def _chain() -> sa.Select[Series]:
    walk = (
        sa.select(Series.id, Series.parent_id, sa.literal(0).label("depth"))
        .where(Series.id == sa.bindparam("series_id"))
        .cte("walk", recursive=True)
    )
    walk = walk.union_all(
        sa.select(Series.id, Series.parent_id, (walk.c.depth + 1).label("depth")).join(
            walk, Series.id == walk.c.parent_id
        )
    )
    return sa.select(Series).join(walk, Series.id == walk.c.id).order_by(walk.c.depth.desc())


# Built once: every run reads the chain of its series as it starts, every page its breadcrumbs.
_CHAIN = _chain()


async def chain(session: AsyncSession, series_id: uuid.UUID) -> list[Series]:
    """The series and every series above it, from the root down (empty when it does not
    exist)."""
    rows = await session.execute(_CHAIN, {"series_id": series_id})
    return list(rows.scalars())


async def ancestors(session: AsyncSession, series_id: uuid.UUID) -> list[Series]:
    """The chain from the root down to the series' parent (breadcrumbs)."""
    return (await chain(session, series_id))[:-1]


async def subtree_ids(session: AsyncSession, root_id: uuid.UUID) -> list[uuid.UUID]:
    return list((await session.execute(subtree_select(root_id))).scalars())


async def is_in_subtree(session: AsyncSession, root_id: uuid.UUID, candidate_id: uuid.UUID) -> bool:
    cte = _subtree_cte(root_id)
    found = await session.execute(sa.select(cte.c.id).where(cte.c.id == candidate_id).limit(1))
    return found.first() is not None


async def stats(session: AsyncSession, ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, SeriesStats]:
    if not ids:
        return {}
    image_rows = await session.execute(
        sa.select(Image.series_id, sa.func.count())
        .where(Image.series_id.in_(ids))
        .group_by(Image.series_id)
    )
    child_rows = await session.execute(
        sa.select(Series.parent_id, sa.func.count())
        .where(Series.parent_id.in_(ids))
        .group_by(Series.parent_id)
    )
    images: dict[uuid.UUID | None, int] = dict(image_rows.all())
    children: dict[uuid.UUID | None, int] = dict(child_rows.all())
    return {i: SeriesStats(images.get(i, 0), children.get(i, 0)) for i in ids}


async def listing(
    session: AsyncSession,
    *,
    parent_id: uuid.UUID | None,
    whole_tree: bool,
    tag: str | None,
    text: str | None,
    limit: int,
    cursor: str | None,
) -> Page[Series]:
    """Series ordered by title. `whole_tree` searches every level; otherwise one level."""
    query = sa.select(Series)
    if not whole_tree:
        query = query.where(
            Series.parent_id.is_(None) if parent_id is None else Series.parent_id == parent_id
        )
    if tag:
        query = query.where(tag_filter(Series.tags, tag))
    if text:
        needle = text.lower()
        query = query.where(
            sa.or_(
                sa.func.lower(Series.title).contains(needle, autoescape=True),
                sa.func.lower(Series.description).contains(needle, autoescape=True),
            )
        )
    if cursor:
        after_title, after_id = decode_cursor(cursor, str, uuid.UUID)
        query = query.where(sa.tuple_(Series.title, Series.id) > sa.tuple_(after_title, after_id))
    query = query.order_by(Series.title, Series.id).limit(limit + 1)
    rows = list((await session.execute(query)).scalars())
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        next_cursor = encode_cursor(rows[-1].title, rows[-1].id)
    return Page(rows, next_cursor)


async def storage_paths_in(session: AsyncSession, series_ids: Sequence[uuid.UUID]) -> list[str]:
    rows = await session.execute(
        sa.select(Image.storage_path).where(Image.series_id.in_(series_ids))
    )
    return list(rows.scalars())


async def image_ids_in(session: AsyncSession, series_ids: Sequence[uuid.UUID]) -> list[uuid.UUID]:
    rows = await session.execute(sa.select(Image.id).where(Image.series_id.in_(series_ids)))
    return list(rows.scalars())


async def delete_many(session: AsyncSession, series_ids: Sequence[uuid.UUID]) -> None:
    """Delete series with their images' rows and their jobs (runs and steps cascade)."""
    await session.execute(sa.delete(Image).where(Image.series_id.in_(series_ids)))
    await session.execute(sa.delete(Job).where(Job.series_id.in_(series_ids)))
    # Children first is not needed: the foreign key is checked at the end of the statement.
    await session.execute(sa.delete(Series).where(Series.id.in_(series_ids)))


async def covers(session: AsyncSession, ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, uuid.UUID]:
    """The newest image of each series that has one. One correlated lookup per series, each a
    single step down the (series_id, created_at, id) index, so a page of series costs the same
    whether they hold ten images or ten thousand."""
    if not ids:
        return {}
    newest = (
        sa.select(Image.id)
        .where(Image.series_id == Series.id)
        .order_by(Image.created_at.desc(), Image.id.desc())
        .limit(1)
        .correlate(Series)
        .scalar_subquery()
    )
    rows = await session.execute(sa.select(Series.id, newest).where(Series.id.in_(ids)))
    return {series_id: image_id for series_id, image_id in rows if image_id is not None}


async def everything(session: AsyncSession, limit: int) -> list[Series]:
    """Every series (up to `limit`), ordered by title: the tree is built from parent ids."""
    rows = await session.execute(sa.select(Series).order_by(Series.title, Series.id).limit(limit))
    return list(rows.scalars())


async def job_count_in(session: AsyncSession, series_ids: Sequence[uuid.UUID]) -> int:
    found = await session.execute(
        sa.select(sa.func.count()).select_from(Job).where(Job.series_id.in_(series_ids))
    )
    return int(found.scalar_one())
