"""The SQLite cursor that runs a statement in one trip to aiosqlite's thread
(`cog.db.sqlite_driver`), on a real database file: what SQLAlchemy reads from it after a
statement is what SQLite said."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiosqlite
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import NullPool

from cog.db.session import make_engine, make_sessionmaker
from cog.db.sqlite_driver import OneTripCursor

NOTES = sa.Table(
    "notes",
    sa.MetaData(),
    sa.Column("n", sa.Integer, primary_key=True),
    sa.Column("id", sa.Uuid, unique=True, nullable=False),
    sa.Column("text", sa.Text, nullable=False),
)


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'notes.db'}")
    async with engine.begin() as conn:
        await conn.run_sync(NOTES.metadata.create_all)
    yield engine
    await engine.dispose()


async def written_elsewhere(folder: Path, text: str) -> list[str]:
    """Write a note through another engine on the file, failing at once if the write lock is
    held; answers every note's text, in order."""
    other = make_engine(f"sqlite+aiosqlite:///{folder / 'notes.db'}")
    try:
        async with other.begin() as conn:
            await conn.execute(sa.text("PRAGMA busy_timeout=0"))
            await conn.execute(NOTES.insert().values(id=uuid.uuid4(), text=text))
        async with other.connect() as conn:
            texts = await conn.execute(sa.select(NOTES.c.text).order_by(NOTES.c.n))
            return list(texts.scalars())
    finally:
        await other.dispose()


