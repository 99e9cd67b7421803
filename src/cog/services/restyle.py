"""Restyle: images of one series re-rendered in the style of another, as a batch.

It is an ordinary batch (`cog.services.batches`) of a job kept in the target series: the job
has the style series as its style source and one image step that sends the image the run is
for (the `input` reference) with the style images. Restyling again into the same target in the
same style reuses that job, so its page gathers every restyle of the pair.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from cog.db.models import Batch, Image, Job
from cog.domain import MAX_REFERENCE_IMAGES
from cog.engine.steps import StepSpec
from cog.errors import Invalid
from cog.services import batches as batches_service
from cog.services import jobs as jobs_service
from cog.services import series as series_service
from cog.services import style as style_service

PROMPT = (
    "Re-render the first image in the style of the series “{{ style.title }}”. Keep its "
    "subject, composition and content; change only its look to match the style.\n"
    "{% if style.profile %}Style: {{ style.profile }}\n{% endif %}"
    "{{ base_prompt }}"
)
STEPS: list[dict[str, Any]] = [
    {"kind": "image", "prompt": PROMPT, "model": None, "config": {"input_images": ["input"]}}
]


def title_for(style_title: str) -> str:
    return f"Restyle in the style of {style_title}"[:200]


async def _existing_job(
    session: AsyncSession, target_id: uuid.UUID, style_id: uuid.UUID
) -> Job | None:
    """A restyle job of the target in that style whose steps are still the restyle's own."""
    rows = await session.execute(
        sa.select(Job)
        .where(Job.series_id == target_id, Job.style_series_id == style_id)
        .order_by(Job.created_at.desc())
    )
    for job in rows.scalars():
        steps = [jobs_service.step_dict(s) for s in await jobs_service.steps(session, job.id)]
        if _normal(steps) == _normal(STEPS):
            return job
    return None


def _normal(steps: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    return jobs_service.dump_steps([StepSpec.model_validate(s) for s in steps])


async def start(
    session: AsyncSession,
    *,
    style_series_id: uuid.UUID,
    target_series_id: uuid.UUID | None = None,
    target_title: str | None = None,
    image_ids: Sequence[uuid.UUID] | None = None,
    series_id: uuid.UUID | None = None,
    include_subseries: bool = False,
    tag: str | None = None,
    prompt: str = "",
    style_image_ids: Sequence[uuid.UUID] = (),
    style_image_count: int = 3,
    concurrency: int,
    enqueue: bool = False,
) -> Batch:
    """Start the restyle: answers its batch (whose job is the restyle job). The results go to
    `target_series_id`, or to a new top-level series titled `target_title`. Everything is
    checked before anything is made or changed, so a refused restyle changes nothing."""
    if (target_series_id is None) == (target_title is None):
        raise Invalid(
            "Give either `target_series_id` (an existing series) or `target_title` (a new one)."
        )
    batches_service.check_source(image_ids, series_id, tag)
    style = await series_service.require(session, style_series_id)
    if target_series_id is not None:
        await series_service.require(session, target_series_id)
    else:
        target_title = series_service.clean_title(target_title or "")
    problems = style_service.reference_room_problems(
        [StepSpec.model_validate(s) for s in STEPS],
        style_service.style_reference_count(
            style.id, [str(i) for i in style_image_ids], style_image_count
        ),
    )
    if problems:
        raise Invalid(
            "A restyle sends the image itself and the style images, at most "
            f"{MAX_REFERENCE_IMAGES} in all: pick at most {MAX_REFERENCE_IMAGES - 1} style "
            "images (or a smaller `style_image_count`)."
        )
    if series_id is not None:
        ids = await batches_service.selection_of_series(
            session, series_id, include_subseries=include_subseries, tag=tag
        )
    else:
        ids = await batches_service.check_selection(session, image_ids or [])
    has_images = (
        await session.execute(sa.select(Image.id).where(Image.series_id == style.id).limit(1))
    ).first() is not None
    if not has_images and not style.style_profile.strip():
        raise Invalid(
            f"The series “{style.title}” has no images and no style profile: there is no style "
            "to take. Add images to it, or draft or write its style profile."
        )
    if target_series_id is None:
        target_series_id = (await series_service.create(session, title=target_title or "")).id
    job = await _existing_job(session, target_series_id, style.id)
    if job is None:
        job = await jobs_service.create(
            session,
            target_series_id,
            title=title_for(style.title),
            base_prompt=prompt,
            style_series_id=style.id,
            style_image_ids=list(style_image_ids),
            style_image_count=style_image_count,
        )
        await jobs_service.replace_steps(session, job.id, STEPS)
    else:
        await jobs_service.update(
            session,
            job.id,
            base_prompt=prompt,
            style_image_ids=list(style_image_ids),
            style_image_count=style_image_count,
        )
    return await batches_service.start(
        session, job.id, image_ids=ids, concurrency=concurrency, enqueue=enqueue
    )
