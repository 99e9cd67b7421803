"""Style between series: a series' style profile, a job's style source, and the snapshot of it
each run keeps.

A job's style source is a series (any, its own included: a job may keep its new images in the
look of the series they join). Its profile is in the job's templates as `style.profile`; some
of its images (those picked, else an even sample of `style_image_count`) go to every image step
as style references, after the step's own references.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from cog.db.base import utcnow
from cog.db.models import Image, Job, Series
from cog.domain import MAX_REFERENCE_IMAGES, StepKind
from cog.engine.context import StyleSnapshot, load_series_context
from cog.engine.steps import INPUT_REF, StepSpec, step_of
from cog.engine.style_profile import draft_style_profile
from cog.errors import Invalid
from cog.providers.base import TextProvider
from cog.services import images as images_service
from cog.services import series as series_service
from cog.storage import ObjectStore

UNSET: Any = series_service.UNSET
# Images of a series the text model looks at to write its profile.
PROFILE_SAMPLE = 6


# --- the profile -------------------------------------------------------------------------------


async def draft_profile(
    session: AsyncSession, store: ObjectStore, text: TextProvider, series_id: uuid.UUID
) -> Series:
    """Ask the text model for the series' style profile and save it (replacing the one it
    had). It sees a sample of the series' images with its title, description, tags and the
    context it inherits; a series with no images gets a profile from those alone."""
    series = await series_service.require(session, series_id)
    context = await load_series_context(session, series)
    sample = await _images(session, await sample_ids(session, series.id, PROFILE_SAMPLE))
    images = await images_service.thumbnails_for_model(session, store, sample)
    profile, _result = await draft_style_profile(
        text,
        title=series.title,
        description=series.description,
        tags=list(series.tags),
        context="\n".join(a.description.strip() for a in context.ancestors if a.description),
        images=images,
    )
    series.style_profile = profile
    series.style_profile_updated_at = utcnow()
    await session.commit()
    return series


# --- sampling ----------------------------------------------------------------------------------


async def sample_ids(session: AsyncSession, series_id: uuid.UUID, count: int) -> list[uuid.UUID]:
    """`count` images of the series spread evenly over its history (oldest to newest), so a
    sample shows the whole series, not its last afternoon; the same series gives the same."""
    if count <= 0:
        return []
    rows = await session.execute(
        sa.select(Image.id).where(Image.series_id == series_id).order_by(Image.created_at, Image.id)
    )
    ids = list(rows.scalars())
    if len(ids) <= count:
        return ids
    if count == 1:
        return [ids[-1]]
    last = len(ids) - 1
    return [ids[round(i * last / (count - 1))] for i in range(count)]


async def _images(session: AsyncSession, ids: Sequence[uuid.UUID]) -> list[Image]:
    if not ids:
        return []
    rows = await session.execute(sa.select(Image).where(Image.id.in_(ids)))
    by_id = {image.id: image for image in rows.scalars()}
    return [by_id[i] for i in ids if i in by_id]


# --- a job's style source ----------------------------------------------------------------------


def style_reference_count(
    series_id: uuid.UUID | None, image_ids: Sequence[str], image_count: int
) -> int:
    """How many style images a job's image steps get (at most: a sample may find fewer)."""
    if series_id is None:
        return 0
    return len(image_ids) if image_ids else image_count


def job_style_count(job: Job) -> int:
    return style_reference_count(job.style_series_id, job.style_image_ids, job.style_image_count)


def own_reference_counts(specs: Sequence[StepSpec]) -> dict[int, int]:
    """Reference images each image step sends of its own (`step:N` counts the images step N
    makes)."""
    counts: dict[int, int] = {}
    for position, spec in enumerate(specs):
        if spec.kind is not StepKind.image:
            continue
        total = 0
        for ref in spec.config.input_images:
            step = step_of(ref)
            if step is not None and step < len(specs):
                total += specs[step].config.count
            elif ref == INPUT_REF or step is None:
                total += 1
        counts[position] = total
    return counts


