"""FastAPI dependencies as `Annotated` aliases."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession

from cog.config import Settings
from cog.db.session import unreachable
from cog.runtime import Runtime
from cog.storage import ObjectStore

# FastAPI runs a plain `def` dependency in a worker thread; reading an attribute is not worth
# the trip, so every dependency here is `async def`.


def _runtime(request: Request) -> Runtime:
    state: Runtime = request.app.state.cog
    return state


async def get_state(request: Request) -> Runtime:
    return _runtime(request)


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    session = _runtime(request).sessions()
    try:
        yield session
    finally:
        try:
            await session.close()
        except Exception as exc:
            # The answer has been given; a connection that died under it is only dropped.
            if unreachable(exc) is None:
                raise


async def get_store(request: Request) -> ObjectStore:
    return _runtime(request).store


async def get_settings(request: Request) -> Settings:
    return _runtime(request).settings


StateDep = Annotated[Runtime, Depends(get_state)]
SessionDep = Annotated[AsyncSession, Depends(get_session)]
StoreDep = Annotated[ObjectStore, Depends(get_store)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
