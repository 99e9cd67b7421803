"""A selection of images: a list of ids, or a filter (a series, its sub-series, a tag).

Batch changes and exports take one; both check it first and answer 404 naming what is not
there, before anything is done.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from cog.db import images as images_db
from cog.db.images import ImageFilter
from cog.db.models import Image
from cog.db.session import SessionMaker
from cog.errors import Invalid, NotFound, TooLarge
from cog.services import series as series_service

# Ids one request may name. A filter is not bound by it: it names no ids.
MAX_IDS = 10_000
PAGE = 500
SHOWN_MISSING = 10


@dataclass(frozen=True)
class Selection:
    ids: tuple[uuid.UUID, ...] = ()
    where: ImageFilter | None = None

    @classmethod
    def of_ids(cls, ids: Iterable[uuid.UUID]) -> Selection:
        unique = tuple(dict.fromkeys(ids))
        if not unique:
            raise Invalid("No images were selected: send `ids` (one or more) or a `filter`.")
        if len(unique) > MAX_IDS:
            raise TooLarge(
                f"{len(unique):,} ids in one request; at most {MAX_IDS:,} are accepted. Select "
                "with a `filter` (a series, its sub-series, a tag) instead, or send several "
                "requests."
            )
        return cls(ids=unique)

    @classmethod
    def of_filter(
        cls,
        *,
        series_id: uuid.UUID | None = None,
        include_subseries: bool = False,
        tag: str | None = None,
    ) -> Selection:
        clean = series_service.normalize_tag(tag)
        if tag and clean is None:
            raise Invalid("The filter's `tag` is empty.")
        if series_id is None and clean is None:
            raise Invalid("A filter needs a `series_id`, a `tag`, or both.")
        if include_subseries and series_id is None:
            raise Invalid("`include_subseries` needs a `series_id`.")
        where = ImageFilter(series_id, include_subseries, clean)
        return cls(where=where)

    @property
    def root(self) -> uuid.UUID | None:
        """The series a filter starts from, if any."""
        return self.where.series_id if self.where else None


async def check(session: AsyncSession, selection: Selection) -> None:
    """Raise NotFound for a filter's unknown series or for ids that are not images."""
    if selection.where is not None:
        if selection.where.series_id is not None:
            await series_service.require(session, selection.where.series_id)
        return
    found = await images_db.placement(session, selection.ids)
    missing = [i for i in selection.ids if i not in found]
    if missing:
        raise missing_images(missing, len(selection.ids))


def missing_images(missing: list[uuid.UUID], total: int) -> NotFound:
    if total == 1:
        return NotFound(f"There is no image {missing[0]}.", missing=[str(missing[0])])
    shown = ", ".join(str(i) for i in missing[:SHOWN_MISSING])
    more = f" and {len(missing) - SHOWN_MISSING:,} more" if len(missing) > SHOWN_MISSING else ""
    return NotFound(
        f"{len(missing):,} of the {total:,} selected images do not exist, so nothing was done: "
        f"{shown}{more}.",
        missing=[str(i) for i in missing],
    )


async def size(session: AsyncSession, selection: Selection) -> tuple[int, int]:
    """How many images the selection holds, and their bytes."""
    if selection.where is not None:
        return await images_db.count_matching(session, selection.where)
    return await images_db.sizes_of(session, selection.ids)


async def ids(session: AsyncSession, selection: Selection) -> list[uuid.UUID]:
    if selection.where is not None:
        return await images_db.ids_matching(session, selection.where)
    return list(selection.ids)


async def pages(sessions: SessionMaker, selection: Selection) -> AsyncIterator[list[Image]]:
    """The selection's images, a page at a time, each page read in a short transaction of its
    own, so a long export holds no transaction open while it streams."""
    if selection.where is not None:
        cursor: str | None = None
        while True:
            async with sessions() as session:
                page = await images_db.page_matching(
                    session, selection.where, limit=PAGE, cursor=cursor
                )
            if page.items:
                yield page.items
            if not (cursor := page.next_cursor):
                return
    for part in images_db.chunked(selection.ids, PAGE):
        async with sessions() as session:
            found = await images_db.by_ids(session, part)
        if found:
            yield found
