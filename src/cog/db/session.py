"""Engines and sessions for SQLite (embedded) and PostgreSQL (deployment)."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import asyncpg
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from cog.db import sqlite_driver

SessionMaker = async_sessionmaker[AsyncSession]


def _unicode_lower(value: object) -> object:
    return value.lower() if isinstance(value, str) else value


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # SQLite's own lower() folds ASCII only; searches fold case the way PostgreSQL does.
    dbapi_connection.create_function("lower", 1, _unicode_lower, deterministic=True)
    # WAL lets the CLI and `cog serve` share the file; foreign keys are off in SQLite by default.
    cursor = dbapi_connection.cursor()
    # The busy timeout first: switching to WAL needs the lock another process may hold.
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


# What a driver raises when the server is gone, restarting or refusing connections.
_GONE: tuple[type[BaseException], ...] = (
    ConnectionError,
    TimeoutError,
    socket.gaierror,
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.PostgresConnectionError,  # SQLSTATE class 08
    asyncpg.exceptions.CannotConnectNowError,  # 57P03, starting up
    asyncpg.exceptions.AdminShutdownError,  # 57P01, shutting down
)


def unreachable(exc: BaseException) -> BaseException | None:
    """The error that says the database could not be reached (refused, reset, restarting), if
    that is what `exc` says, rather than that a statement was wrong: work that meets one is
    retried later, not failed. Concurrent work fails as a group; one such error in it is enough.
    """
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            if (found := unreachable(inner)) is not None:
                return found
        return None
    if isinstance(exc, sa.exc.DBAPIError) and exc.connection_invalidated:
        return exc
    cause: BaseException | None = exc
    while cause is not None:  # SQLAlchemy wraps the driver's error, which wraps the socket's
        if isinstance(cause, _GONE):
            return exc
        cause = cause.__cause__ or cause.__context__
    return None


def make_engine(url: str, **kwargs: Any) -> AsyncEngine:
    parsed = sa.make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        if parsed.get_driver_name() == "aiosqlite":
            kwargs.setdefault("module", sqlite_driver.dbapi())
        engine = create_async_engine(url, **kwargs)
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    kwargs.setdefault("pool_pre_ping", True)
    return create_async_engine(url, **kwargs)


def make_sessionmaker(engine: AsyncEngine) -> SessionMaker:
    return async_sessionmaker(engine, expire_on_commit=False)
