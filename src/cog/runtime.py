"""What one running Cog holds: settings, database, store, providers and the executor.

The web app and the CLI each build one from settings; nothing here is global.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncEngine

from cog.config import ExecutorKind, Settings
from cog.db.session import SessionMaker, make_engine, make_sessionmaker
from cog.engine.events import RunNotifier
from cog.engine.executor import EmbeddedExecutor
from cog.engine.runner import RunnerDeps
from cog.providers import ImageProvider, TextProvider, make_providers
from cog.services.images import ThumbnailCache, thumbnail_cache
from cog.storage import ObjectStore, make_store


@dataclass
class Runtime:
    settings: Settings
    engine: AsyncEngine
    sessions: SessionMaker
    store: ObjectStore
    text_provider: TextProvider
    image_provider: ImageProvider
    thumbnails: ThumbnailCache | None = None
    notifier: RunNotifier = field(default_factory=RunNotifier)
    executor: EmbeddedExecutor | None = None

    @classmethod
    def build(cls, settings: Settings) -> Runtime:
        engine = make_engine(settings.database_url)
        text, image = make_providers(settings)
        return cls(
            settings=settings,
            engine=engine,
            sessions=make_sessionmaker(engine),
            store=make_store(settings),
            text_provider=text,
            image_provider=image,
            thumbnails=thumbnail_cache(settings),
        )

    def runner_deps(self) -> RunnerDeps:
        return RunnerDeps(
            sessions=self.sessions,
            store=self.store,
            settings=self.settings,
            text=self.text_provider,
            image=self.image_provider,
            notify=self.notifier.notify,
            image_slots=asyncio.Semaphore(self.settings.image_concurrency),
        )

    async def start(self, *, executor: bool = True) -> None:
        if executor and self.settings.executor is ExecutorKind.embedded:
            self.executor = EmbeddedExecutor(
                self.runner_deps(),
                max_runs=self.settings.run_concurrency,
                stale_after_s=self.settings.run_stale_after_s,
                max_attempts=self.settings.run_max_attempts,
            )
            await self.executor.start()

    async def stop(self) -> None:
        if self.executor is not None:
            await self.executor.stop()
        await self.text_provider.aclose()
        await self.image_provider.aclose()
        await self.engine.dispose()

    def executor_wake(self) -> None:
        if self.executor is not None:
            self.executor.wake()

    def executor_cancel(self, run_id: uuid.UUID) -> None:
        if self.executor is not None:
            self.executor.cancel_local(run_id)
