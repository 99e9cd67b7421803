"""Searching images: a person's query text made into terms, and the terms into SQL.

The text is never passed to the database as query syntax. It is cut into words and quoted
phrases here; each becomes a literal string of the database's own query language (an FTS5
string on SQLite, a quoted tsquery operand on PostgreSQL), with the quoting characters escaped,
and the database's tokenizer then reads only words out of it. So `"`, `*`, `:`, `(`, `AND` or
`NEAR(` typed by a person are at most words, never operators.

The text is looked for in the prompt and the original file name. On SQLite the FTS5 table
`cog_images_fts` (migration 0002) indexes both, and the image tags too, so a tag filter narrows
the rows through the same index. On PostgreSQL a GIN index covers `DOCUMENT` below and another
the `tags` array.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import uuid
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncSession

from cog.db.base import tag_filter
from cog.db.models import Image
from cog.db.pages import Page, newest_first

# The searched document on PostgreSQL. It must be, to the character, the expression that
# `ix_cog_images_search` indexes (migration 0002), or the planner cannot use that index; its
# constants are written out, never bound, for the same reason.
DOCUMENT_SQL = (
    "to_tsvector('simple'::regconfig, "
    "coalesce(cog_images.prompt, '') || ' ' || coalesce(cog_images.original_filename, ''))"
)
DOCUMENT: sa.ColumnClause[Any] = sa.literal_column(DOCUMENT_SQL)
FTS_TABLE = "cog_images_fts"
# The FTS5 columns the query text is looked for in (not `tags`: PostgreSQL's document has none).
FTS_TEXT_COLUMNS = "{prompt original_filename}"

# What both tokenizers keep: letters and digits (FTS5's unicode61 splits on everything else).
_WORD_CHARS = re.compile(r"[^\W_]+")
_SPACE = re.compile(r"\s")
MIN_PREFIX = 2  # letters a word needs before it matches the longer words it begins


@dataclass(frozen=True)
class Term:
    """A word or a quoted phrase of the query text, as typed. `prefix`: also match the words
    it begins (the last word while a person types it, or a word ending in `*`)."""

    text: str
    prefix: bool = False


@dataclass(frozen=True)
class Criteria:
    """What the images searched for have in common; every part given must hold."""

    terms: tuple[Term, ...] = ()
    tags: tuple[str, ...] = ()
    model: str | None = None
    source: str | None = None
    series_ids: tuple[uuid.UUID, ...] | None = None  # in any of these (None: anywhere)
    created_from: dt.datetime | None = None  # inclusive
    created_before: dt.datetime | None = None  # exclusive


def has_words(text: str) -> bool:
    return _WORD_CHARS.search(text) is not None


def parse_text(text: str) -> tuple[Term, ...]:
    """The words and quoted phrases of a query, in order.

    Words are separated by white space; `"…"` holds a phrase (an unclosed quote runs to the
    end). The last word or phrase is a prefix unless white space follows it, so results come
    while a person types ("fo" finds "fox"); a word ending in `*` is a prefix anywhere. A
    single letter or digit is never a prefix: it would match nearly every image. A term with no
    letter or digit in it (punctuation alone) would match nothing and is dropped.
    """
    terms: list[Term] = []
    position = 0
    length = len(text)
    while position < length:
        char = text[position]
        if _SPACE.match(char):
            position += 1
            continue
        if char == '"':
            end = text.find('"', position + 1)
            closed = end != -1
            body = text[position + 1 : end if closed else length]
            position = end + 1 if closed else length
            at_end = not closed and not (body and _SPACE.match(body[-1]))
            terms.append(_term(body.strip(), prefix=at_end))
            continue
        end = position
        while end < length and not _SPACE.match(text[end]) and text[end] != '"':
            end += 1
        word = text[position:end]
        position = end
        starred = word.endswith("*")
        at_end = end == length
        terms.append(_term(word.rstrip("*"), prefix=starred or at_end))
    return tuple(t for t in terms if has_words(t.text))


def _term(text: str, *, prefix: bool) -> Term:
    last_word = _WORD_CHARS.findall(text)[-1:] or [""]
    return Term(text, prefix=prefix and len(last_word[0]) >= MIN_PREFIX)


# --- the query languages --------------------------------------------------------------------------


def _fts5_string(text: str) -> str:
    # Inside an FTS5 string only `"` is special, and it is written twice. (A NUL would end the
    # string early; the web layer refuses it, and it is no letter, so it goes.)
    return '"' + text.replace("\x00", " ").replace('"', '""') + '"'


def fts5_query(criteria: Criteria) -> str | None:
    """The FTS5 MATCH expression for the text and the tags, or None when there is neither."""
    parts: list[str] = []
    if criteria.terms:
        words = " AND ".join(
            _fts5_string(t.text) + ("*" if t.prefix else "") for t in criteria.terms
        )
        parts.append(f"{FTS_TEXT_COLUMNS} : ({words})")
    # Tags are kept as a JSON list; its words narrow the rows, the exact comparison decides.
    # (A tag of punctuation alone gives the index nothing to look for; it is only compared.)
    parts.extend(f"tags : {_fts5_string(tag)}" for tag in criteria.tags if has_words(tag))
    return " AND ".join(parts) or None


def _tsquery_operand(text: str, prefix: bool) -> str:
    # A quoted operand is read by the text-search parser as words, never as operators; inside
    # it only `'` (written twice) and `\` (escaped) are special.
    clean = text.replace("\x00", " ")  # no NUL can reach PostgreSQL (see `_fts5_string`)
    quoted = "'" + clean.replace("\\", "\\\\").replace("'", "''") + "'"
    return quoted + (":*" if prefix else "")


def tsquery(criteria: Criteria) -> str | None:
    """The `to_tsquery('simple', …)` text for the query words, or None when there are none.

    PostgreSQL's parser keeps some words whole that FTS5 splits (`sunset.jpg`, `v2.5`) and
    splits hyphenated ones into their parts as well as the whole. A term with punctuation in
    it is therefore looked for both as typed and as its letters and digits alone, so
    "sunset.jpg" finds the file and "red-fox" finds "red fox", as they do on SQLite.
    """
    if not criteria.terms:
        return None
    parts: list[str] = []
    for term in criteria.terms:
        forms = [term.text]
        plain = " ".join(_WORD_CHARS.findall(term.text))
        if plain != term.text:
            forms.append(plain)
        parts.append("(" + " | ".join(_tsquery_operand(f, term.prefix) for f in forms) + ")")
    return " & ".join(parts)


# --- the query ------------------------------------------------------------------------------------

# Two ways to a page of the newest matches, and which is cheaper depends on how many images the
# words match, which neither database's planner judges well here: SQLite's knows nothing of what
# a virtual table holds, and PostgreSQL's underrates the cost of making a row's document again
# to test it. So the search first asks how many there are (SQLite: counts through the FTS index,
# stopping early; PostgreSQL: its planner's estimate from the index's statistics).
#
# Few: the matches are fetched through the full-text index and sorted by date, the cheapest way
# to a few of them. Many: the images are walked newest first along a B-tree index (by date, or
# by series) and each is tested, which finds a page within a few hundred rows. On SQLite the
# test is membership of the list of matching rowids (read once from the FTS index), or for a
# tag on a great many images, the row's own tags; on PostgreSQL, the row's document.
FEW = {"sqlite": 1_000, "postgresql": 2_000}
SQLITE_COMMON_TAGS = 10_000  # more matches than this, and tags alone: test each row's tags


@dataclass(frozen=True)
class Way:
    """How `statement` finds the matches: `walk` (see above); `fts` (SQLite) through the FTS
    index at all."""

    walk: bool = False
    fts: bool = True


def _fts_rowids(match: str) -> sa.Select[tuple[int]]:
    fts = sa.table(FTS_TABLE, sa.column("rowid"))
    return sa.select(fts.c.rowid).where(
        sa.literal_column(FTS_TABLE).op("MATCH")(sa.literal(match, sa.Text()))
    )


def _matches_text(criteria: Criteria) -> sa.ColumnElement[bool] | None:
    text = tsquery(criteria)
    if text is None:
        return None
    query = sa.func.to_tsquery(
        sa.literal_column("'simple'::regconfig"), sa.literal(text, sa.Text())
    )
    return DOCUMENT.op("@@")(query)


def _text_and_tags(criteria: Criteria, dialect: str, way: Way) -> list[sa.ColumnElement[bool]]:
    conditions: list[sa.ColumnElement[bool]] = []
    if dialect == "sqlite":
        match = fts5_query(criteria) if way.fts else None
        if match is not None:
            # `+`: on a walk, membership of the list is tested row by row; the rows are not
            # looked up by it.
            rowid: sa.ColumnClause[int] = sa.literal_column(
                "+cog_images.rowid" if way.walk else "cog_images.rowid"
            )
            conditions.append(rowid.in_(_fts_rowids(match)))
    elif (text := _matches_text(criteria)) is not None:
        conditions.append(text)
    # The exact test of the tags: on PostgreSQL through the GIN index on `tags`, on SQLite on
    # the rows the full-text index let through (or walked).
    conditions.extend(tag_filter(Image.tags, tag) for tag in criteria.tags)
    return conditions


def statement(criteria: Criteria, dialect: str, way: Way = Way()) -> sa.Select[Any]:
    """The images matching `criteria`, unordered (`newest_first` orders and pages them)."""
    query = sa.select(Image).where(*_text_and_tags(criteria, dialect, way))
    if criteria.model is not None:
        query = query.where(Image.model == criteria.model)
    if criteria.source is not None:
        query = query.where(Image.source == criteria.source)
    if criteria.series_ids is not None:
        # The ids themselves, not a subquery: the planner then knows how many images they
        # hold (PostgreSQL's statistics) and picks the series index or the date one to match.
        if dialect == "postgresql":
            ids = sa.bindparam("series_ids", list(criteria.series_ids), ARRAY(sa.Uuid()))
            query = query.where(Image.series_id == sa.any_(ids))
        else:
            query = query.where(Image.series_id.in_(criteria.series_ids))
    if criteria.created_from is not None:
        query = query.where(Image.created_at >= criteria.created_from)
    if criteria.created_before is not None:
        query = query.where(Image.created_at < criteria.created_before)
    return query


def dialect_of(session: AsyncSession) -> str:
    return session.get_bind().dialect.name


async def _set(session: AsyncSession, **settings: str) -> None:
    """Change settings for the rest of this transaction only (the session's, which ends with
    the request), all in one round trip."""
    values = {f"v{n}": value for n, value in enumerate(settings.values())}
    calls = ", ".join(f"set_config('{name}', :v{n}, true)" for n, name in enumerate(settings))
    await session.execute(sa.text(f"SELECT {calls}"), values)


async def _sqlite_way(session: AsyncSession, criteria: Criteria) -> Way:
    match = fts5_query(criteria)
    if match is None:
        return Way()
    first = _fts_rowids(match).limit(SQLITE_COMMON_TAGS).subquery()
    counted = await session.execute(sa.select(sa.func.count()).select_from(first))
    found = int(counted.scalar_one())
    if found < FEW["sqlite"]:
        return Way()
    return Way(walk=True, fts=bool(criteria.terms) or found < SQLITE_COMMON_TAGS)


async def _postgres_few(session: AsyncSession, criteria: Criteria) -> bool:
    """Whether the planner expects the words (and tags) to match few images. Planning only:
    nothing is read but the statistics."""
    text = tsquery(criteria)
    if text is None:
        return False
    sql = f"EXPLAIN (FORMAT JSON) SELECT 1 FROM cog_images WHERE {DOCUMENT_SQL} @@ "
    sql += "to_tsquery('simple'::regconfig, :query)"
    params: dict[str, Any] = {"query": text}
    if criteria.tags:
        sql += " AND tags @> CAST(:tags AS TEXT[])"
        params["tags"] = list(criteria.tags)
    plan = (await session.execute(sa.text(sql), params)).scalar_one()
    estimate = (json.loads(plan) if isinstance(plan, str) else plan)[0]["Plan"]["Plan Rows"]
    return float(estimate) < FEW["postgresql"]


async def page(
    session: AsyncSession, criteria: Criteria, *, limit: int, cursor: str | None
) -> Page[Image]:
    """A page of matching images, newest first."""
    dialect = dialect_of(session)
    if dialect == "sqlite":
        query = statement(criteria, dialect, await _sqlite_way(session, criteria))
        return await newest_first(session, query, Image, limit=limit, cursor=cursor)
    few = await _postgres_few(session, criteria)
    # How many rows a search matches varies from none to all with its words, so it is planned
    # for its own values every time, never with a plan made for other words. With few
    # matches, through the GIN index and sorted: no walk along the date index.
    await _set(
        session, plan_cache_mode="force_custom_plan", enable_indexscan="off" if few else "on"
    )
    found = await newest_first(
        session, statement(criteria, dialect), Image, limit=limit, cursor=cursor
    )
    if few:
        await _set(session, enable_indexscan="on")
    return found


async def models(session: AsyncSession, limit: int = 200) -> list[str]:
    """The models images were made with, in order: one step down `ix_cog_images_model` per
    model (a loose index scan), so it costs the same with a hundred images or a million."""
    walk = sa.select(sa.func.min(Image.model).label("model")).cte("models", recursive=True)
    after = sa.select(sa.func.min(Image.model)).where(Image.model > walk.c.model).scalar_subquery()
    walk = walk.union_all(sa.select(after).where(walk.c.model.is_not(None)))
    rows = await session.execute(
        sa.select(walk.c.model).where(walk.c.model.is_not(None)).limit(limit)
    )
    return [str(m) for m in rows.scalars()]
