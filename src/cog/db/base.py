"""Declarative base and the column types that differ between SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Awaitable, Mapping, Sequence
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


def insert_rows(
    session: AsyncSession, model: type[Base], rows: Sequence[Mapping[str, Any]]
) -> Awaitable[Any]:
    """Insert new rows of `model`, given as values by attribute name (the same names in each),
    in one Core statement: the ORM's unit of work does the same with several times the work
    where a run stores its images. A column no row names gets its default."""
    statement, columns = _insert_of(model)
    return session.execute(statement, [{columns[k]: v for k, v in row.items()} for row in rows])


@functools.cache
def _insert_of(model: type[Base]) -> tuple[sa.Insert, dict[str, str]]:
    """The model's INSERT, and its column names by attribute name (`meta` is `metadata`)."""
    mapper = sa.inspect(model)
    columns = {attr.key: attr.columns[0].key for attr in mapper.column_attrs}
    return sa.insert(cast(sa.Table, mapper.local_table)), columns


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
