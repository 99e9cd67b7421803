"""Server-rendered pages under /cog, one module per resource; `router` holds them all."""

from __future__ import annotations

from fastapi import APIRouter

from cog.web.pages import auth, batches, images, jobs, runs, search, series, style, versions

router = APIRouter(include_in_schema=False)
for module in (auth, series, style, images, versions, jobs, batches, runs, search):
    router.include_router(module.router)

__all__ = ["router"]
