"""A run in the job editor: its live stream of HTML fragments, and cancelling it.

The stream follows the same events as `GET /api/runs/{id}/events` (they come from one place,
`cog.engine.events.follow`), but each event carries the HTML that shows it, so htmx's SSE
extension swaps it into the page and no run is ever drawn in JavaScript.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse
from fastapi.sse import EventSourceResponse, ServerSentEvent

from cog.engine.events import Event, follow
from cog.services import runs as runs_service
from cog.web.api.jobs import existing_run
from cog.web.deps import SessionDep, StateDep
from cog.web.pages._common import render, render_text, same_origin
from cog.web.schemas import RunOut

router = APIRouter(include_in_schema=False)


def fragment(request: Request, event: Event, run: RunOut) -> str:
    """The HTML for one event: out-of-band swaps aimed at the parts of the run card it changes."""
    context: dict[str, Any] = {"run": run, "event": event.name}
    if event.name == "image_stored":
        context["position"] = event.data["position"]
        context["image_id"] = event.data["image_id"]
    elif event.name in ("step_started", "step_finished", "iteration_finished"):
        context["step"] = run.steps[event.data["position"]]
    return render_text(request, "runs/_event.html", **context)


@router.get("/cog/runs/{run_id}/live", response_class=EventSourceResponse)
async def live(
    request: Request, run_id: Annotated[uuid.UUID, Depends(existing_run)], state: StateDep
) -> AsyncIterator[ServerSentEvent]:
    latest: dict[str, dict[str, Any]] = {}

    async def read() -> dict[str, Any] | None:
        # A session per read: the stream may last minutes and must not hold a connection.
        async with state.sessions() as session:
            snapshot = await runs_service.read(session, run_id)
        if snapshot is not None:
            latest["run"] = snapshot
        return snapshot

    async for event in follow(run_id, read, state.notifier):
        # `snapshot` and `run_finished` carry the whole run; the other events are differences,
        # drawn from the read they were found in.
        whole = event.data if event.name in ("snapshot", "run_finished") else latest["run"]
        run = RunOut.model_validate(whole)
        yield ServerSentEvent(event=event.name, raw_data=fragment(request, event, run))


@router.get("/cog/runs/{run_id}/card", response_class=HTMLResponse)
async def card(request: Request, run_id: uuid.UUID, session: SessionDep) -> HTMLResponse:
    """The run's card as it is now: what an active run that is not streaming polls for."""
    run = RunOut.model_validate(await runs_service.view(session, run_id))
    return render(request, "runs/_card.html", run=run, open_run=run.id, live_ids=())


@router.post(
    "/cog/runs/{run_id}/cancel", dependencies=[Depends(same_origin)], response_class=HTMLResponse
)
async def cancel(
    request: Request, run_id: uuid.UUID, session: SessionDep, state: StateDep
) -> HTMLResponse:
    """Ask the run to stop; the live stream shows it ending. Answers the run's controls."""
    await runs_service.request_cancel(session, run_id)
    state.executor_cancel(run_id)
    state.notifier.notify(run_id)
    run = RunOut.model_validate(await runs_service.view(session, run_id))
    return render(request, "runs/_actions.html", run=run)
