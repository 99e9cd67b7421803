"""Runs: start one, read one as the API shows it, list a job's history, cancel."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from cog.db import batches as batches_db
from cog.db import queue as queue_db
from cog.db import runs as runs_db
from cog.db.models import Job, JobRun, StepRun
from cog.db.pages import Page, check_limit
from cog.domain import RunStatus, StepStatus
from cog.engine.steps import StepSpec, uses_input
from cog.errors import Conflict, Invalid, NotFound
from cog.services import jobs as jobs_service
from cog.services import style as style_service


async def require(session: AsyncSession, run_id: uuid.UUID) -> JobRun:
    found = await runs_db.get(session, run_id)
    if found is None:
        raise NotFound(f"There is no run {run_id}.")
    return found


@dataclass(frozen=True)
class Started:
    """A run just queued, with its steps, as this transaction wrote them."""

    run: JobRun
    steps: list[StepRun]

    @property
    def id(self) -> uuid.UUID:
        return self.run.id

    def view(self) -> dict[str, Any]:
        """The run as it was queued: what it shows before an executor takes it, with no
        second read (one may have taken it already; its events and reads show what follows)."""
        return snapshot(self.run, self.steps)


async def start(session: AsyncSession, job_id: uuid.UUID, *, enqueue: bool = False) -> Started:
    """Queue a run of the job's current steps (snapshotted: later edits do not touch it).

    With `enqueue` (the queue executor), its job for `cog worker` is committed with it."""
    job, specs = await runnable_steps(session, job_id)
    if uses_input(specs):
        raise Invalid(
            "The job's steps use `input`, the image a run of a batch is for; run it as a batch, "
            "once for each image of a selection or a series (“Run for each image” on the job's "
            "page, `cog jobs batch`, or POST /api/jobs/{id}/batches)."
        )
    style = await style_service.snapshot(session, job)
    run, steps = await runs_db.create(session, job, jobs_service.dump_steps(specs), style=style)
    if enqueue:
        await queue_db.enqueue(session, run.id)
    await session.commit()
    return Started(run, steps)


async def runnable_steps(session: AsyncSession, job_id: uuid.UUID) -> tuple[Job, list[StepSpec]]:
    """The job and its steps as a run would snapshot them; `Invalid` when they cannot run."""
    job = await jobs_service.require(session, job_id)
    rows = await jobs_service.steps(session, job_id)
    if not rows:
        raise Invalid("The job has no steps yet; draft or write them first.")
    raw = [jobs_service.step_dict(r) for r in rows]
    try:  # images it refers to may have been deleted or moved since the steps were saved
        specs = await jobs_service.check_steps(session, job, raw)
    except Invalid as exc:
        problems: list[str] = exc.extra.get("problems", [exc.message])
        raise Invalid(
            "The job cannot run as it is; edit its steps first: " + "; ".join(problems) + ".",
            problems=problems,
        ) from exc
    return job, specs


def snapshot(run: JobRun, steps: list[StepRun]) -> dict[str, Any]:
    """The run as the API and its event stream show it (JSON-ready)."""
    planned = run.steps_snapshot
    return {
        "id": str(run.id),
        "job_id": str(run.job_id),
        "batch_id": str(run.batch_id) if run.batch_id else None,
        "input_image_id": str(run.input_image_id) if run.input_image_id else None,
        "style": run.style,
        "status": run.status,
        "error": run.error,
        "base_prompt": run.base_prompt,
        "attempts": run.attempts,
        "cancel_requested": run.cancel_requested,
        "created_at": run.created_at.isoformat(),
        "started_at": run.started_at.isoformat() if run.started_at else None,
        "finished_at": run.finished_at.isoformat() if run.finished_at else None,
        "steps": [
            {
                "position": step.position,
                "kind": step.kind,
                "prompt": planned[step.position]["prompt"],
                "model": step.model,
                "config": planned[step.position].get("config", {}),
                "when": planned[step.position].get("when"),
                "for_each": planned[step.position].get("for_each"),
                "status": step.status,
                "skip_reason": step.skip_reason,
                "rendered_prompt": step.rendered_prompt,
                "text": step.text,
                "json": step.json_output,
                "iterations": _iterations(step),
                "image_ids": list(step.image_ids),
                "error": step.error,
                "attempts": step.attempts,
                "attempt_log": list(step.attempt_log),
                "usage": dict(step.usage),
                "started_at": step.started_at.isoformat() if step.started_at else None,
                "finished_at": step.finished_at.isoformat() if step.finished_at else None,
            }
            for step in steps
        ],
    }


def _iterations(step: StepRun) -> list[dict[str, Any]]:
    """A loop's turns; those left unfinished by a step that has ended (cancelled, or cut short
    by a failure elsewhere) end with it."""
    unfinished = (StepStatus.pending, StepStatus.running)
    iterations = [dict(it) for it in step.iterations or []]
    if step.status not in unfinished:
        for it in iterations:
            if it.get("status") in unfinished:
                it["status"] = StepStatus.cancelled
    return iterations


async def view(session: AsyncSession, run_id: uuid.UUID) -> dict[str, Any]:
    run = await require(session, run_id)
    return snapshot(run, await runs_db.step_runs(session, run_id))


async def read(session: AsyncSession, run_id: uuid.UUID) -> dict[str, Any] | None:
    run = await runs_db.get(session, run_id)
    if run is None:
        return None
    return snapshot(run, await runs_db.step_runs(session, run_id))


async def history(
    session: AsyncSession,
    job_id: uuid.UUID,
    *,
    limit: int = 20,
    cursor: str | None = None,
    with_batches: bool = True,
) -> Page[dict[str, Any]]:
    """The job's runs, newest first; without the runs of its batches if `with_batches` is
    false (the job's page shows those in their batches)."""
    check_limit(limit)
    await jobs_service.require(session, job_id)
    page = await runs_db.page_of_job(
        session, job_id, limit=limit, cursor=cursor, with_batches=with_batches
    )
    steps = await runs_db.step_runs_of(session, [r.id for r in page.items])
    return Page([snapshot(r, steps[r.id]) for r in page.items], page.next_cursor)


async def request_cancel(session: AsyncSession, run_id: uuid.UUID) -> bool:
    """Ask a run to stop. A queued run is cancelled at once (answers True); a running one is
    flagged and its executor stops it (answers False). A finished run cannot be cancelled."""
    run = await require(session, run_id)
    if RunStatus(run.status).is_final:
        raise Conflict(f"The run has already ended ({run.status}); there is nothing to cancel.")
    if run.batch_id is not None:
        await batches_db.lock(session, run.batch_id)
    await runs_db.request_cancel(session, run_id)
    done = await runs_db.finish_queued_as_cancelled(session, run_id)
    if done and run.batch_id is not None:
        await batches_db.settle(session, run.batch_id)
    await session.commit()
    return done
