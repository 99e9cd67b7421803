"""Finding what is wrong: the store's listing against the rows, every file's sha256, and the
runs no executor looks after. Nothing here changes anything."""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import hashlib
import io
import uuid
from dataclasses import dataclass, field

from cog.config import Settings
from cog.db import images as images_db
from cog.db import queue as queue_db
from cog.db import runs as runs_db
from cog.db.base import utcnow
from cog.db.models import JobRun
from cog.db.session import SessionMaker
from cog.errors import CogError
from cog.imaging import bytes_text, thumbnail_fits, verify_image
from cog.services import images as images_service
from cog.services.doctor.report import Finding, Kind, Options, Progress, Report
from cog.storage import ObjectStore, StoredObject, StoredObjectMissing
from cog.storage.keys import IMAGES_PREFIX, THUMBS_PREFIX, image_id_of_thumbnail, thumbnail_key

_BATCH = 1000  # image rows read at a time


async def check(
    sessions: SessionMaker,
    store: ObjectStore,
    settings: Settings,
    options: Options | None = None,
    progress: Progress | None = None,
) -> Report:
    """Find what is wrong; change nothing."""
    checker = _Checker(sessions, store, settings, options or Options(), progress)
    return await checker.run()


@dataclass
class _Checker:
    sessions: SessionMaker
    store: ObjectStore
    settings: Settings
    options: Options
    progress: Progress | None
    report: Report = field(init=False)

    def __post_init__(self) -> None:
        self.report = Report(store=self.store.name, quick=self.options.quick, queue=False)

    async def run(self) -> Report:
        # The store is listed before the rows are read. A row committed after the listing whose
        # file the listing missed is confirmed with the store itself (`_check_row`), so a file
        # written after the listing never makes its image look lost.
        listed_at = utcnow()
        listed = await self._listing()
        self.report.objects = len(listed)
        to_read: list[tuple[images_db.FileFacts, int]] = []
        async with self.sessions() as session:
            after: uuid.UUID | None = None
            while batch := await images_db.file_facts(session, after=after, limit=_BATCH):
                after = batch[-1].id
                self.report.images += len(batch)
                for facts in batch:
                    if (size := await self._check_row(facts, listed)) is not None:
                        to_read.append((facts, size))
            # Earlier versions' files and thumbnails are history, not strays. (Their bytes are
            # not hashed: only the current version is.)
            for version_id, key in await images_db.earlier_version_keys(session):
                listed.pop(key, None)
                listed.pop(thumbnail_key(version_id), None)
        # What is left of the listing is what no row refers to.
        for obj in listed.values():
            self.report.findings.append(_stray(obj, listed_at, self.options.grace))
        if not self.options.quick:
            await self._read_all(to_read)
        await self._check_runs()
        order = list(Kind)
        self.report.findings.sort(key=lambda f: (order.index(f.kind), f.key or "", f.subject))
        return self.report

    async def _listing(self) -> dict[str, StoredObject]:
        listed: dict[str, StoredObject] = {}
        try:
            for prefix in (IMAGES_PREFIX, THUMBS_PREFIX):
                async for obj in self.store.list_objects(prefix):
                    listed[obj.key] = obj
        except Exception as exc:
            raise CogError(f"Listing the store {self.store.name} failed: {exc}") from exc
        return listed

    async def _check_row(
        self, facts: images_db.FileFacts, listed: dict[str, StoredObject]
    ) -> int | None:
        """Check one row against the listing, taking its objects out of it. Answers the size
        of its file when the file is there to be read."""
        thumb = listed.pop(thumbnail_key(facts.version_id), None)
        found = listed.pop(facts.storage_path, None)
        size = found.size if found else await self.store.size(facts.storage_path)
        if size is None:
            self.report.findings.append(_missing(facts, thumbnail=thumb is not None))
            return None
        if not self.options.quick:
            return size  # the file and its thumbnail are read next
        if size != facts.size_bytes:
            how = f"it holds {size:,} bytes, the image {facts.size_bytes:,}"
            self.report.findings.append(_changed(facts, how))
        elif thumb is None:
            self.report.findings.append(_no_thumbnail(facts))
        return None

    async def _read_all(self, to_read: list[tuple[images_db.FileFacts, int]]) -> None:
        """Read every file for its sha256 (several at a time), and each thumbnail to see that
        it fits. A store that fails (not a missing object) stops the check with its error."""
        if not to_read:
            return
        if self.progress is not None:
            self.progress.begin("Reading files", sum(size for _, size in to_read), in_bytes=True)
        pending = iter(to_read)

        async def worker() -> None:
            for facts, _ in pending:
                try:
                    await self._read_one(facts)
                except CogError:
                    raise
                except Exception as exc:
                    raise CogError(f"Reading {facts.storage_path} failed: {exc}") from exc

        tasks = [asyncio.create_task(worker()) for _ in range(max(1, self.options.concurrency))]
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if self.progress is not None:
                self.progress.end()

    async def _read_one(self, facts: images_db.FileFacts) -> None:
        digest = hashlib.sha256()
        size = 0
        try:
            async for chunk in self.store.stream(facts.storage_path):
                digest.update(chunk)
                size += len(chunk)
                if self.progress is not None:
                    self.progress.advance(len(chunk))
        except StoredObjectMissing:
            async with self.sessions() as session:
                if await images_db.uses_key(session, facts.storage_path):
                    self.report.findings.append(_missing(facts, thumbnail=False))
            return  # else the image was deleted while doctor ran
        self.report.files_read += 1
        self.report.bytes_read += size
        if size != facts.size_bytes or digest.hexdigest() != facts.sha256:
            self.report.findings.append(_changed(facts, await self._damage(facts)))
            return
        try:
            cached = await self.store.get(thumbnail_key(facts.version_id))
        except StoredObjectMissing:
            self.report.findings.append(_no_thumbnail(facts))
            return
        px = self.settings.thumbnail_px
        if not thumbnail_fits(cached, px, facts.width, facts.height):
            detail = (
                f"Its thumbnail is not a WebP {px} px on its longest side (damaged, or made for "
                "another COG_THUMBNAIL_PX)"
            )
            self.report.findings.append(_thumbnail(Kind.thumbnail_outdated, facts, detail))

    async def _damage(self, facts: images_db.FileFacts) -> str:
        """How a changed file differs, and whether it still reads as an image."""
        try:
            data = await self.store.get(facts.storage_path)
        except StoredObjectMissing:
            return "it went while it was being read"
        if len(data) != facts.size_bytes:
            how = f"it holds {len(data):,} bytes, the image {facts.size_bytes:,}"
        else:
            how = f"its sha256 is {hashlib.sha256(data).hexdigest()}, the image {facts.sha256}"
        verify = functools.partial(
            verify_image,
            io.BytesIO(data),
            max_bytes=max(len(data), 1),
            max_pixels=self.settings.max_image_pixels,
            thumbnail_px=64,  # decodes every pixel
        )
        try:
            await images_service.decoding(self.settings, verify)
        except CogError as exc:
            return f"{how}; it no longer reads as an image ({exc.message.rstrip('.')})"
        return f"{how}; it still reads as an image, but not the one that was stored"

    async def _check_runs(self) -> None:
        stale_after = self.settings.run_stale_after_s
        now = utcnow()
        async with self.sessions() as session:
            self.report.runs = await runs_db.unfinished_count(session)
            for run in await runs_db.stale(session, now - dt.timedelta(seconds=stale_after)):
                self.report.findings.append(self._stale(run, now))
            self.report.queue = self.settings.uses_queue and await queue_db.installed(session)
            if self.report.queue:
                lost = await queue_db.orphans(
                    session,
                    alive_within_s=stale_after,
                    batch_concurrency=self.settings.batch_concurrency,
                    limit=10_000,
                )
                self.report.findings += [_lost(run_id) for run_id, _lock in lost]

    def _stale(self, run: JobRun, now: dt.datetime) -> Finding:
        holder = run.claimed_by or "no executor"
        beat = run.heartbeat_at
        since = f"last checked in {_ago(now - beat)} ago" if beat else "never checked in"
        limit = self.settings.run_max_attempts
        if run.attempts >= limit:
            remedy = (
                f"Failed: it was started {run.attempts} time(s) and COG_RUN_MAX_ATTEMPTS is "
                f"{limit}. Finished steps and their images are kept."
            )
        else:
            who = "a `cog worker`" if self.settings.uses_queue else "`cog serve`"
            remedy = (
                f"Queued again: {who} resumes it from its last finished step (start "
                f"{run.attempts + 1} of at most {limit})."
            )
        return Finding(
            Kind.run_stale,
            f"It is marked running on {holder}, which {since}; an executor takes a run back "
            f"after {self.settings.run_stale_after_s:g} s without one (COG_RUN_STALE_AFTER_S).",
            remedy,
            run_id=run.id,
        )


