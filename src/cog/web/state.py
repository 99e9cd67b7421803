"""What one running app holds: settings, the database engine and the object store."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine

from cog.config import Settings
from cog.db.session import SessionMaker, make_engine, make_sessionmaker
from cog.storage import ObjectStore, make_store


@dataclass
class AppState:
    settings: Settings
    engine: AsyncEngine
    sessions: SessionMaker
    store: ObjectStore

    @classmethod
    def build(cls, settings: Settings) -> AppState:
        engine = make_engine(settings.database_url)
        return cls(settings, engine, make_sessionmaker(engine), make_store(settings))