def reference_room_problems(specs: Sequence[StepSpec], style_count: int) -> list[str]:
    """Image steps whose own references and the style references together pass the model's
    limit."""
    if style_count <= 0:
        return []
    return [
        f"step {position}: it sends {own} reference image(s) of its own and the style source "
        f"{style_count} more; an image step takes at most {MAX_REFERENCE_IMAGES} (pick fewer "
        "style images or lower `style_image_count`)"
        for position, own in own_reference_counts(specs).items()
        if own + style_count > MAX_REFERENCE_IMAGES
    ]


async def set_source(
    session: AsyncSession,
    job: Job,
    specs: Sequence[StepSpec],
    *,
    series_id: uuid.UUID | None = UNSET,
    image_ids: Sequence[uuid.UUID] = UNSET,
    image_count: int = UNSET,
) -> None:
    """Change the job's style source (the fields given), checked whole; the caller commits.
    Choosing another series drops the images picked from the one before, unless new ones are
    given. `Invalid` names what is wrong and nothing changes."""
    new_series = job.style_series_id if series_id is UNSET else series_id
    if image_ids is not UNSET:
        new_ids = [str(i) for i in dict.fromkeys(image_ids)]
    elif new_series != job.style_series_id:
        new_ids = []
    else:
        new_ids = list(job.style_image_ids)
    new_count = job.style_image_count if image_count is UNSET else image_count
    if not 0 <= new_count <= MAX_REFERENCE_IMAGES:
        raise Invalid(f"`style_image_count` is from 0 to {MAX_REFERENCE_IMAGES}.")
    if len(new_ids) > MAX_REFERENCE_IMAGES:
        raise Invalid(
            f"At most {MAX_REFERENCE_IMAGES} style images can be picked; {len(new_ids)} were."
        )
    if new_series is None:
        if new_ids:
            raise Invalid("Style images need a style source: set `style_series_id` too.")
    else:
        if await session.get(Series, new_series) is None:
            raise Invalid(f"There is no series {new_series} to take the style from.")
        await _check_picked(session, new_series, new_ids)
    problems = reference_room_problems(specs, style_reference_count(new_series, new_ids, new_count))
    if problems:
        raise Invalid(
            "The style source was not changed: " + "; ".join(problems) + ".", problems=problems
        )
    job.style_series_id = new_series
    job.style_image_ids = new_ids
    job.style_image_count = new_count


async def _check_picked(session: AsyncSession, series_id: uuid.UUID, ids: Sequence[str]) -> None:
    if not ids:
        return
    wanted = [uuid.UUID(i) for i in ids]
    rows = await session.execute(sa.select(Image.id, Image.series_id).where(Image.id.in_(wanted)))
    where = {row.id: row.series_id for row in rows}
    missing = [str(i) for i in wanted if i not in where]
    elsewhere = [str(i) for i in wanted if i in where and where[i] != series_id]
    problems = [f"style image {i} does not exist (it may have been deleted)" for i in missing]
    problems += [
        f"style image {i} belongs to another series; pick images of the style series"
        for i in elsewhere
    ]
    if problems:
        raise Invalid(
            "The style source was not changed: " + "; ".join(problems) + ".", problems=problems
        )


async def snapshot(session: AsyncSession, job: Job) -> dict[str, Any] | None:
    """The style source as a run about to be queued will use it (saved on the run), or None.
    Picked images that were deleted or moved away since refuse the run, as steps' images do."""
    if job.style_series_id is None:
        return None
    series = await session.get(Series, job.style_series_id)
    if series is None:  # deleted meanwhile (the key is set to null with it)
        return None
    if job.style_image_ids:
        try:
            await _check_picked(session, series.id, job.style_image_ids)
        except Invalid as exc:
            problems: list[str] = exc.extra.get("problems", [exc.message])
            raise Invalid(
                "The job cannot run as it is; pick its style images again: "
                + "; ".join(problems)
                + ".",
                problems=problems,
            ) from exc
        ids = list(job.style_image_ids)
    else:
        ids = [str(i) for i in await sample_ids(session, series.id, job.style_image_count)]
    return StyleSnapshot(
        series_id=str(series.id),
        title=series.title,
        tags=list(series.tags),
        profile=series.style_profile,
        image_ids=ids,
    ).as_json()
