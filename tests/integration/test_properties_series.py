"""Properties of the series tree, on SQLite and PostgreSQL, through the service layer.

Whatever sequence of creations, moves and deletions a person makes, the tree stays a forest:
every series reaches the top level by its parents without meeting itself. A move under the
series itself or one of its descendants is refused with `Conflict`, a move to or of a series
that does not exist with `NotFound`, and a refused move changes nothing. A model of the tree,
kept alongside, predicts each answer, and the database is compared with it after every step.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    multiple,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy.ext.asyncio import AsyncSession

from cog.config import Settings
from cog.db import series as series_db
from cog.db.models import Image, Job, Series
from cog.db.session import SessionMaker, make_engine, make_sessionmaker
from cog.errors import CogError, Conflict, NotFound
from cog.services import series as series_service
from cog.storage import ObjectStore, make_store

T = TypeVar("T")
Parents = dict[uuid.UUID, uuid.UUID | None]


@dataclass
class Db:
    """One database for a whole test, driven from synchronous rules on one event loop."""

    runner: asyncio.Runner
    sessions: SessionMaker
    store: ObjectStore

    def run(self, work: Callable[[AsyncSession], Awaitable[T]]) -> T:
        async def go() -> T:
            async with self.sessions() as session:
                return await work(session)

        return self.runner.run(go())


@pytest.fixture
def db(settings: Settings) -> Iterator[Db]:
    with asyncio.Runner() as runner:
        engine = make_engine(settings.database_url)
        try:
            yield Db(runner, make_sessionmaker(engine), make_store(settings))
        finally:
            runner.run(engine.dispose())


async def clear(session: AsyncSession) -> None:
    for table in (Image, Job, Series):
        await session.execute(sa.delete(table))
    await session.commit()


async def parents_in(session: AsyncSession) -> Parents:
    rows = await session.execute(sa.select(Series.id, Series.parent_id))
    return dict(rows.all())  # type: ignore[arg-type]


def chain(parents: Parents, node: uuid.UUID) -> list[uuid.UUID]:
    """The ancestors of `node`, its parent first; fails on a cycle."""
    found: list[uuid.UUID] = []
    parent = parents[node]
    while parent is not None:
        assert parent not in found and parent != node, f"a cycle through {node}"
        found.append(parent)
        parent = parents[parent]
    return found


class Moves(RuleBasedStateMachine):
    """Series created, moved and deleted at random; `parents` is the model of the tree."""

    nodes = Bundle("nodes")

    def __init__(self, db: Db) -> None:
        super().__init__()
        self.db = db
        self.parents: Parents = {}
        db.run(clear)

    def _create(self, parent: uuid.UUID | None) -> uuid.UUID:
        created = self.db.run(lambda s: series_service.create(s, title="Series", parent_id=parent))
        self.parents[created.id] = parent
        return created.id

    @initialize(target=nodes, count=st.integers(1, 5))
    def seed(self, count: int) -> Any:
        return multiple(*(self._create(None) for _ in range(count)))

    @rule(target=nodes, parent=st.none() | nodes)
    def create(self, parent: uuid.UUID | None) -> uuid.UUID | Any:
        if parent is not None and parent not in self.parents:
            self._expect_refusal(
                NotFound, lambda s: series_service.create(s, title="Orphan", parent_id=parent)
            )
            return multiple()
        return self._create(parent)

    @rule(child=nodes, parent=st.none() | nodes | st.uuids(version=4))
    def move(self, child: uuid.UUID, parent: uuid.UUID | None) -> None:
        def work(session: AsyncSession) -> Awaitable[Series]:
            return series_service.update(session, child, parent_id=parent)

        if child not in self.parents:
            self._expect_refusal(NotFound, work)
        elif parent == self.parents[child]:
            self.db.run(work)  # nothing to do
        elif parent is not None and parent not in self.parents:
            self._expect_refusal(NotFound, work)
        elif parent is not None and (parent == child or child in chain(self.parents, parent)):
            self._expect_refusal(Conflict, work)
        else:
            self.db.run(work)
            self.parents[child] = parent

    @rule(node=consumes(nodes))
    def delete(self, node: uuid.UUID) -> None:
        def work(session: AsyncSession) -> Awaitable[int]:
            return series_service.delete(session, self.db.store, node, recursive=True)

        if node not in self.parents:
            self._expect_refusal(NotFound, work)
            return
        self.db.run(work)
        gone = {n for n in self.parents if n == node or node in chain(self.parents, n)}
        self.parents = {n: p for n, p in self.parents.items() if n not in gone}

    def _expect_refusal(
        self, kind: type[CogError], work: Callable[[AsyncSession], Awaitable[object]]
    ) -> None:
        """The model is left as it is: the invariant then checks the database was too."""
        with pytest.raises(kind) as caught:
            self.db.run(work)
        assert caught.value.status_code in (404, 409)

    @invariant()
    def the_tree_is_the_model_and_a_forest(self) -> None:
        chains = {node: chain(self.parents, node) for node in self.parents}
        deepest = sorted(chains, key=lambda n: len(chains[n]))[-2:]

        async def look(session: AsyncSession) -> tuple[Parents, list[list[uuid.UUID]]]:
            walks = [await series_db.ancestors(session, node) for node in deepest]
            return await parents_in(session), [[a.id for a in walk] for walk in walks]

        stored, walks = self.db.run(look)
        assert stored == self.parents
        for node in stored:
            chain(stored, node)  # each walk ends at the top level
        # The database's own walk (breadcrumbs) agrees, for the deepest series.
        assert walks == [chains[node][::-1] for node in deepest]  # root first


def test_no_sequence_of_moves_makes_a_cycle(db: Db, dialect: str) -> None:
    examples = 40 if dialect == "sqlite" else 15
    run_state_machine_as_test(
        lambda: Moves(db),
        settings=settings(
            max_examples=examples,
            stateful_step_count=20,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )


def test_opposite_moves_at_the_same_time_never_make_a_cycle(db: Db, settings: Settings) -> None:
    """Two people move A under B and B under A at once: one move wins, the other is refused
    with `Conflict`, whichever commits first; never both (a cycle cut loose from the tree)."""
    engine = make_engine(settings.database_url)
    other = make_sessionmaker(engine)  # a second connection pool: a second person

    async def move(sessions: SessionMaker, child: uuid.UUID, parent: uuid.UUID) -> str:
        async with sessions() as session:
            try:
                await series_service.update(session, child, parent_id=parent)
            except Conflict:
                return "conflict"
            return "moved"

    async def attempt() -> list[str]:
        async with db.sessions() as session:
            await clear(session)
            a = await series_service.create(session, title="A")
            b = await series_service.create(session, title="B")
        return list(await asyncio.gather(move(db.sessions, a.id, b.id), move(other, b.id, a.id)))

    try:
        for _ in range(15):
            outcomes = db.runner.run(attempt())
            parents = db.run(parents_in)
            for node in parents:
                chain(parents, node)
            assert sorted(outcomes) == ["conflict", "moved"], outcomes
    finally:
        db.runner.run(engine.dispose())


def test_a_series_made_inside_one_being_deleted_is_refused_or_deleted_with_it(
    db: Db, settings: Settings
) -> None:
    """One person deletes a series while another makes a sub-series in it: either the new one
    is refused (`NotFound`) or made first and deleted with the rest; never an error, never an
    orphan."""
    engine = make_engine(settings.database_url)
    other = make_sessionmaker(engine)

    async def make_inside(parent: uuid.UUID) -> str:
        async with other() as session:
            try:
                await series_service.create(session, title="Late", parent_id=parent)
            except NotFound:
                return "refused"
            return "made"

    async def delete(node: uuid.UUID) -> str:
        async with db.sessions() as session:
            await series_service.delete(session, db.store, node, recursive=True)
            return "deleted"

    async def attempt() -> list[str]:
        async with db.sessions() as session:
            await clear(session)
            doomed = await series_service.create(session, title="Doomed")
            await series_service.create(session, title="Child", parent_id=doomed.id)
        return list(await asyncio.gather(delete(doomed.id), make_inside(doomed.id)))

    try:
        for _ in range(15):
            outcomes = db.runner.run(attempt())
            assert outcomes[0] == "deleted"
            assert db.run(parents_in) == {}, outcomes  # nothing left, whichever went first
    finally:
        db.runner.run(engine.dispose())
