"""Keyset cursors: what `encode_cursor` gives out comes back the same, anything else is refused."""

from __future__ import annotations

import base64
import datetime as dt
import json
import uuid

import pytest

from cog.db.pages import MAX_LIMIT, check_limit, decode_cursor, encode_cursor
from cog.errors import Invalid

WHEN = dt.datetime(2026, 3, 4, 5, 6, 7, 891011, tzinfo=dt.UTC)
ID = uuid.UUID("12345678-1234-5678-1234-567812345678")


def raw_cursor(value: object) -> str:
    """A cursor built by hand, the way someone editing a URL might."""
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


def test_a_time_and_an_id_round_trip() -> None:
    cursor = encode_cursor(WHEN, ID)
    assert decode_cursor(cursor, dt.datetime, uuid.UUID) == (WHEN, ID)
    # Safe in a URL as it is: no padding, no `+` or `/`.
    assert all(ch.isalnum() or ch in "-_" for ch in cursor)


@pytest.mark.parametrize(
    "title",
    ["Autumn", "", "Été à Paris 🍂", 'quote " and \\ backslash', "x" * 500, "a/b+c=d?e&f"],
)
def test_a_title_and_an_id_round_trip(title: str) -> None:
    cursor = encode_cursor(title, ID)
    assert decode_cursor(cursor, str, uuid.UUID) == (title, ID)
    assert all(ch.isalnum() or ch in "-_" for ch in cursor)


def test_a_time_with_an_offset_comes_back_in_utc() -> None:
    paris = dt.datetime(2026, 3, 4, 6, 6, 7, tzinfo=dt.timezone(dt.timedelta(hours=1)))
    (decoded,) = decode_cursor(encode_cursor(paris), dt.datetime)
    assert decoded == paris
    assert decoded.utcoffset() == dt.timedelta(0)
    assert decoded.hour == 5


def test_an_integer_round_trips() -> None:
    assert decode_cursor(encode_cursor(42, "x"), int, str) == (42, "x")


TAMPERED = {
    "empty": "",
    "not base64": "!!!!",
    "not ascii": "ü",
    "base64 of nonsense": base64.urlsafe_b64encode(b"\xff\xfe\x00garbage").decode(),
    "not json": base64.urlsafe_b64encode(b"[1, 2").decode(),
    "an object": raw_cursor({"at": WHEN.isoformat(), "id": str(ID)}),
    "a string": raw_cursor("2026-03-04T05:06:07+00:00"),
    "too short": raw_cursor([WHEN.isoformat()]),
    "too long": raw_cursor([WHEN.isoformat(), str(ID), "more"]),
    "not a uuid": raw_cursor([WHEN.isoformat(), "not-a-uuid"]),
    "a number for the uuid": raw_cursor([WHEN.isoformat(), 5]),
    "a list for the uuid": raw_cursor([WHEN.isoformat(), [str(ID)]]),
    "null for the time": raw_cursor([None, str(ID)]),
    "a number for the time": raw_cursor([1_700_000_000, str(ID)]),
    "not a time": raw_cursor(["yesterday", str(ID)]),
    "a time without a zone": raw_cursor(["2026-03-04T05:06:07", str(ID)]),
    "a time out of range in utc": raw_cursor(["0001-01-01T00:00:00+14:00", str(ID)]),
    "a time past the end in utc": raw_cursor(["9999-12-31T23:59:59-14:00", str(ID)]),
    "a NUL in the time": raw_cursor(["2026-03-04T05:06:07+00:00\u0000", str(ID)]),
    "a lone surrogate": raw_cursor(["\ud800", str(ID)]),
}


@pytest.mark.parametrize("cursor", list(TAMPERED.values()), ids=list(TAMPERED))
def test_a_tampered_cursor_is_invalid(cursor: str) -> None:
    with pytest.raises(Invalid) as caught:
        decode_cursor(cursor, dt.datetime, uuid.UUID)
    assert caught.value.message == (
        "The cursor is not one this server gave out; start again without `cursor`."
    )
    assert caught.value.status_code == 422


@pytest.mark.parametrize(
    "cursor",
    [
        raw_cursor([5, str(ID)]),
        raw_cursor([{"title": "x"}, str(ID)]),
        raw_cursor(["a\u0000b", str(ID)]),
        raw_cursor(["\udfff", str(ID)]),
        raw_cursor(["title", "nope"]),
    ],
)
def test_a_tampered_title_cursor_is_invalid(cursor: str) -> None:
    with pytest.raises(Invalid):
        decode_cursor(cursor, str, uuid.UUID)


def test_a_cursor_of_one_listing_is_refused_by_another_shape() -> None:
    by_title = encode_cursor("Autumn", ID)
    with pytest.raises(Invalid):
        decode_cursor(by_title, dt.datetime, uuid.UUID)


def test_limits() -> None:
    assert check_limit(1) == 1
    assert check_limit(MAX_LIMIT) == MAX_LIMIT
    for bad in (0, -1, MAX_LIMIT + 1, 10_000):
        with pytest.raises(Invalid, match=f"between 1 and {MAX_LIMIT}"):
            check_limit(bad)
