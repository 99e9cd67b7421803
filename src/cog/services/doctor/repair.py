"""Repairing what `check` found, each action checked again just before it is taken (see the
package's docstring for what is done about each kind, and why)."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field

from cog.config import Settings
from cog.db import images as images_db
from cog.db import queue as queue_db
from cog.db.base import utcnow
from cog.db.session import SessionMaker
from cog.engine.recovery import recover_stale_runs
from cog.errors import CogError, NotFound
from cog.services import images as images_service
from cog.services.doctor.report import Finding, Kind, Options, Outcome, Progress, Report
from cog.storage import ObjectStore, StoredObjectMissing
from cog.storage.keys import image_id_of_thumbnail, quarantine_key

log = logging.getLogger(__name__)


async def repair(
    sessions: SessionMaker,
    store: ObjectStore,
    settings: Settings,
    report: Report,
    options: Options | None = None,
    progress: Progress | None = None,
) -> None:
    """Act on the report's findings (see the package's docstring); each records what was done.

    Every action checks again first, so what changed since `check()` is not undone: a file a row
    now refers to stays, a row whose file is back stays, a run an executor took back is left."""
    repairer = _Repairer(sessions, store, settings, options or Options(), report)
    await repairer.run(progress)


@dataclass
class _Repairer:
    sessions: SessionMaker
    store: ObjectStore
    settings: Settings
    options: Options
    report: Report
    folder: str = field(default_factory=lambda: utcnow().strftime("%Y%m%dT%H%M%SZ"))

    async def run(self, progress: Progress | None) -> None:
        actions = {
            Kind.file_missing: self._drop_missing,
            Kind.file_without_row: self._quarantine,
            Kind.thumbnail_without_image: self._delete_thumbnail,
            Kind.thumbnail_missing: self._remake_thumbnail,
            Kind.thumbnail_outdated: self._remake_thumbnail,
        }
        todo = [f for f in self.report.findings if f.kind in actions]
        if not todo:
            progress = None
        if progress is not None:
            progress.begin("Repairing", len(todo), in_bytes=False)
        try:
            for finding in todo:
                try:
                    finding.outcome, finding.note = await actions[finding.kind](finding)
                except Exception as exc:
                    log.debug("could not repair %s", finding.subject, exc_info=True)
                    message = exc.message if isinstance(exc, CogError) else repr(exc)
                    finding.outcome, finding.note = Outcome.failed, f"Failed: {message}"
                if progress is not None:
                    progress.advance(1)
        finally:
            if progress is not None:
                progress.end()
        for finding in self.report.of(Kind.file_changed):
            finding.outcome = Outcome.left
            finding.note = "Cog cannot restore the original bytes; the image is kept as it is."
        for finding in self.report.of(Kind.recent_file_without_row):
            finding.outcome, finding.note = Outcome.left, "Too new to move; left alone."
        await self._recover_runs()
        self.report.repaired = True

    async def _quarantine(self, finding: Finding) -> tuple[Outcome, str]:
        assert finding.key is not None
        async with self.sessions() as session:
            if await images_db.uses_key(session, finding.key):
                return Outcome.gone, "An image refers to it now; it stays where it is."
        to = quarantine_key(self.folder, finding.key)
        try:
            await self.store.move(finding.key, to)
        except StoredObjectMissing:
            return Outcome.gone, "It is no longer in the store."
        return Outcome.fixed, f"Moved to {to}."

    async def _delete_thumbnail(self, finding: Finding) -> tuple[Outcome, str]:
        assert finding.key is not None
        image_id = image_id_of_thumbnail(finding.key)
        async with self.sessions() as session:
            # Thumbnails are keyed by version (version 1 has its image's id).
            if image_id is not None and await images_db.version_exists(session, image_id):
                return Outcome.gone, "Its image exists now; it stays."
        await self.store.delete(finding.key)
        return Outcome.fixed, "Deleted."

    async def _drop_missing(self, finding: Finding) -> tuple[Outcome, str]:
        assert finding.key is not None and finding.image_id is not None
        if not self.options.drop_missing:
            return Outcome.left, "Kept (--drop-missing deletes the rows of such images)."
        if len(self.report.of(Kind.file_missing)) == self.report.images:
            return Outcome.left, (
                "Kept: no image's file is in the store, which looks like a wrong "
                "COG_STORAGE_URL rather than lost files, so --drop-missing deletes none. "
                "Delete images one by one with `cog images rm`."
            )
        # Never an image row whose file exists: ask the store once more, just before.
        if await self.store.size(finding.key) is not None:
            return Outcome.gone, "Its file is back; the image is kept."
        async with self.sessions() as session:
            try:
                await images_service.delete(session, self.store, finding.image_id)
            except NotFound:
                return Outcome.gone, "The image was deleted meanwhile."
        return Outcome.fixed, "Deleted the image's row and its thumbnail."

    async def _remake_thumbnail(self, finding: Finding) -> tuple[Outcome, str]:
        assert finding.image_id is not None
        async with self.sessions() as session:
            facts = await images_db.file_of(await session.connection(), finding.image_id)
        if facts is None:
            return Outcome.gone, "The image was deleted meanwhile."
        await images_service.thumbnail_of(self.store, self.settings, facts)
        return Outcome.fixed, "Made again."

    async def _recover_runs(self) -> None:
        """The executors' own recovery, then (queue executor) their re-queueing of lost runs."""
        stale = self.report.of(Kind.run_stale)
        requeued: list[str] = []
        if stale:
            requeued, failed = await recover_stale_runs(
                self.sessions,
                stale_after_s=self.settings.run_stale_after_s,
                max_attempts=self.settings.run_max_attempts,
            )
            seen = {str(f.run_id) for f in stale}
            for run_id in [*requeued, *failed]:
                if run_id not in seen:  # went stale since the check
                    self.report.findings.append(
                        Finding(
                            Kind.run_stale,
                            "It went stale while doctor ran.",
                            "Queued again or failed, as recovery decides.",
                            run_id=uuid.UUID(run_id),
                        )
                    )
            for finding in self.report.of(Kind.run_stale):
                if str(finding.run_id) in requeued:
                    finding.outcome, finding.note = Outcome.fixed, "Queued again to resume."
                elif str(finding.run_id) in failed:
                    finding.outcome = Outcome.fixed
                    finding.note = "Failed: out of attempts (the run's error says so)."
                else:
                    finding.outcome = Outcome.gone
                    finding.note = "No longer stale: its executor checked in, or it ended."
        if not self.report.queue or not (requeued or self.report.of(Kind.run_lost)):
            return
        async with self.sessions() as session:
            queued = await queue_db.requeue_orphans(
                session,
                alive_within_s=self.settings.run_stale_after_s,
                batch_concurrency=self.settings.batch_concurrency,
                limit=10_000,
            )
        for finding in self.report.of(Kind.run_lost):
            if queued is None:
                finding.outcome = Outcome.left
                finding.note = "Another process is queueing lost runs right now; check again."
            elif finding.run_id in queued:
                finding.outcome, finding.note = Outcome.fixed, "Given a new queue job."
            else:
                finding.outcome, finding.note = Outcome.gone, "A worker took it meanwhile."
