"""Declarative base and the column types that differ between SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Sequence
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.sql.expression import ColumnElement, FunctionElement

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = sa.MetaData(naming_convention=NAMING_CONVENTION)


def insert_new(session: AsyncSession, rows: Sequence[Base]) -> Awaitable[Any]:
    """Insert new objects of one class, built alike, in one Core statement: the ORM's unit of
    work does the same with several times the work where a run stores its images.

    The objects stay unattached to the session; a column none of them set gets its default.
    """
    mapper = sa.inspect(type(rows[0]))
    values = [
        {
            attr.columns[0].key: row.__dict__[attr.key]
            for attr in mapper.column_attrs
            if attr.key in row.__dict__
        }
        for row in rows
    ]
    return session.execute(sa.insert(cast(sa.Table, mapper.local_table)), values)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class UTCDateTime(sa.TypeDecorator[dt.datetime]):
    """Timestamps are aware UTC in Python on both databases.

    PostgreSQL keeps them as `timestamptz`; SQLite keeps naive UTC text, which sorts correctly as
    long as every value is written in UTC, so values are normalised before they are bound.
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given; Cog stores aware UTC timestamps")
        value = value.astimezone(dt.UTC)
        return value if dialect.name == "postgresql" else value.replace(tzinfo=None)

    def process_result_value(
        self, value: dt.datetime | None, dialect: Dialect
    ) -> dt.datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


# Tags are `text[]` on PostgreSQL (indexable with GIN, `@>` containment) and a JSON array on SQLite.
TagList = sa.JSON().with_variant(postgresql.ARRAY(sa.Text()), "postgresql")
JsonDoc = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


class has_tag(FunctionElement[bool]):
    """`has_tag(column, 'tag')`: true when the tag list contains the tag, on either database."""

    type = sa.Boolean()
    inherit_cache = True


@compiles(has_tag, "postgresql")
def _has_tag_pg(element: has_tag, compiler: Any, **kw: Any) -> str:
    column, tag = list(element.clauses)
    return (
        f"({compiler.process(column, **kw)} @> ARRAY[CAST({compiler.process(tag, **kw)} AS TEXT)])"
    )


@compiles(has_tag, "sqlite")
def _has_tag_sqlite(element: has_tag, compiler: Any, **kw: Any) -> str:
    column, tag = list(element.clauses)
    return (
        f"EXISTS (SELECT 1 FROM json_each({compiler.process(column, **kw)}) "
        f"WHERE json_each.value = {compiler.process(tag, **kw)})"
    )


def tag_filter(column: ColumnElement[Any] | Any, tag: str) -> ColumnElement[bool]:
    return has_tag(column, sa.literal(tag, sa.Text()))
