"""`/cog/jobs/{id}`, the job editor: title, base prompt, drafting, the steps as cards, save, run,
the live run and the run history, delete."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.datastructures import FormData

from cog.db.models import Image, Job, Series
from cog.domain import ASPECT_RATIOS, IMAGE_SIZES, MAX_IMAGES_PER_STEP, RunStatus
from cog.errors import CogError, Invalid
from cog.services import batches as batches_service
from cog.services import images as images_service
from cog.services import jobs as jobs_service
from cog.services import runs as runs_service
from cog.services import series as series_service
from cog.web.deps import SessionDep, StateDep
from cog.web.pages._common import form_uuid, hx_redirect, render, same_origin
from cog.web.pages.batches import batch_form, cards, newest_cards, parse_ids
from cog.web.pages.stepforms import (
    Problems,
    StepChoice,
    StepDraft,
    apply_action,
    sort_problems,
    step_choices,
    steps_from_form,
    text,
)
from cog.web.schemas import JobUpdate, RunOut, StepsReplace

router = APIRouter(include_in_schema=False)
Guarded = [Depends(same_origin)]

PICKER_IMAGES = 24  # the series' newest images offered as inputs in each step card
RUNS_PAGE = 10
LIVE_RUNS = 2  # active runs a page follows by stream; others poll (see runs/_card.html)


@dataclass
class Editor:
    """What the editor form shows: the values (saved or as typed) and what to say about them."""

    title: str
    base_prompt: str
    steps: list[StepDraft]
    problems: Problems = field(default_factory=Problems)
    job_errors: dict[str, str] = field(default_factory=dict)
    status: str = "saved"  # saved | unsaved | invalid
    message: str | None = None
    focus_id: str | None = None  # the element to focus after an edit (htmx honours autofocus)

    @classmethod
    async def of_saved(cls, session: AsyncSession, job: Job, **kwargs: Any) -> Editor:
        rows = await jobs_service.steps(session, job.id)
        steps = [
            StepDraft.of_saved(r.kind, r.prompt, r.model, r.config, r.condition, r.for_each)
            for r in rows
        ]
        return cls(job.title, job.base_prompt, steps, **kwargs)

    def step_choices(self, position: int) -> list[StepChoice]:
        return step_choices(self.steps, position)

    @classmethod
    def of_form(cls, form: FormData) -> Editor:
        def one(key: str) -> str:
            value = form.get(key)
            return value if isinstance(value, str) else ""

        return cls(one("title"), text(one("base_prompt")), steps_from_form(form), status="unsaved")


async def render_editor(
    request: Request,
    session: AsyncSession,
    job: Job,
    editor: Editor,
    status_code: int = 200,
    **extra: Any,
) -> HTMLResponse:
    view = await series_service.view(session, job.series_id)
    recent = await images_service.listing(session, job.series_id, limit=PICKER_IMAGES)
    return render(
        request,
        "jobs/_editor.html",
        status_code=status_code,
        **_editor_context(job, editor, view.series, recent.items),
        **extra,
    )


def _editor_context(
    job: Job, editor: Editor, series: Series, recent: list[Image]
) -> dict[str, Any]:
    return {
        "job": job,
        "editor": editor,
        "series": series,
        "recent": recent,
        "aspect_ratios": ASPECT_RATIOS,
        "image_sizes": IMAGE_SIZES,
        "max_images": MAX_IMAGES_PER_STEP,
    }


async def _save(session: AsyncSession, job: Job, editor: Editor) -> bool:
    """Save the title, base prompt and steps together, or nothing: a refused step list leaves
    the job as it was. On refusal, the problems are put on `editor`; answers whether it saved."""
    fields: JobUpdate | None = None
    try:
        fields = JobUpdate.model_validate(
            {"title": editor.title, "base_prompt": editor.base_prompt}
        )
    except ValidationError as exc:
        for err in exc.errors():
            editor.job_errors.setdefault(str(err["loc"][0]), err["msg"])
    raw = [step.to_raw() for step in editor.steps]
    try:  # what no database can store (a NUL in a prompt) is refused as the API refuses it
        StepsReplace.model_validate({"steps": raw})
    except ValidationError as exc:
        editor.problems = Problems(
            general=[e["msg"].removeprefix("Value error, ") for e in exc.errors()]
        )
        editor.status = "invalid"
        return False
    try:  # every problem at once: the fields above and each step's
        await jobs_service.check_steps(session, job, raw)
    except Invalid as exc:
        editor.problems = sort_problems(exc.extra.get("problems") or [exc.message])
    if fields is None or editor.problems.count:
        editor.status = "invalid"
        return False
    await jobs_service.update(
        session, job.id, title=fields.title or "Untitled job", base_prompt=fields.base_prompt or ""
    )
    await jobs_service.replace_steps(session, job.id, raw)
    editor.status = "saved"
    return True


# --- the page -----------------------------------------------------------------------------------


@router.get("/cog/jobs/{job_id}", response_class=HTMLResponse)
async def job_page(
    request: Request,
    job_id: uuid.UUID,
    session: SessionDep,
    state: StateDep,
    run: uuid.UUID | None = None,
    images: str | None = None,
) -> HTMLResponse:
    """The editor, the batches and the runs. `?run=` opens that run; `?images=id,id,...` offers
    to run the job for each of those images (a selection made elsewhere)."""
    job = await jobs_service.require(session, job_id)
    view = await series_service.view(session, job.series_id)
    recent = await images_service.listing(session, job.series_id, limit=PICKER_IMAGES)
    editor = await Editor.of_saved(session, job)
    # Runs of batches are shown in their batch's card, not here: a batch of hundreds would
    # bury the job's other runs.
    history = await runs_service.history(session, job_id, limit=RUNS_PAGE, with_batches=False)
    runs = [RunOut.model_validate(r) for r in history.items]
    # Open the run asked for (a link from an image or a batch), else the newest, and every
    # active one. A run asked for that is not among the newest joins them at the top.
    if run is not None and run not in {r.id for r in runs}:
        found = await runs_service.read(session, run)
        if found is not None and found["job_id"] == str(job.id):
            runs.insert(0, RunOut.model_validate(found))
    wanted = run or (runs[0].id if runs else None)
    active = [r.id for r in runs if not RunStatus(r.status).is_final]
    batches, batches_cursor = await newest_cards(session, job.id)
    form = await batch_form(
        session, job, image_ids=parse_ids(images) if images is not None else None
    )
    return render(
        request,
        "jobs/editor.html",
        view=view,
        runs=runs,
        open_run=wanted,
        live_ids=active[:LIVE_RUNS],
        next_cursor=history.next_cursor,
        batches=batches,
        batches_cursor=batches_cursor,
        batch_form=form,
        batch_concurrency=state.settings.batch_concurrency,
        **_editor_context(job, editor, view.series, recent.items),
    )


@router.get("/cog/jobs/{job_id}/runs", response_class=HTMLResponse)
async def older_runs(
    request: Request, job_id: uuid.UUID, session: SessionDep, cursor: str | None = None
) -> HTMLResponse:
    history = await runs_service.history(
        session, job_id, limit=RUNS_PAGE, cursor=cursor, with_batches=False
    )
    return render(
        request,
        "runs/_history_page.html",
        job_id=job_id,
        runs=[RunOut.model_validate(r) for r in history.items],
        open_run=None,
        live_ids=(),
        next_cursor=history.next_cursor,
    )


# --- editing ------------------------------------------------------------------------------------


@router.post("/cog/jobs/{job_id}", dependencies=Guarded, response_class=HTMLResponse)
async def job_save(request: Request, job_id: uuid.UUID, session: SessionDep) -> HTMLResponse:
    job = await jobs_service.require(session, job_id)
    editor = Editor.of_form(await request.form())
    if await _save(session, job, editor):
        editor.message = "Saved."
        return await render_editor(request, session, job, editor)
    return await render_editor(request, session, job, editor, status_code=422)


@router.post("/cog/jobs/{job_id}/edit", dependencies=Guarded, response_class=HTMLResponse)
async def job_edit(request: Request, job_id: uuid.UUID, session: SessionDep) -> HTMLResponse:
    """Add, remove, duplicate or move a step in the form; nothing is saved yet."""
    job = await jobs_service.require(session, job_id)
    form = await request.form()
    editor = Editor.of_form(form)
    action = form.get("action")
    action = action if isinstance(action, str) else ""
    editor.steps, position = apply_action(editor.steps, action)
    editor.focus_id = _focus_after(action, position, len(editor.steps))
    return await render_editor(request, session, job, editor)


def _focus_after(action: str, position: int | None, count: int) -> str | None:
    """Keep the keyboard where the person is working: on a new step's prompt, or on the same
    tool of the step that moved (the other arrow once it reaches an end)."""
    verb = action.partition(":")[0]
    if position is None:
        return "add-image"
    if verb in ("add", "duplicate"):
        return f"steps-{position}-prompt"
    if verb == "up":
        return f"s{position}-up" if position > 0 else f"s{position}-down"
    if verb == "down":
        return f"s{position}-down" if position < count - 1 else f"s{position}-up"
    return f"s{position}-remove"


@router.post("/cog/jobs/{job_id}/draft", dependencies=Guarded, response_class=HTMLResponse)
async def job_draft(
    request: Request, job_id: uuid.UUID, session: SessionDep, state: StateDep
) -> HTMLResponse:
    """Save the title and base prompt, then let the text model draft (and save) the steps."""
    job = await jobs_service.require(session, job_id)
    typed = Editor.of_form(await request.form())
    try:
        fields = JobUpdate.model_validate({"title": typed.title, "base_prompt": typed.base_prompt})
        await jobs_service.update(
            session, job.id, title=fields.title or job.title, base_prompt=fields.base_prompt or ""
        )
        job = await jobs_service.draft(session, state.store, state.text_provider, job.id)
    except ValidationError as exc:
        typed.job_errors = {str(e["loc"][0]): e["msg"] for e in exc.errors()}
        typed.status = "invalid"
        return await render_editor(request, session, job, typed, status_code=422)
    except CogError as exc:
        # The title and base prompt may be saved by now; the steps stay as they were typed.
        typed.problems = Problems(general=[f"Drafting did not work: {exc.message}"])
        return await render_editor(request, session, job, typed, status_code=422)
    count = len(await jobs_service.steps(session, job.id))
    editor = await Editor.of_saved(
        session,
        job,
        message=f"Drafted {count} step{'s' if count != 1 else ''} and saved them. "
        "Review them, then run.",
    )
    return await render_editor(request, session, job, editor)


@router.post("/cog/jobs/{job_id}/runs", dependencies=Guarded, response_class=HTMLResponse)
async def job_run(
    request: Request, job_id: uuid.UUID, session: SessionDep, state: StateDep
) -> HTMLResponse:
    """Save what the form holds, then run it. The new run joins the history, live."""
    job = await jobs_service.require(session, job_id)
    editor = Editor.of_form(await request.form())
    if not await _save(session, job, editor):
        return await render_editor(request, session, job, editor, status_code=422)
    try:
        started = await runs_service.start(session, job.id, enqueue=state.settings.uses_queue)
    except Invalid as exc:
        editor.problems = sort_problems(exc.extra.get("problems") or [exc.message])
        editor.status = "invalid"
        return await render_editor(request, session, job, editor, status_code=422)
    state.executor_wake()
    run = RunOut.model_validate(started.view())
    editor.message = "Saved and started a run."
    return await render_editor(request, session, job, editor, new_run=run)


@router.post("/cog/jobs/{job_id}/batches", dependencies=Guarded, response_class=HTMLResponse)
async def job_batch(
    request: Request, job_id: uuid.UUID, session: SessionDep, state: StateDep
) -> HTMLResponse:
    """Save what the editor holds, then run it once for each image of the chosen series (or of
    the selection the page was opened with). The new batch's card joins the page, live."""
    job = await jobs_service.require(session, job_id)
    posted = await request.form()
    editor = Editor.of_form(posted)
    chosen = posted.get("series_id")
    series_id = form_uuid(chosen, "series_id") if isinstance(chosen, str) else None
    include_subseries = posted.get("include_subseries") == "true"
    picked_tag = posted.get("tag")
    tag = picked_tag if isinstance(picked_tag, str) and picked_tag.strip() else None
    selection = [v for v in posted.getlist("image_ids") if isinstance(v, str)]
    image_ids = parse_ids(",".join(selection)) if selection else None
    if not await _save(session, job, editor):
        return await render_editor(request, session, job, editor, status_code=422)
    settings = state.settings
    error: str | None = None
    try:
        batch = await batches_service.start(
            session,
            job.id,
            image_ids=image_ids,
            series_id=None if image_ids is not None else series_id,
            include_subseries=include_subseries,
            tag=None if image_ids is not None else tag,
            concurrency=settings.batch_concurrency,
            enqueue=settings.uses_queue,
        )
    except Invalid as exc:
        error = exc.message
    form = await batch_form(
        session,
        job,
        series_id=series_id,
        include_subseries=include_subseries,
        tag=tag,
        image_ids=image_ids,
        error=error,
    )
    if error is not None:
        editor.message = "Saved; the batch was not started."
        return await render_editor(
            request,
            session,
            job,
            editor,
            status_code=422,
            batch_form=form,
            batch_form_oob=True,
            batch_concurrency=settings.batch_concurrency,
        )
    state.executor_wake()
    (card,) = await cards(session, [batch.id])
    editor.message = (
        f"Saved and started {card.total} run{'s' if card.total != 1 else ''}, one for each image."
    )
    return await render_editor(
        request,
        session,
        job,
        editor,
        new_batch=card,
        batch_form=form,
        batch_form_oob=True,
        batch_concurrency=settings.batch_concurrency,
    )


@router.post("/cog/jobs/{job_id}/delete", dependencies=Guarded, response_model=None)
async def job_delete(job_id: uuid.UUID, session: SessionDep, state: StateDep) -> Response:
    job = await jobs_service.require(session, job_id)
    for run_id in await jobs_service.delete(session, job_id):
        state.executor_cancel(run_id)
    return hx_redirect(f"/cog/series/{job.series_id}?notice=job-deleted")
