"""Images a model made, stored concurrently: their rows go in as few transactions as their
arrival allows, and an image's file and rows stay together or go together, whatever stops the
transaction (an error, a cancellation)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Hashable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from cog.config import Settings
from cog.db.models import Image, ImageVersion, Series
from cog.db.session import SessionMaker, make_engine, make_sessionmaker
from cog.services.image_commits import ImageCommits, NewImage
from cog.services.images import store_generated
from cog.storage import ObjectStore
from tests.conftest import stored_keys
from tests.factories import noisy_png


@pytest.fixture
async def engine(settings: Settings) -> AsyncIterator[AsyncEngine]:
    engine = make_engine(settings.database_url)
    yield engine
    await engine.dispose()


@pytest.fixture
async def sessions(engine: AsyncEngine) -> SessionMaker:
    return make_sessionmaker(engine)


@pytest.fixture
def commits_seen(engine: AsyncEngine) -> Iterator[list[object]]:
    """The commits made on the engine while the test runs (clear it where counting starts)."""
    seen: list[object] = []

    def count(conn: object) -> None:
        seen.append(conn)

    sa.event.listen(engine.sync_engine, "commit", count)
    yield seen
    sa.event.remove(engine.sync_engine, "commit", count)


@pytest.fixture
async def series_id(sessions: SessionMaker) -> uuid.UUID:
    async with sessions() as session:
        series = Series(title="Generated")
        session.add(series)
        await session.commit()
        return series.id


async def keep(
    store: ObjectStore,
    settings: Settings,
    commits: ImageCommits,
    series_id: uuid.UUID,
    seed: int,
    **kwargs: Any,
) -> NewImage:
    return await store_generated(
        store,
        settings,
        commits,
        series_id=series_id,
        data=noisy_png(64, 48, seed=seed),
        prompt=f"image {seed}",
        model="m",
        provider="gemini",
        metadata={},
        **kwargs,
    )


async def rows(sessions: SessionMaker) -> tuple[set[str], set[str]]:
    async with sessions() as session:
        images = set((await session.scalars(sa.select(Image.storage_path))).all())
        versions = set((await session.scalars(sa.select(ImageVersion.storage_path))).all())
    return images, versions


def files(settings: Settings) -> set[str]:
    return set(stored_keys(Path(settings.storage_url.removeprefix("file://"))))


async def queued(settings: Settings, count: int) -> None:
    """Until `count` files are stored, and a moment more for their rows to join the queue."""
    for _ in range(500):
        if len(files(settings)) >= count:
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.02)


async def test_images_ready_together_share_transactions_and_all_land(
    settings: Settings,
    store: ObjectStore,
    commits_seen: list[object],
    sessions: SessionMaker,
    series_id: uuid.UUID,
) -> None:
    commits_seen.clear()
    group = ImageCommits(sessions, store)
    made = await asyncio.gather(
        *(keep(store, settings, group, series_id, seed) for seed in range(6))
    )
    paths = {image["storage_path"] for image in made}
    assert len(paths) == 6
    assert await rows(sessions) == (paths, paths)
    assert files(settings) == paths
    # The first starts a transaction alone; the others, ready meanwhile, share the next ones.
    assert 1 <= len(commits_seen) < 6


async def test_a_failed_transaction_keeps_no_file_and_no_row_of_any_image_in_it(
    settings: Settings, store: ObjectStore, sessions: SessionMaker, series_id: uuid.UUID
) -> None:
    group = ImageCommits(sessions, store)
    first = await keep(store, settings, group, series_id, 0)

    async def refuse(_session: AsyncSession, image: NewImage) -> None:
        if image["prompt"] == "image 3":
            raise RuntimeError("the step's row could not be written")

    results = await asyncio.gather(
        *(
            keep(store, settings, group, series_id, seed, before_commit=refuse)
            for seed in (1, 2, 3)
        ),
        return_exceptions=True,
    )
    failed = [r for r in results if isinstance(r, BaseException)]
    kept = {r["storage_path"] for r in results if isinstance(r, dict)} | {first["storage_path"]}
    assert failed, "the refused image must fail"
    # Whatever shared the refused image's transaction failed with it; the rest stayed whole.
    assert await rows(sessions) == (kept, kept)
    assert files(settings) == kept


class Gates:
    """Holds what reaches a gate (an image's transaction, inside `before_commit`, by its
    prompt; or a store write, by its bytes) until the test lets it go."""

    def __init__(self) -> None:
        self.entered: dict[Hashable, asyncio.Event] = {}
        self.release: dict[Hashable, asyncio.Event] = {}

    def gate(self, key: Hashable) -> None:
        self.entered[key] = asyncio.Event()
        self.release[key] = asyncio.Event()

    async def passing(self, key: Hashable) -> None:
        if key in self.entered:
            self.entered[key].set()
            await self.release[key].wait()

    async def __call__(self, _session: AsyncSession, image: NewImage) -> None:
        await self.passing(image["prompt"])


async def test_an_image_cancelled_while_its_rows_commit_keeps_both(
    settings: Settings, store: ObjectStore, sessions: SessionMaker, series_id: uuid.UUID
) -> None:
    """Cancelled while another task commits its rows, an image waits for the outcome:
    committed, its file stays, and the cancellation still reaches its caller. Cancelled before
    any transaction took it, nothing of it stays."""
    group = ImageCommits(sessions, store)
    gates = Gates()
    gates.gate("image 0")
    gates.gate("image 1")
    first = asyncio.create_task(keep(store, settings, group, series_id, 0, before_commit=gates))
    await gates.entered["image 0"].wait()
    # Three more arrive, one after another, while the first transaction runs.
    second = asyncio.create_task(keep(store, settings, group, series_id, 1, before_commit=gates))
    await queued(settings, 2)
    third = asyncio.create_task(keep(store, settings, group, series_id, 2))
    await queued(settings, 3)
    fourth = asyncio.create_task(keep(store, settings, group, series_id, 3))
    await queued(settings, 4)
    fourth.cancel()  # still queued
    gates.release["image 0"].set()
    await first
    await gates.entered["image 1"].wait()  # the second runs the next transaction, with the third
    third.cancel()
    await asyncio.sleep(0.05)
    assert not third.done(), "it waits for the transaction that holds its rows"
    gates.release["image 1"].set()
    await second
    with pytest.raises(asyncio.CancelledError):
        await third
    with pytest.raises(asyncio.CancelledError):
        await fourth
    images, versions = await rows(sessions)
    assert images == versions == files(settings)
    assert len(images) == 3
    assert not any("image 3" in key for key in images)


async def test_a_transaction_cancelled_midway_keeps_nothing_of_its_images(
    settings: Settings, store: ObjectStore, sessions: SessionMaker, series_id: uuid.UUID
) -> None:
    group = ImageCommits(sessions, store)
    gates = Gates()
    gates.gate("image 0")
    gates.gate("image 1")
    first = asyncio.create_task(keep(store, settings, group, series_id, 0, before_commit=gates))
    await gates.entered["image 0"].wait()
    second = asyncio.create_task(keep(store, settings, group, series_id, 1, before_commit=gates))
    await queued(settings, 2)
    third = asyncio.create_task(keep(store, settings, group, series_id, 2))
    await queued(settings, 3)
    gates.release["image 0"].set()
    await first
    await gates.entered["image 1"].wait()
    second.cancel()  # it runs the transaction that holds the third's rows too
    for task in (second, third):
        with pytest.raises(asyncio.CancelledError):
            await task
    images, versions = await rows(sessions)
    assert images == versions == files(settings)
    assert len(images) == 1


async def test_the_groups_own_write_runs_once_in_each_transaction_after_its_images(
    settings: Settings,
    store: ObjectStore,
    commits_seen: list[object],
    sessions: SessionMaker,
    series_id: uuid.UUID,
) -> None:
    """A step writes its own row once per transaction, with every image the transaction holds."""
    seen_in_rows: list[int] = []

    async def then(session: AsyncSession) -> None:
        found = await session.scalar(sa.select(sa.func.count()).select_from(Image))
        seen_in_rows.append(int(found or 0))

    commits_seen.clear()
    group = ImageCommits(sessions, store, then=then)
    await asyncio.gather(*(keep(store, settings, group, series_id, seed) for seed in range(5)))
    assert len(seen_in_rows) == len(commits_seen)
    assert seen_in_rows == sorted(seen_in_rows) and seen_in_rows[-1] == 5


class HeldStore:
    """The test's store, whose writes pass its `gates`, keyed by the bytes written."""

    def __init__(self, store: ObjectStore) -> None:
        self._store = store
        self.gates = Gates()

    async def put(self, key: str, data: Any) -> None:
        if isinstance(data, bytes):
            await self.gates.passing(data)
        await self._store.put(key, data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


async def test_a_transaction_waits_for_the_images_still_being_written_to_join_it(
    settings: Settings,
    store: ObjectStore,
    commits_seen: list[object],
    sessions: SessionMaker,
    series_id: uuid.UUID,
) -> None:
    """An image ready first does not commit alone while another, already in hand, is still
    being written to the store: they share one transaction. An image whose check fails does
    not hold the others up."""
    held = HeldStore(store)
    slow = noisy_png(64, 48, seed=1)
    held.gates.gate(slow)
    group = ImageCommits(sessions, held)  # type: ignore[arg-type]
    commits_seen.clear()

    async def make(data: bytes, prompt: str) -> NewImage:
        return await store_generated(
            held,  # type: ignore[arg-type]
            settings,
            group,
            series_id=series_id,
            data=data,
            prompt=prompt,
            model="m",
            provider="gemini",
            metadata={},
        )

    first = asyncio.create_task(make(noisy_png(64, 48, seed=0), "fast"))
    second = asyncio.create_task(make(slow, "slow"))
    broken = asyncio.create_task(make(noisy_png(64, 48, seed=2)[:200], "truncated"))
    await held.gates.entered[slow].wait()
    await queued(settings, 1)  # the fast one's file is written and it waits to commit
    assert not first.done()
    assert commits_seen == []
    assert await rows(sessions) == (set(), set())
    held.gates.release[slow].set()
    made = await asyncio.gather(first, second)
    with pytest.raises(Exception, match=r"(?i)image"):
        await broken
    paths = {image["storage_path"] for image in made}
    assert await rows(sessions) == (paths, paths)
    assert files(settings) == paths
    assert len(commits_seen) == 1
