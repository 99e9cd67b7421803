"""Runs whose process died: resume them from their last finished step, or give them up.

A run is stale when it is marked running and its executor has not renewed its heartbeat for
`run_stale_after_s`. It goes back to the queue (an executor resumes it, skipping finished
steps) until it has been started `run_max_attempts` times; then it is failed, with the reason.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections.abc import Collection

import sqlalchemy as sa

from cog.db import batches as batches_db
from cog.db import runs as runs_db
from cog.db.base import utcnow
from cog.db.models import JobRun, StepRun
from cog.db.session import SessionMaker
from cog.domain import RunStatus, StepStatus

log = logging.getLogger(__name__)


async def recover_stale_runs(
    sessions: SessionMaker,
    *,
    stale_after_s: float,
    max_attempts: int,
    alive: Collection[uuid.UUID] = (),
) -> tuple[list[str], list[str]]:
    """Answers the ids of the runs requeued and of those failed. Runs `alive` are the caller's
    own, in flight: a late heartbeat of theirs (a busy machine, a database slow to take a
    write) is no reason to take them away from the process that is running them."""
    requeued: list[str] = []
    failed: list[str] = []
    async with sessions() as session:
        cutoff = utcnow() - dt.timedelta(seconds=stale_after_s)
        for run in await runs_db.stale(session, cutoff, alive=alive):
            if run.attempts >= max_attempts:
                now = utcnow()
                reason = (
                    f"The process running this run stopped {run.attempts} time(s) before it "
                    "finished; Cog gave up on it. Finished steps and their images are kept."
                )
                if run.batch_id is not None:
                    await batches_db.lock(session, run.batch_id)
                await session.execute(
                    sa.update(StepRun)
                    .where(
                        StepRun.run_id == run.id,
                        StepRun.status.in_([StepStatus.running, StepStatus.pending]),
                    )
                    .values(status=StepStatus.failed, error=reason, finished_at=now)
                )
                await session.execute(
                    sa.update(JobRun)
                    .where(JobRun.id == run.id, JobRun.status == RunStatus.running)
                    .values(status=RunStatus.failed, error=reason, finished_at=now, claimed_by=None)
                )
                if run.batch_id is not None:
                    await batches_db.settle(session, run.batch_id)
                await session.commit()
                failed.append(str(run.id))
                log.warning("run %s failed after %s attempts", run.id, run.attempts)
            else:
                holder = run.claimed_by  # the release below clears it on the loaded row too
                if await runs_db.release(session, run.id, holder):
                    requeued.append(str(run.id))
                    log.warning("run %s was left running by %s; resuming it", run.id, holder)
    return requeued, failed
