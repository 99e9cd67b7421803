"""Series: create, edit, move within the tree, list and delete."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from cog.db import series as series_db
from cog.db import versions as versions_db
from cog.db.base import utcnow
from cog.db.models import Series
from cog.db.pages import Page, check_limit
from cog.engine.style_profile import MAX_PROFILE_CHARS
from cog.errors import Conflict, Invalid, NotFound
from cog.storage import ObjectStore
from cog.storage.base import delete_quietly
from cog.storage.keys import version_objects

UNSET: Any = object()


@dataclass(frozen=True)
class SeriesView:
    series: Series
    ancestors: list[Series]
    image_count: int
    child_count: int


def normalize_tags(tags: list[str]) -> list[str]:
    """Trimmed, lower case, each once, in the order given."""
    seen: dict[str, None] = {}
    for tag in tags:
        clean = " ".join(tag.split()).lower()
        if clean:
            seen.setdefault(clean, None)
    return list(seen)


def normalize_tag(tag: str | None) -> str | None:
    """One tag as tags are kept (see `normalize_tags`); None for none, or for one with nothing
    visible in it."""
    clean = normalize_tags([tag]) if tag else []
    return clean[0] if clean else None


async def require(session: AsyncSession, series_id: uuid.UUID) -> Series:
    found = await series_db.get(session, series_id)
    if found is None:
        raise NotFound(f"There is no series {series_id}.")
    return found


async def view(session: AsyncSession, series_id: uuid.UUID) -> SeriesView:
    found = await require(session, series_id)
    chain = await series_db.ancestors(session, series_id)
    counts = (await series_db.stats(session, [series_id]))[series_id]
    return SeriesView(found, chain, counts.image_count, counts.child_count)


def clean_title(title: str) -> str:
    """The title without the spaces around it; one with nothing else is refused. (Python counts
    more characters as spaces than the API's first check does: separators such as U+001C.)"""
    clean = title.strip()
    if not clean:
        raise Invalid("A series needs a title with something visible in it.")
    return clean


async def create(
    session: AsyncSession,
    *,
    title: str,
    description: str = "",
    tags: list[str] | None = None,
    parent_id: uuid.UUID | None = None,
    inherit_context: bool = True,
) -> Series:
    clean = clean_title(title)
    if parent_id is not None:
        await series_db.lock_tree(session)  # the parent is not deleted while this goes in
        await require(session, parent_id)
    series = Series(
        title=clean,
        description=description,
        tags=normalize_tags(tags or []),
        parent_id=parent_id,
        inherit_context=inherit_context,
        style_profile="",
    )
    session.add(series)
    await session.commit()
    return series


async def update(
    session: AsyncSession,
    series_id: uuid.UUID,
    *,
    title: str = UNSET,
    description: str = UNSET,
    tags: list[str] = UNSET,
    parent_id: uuid.UUID | None = UNSET,
    inherit_context: bool = UNSET,
    style_profile: str = UNSET,
) -> Series:
    """Change the fields given. `style_profile` is the hand-written (or hand-edited) profile;
    `cog.services.style.draft_profile` has the model write one."""
    if title is not UNSET:
        title = clean_title(title)
    if parent_id is not UNSET:
        await series_db.lock_tree(session)  # before the checks, so they see any other move
    series = await require(session, series_id)
    if parent_id is not UNSET and parent_id != series.parent_id:
        if parent_id is not None:
            await require(session, parent_id)
            # Moving under itself or any of its descendants would cut the subtree loose in a cycle.
            if await series_db.is_in_subtree(session, series_id, parent_id):
                raise Conflict("A series cannot move inside itself or one of its own sub-series.")
        series.parent_id = parent_id
    if title is not UNSET:
        series.title = title
    if description is not UNSET:
        series.description = description
    if tags is not UNSET:
        series.tags = normalize_tags(tags)
    if inherit_context is not UNSET:
        series.inherit_context = inherit_context
    if style_profile is not UNSET and len(style_profile.strip()) > MAX_PROFILE_CHARS:
        raise Invalid(f"A style profile is at most {MAX_PROFILE_CHARS:,} characters.")
    if style_profile is not UNSET and style_profile.strip() != series.style_profile:
        series.style_profile = style_profile.strip()
        series.style_profile_updated_at = utcnow()
    await session.commit()
    return series


async def listing(
    session: AsyncSession,
    *,
    parent_id: uuid.UUID | None = None,
    tag: str | None = None,
    text: str | None = None,
    limit: int = 100,
    cursor: str | None = None,
) -> tuple[Page[Series], dict[uuid.UUID, series_db.SeriesStats]]:
    """One level of the tree, or (with a tag or text filter) matches anywhere in it."""
    check_limit(limit)
    if parent_id is not None:
        await require(session, parent_id)
    tag = normalize_tag(tag)
    text = text.strip() if text and text.strip() else None
    page = await series_db.listing(
        session,
        parent_id=parent_id,
        whole_tree=parent_id is None and bool(tag or text),
        tag=tag,
        text=text,
        limit=limit,
        cursor=cursor,
    )
    counts = await series_db.stats(session, [s.id for s in page.items])
    return page, counts


async def delete(
    session: AsyncSession, store: ObjectStore, series_id: uuid.UUID, *, recursive: bool
) -> int:
    """Delete a series; with `recursive`, its whole subtree. Answers how many images went.

    Rows go first, in one transaction; files go after the commit, so no row ever points at a
    missing file. A file whose delete fails is left for `cog doctor` to find, never a row.
    """
    await series_db.lock_tree(session)  # no series moves into the subtree while it goes
    await require(session, series_id)
    ids = await series_db.subtree_ids(session, series_id)
    image_ids = await series_db.image_ids_in(session, ids)
    if not recursive and (len(ids) > 1 or image_ids):
        raise Conflict(
            f"The series holds {len(image_ids)} image(s) and {len(ids) - 1} sub-series "
            "(counting the whole subtree). Delete with recursive=true (`cog series rm "
            "--recursive`) to remove them all."
        )
    keys = version_objects(
        await versions_db.files_in_series(session, ids),
        await series_db.storage_paths_in(session, ids),
    )
    await series_db.delete_many(session, ids)
    await session.commit()
    await delete_quietly(store, *keys)
    return len(image_ids)


# --- what the pages show around a series ---------------------------------------------------------

OUTLINE_LIMIT = 5000


@dataclass(frozen=True)
class OutlineEntry:
    series: Series
    depth: int


@dataclass(frozen=True)
class DeletionSummary:
    """What deleting a series with `recursive` removes, counted over its whole subtree."""

    sub_series: int
    images: int
    jobs: int


async def covers(session: AsyncSession, ids: list[uuid.UUID]) -> dict[uuid.UUID, uuid.UUID]:
    """The id of each series' newest image (its cover); series without images are left out."""
    return await series_db.covers(session, ids)


async def outline(
    session: AsyncSession, *, exclude_subtree_of: uuid.UUID | None = None
) -> list[OutlineEntry]:
    """The whole tree, depth first, each level by title: the choices for "move to".

    `exclude_subtree_of` leaves out a series and everything under it (where it cannot move)."""
    everything = await series_db.everything(session, OUTLINE_LIMIT)
    children: dict[uuid.UUID | None, list[Series]] = {}
    for s in everything:
        children.setdefault(s.parent_id, []).append(s)
    entries: list[OutlineEntry] = []

    def walk(parent: uuid.UUID | None, depth: int) -> None:
        for s in children.get(parent, []):
            if s.id == exclude_subtree_of:
                continue
            entries.append(OutlineEntry(s, depth))
            walk(s.id, depth + 1)

    walk(None, 0)
    return entries


async def trails(session: AsyncSession, ids: list[uuid.UUID]) -> dict[uuid.UUID, list[Series]]:
    """The ancestors of each series (root first), for search results shown out of the tree.

    One read of the tree serves every result; a tree larger than the outline falls back to
    asking the database, series by series."""
    if not ids:
        return {}
    by_id = {s.id: s for s in await series_db.everything(session, OUTLINE_LIMIT)}
    found: dict[uuid.UUID, list[Series]] = {}
    for series_id in ids:
        chain: list[Series] = []
        node = by_id.get(series_id)
        parent = node.parent_id if node is not None else None
        while parent is not None and parent in by_id:
            chain.append(by_id[parent])
            parent = by_id[parent].parent_id
        if node is not None and parent is None:
            found[series_id] = chain[::-1]
        else:
            found[series_id] = await series_db.ancestors(session, series_id)
    return found


async def deletion_summary(session: AsyncSession, series_id: uuid.UUID) -> DeletionSummary:
    await require(session, series_id)
    ids = await series_db.subtree_ids(session, series_id)
    images = await series_db.image_ids_in(session, ids)
    return DeletionSummary(
        sub_series=len(ids) - 1,
        images=len(images),
        jobs=await series_db.job_count_in(session, ids),
    )
