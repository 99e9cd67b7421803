"""What a job's templates know besides its steps: the series with the context it inherits down
the tree, and the style source a job borrows from another series.

A sub-series inherits its ancestors' descriptions and tags: a job in "Autumn / Forest / Dawn"
knows all three. A series with `inherit_context` off stops that: it and the series under it
see nothing above it.

No database here beyond reading the chain of series; the run snapshots its style source when it
is created (`JobRun.style`), and this module turns that snapshot into what templates see.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncSession

from cog.db import series as series_db
from cog.db.models import Series
from cog.engine.prompts import AncestorContext, SeriesContext, StyleContext


class _SeriesLike(Protocol):
    title: str
    description: str
    tags: list[str]
    inherit_context: bool


def inherited_chain(chain: Sequence[_SeriesLike]) -> list[_SeriesLike]:
    """The part of `chain` (root first, the series itself last) whose context the series sees:
    walking up, it stops above the first series that turned inheriting off."""
    if not chain:
        return []
    start = len(chain) - 1
    while start > 0 and chain[start].inherit_context:
        start -= 1
    return list(chain[start:])


def series_context(chain: Sequence[_SeriesLike]) -> SeriesContext:
    """The `series` variable of a series given its chain (root first, itself last)."""
    own = chain[-1]
    seen = inherited_chain(chain)
    return SeriesContext(
        title=own.title,
        description=own.description,
        tags=list(own.tags),
        ancestors=[
            AncestorContext(title=s.title, description=s.description, tags=list(s.tags))
            for s in seen[:-1]
        ],
        context="\n".join(s.description.strip() for s in seen if s.description.strip()),
    )


async def load_series_context(session: AsyncSession, series: Series) -> SeriesContext:
    chain = [*await series_db.ancestors(session, series.id), series]
    return series_context(chain)


@dataclass(frozen=True)
class StyleSnapshot:
    """The style source as a run used it: saved on the run (`JobRun.style`) when it is queued,
    so editing the style series later never changes what a run sent."""

    series_id: str
    title: str
    tags: list[str]
    profile: str
    image_ids: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "series_id": self.series_id,
            "title": self.title,
            "tags": list(self.tags),
            "profile": self.profile,
            "image_ids": list(self.image_ids),
        }

    @classmethod
    def of(cls, raw: Mapping[str, Any] | None) -> StyleSnapshot | None:
        if not raw:
            return None
        return cls(
            series_id=str(raw.get("series_id", "")),
            title=str(raw.get("title", "")),
            tags=[str(t) for t in raw.get("tags", [])],
            profile=str(raw.get("profile", "")),
            image_ids=[str(i) for i in raw.get("image_ids", [])],
        )

    def context(self) -> StyleContext:
        return StyleContext(title=self.title, tags=list(self.tags), profile=self.profile)


def style_marker(snapshot: StyleSnapshot | None, count: int) -> str:
    """The line an image step's prompt ends with when style references come with it: they are
    the last `count` images of the request."""
    if snapshot is None or count <= 0:
        return ""
    which = "The last image" if count == 1 else f"The last {count} images"
    verb = "is a style reference" if count == 1 else "are style references"
    return (
        f"{which} {verb} from the series “{snapshot.title}”: match their style (palette, "
        "medium, lighting, composition, mood), not their subjects."
    )


def with_style_marker(prompt: str, snapshot: StyleSnapshot | None, count: int) -> str:
    marker = style_marker(snapshot, count)
    return f"{prompt}\n\n{marker}" if marker else prompt
