"""Group commit: the rows of images that become ready together go in one transaction.

The images of a step arrive within moments of each other (their model calls run at once). Each
transaction costs a round of statements and a commit whatever it holds, so instead of one per
image, an image whose file is written joins a queue: when no transaction is running it starts
one for everything queued; otherwise it waits, and the next transaction takes it with the
others that came meanwhile. Each image still learns whether its own rows were committed.

A transaction also waits for the images already in hand that are still being checked and
written to the store (`preparing`): that takes milliseconds, where the next transaction would
cost as much again. Images still being made by the model are not waited for.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from cog.db.base import insert_rows
from cog.db.models import Image, ImageVersion
from cog.db.session import SessionMaker
from cog.shield import to_the_end
from cog.storage import ObjectStore
from cog.storage.base import delete_quietly

# A new row's values by attribute name (an image's, or its first version's).
NewImage = dict[str, Any]
# Changes more rows in the image's transaction (a run records the image on its step there, so
# an image is never stored without being counted, nor counted twice).
BeforeCommit = Callable[[AsyncSession, NewImage], Awaitable[None]]
# Runs once in each transaction, after every image's `BeforeCommit` (the step's own row, written
# once with all its images rather than once per image).
Then = Callable[[AsyncSession], Awaitable[None]]


@dataclass
class _Entry:
    image: NewImage
    version: NewImage
    before_commit: BeforeCommit | None
    outcome: asyncio.Future[None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class ImageCommits:
    """Commits image rows (the image, its first version and what `before_commit` adds) in as
    few transactions as their arrival allows, one transaction at a time."""

    def __init__(
        self, sessions: SessionMaker, store: ObjectStore, then: Then | None = None
    ) -> None:
        self._sessions = sessions
        self._store = store
        self._then = then
        self._queue: list[_Entry] = []
        self._lock = asyncio.Lock()
        self._preparing = 0
        self._prepared = asyncio.Event()
        self._prepared.set()

    @contextlib.contextmanager
    def preparing(self) -> Iterator[None]:
        """Around an image's check and store write, before its `commit`: the next transaction
        waits for it (whether it ends in a commit or in an error)."""
        self._preparing += 1
        self._prepared.clear()
        try:
            yield
        finally:
            self._preparing -= 1
            if not self._preparing:
                self._prepared.set()

    async def commit(
        self,
        image: NewImage,
        version: NewImage,
        files: list[str],
        before_commit: BeforeCommit | None = None,
    ) -> None:
        """Commit the image's rows, whose `files` are already in the store: both stay, or
        neither (the files are deleted when the rows were not committed, and the error or the
        cancellation goes on).

        Cancelled while its rows are in a transaction under way, it waits for that transaction
        to end (even when cancelled again), so a committed row never loses its file.
        """
        entry = _Entry(image, version, before_commit)
        self._queue.append(entry)
        try:
            try:
                async with self._lock:
                    if not entry.outcome.done():
                        # Those prepared meanwhile queue up behind the lock and join this batch.
                        await self._prepared.wait()
                        batch, self._queue = self._queue, []
                        await self._commit(batch)
            except asyncio.CancelledError:
                if entry in self._queue:  # never taken into a transaction
                    self._queue.remove(entry)
                    raise
                with contextlib.suppress(Exception):  # its outcome is seen to below
                    await to_the_end(entry.outcome)
                raise  # committed or not, the cancellation goes on; the files are seen to below
            await entry.outcome
        except BaseException:
            if not _committed(entry.outcome):
                await to_the_end(delete_quietly(self._store, *files))
            raise

    async def _commit(self, batch: list[_Entry]) -> None:
        try:
            async with self._sessions() as session:
                await insert_rows(session, Image, [entry.image for entry in batch])
                await insert_rows(session, ImageVersion, [entry.version for entry in batch])
                for entry in batch:
                    if entry.before_commit is not None:
                        await entry.before_commit(session, entry.image)
                if self._then is not None:
                    await self._then(session)
                await session.commit()
        except BaseException as exc:
            for entry in batch:
                if not entry.outcome.done():
                    if isinstance(exc, Exception):
                        entry.outcome.set_exception(exc)
                    else:
                        entry.outcome.cancel()
            raise
        for entry in batch:
            if not entry.outcome.done():
                entry.outcome.set_result(None)


def _committed(outcome: asyncio.Future[None]) -> bool:
    return outcome.done() and not outcome.cancelled() and outcome.exception() is None
