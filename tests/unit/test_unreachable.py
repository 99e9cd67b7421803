"""Telling a database that went away from a statement that was wrong."""

from __future__ import annotations

import asyncpg
import pytest
import sqlalchemy as sa

from cog.db.session import unreachable


def wrapped(cause: BaseException) -> sa.exc.DBAPIError:
    """What SQLAlchemy raises: its error, caused by the driver's, caused by the socket's."""
    try:
        try:
            raise cause
        except BaseException as inner:
            raise sa.exc.DBAPIError("SELECT 1", None, inner) from inner
    except sa.exc.DBAPIError as exc:
        return exc


@pytest.mark.parametrize(
    "error",
    [
        ConnectionRefusedError(111, "Connect call failed"),
        TimeoutError(),
        wrapped(ConnectionResetError(104, "Connection reset by peer")),
        wrapped(asyncpg.exceptions.ConnectionDoesNotExistError("closed in the middle")),
        wrapped(asyncpg.exceptions.CannotConnectNowError("the database system is starting up")),
        ExceptionGroup("two images", [ValueError("x"), ConnectionRefusedError()]),
    ],
    ids=["refused", "timeout", "reset", "closed", "starting", "group"],
)
def test_a_lost_database_is_recognised(error: BaseException) -> None:
    assert unreachable(error) is not None


@pytest.mark.parametrize(
    "error",
    [
        ValueError("bad"),
        FileNotFoundError("images/ab/cd.png"),
        sa.exc.IntegrityError("INSERT", None, Exception("duplicate key")),
        wrapped(asyncpg.exceptions.UniqueViolationError("duplicate key")),
        ExceptionGroup("two images", [ValueError("x"), KeyError("y")]),
    ],
    ids=["value", "missing-file", "integrity", "unique", "group"],
)
def test_a_wrong_statement_is_not_taken_for_a_lost_database(error: BaseException) -> None:
    assert unreachable(error) is None
