"""Executing claimed runs, and the embedded executor that finds them itself.

`RunExecutor` executes runs its process has claimed: it renews each run's heartbeat while it
works, notices cancels made anywhere, and hands a run back to the queue when it is stopped.
`EmbeddedExecutor` adds the loop that claims queued runs from the database inside the process
that serves Cog; `cog worker` (`cog.engine.worker`) gets its runs from the queue instead. Claims
are guarded in the database, so several processes can share one without running a run twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid

from cog.db import runs as runs_db
from cog.db.session import unreachable
from cog.domain import RunStatus
from cog.engine.recovery import recover_stale_runs
from cog.engine.runner import (
    RunEnd,
    Runner,
    RunnerDeps,
    finish_run,
    mark_cancelled,
    taken_over,
)

log = logging.getLogger(__name__)

# How often a run in flight looks whether someone asked to cancel it.
CANCEL_POLL_S = 1.0


def worker_name(kind: str) -> str:
    return f"{kind}:{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class RunExecutor:
    """Executes runs claimed under `name`, each with its heartbeat and cancel handling."""

    def __init__(
        self,
        deps: RunnerDeps,
        *,
        stale_after_s: float = 30.0,
        name: str | None = None,
    ) -> None:
        self.deps = deps
        self.stale_after_s = stale_after_s
        self.name = name or worker_name("embedded")
        self._tasks: dict[uuid.UUID, asyncio.Task[RunStatus | None]] = {}
        self._cancel_requested: set[uuid.UUID] = set()

    @property
    def running(self) -> int:
        return len(self._tasks)

    def in_flight(self) -> set[uuid.UUID]:
        """The runs this executor is executing now."""
        return set(self._tasks)

    async def stop(self) -> None:
        """Stop every run in flight; each goes back to the queue and resumes later."""
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def cancel_local(self, run_id: uuid.UUID) -> bool:
        """Stop a run this process is executing; answers whether it was here."""
        task = self._tasks.get(run_id)
        if task is None:
            return False
        self._cancel_requested.add(run_id)
        task.cancel()
        return True

    async def run_claimed(
        self, run_id: uuid.UUID, claimed_at: float | None = None
    ) -> RunStatus | None:
        """Execute a run this executor has claimed (at `claimed_at`, the loop's clock, when
        the caller knows), in the caller's task."""
        task = asyncio.current_task()
        assert task is not None
        self._tasks[run_id] = task
        try:
            return await self._execute(run_id, claimed_at)
        finally:
            self._tasks.pop(run_id, None)
            self._cancel_requested.discard(run_id)

    async def _execute(
        self, run_id: uuid.UUID, claimed_at: float | None = None
    ) -> RunStatus | None:
        me = asyncio.current_task()
        assert me is not None
        beat = asyncio.create_task(self._heartbeat(run_id, me))
        try:
            runner = Runner(self.deps, run_id, claim=self.name, claimed_at=claimed_at)
            return await runner.execute()
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await asyncio.shield(self._after_cancel(run_id))
            if run_id not in self._cancel_requested:
                raise
            me.uncancel()  # a cancel of this run, asked for and done: not a cancel of the caller
            return RunStatus.cancelled
        except Exception as exc:
            if taken_over(exc):
                # Its heartbeat lapsed and the run went back to the queue: whoever claims it
                # resumes it from what was committed. Nothing more is written from here.
                log.warning("run %s was taken from this executor; it resumes elsewhere", run_id)
                return None
            if (lost := unreachable(exc)) is not None:
                # Not the run's fault: it resumes from its last finished step once the
                # database is back, here or in another process.
                log.warning("run %s lost the database (%s); handing it back", run_id, lost)
                await asyncio.shield(self._hand_back(run_id))
                return None
            log.exception("run %s crashed", run_id)
            await asyncio.shield(self._crashed(run_id, exc))
            return RunStatus.failed
        finally:
            beat.cancel()

    async def _hand_back(self, run_id: uuid.UUID) -> None:
        """Put the run back in the queue as soon as the database answers again. If it does not
        answer before the run's heartbeat lapses, stale-run recovery does the same."""
        delay = 0.25
        deadline = asyncio.get_running_loop().time() + self.stale_after_s
        while True:
            try:
                async with self.deps.sessions() as session:
                    await runs_db.release(session, run_id, self.name)
                self.deps.notify(run_id)
                log.info("run %s is queued again", run_id)
                return
            except Exception as exc:
                if unreachable(exc) is None or asyncio.get_running_loop().time() > deadline:
                    log.warning("run %s could not be handed back (%s)", run_id, exc)
                    return
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)

    async def _after_cancel(self, run_id: uuid.UUID) -> None:
        if run_id in self._cancel_requested:
            await mark_cancelled(self.deps, run_id)
            return
        async with self.deps.sessions() as session:
            run = await runs_db.get(session, run_id)
            if run is not None and run.cancel_requested:
                await mark_cancelled(self.deps, run_id)
            else:  # shutting down: hand the run back so it resumes later
                await runs_db.release(session, run_id, self.name)
        self.deps.notify(run_id)

    async def _crashed(self, run_id: uuid.UUID, exc: Exception) -> None:
        end = RunEnd(RunStatus.failed, f"Cog hit an internal error: {exc!r}")
        await finish_run(self.deps, run_id, end)

    async def _heartbeat(self, run_id: uuid.UUID, task: asyncio.Task[RunStatus | None]) -> None:
        """Renew the claim every quarter of `stale_after_s`; look for a cancel, asked for in
        any process, every second in between, so a cancel stops the run within about one."""
        loop = asyncio.get_running_loop()
        renew_every = max(self.stale_after_s / 4, 0.05)
        look_every = min(renew_every, CANCEL_POLL_S)
        renewed = loop.time()
        while True:
            await asyncio.sleep(look_every)
            renew = loop.time() - renewed >= renew_every - look_every / 2
            try:
                async with self.deps.sessions() as session:
                    ours, cancel = await runs_db.heartbeat(session, run_id, self.name, renew=renew)
                if renew:
                    renewed = loop.time()
            except Exception as exc:
                log.warning("heartbeat of run %s failed (%s)", run_id, exc)
                continue
            if cancel:
                self._cancel_requested.add(run_id)
                task.cancel()
                return
            if not ours:
                log.warning("run %s was taken from this executor; stopping it here", run_id)
                task.cancel()
                return


