"""Batch changes to many images at once: move, tag, untag, delete.

A batch is all or nothing. Everything is checked before anything changes (the selection, the
target series, the tags each image would end with); the rows change in one transaction; the
files of deleted images are removed only after it commits.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from enum import StrEnum

from sqlalchemy.ext.asyncio import AsyncSession

from cog.db import images as images_db
from cog.errors import Invalid, TooLarge
from cog.services import images as images_service
from cog.services import selection as selection_service
from cog.services import series as series_service
from cog.services.selection import Selection
from cog.storage import ObjectStore

# Images one batch may change, whether named by ids or matched by a filter: the rows change in
# one transaction, which should stay short enough not to hold up everyone else.
MAX_BATCH = 100_000
# Tags one image may carry, as for a series.
MAX_TAGS = 100
SHOWN = 10


class BatchAction(StrEnum):
    move = "move"
    tag = "tag"
    untag = "untag"
    delete = "delete"


@dataclass(frozen=True)
class BatchOutcome:
    action: BatchAction
    matched: int  # images the selection held
    changed: list[uuid.UUID]  # those the batch changed (the others already were as asked)
    series_id: uuid.UUID | None = None
    tags: list[str] = field(default_factory=list)


async def apply(
    session: AsyncSession,
    store: ObjectStore,
    selection: Selection,
    action: BatchAction,
    *,
    series_id: uuid.UUID | None = None,
    tags: list[str] | None = None,
) -> BatchOutcome:
    clean_tags = _check_arguments(action, series_id, tags)
    await selection_service.check(session, selection)
    if action is BatchAction.move:
        assert series_id is not None
        await series_service.require(session, series_id)
    ids = await selection_service.ids(session, selection)
    if len(ids) > MAX_BATCH:
        raise TooLarge(
            f"The filter matches {len(ids):,} images; one batch changes at most {MAX_BATCH:,}. "
            "Narrow it (a sub-series, a tag) and repeat."
        )
    where = await images_db.placement(session, ids)
    # A row deleted since the selection was read: nothing changes, as for an unknown id.
    missing = [i for i in ids if i not in where]
    if missing:
        raise selection_service.missing_images(missing, len(ids))

    if action is BatchAction.move:
        assert series_id is not None
        changed = [i for i in ids if where[i][0] != series_id]
        if await images_db.move(session, changed, series_id) != len(changed):
            await session.rollback()
            raise images_service.changed_meanwhile()
        await session.commit()
        return BatchOutcome(action, len(ids), changed, series_id=series_id)

    if action is BatchAction.delete:
        await images_service.delete_many(session, store, ids)
        return BatchOutcome(action, len(ids), list(ids))

    new_tags: dict[uuid.UUID, list[str]] = {}
    for image_id in ids:
        old = where[image_id][1]
        if action is BatchAction.tag:
            after = series_service.normalize_tags(old + clean_tags)
        else:
            after = [t for t in old if t not in clean_tags]
        if after != old:
            new_tags[image_id] = after
    too_many = [i for i, after in new_tags.items() if len(after) > MAX_TAGS]
    if too_many:
        shown = ", ".join(str(i) for i in too_many[:SHOWN])
        more = f" and {len(too_many) - SHOWN:,} more" if len(too_many) > SHOWN else ""
        raise Invalid(
            f"{len(too_many):,} image(s) would have more than {MAX_TAGS} tags, so nothing was "
            f"tagged: {shown}{more}.",
            images=[str(i) for i in too_many],
        )
    if await images_db.set_tags(session, new_tags) != len(new_tags):
        await session.rollback()
        raise images_service.changed_meanwhile()
    await session.commit()
    return BatchOutcome(action, len(ids), list(new_tags), tags=clean_tags)


def _check_arguments(
    action: BatchAction, series_id: uuid.UUID | None, tags: list[str] | None
) -> list[str]:
    if action is BatchAction.move:
        if series_id is None:
            raise Invalid("A move needs `series_id`: the series to move the images to.")
        if tags is not None:
            raise Invalid("A move takes no `tags`.")
        return []
    if series_id is not None:
        raise Invalid(f"`series_id` is the target of a move; {action} takes none.")
    if action is BatchAction.delete:
        if tags is not None:
            raise Invalid("A delete takes no `tags`.")
        return []
    clean = series_service.normalize_tags(tags or [])
    if not clean:
        raise Invalid(f"`{action}` needs `tags`: one or more.")
    return clean
