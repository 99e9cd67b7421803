"""SQLite through aiosqlite, one trip to its thread per statement.

aiosqlite runs each SQLite connection in a thread of its own, and every call on it is a trip:
the event loop hands the call to the thread, the thread wakes, runs it, and wakes the loop
with the result. SQLAlchemy's aiosqlite adapter makes three or four such trips per statement
(open a cursor, execute, fetch the rows, close the cursor), and under load the trips, not
SQLite, are most of what a statement costs. The cursor here does those four in one trip, in
the connection's thread, and keeps what SQLAlchemy reads afterwards (the rows, the description,
the row count). A rollback with no transaction open makes no trip at all (the pool rolls back
each connection it takes back, even after a commit). Everything else (transactions, errors, the
pool) is SQLAlchemy's adapter as it is; `cog.db.session` gives the module here (`dbapi()`) to
every SQLite engine.

Opening a connection is also done here, so that a cancel in the middle of it loses nothing:
aiosqlite opens the SQLite connection in its thread, and when the task waiting for it is
cancelled the thread opens it all the same and nothing ever closes it.
"""

from __future__ import annotations

import asyncio
import collections
import sqlite3
from typing import Any

import aiosqlite
from sqlalchemy.dialects.sqlite.aiosqlite import (
    AsyncAdapt_aiosqlite_connection,
    AsyncAdapt_aiosqlite_cursor,
    AsyncAdapt_aiosqlite_dbapi,
)
from sqlalchemy.util import EMPTY_DICT, await_

# What one trip brings back: the description, the row count, the last row id, the rows.
_Outcome = tuple[Any, int, int | None, list[Any]]


def _run(connection: sqlite3.Connection, operation: str, parameters: Any, many: bool) -> _Outcome:
    """In the connection's thread: the statement, its rows, and its cursor closed."""
    cursor = connection.cursor()
    try:
        if many:
            cursor.executemany(operation, parameters)
        else:
            cursor.execute(operation, parameters)
        rows = cursor.fetchall() if cursor.description else []
        return cursor.description, cursor.rowcount, cursor.lastrowid, rows
    finally:
        cursor.close()


class OneTripCursor(AsyncAdapt_aiosqlite_cursor):
    """A cursor whose statement is executed, read and closed in one trip."""

    __slots__ = ("_arraysize", "_description", "_lastrowid", "_rowcount")

    def __init__(self, adapt_connection: AsyncAdapt_aiosqlite_connection) -> None:
        # No aiosqlite cursor is opened: each statement opens and closes a SQLite one.
        self._adapt_connection = adapt_connection
        self._connection = adapt_connection._connection
        self._soft_closed_memoized = EMPTY_DICT
        self._rows = collections.deque()
        self._description: Any = None
        self._rowcount = -1
        self._lastrowid: int | None = None
        self._arraysize = 1

    @property
    def description(self) -> Any:
        return self._description

    @property
    def rowcount(self) -> int:
        return self._rowcount

    @property
    def lastrowid(self) -> Any:
        return self._lastrowid

    @property
    def arraysize(self) -> int:
        return self._arraysize

    @arraysize.setter
    def arraysize(self, value: int) -> None:
        self._arraysize = value

    async def _async_soft_close(self) -> None:
        """Nothing is left open to close."""

    def close(self) -> None:
        self._rows.clear()

    async def _execute_async(self, operation: Any, parameters: Any) -> Any:
        await self._trip(operation, () if parameters is None else parameters, many=False)

    async def _executemany_async(self, operation: Any, seq_of_parameters: Any) -> Any:
        await self._trip(operation, seq_of_parameters, many=True)

    async def _trip(self, operation: str, parameters: Any, *, many: bool) -> None:
        async with self._adapt_connection._execute_mutex:
            connection = self._connection
            outcome: _Outcome = await connection._execute(
                _run, connection._conn, operation, parameters, many
            )
        self._description, self._rowcount, self._lastrowid, rows = outcome
        self._rows = collections.deque(rows)


class _Connection(AsyncAdapt_aiosqlite_connection):
    __slots__ = ()
    _cursor_cls = OneTripCursor  # type: ignore[assignment]  # a subclass of the one it replaces

    def rollback(self) -> None:
        # SQLAlchemy rolls back every connection the pool takes back, after a commit or a
        # rollback too; with no transaction open in SQLite there is nothing to undo, and no
        # trip is made. (SQLite's own flag: reading it does not touch the connection's thread.)
        connection = self._connection
        if connection._connection is not None and not connection.in_transaction:
            return
        super().rollback()


async def _opened(connection: aiosqlite.Connection) -> aiosqlite.Connection:
    """`connection`, open. The opening runs to its end in a task of its own; when the waiter
    is cancelled, what it opens is closed as soon as it is open."""
    opening: asyncio.Future[aiosqlite.Connection] = asyncio.ensure_future(connection)
    try:
        return await asyncio.shield(opening)
    except asyncio.CancelledError:
        opening.add_done_callback(_close_unwanted)
        raise


def _close_unwanted(opening: asyncio.Future[aiosqlite.Connection]) -> None:
    if not opening.cancelled() and opening.exception() is None:
        opening.result().stop()  # closes the SQLite connection in its thread, which then ends


class _DBAPI(AsyncAdapt_aiosqlite_dbapi):
    def connect(self, *arg: Any, **kw: Any) -> _Connection:
        if "async_creator_fn" in kw:  # `async_creator=`: the caller opens its own connections
            return _Connection(self, super().connect(*arg, **kw)._connection)
        connection = self.aiosqlite.connect(*arg, **kw)
        connection._thread.daemon = True  # as SQLAlchemy's adapter does: never hold up exit
        # Any: SQLAlchemy's adapter takes a protocol that aiosqlite's class does not declare.
        opened: Any = await_(_opened(connection))
        return _Connection(self, opened)


def dbapi() -> AsyncAdapt_aiosqlite_dbapi:
    """The DBAPI module for SQLAlchemy's aiosqlite dialect (its `module=`), with
    `OneTripCursor` as its connections' cursor."""
    return _DBAPI(aiosqlite, sqlite3)
