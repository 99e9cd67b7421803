"""A PostgreSQL database that exists only for one benchmark (or test) run."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg


@asynccontextmanager
async def throwaway_postgres(host: str, port: int, user: str, prefix: str) -> AsyncIterator[str]:
    """Create an empty database, answer its SQLAlchemy URL, drop it afterwards."""
    name = f"{prefix}_{os.getpid()}"

    async def admin(statement: str) -> None:
        conn = await asyncpg.connect(host=host, port=port, user=user, database="postgres")
        try:
            await conn.execute(statement)
        finally:
            await conn.close()

    await admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    await admin(f"CREATE DATABASE {name}")
    try:
        yield f"postgresql+asyncpg://{user}@{host}:{port}/{name}"
    finally:
        await admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
