"""Keyset pagination: opaque cursors that name the last row of the page before."""

from __future__ import annotations

import base64
import datetime as dt
import json
import uuid
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from cog.errors import Invalid

T = TypeVar("T")

MAX_LIMIT = 500


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    next_cursor: str | None


def encode_cursor(*values: Any) -> str:
    plain = [v.isoformat() if isinstance(v, dt.datetime) else str(v) for v in values]
    return base64.urlsafe_b64encode(json.dumps(plain).encode()).decode().rstrip("=")


def decode_cursor(cursor: str, *kinds: type) -> tuple[Any, ...]:
    """Decode a cursor made by `encode_cursor` whose values have the given types."""
    try:
        raw = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if not isinstance(raw, list) or len(raw) != len(kinds):
            raise ValueError
        out: list[Any] = []
        for kind, value in zip(kinds, raw, strict=True):
            # `encode_cursor` writes strings only, of text a database could store.
            if not isinstance(value, str) or "\x00" in value:
                raise ValueError
            value.encode()  # a lone surrogate raises UnicodeEncodeError, a ValueError
            if kind is dt.datetime:
                parsed = dt.datetime.fromisoformat(value)
                if parsed.tzinfo is None:
                    raise ValueError
                # Compared in UTC on both databases; out of range there (year 0) is no cursor.
                out.append(parsed.astimezone(dt.UTC))
            elif kind is uuid.UUID:
                out.append(uuid.UUID(value))
            else:
                out.append(kind(value))
        return tuple(out)
    except (ValueError, TypeError, OverflowError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise Invalid(
            "The cursor is not one this server gave out; start again without `cursor`."
        ) from exc


def check_limit(limit: int) -> int:
    if not 1 <= limit <= MAX_LIMIT:
        raise Invalid(f"`limit` must be between 1 and {MAX_LIMIT}.")
    return limit


async def newest_first(
    session: AsyncSession, query: sa.Select[Any], model: Any, *, limit: int, cursor: str | None
) -> Page[Any]:
    """A page of `query`'s rows, newest first, by the keyset (created_at, id).

    `model` has `created_at` and `id` columns with an index ending in them, so every page
    costs the same, the first and the ten-thousandth.
    """
    if cursor:
        before_at, before_id = decode_cursor(cursor, dt.datetime, uuid.UUID)
        query = query.where(sa.tuple_(model.created_at, model.id) < sa.tuple_(before_at, before_id))
    query = query.order_by(model.created_at.desc(), model.id.desc()).limit(limit + 1)
    rows = list((await session.execute(query)).scalars())
    next_cursor = None
    if len(rows) > limit:
        rows = rows[:limit]
        next_cursor = encode_cursor(rows[-1].created_at, rows[-1].id)
    return Page(rows, next_cursor)
