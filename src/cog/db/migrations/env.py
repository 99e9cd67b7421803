"""Alembic environment. Online runs get a connection from `cog.db.migrate`; offline renders SQL."""

from __future__ import annotations

from alembic import context

from cog.db import models  # noqa: F401 - registers the tables on the metadata
from cog.db.base import Base
from cog.db.migrate import VERSION_TABLE

config = context.config
target_metadata = Base.metadata

if context.is_offline_mode():
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=target_metadata,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
        version_table=VERSION_TABLE,
    )
    with context.begin_transaction():
        context.run_migrations()
else:
    connection = config.attributes["connection"]
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        version_table=VERSION_TABLE,
    )
    with context.begin_transaction():
        context.run_migrations()
