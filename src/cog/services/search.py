"""Searching images across every series: by words of the prompt or file name, tags, model,
source, series (with its sub-series) and the day they were made."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace

from sqlalchemy.ext.asyncio import AsyncSession

from cog.db import search as search_db
from cog.db import series as series_db
from cog.db.models import Image
from cog.db.pages import Page, check_limit
from cog.domain import ImageSource
from cog.errors import Invalid
from cog.services import series as series_service

MAX_TEXT = 500  # characters of query text
MAX_TERMS = 32  # words and phrases in it
MAX_TAGS = 20

# A day or an instant, as the API and the page take them.
When = dt.date | dt.datetime


@dataclass(frozen=True)
class Search:
    """A search as a person asked for it (what the page shows back in its form)."""

    q: str = ""
    tags: tuple[str, ...] = ()
    model: str | None = None
    source: ImageSource | None = None
    series_id: uuid.UUID | None = None
    include_subseries: bool = True
    created_from: When | None = None
    created_to: When | None = None

    @property
    def is_empty(self) -> bool:
        return not (
            self.q.strip()
            or self.tags
            or self.model
            or self.source
            or self.series_id
            or self.created_from
            or self.created_to
        )


def parse_when(text: str, name: str) -> When:
    """A day (`2025-03-14`) or an instant (`2025-03-14T09:30:00Z`; without a zone, UTC)."""
    value = text.strip()
    try:
        if len(value) == 10:
            return dt.date.fromisoformat(value)
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        raise Invalid(
            f"`{name}` is not a date: give a day as YYYY-MM-DD, or a time as "
            "YYYY-MM-DDTHH:MM:SS with an optional zone (UTC when left out)."
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def _start_of(value: When) -> dt.datetime:
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC)
    return dt.datetime.combine(value, dt.time(), dt.UTC)


def _end_of(value: When) -> dt.datetime:
    """The first instant after `value`: the next day for a day, a microsecond later for a time
    (the finest step both databases keep)."""
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC) + dt.timedelta(microseconds=1)
    return dt.datetime.combine(value, dt.time(), dt.UTC) + dt.timedelta(days=1)


def _tags(values: Sequence[str]) -> tuple[str, ...]:
    tags = tuple(series_service.normalize_tags(list(values)))
    if len(tags) > MAX_TAGS:
        raise Invalid(f"{len(tags)} tags given; search with at most {MAX_TAGS}.")
    return tags


def criteria(search: Search, series_ids: tuple[uuid.UUID, ...] | None = None) -> search_db.Criteria:
    """The search as database criteria, in the series given (the chosen one, with its
    sub-series or not); a 422 that says what to change when it cannot be."""
    if len(search.q) > MAX_TEXT:
        raise Invalid(f"The search text is {len(search.q)} characters; at most {MAX_TEXT}.")
    terms = search_db.parse_text(search.q)
    if len(terms) > MAX_TERMS:
        raise Invalid(f"The search text has {len(terms)} words; search with at most {MAX_TERMS}.")
    try:
        start = _start_of(search.created_from) if search.created_from else None
        end = _end_of(search.created_to) if search.created_to else None
    except OverflowError:  # the first or the last day there is, in a zone that passes it
        raise Invalid("The date range reaches past the dates Cog can compare.") from None
    if start and end and start >= end:
        raise Invalid("`from` is after `to`: the date range is empty.")
    model = search.model.strip() if search.model else ""
    return search_db.Criteria(
        terms=terms,
        tags=_tags(search.tags),
        model=model or None,
        source=search.source.value if search.source else None,
        created_from=start,
        created_before=end,
    )


async def search(
    session: AsyncSession, search: Search, *, limit: int = 50, cursor: str | None = None
) -> Page[Image]:
    """Matching images from every series, newest first, a page at a time."""
    check_limit(limit)
    found = replace(criteria(search), series_ids=await _series_ids(session, search))
    return await search_db.page(session, found, limit=limit, cursor=cursor)


async def _series_ids(session: AsyncSession, search: Search) -> tuple[uuid.UUID, ...] | None:
    """The series searched: None for all of them."""
    if search.series_id is None:
        return None
    if search.include_subseries:
        ids = tuple(await series_db.subtree_ids(session, search.series_id))  # [] when none
    else:
        ids = (search.series_id,) if await series_db.get(session, search.series_id) else ()
    if not ids:
        raise Invalid(
            f"`series_id`: there is no series {search.series_id}; search everywhere, or choose "
            "another series."
        )
    return ids


async def models(session: AsyncSession) -> list[str]:
    """The models images were made with (the page's choices)."""
    return await search_db.models(session)
