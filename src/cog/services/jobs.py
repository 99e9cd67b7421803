"""Jobs: create, edit, draft steps with the text model, delete (keeping every image)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from cog.db import jobs as jobs_db
from cog.db import runs as runs_db
from cog.db.base import utcnow
from cog.db.models import Image, Job, JobRun, JobStep
from cog.db.pages import Page, check_limit
from cog.domain import JobStatus
from cog.engine.context import StyleSnapshot, load_series_context
from cog.engine.drafting import DraftStep, draft_steps
from cog.engine.steps import StepSpec, image_refs, parse_steps, validate_steps
from cog.errors import Invalid, NotFound
from cog.providers.base import TextProvider
from cog.services import images as images_service
from cog.services import series as series_service
from cog.services import style as style_service
from cog.storage import ObjectStore

UNSET: Any = series_service.UNSET
DRAFT_IMAGES = 3
DEFAULT_STYLE_IMAGES = 3


async def require(session: AsyncSession, job_id: uuid.UUID) -> Job:
    found = await jobs_db.get(session, job_id)
    if found is None:
        raise NotFound(f"There is no job {job_id}.")
    return found


async def create(
    session: AsyncSession,
    series_id: uuid.UUID,
    *,
    title: str,
    base_prompt: str,
    style_series_id: uuid.UUID | None = UNSET,
    style_image_ids: Sequence[uuid.UUID] = UNSET,
    style_image_count: int = UNSET,
) -> Job:
    """A new job, with a style source when one is given (checked as `update` checks it)."""
    await series_service.require(session, series_id)
    job = Job(
        series_id=series_id,
        title=title.strip() or "Untitled job",
        base_prompt=base_prompt,
        status=JobStatus.draft,
        style_series_id=None,
        style_image_ids=[],
        style_image_count=DEFAULT_STYLE_IMAGES,
    )
    await style_service.set_source(
        session,
        job,
        [],
        series_id=style_series_id,
        image_ids=style_image_ids,
        image_count=style_image_count,
    )
    session.add(job)
    await session.commit()
    return job


async def update(
    session: AsyncSession,
    job_id: uuid.UUID,
    *,
    title: str = UNSET,
    base_prompt: str = UNSET,
    style_series_id: uuid.UUID | None = UNSET,
    style_image_ids: Sequence[uuid.UUID] = UNSET,
    style_image_count: int = UNSET,
) -> Job:
    """Change the fields given. The style source is checked whole, with the steps (their own
    references and the style images must fit one request); a refused edit changes nothing."""
    job = await require(session, job_id)
    if any(v is not UNSET for v in (style_series_id, style_image_ids, style_image_count)):
        specs = [StepSpec.model_validate(step_dict(s)) for s in await steps(session, job_id)]
        await style_service.set_source(
            session,
            job,
            specs,
            series_id=style_series_id,
            image_ids=style_image_ids,
            image_count=style_image_count,
        )
    if title is not UNSET:
        job.title = title.strip()
    if base_prompt is not UNSET:
        job.base_prompt = base_prompt
    await session.commit()
    return job


async def listing(
    session: AsyncSession, series_id: uuid.UUID, *, limit: int = 50, cursor: str | None = None
) -> Page[Job]:
    check_limit(limit)
    await series_service.require(session, series_id)
    return await jobs_db.page_in_series(session, series_id, limit=limit, cursor=cursor)


async def steps(session: AsyncSession, job_id: uuid.UUID) -> list[JobStep]:
    return await jobs_db.steps(session, job_id)


async def _image_series(
    session: AsyncSession, refs: Sequence[uuid.UUID]
) -> dict[uuid.UUID, uuid.UUID]:
    """The series of each referenced image that exists."""
    if not refs:
        return {}
    rows = await session.execute(sa.select(Image.id, Image.series_id).where(Image.id.in_(refs)))
    return {row.id: row.series_id for row in rows}


async def check_steps(session: AsyncSession, job: Job, raw: Sequence[Any]) -> list[StepSpec]:
    """Validate a step list against the job's series; `Invalid` names every problem."""
    specs, _ = parse_steps(raw)
    refs = [ref for spec in specs if spec is not None for ref in image_refs(spec.config)]
    found = await _image_series(session, refs)
    checked = validate_steps(
        raw,
        series_image_ids={i for i, s in found.items() if s == job.series_id},
        elsewhere_image_ids={i for i, s in found.items() if s != job.series_id},
    )
    problems = style_service.reference_room_problems(checked, style_service.job_style_count(job))
    if problems:
        raise Invalid("The steps were not saved: " + "; ".join(problems) + ".", problems=problems)
    return checked


def dump_steps(specs: Sequence[StepSpec]) -> list[dict[str, Any]]:
    return [spec.model_dump(mode="json", by_alias=True) for spec in specs]