class EmbeddedExecutor(RunExecutor):
    """Claims queued runs from the database and executes them as tasks of this process."""

    def __init__(
        self,
        deps: RunnerDeps,
        *,
        max_runs: int = 4,
        poll_s: float = 1.0,
        stale_after_s: float = 30.0,
        max_attempts: int = 3,
        name: str | None = None,
    ) -> None:
        super().__init__(deps, stale_after_s=stale_after_s, name=name)
        self.max_runs = max_runs
        self.poll_s = poll_s
        self.max_attempts = max_attempts
        self._wake = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None

    # --- life cycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        self._loop_task = asyncio.create_task(self._loop(), name="cog-executor")

    async def stop(self) -> None:
        """Stop taking work; runs in flight go back to the queue and resume on the next start."""
        if self._loop_task:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
        await super().stop()

    def wake(self) -> None:
        self._wake.set()

    # --- work ---------------------------------------------------------------------------------

    async def _loop(self) -> None:
        clock = asyncio.get_running_loop().time
        recovered_at: float | None = None
        while True:
            try:
                # Once a poll: a wake (a run queued, or one of ours ended) needs only a claim,
                # and a run left stale takes `stale_after_s` to be noticed anyway.
                if recovered_at is None or clock() - recovered_at >= self.poll_s:
                    await recover_stale_runs(
                        self.deps.sessions,
                        stale_after_s=self.stale_after_s,
                        max_attempts=self.max_attempts,
                        alive=self.in_flight(),
                    )
                    recovered_at = clock()
                await self._fill()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the database may be away for a moment; try again
                if (lost := unreachable(exc)) is not None:
                    log.warning("executor cannot reach the database (%s); trying again", lost)
                else:
                    log.exception("executor tick failed")
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.poll_s):
                    await self._wake.wait()
            self._wake.clear()

    async def _fill(self) -> None:
        free = self.max_runs - len(self._tasks)
        if free <= 0:
            return
        limit = self.deps.settings.batch_concurrency
        async with self.deps.sessions() as session:
            candidates = await runs_db.queued(session, free, batch_limit=limit)
            for run_id in candidates:
                if await runs_db.claim(session, run_id, self.name, batch_limit=limit):
                    self._spawn(run_id, asyncio.get_running_loop().time())

    def _spawn(self, run_id: uuid.UUID, claimed_at: float) -> None:
        task = asyncio.create_task(self._execute(run_id, claimed_at), name=f"cog-run-{run_id}")
        self._tasks[run_id] = task
        task.add_done_callback(lambda _t: self._done(run_id))

    def _done(self, run_id: uuid.UUID) -> None:
        self._tasks.pop(run_id, None)
        self._cancel_requested.discard(run_id)
        self._wake.set()