async def test_the_engine_uses_it(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        raw = await conn.get_raw_connection()
        assert isinstance(raw.dbapi_connection.cursor(), OneTripCursor)  # type: ignore[union-attr]
        # The pragmas every connection gets went through it too.
        assert (await conn.execute(sa.text("PRAGMA foreign_keys"))).scalar() == 1
        assert (await conn.execute(sa.text("PRAGMA journal_mode"))).scalar() == "wal"


async def test_rows_counts_ids_and_columns_are_sqlites(engine: AsyncEngine) -> None:
    ids = [uuid.uuid4() for _ in range(250)]
    async with engine.begin() as conn:
        one = await conn.execute(NOTES.insert().values(id=ids[0], text="first"))
        assert one.inserted_primary_key == (1,)  # lastrowid
        many = await conn.execute(
            NOTES.insert(), [{"id": i, "text": f"note {k}"} for k, i in enumerate(ids[1:], 1)]
        )
        assert many.rowcount == 249
        changed = await conn.execute(
            NOTES.update().where(NOTES.c.n > 200).values(text=sa.func.upper(NOTES.c.text))
        )
        assert changed.rowcount == 50
        nothing = await conn.execute(NOTES.delete().where(NOTES.c.text == "absent"))
        assert nothing.rowcount == 0
        back = await conn.execute(
            sa.insert(NOTES).values(id=uuid.uuid4(), text="returned").returning(NOTES.c.n)
        )
        assert back.scalar_one() == 251

    async with engine.connect() as conn:
        result = await conn.execute(sa.select(NOTES.c.id, NOTES.c.text).order_by(NOTES.c.n))
        assert list(result.keys()) == ["id", "text"]
        rows = result.all()
        assert [r.id for r in rows[:250]] == ids  # every row, in order, typed back to UUIDs
        assert rows[0].text == "first" and rows[201].text == "NOTE 201"
        # A result read in parts gives the same rows.
        partial = await conn.execute(sa.select(NOTES.c.n).order_by(NOTES.c.n))
        assert [r.n for r in partial.fetchmany(3)] == [1, 2, 3]
        assert len(partial.fetchall()) == 248


async def test_errors_are_sqlalchemys_and_the_transaction_rolls_back(engine: AsyncEngine) -> None:
    same = uuid.uuid4()
    with pytest.raises(sa.exc.IntegrityError, match=r"UNIQUE constraint failed: notes\.id"):
        async with engine.begin() as conn:
            await conn.execute(NOTES.insert().values(id=uuid.uuid4(), text="kept?"))
            await conn.execute(
                NOTES.insert(), [{"id": same, "text": "a"}, {"id": same, "text": "b"}]
            )
    with pytest.raises(sa.exc.OperationalError, match="no such table: missing"):
        async with engine.connect() as conn:
            await conn.execute(sa.text("SELECT * FROM missing"))
    async with engine.connect() as conn:
        # Nothing of the failed transaction stayed, and the connection is still good.
        assert (await conn.execute(sa.select(sa.func.count()).select_from(NOTES))).scalar() == 0


async def test_an_open_transaction_is_rolled_back_and_none_costs_no_trip(
    engine: AsyncEngine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    trips: list[str] = []
    real = aiosqlite.Connection._execute

    async def counted(self: aiosqlite.Connection, fn: Any, *args: Any, **kwargs: Any) -> Any:
        trips.append(getattr(fn, "__name__", repr(fn)))
        return await real(self, fn, *args, **kwargs)

    monkeypatch.setattr(aiosqlite.Connection, "_execute", counted)
    sessions = make_sessionmaker(engine)
    async with sessions() as session:  # a read: one trip, nothing to roll back
        await session.execute(sa.select(NOTES))
    assert trips == ["_run"]
    trips.clear()
    async with sessions() as session:  # a write: the statement and the commit
        await session.execute(NOTES.insert().values(id=uuid.uuid4(), text="kept"))
        await session.commit()
    assert trips == ["_run", "commit"]
    trips.clear()
    async with sessions() as session:  # left open: rolled back when the session ends
        await session.execute(NOTES.insert().values(id=uuid.uuid4(), text="dropped"))
    assert trips == ["_run", "rollback"]

    # The write lock went with it: another connection to the file writes at once.
    assert await written_elsewhere(tmp_path, "other") == ["kept", "other"]


async def test_a_statement_cancelled_in_flight_leaves_no_transaction_open(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    """The caller of a statement is cancelled while SQLite runs it: the statement goes on in the
    connection's thread and opens a transaction there. No rollback may be skipped for it: the
    connection must not go back to the pool holding the write lock."""

    def pause(value: str) -> str:
        time.sleep(0.3)
        return value

    def with_pause(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.create_function("pause", 1, pause)

    sa.event.listen(engine.sync_engine, "connect", with_pause)
    await engine.dispose()  # connections made from here on have it

    async def slow_insert() -> None:
        async with engine.connect() as conn:
            await conn.execute(
                sa.text("INSERT INTO notes (id, text) VALUES (:id, pause('cancelled'))"),
                {"id": uuid.uuid4().hex},
            )
            await conn.commit()

    with pytest.raises(TimeoutError):
        await asyncio.wait_for(slow_insert(), timeout=0.05)
    await asyncio.sleep(0.5)  # the statement has ended in its thread

    assert await written_elsewhere(tmp_path, "after") == ["after"]


async def test_a_cancel_while_a_connection_opens_closes_it(tmp_path: Path) -> None:
    """aiosqlite opens the SQLite connection in its thread even when the task that waits for
    it is cancelled; whatever is opened that way must end closed, not left to the collector."""
    opened: list[_Tracked] = []

    class _Tracked(sqlite3.Connection):
        closed = False

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            opened.append(self)

        def close(self) -> None:
            self.closed = True
            super().close()

    engine = make_engine(
        f"sqlite+aiosqlite:///{tmp_path / 'notes.db'}",
        poolclass=NullPool,  # every checkout opens a connection of its own
        connect_args={"factory": _Tracked},
    )

    async def read_one() -> None:
        async with engine.connect() as conn:
            await conn.execute(sa.text("SELECT 1"))

    try:
        for turns in range(6):  # cancel at each point of the opening in turn
            task = asyncio.create_task(read_one())
            for _ in range(turns):
                await asyncio.sleep(0)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await read_one()  # the engine is unharmed
        for _ in range(500):  # each closing is a trip to a thread of its own
            if all(c.closed for c in opened):
                break
            await asyncio.sleep(0.01)
        assert len(opened) >= 2
        assert [c.closed for c in opened] == [True] * len(opened)
    finally:
        await engine.dispose()