def _missing(facts: images_db.FileFacts, *, thumbnail: bool) -> Finding:
    also = " Its thumbnail is still there." if thumbnail else ""
    return Finding(
        Kind.file_missing,
        f"Its file is not in the store.{also}",
        "Kept: the bytes are gone (restore the file from a backup). With --drop-missing, --fix "
        "deletes the image's row and thumbnail.",
        key=facts.storage_path,
        image_id=facts.id,
    )


def _changed(facts: images_db.FileFacts, how: str) -> Finding:
    return Finding(
        Kind.file_changed,
        f"Its file changed since it was stored: {how}.",
        "Left as it is: Cog cannot restore the original. Restore the file from a backup, or "
        f"delete the image (`cog images rm {facts.id}`).",
        key=facts.storage_path,
        image_id=facts.id,
    )


def _no_thumbnail(facts: images_db.FileFacts) -> Finding:
    return _thumbnail(Kind.thumbnail_missing, facts, "It has no thumbnail")


def _thumbnail(kind: Kind, facts: images_db.FileFacts, detail: str) -> Finding:
    return Finding(
        kind,
        f"{detail}; a page makes one when it shows the image.",
        "Made again from the original.",
        key=thumbnail_key(facts.version_id),
        image_id=facts.id,
    )


def _stray(obj: StoredObject, now: dt.datetime, grace: dt.timedelta) -> Finding:
    age = now - obj.last_modified
    written = f"Written {_ago(age)} ago ({bytes_text(obj.size)}); no image refers to it"
    if age < grace:
        return Finding(
            Kind.recent_file_without_row,
            f"{written} yet: an upload may be about to commit its row.",
            f"Left alone until it is {_ago(grace)} old.",
            key=obj.key,
        )
    if image_id_of_thumbnail(obj.key) is not None:
        return Finding(
            Kind.thumbnail_without_image,
            f"{written}: the thumbnail of an image that no longer exists.",
            "Deleted: a thumbnail is only ever made from an original.",
            key=obj.key,
        )
    return Finding(
        Kind.file_without_row,
        f"{written}.",
        "Moved under quarantine/, not deleted: it may be the only copy of an image whose row "
        "was lost.",
        key=obj.key,
    )


def _lost(run_id: uuid.UUID) -> Finding:
    return Finding(
        Kind.run_lost,
        "It is queued, but no job in the queue will bring it to a worker (the worker that held "
        "it stopped).",
        "Given a new queue job, as a worker's upkeep does; a `cog worker` then runs it.",
        run_id=run_id,
    )


def _ago(age: dt.timedelta) -> str:
    seconds = max(age.total_seconds(), 0)
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.0f} h"
    return f"{seconds / 86400:.0f} days"