async def replace_steps(session: AsyncSession, job_id: uuid.UUID, raw: Sequence[Any]) -> Job:
    """Replace the whole ordered list. A refused list changes nothing."""
    job = await require(session, job_id)
    specs = await check_steps(session, job, raw)
    await jobs_db.replace_steps(session, job.id, dump_steps(specs))
    job.status = JobStatus.ready if specs else JobStatus.draft
    job.updated_at = utcnow()
    await session.commit()
    return job


async def update_step(session: AsyncSession, job_id: uuid.UUID, position: int, raw: Any) -> Job:
    """Change one step; the whole list is checked again (later steps may depend on it)."""
    await require(session, job_id)
    current = dump_steps(
        [StepSpec.model_validate(step_dict(s)) for s in await steps(session, job_id)]
    )
    if not 0 <= position < len(current):
        raise NotFound(f"Job {job_id} has no step {position}.")
    if isinstance(raw, dict):
        merged = {**current[position], **raw}
    else:
        raise Invalid("A step is an object with `kind`, `prompt`, `model` and `config`.")
    current[position] = merged
    return await replace_steps(session, job_id, current)


def step_dict(row: JobStep) -> dict[str, Any]:
    """A saved step as a person writes it (`{"kind", "prompt", "model", "config"}`, with `when`
    and `for_each` when it has them)."""
    step = {"kind": row.kind, "prompt": row.prompt, "model": row.model, "config": row.config}
    if row.condition is not None:
        step["when"] = row.condition
    if row.for_each is not None:
        step["for_each"] = row.for_each
    return step


async def draft(
    session: AsyncSession, store: ObjectStore, text: TextProvider, job_id: uuid.UUID
) -> Job:
    """Ask the text model for the steps, from the base prompt, the series and a few images."""
    job = await require(session, job_id)
    if not job.base_prompt.strip():
        raise Invalid("The job has no base prompt to draft from; write one first.")
    series = await series_service.require(session, job.series_id)
    recent = await session.execute(
        sa.select(Image)
        .where(Image.series_id == series.id)
        .order_by(Image.created_at.desc())
        .limit(DRAFT_IMAGES)
    )
    images = await images_service.thumbnails_for_model(session, store, list(recent.scalars()))
    context = await load_series_context(session, series)
    style = StyleSnapshot.of(await style_service.snapshot(session, job))
    drafted, _result = await draft_steps(
        text,
        base_prompt=job.base_prompt,
        series_title=series.title,
        series_description=series.description,
        series_tags=list(series.tags),
        images=images,
        inherited=context.ancestors,
        style=style.context() if style is not None else None,
    )
    raw = [drafted_step(step) for step in drafted.steps]
    try:
        specs = await check_steps(session, job, raw)
    except Invalid as exc:
        raise Invalid(
            f"The model drafted steps Cog cannot use ({exc.message}) Try drafting again."
        ) from exc
    await jobs_db.replace_steps(session, job.id, dump_steps(specs))
    job.status = JobStatus.ready
    job.updated_at = utcnow()
    if drafted.title and job.title in ("", "Untitled job"):
        job.title = drafted.title
    await session.commit()
    return job


def drafted_step(step: DraftStep) -> dict[str, Any]:
    """A drafted step as the steps are written: its schema, sent as JSON text, as an object
    (text that is not JSON is left as it is, for the checks to name)."""
    config = step.config.model_dump(exclude_none=True, exclude_defaults=True)
    schema = config.pop("answer_schema", None)
    if schema is not None:
        config["schema"] = schema
    raw: dict[str, Any] = {"kind": step.kind, "prompt": step.prompt, "config": config}
    for key in ("when", "for_each"):
        value = getattr(step, key)
        if value is not None and value.strip():
            raw[key] = value.strip()
    return raw


async def delete(session: AsyncSession, job_id: uuid.UUID) -> list[uuid.UUID]:
    """Delete a job and its runs. Its images stay in the series, their job id set to null.

    Answers the runs that were still active, so the caller can stop them."""
    job = await require(session, job_id)
    active = await runs_db.active_for_job(session, job.id)
    await session.execute(sa.update(Image).where(Image.job_id == job.id).values(job_id=None))
    await session.delete(job)
    await session.commit()
    return active


async def last_runs(session: AsyncSession, job_ids: Sequence[uuid.UUID]) -> dict[uuid.UUID, JobRun]:
    """The newest run of each job that has run (job lists show its status)."""
    return await jobs_db.last_runs(session, job_ids)


async def add_input_image(
    session: AsyncSession, job_id: uuid.UUID, position: int, image_id: uuid.UUID
) -> Job:
    """Add an image to a step's input images ("use as reference"); the whole list is checked
    again, so an image of another series, or one too many, is refused with the usual reasons."""
    rows = await steps(session, job_id)
    if not 0 <= position < len(rows):
        raise NotFound(f"Job {job_id} has no step {position}.")
    config = dict(rows[position].config)
    refs = [str(ref) for ref in config.get("input_images", [])]
    if str(image_id) not in refs:
        refs.append(str(image_id))
    return await update_step(
        session, job_id, position, {"config": {**config, "input_images": refs}}
    )
