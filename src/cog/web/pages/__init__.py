"""Server-rendered pages under /cog, one module per resource; `ROUTERS` lists their routers."""

from __future__ import annotations

from fastapi import APIRouter

from cog.web.pages import auth, batches, images, jobs, runs, search, series, style, versions

ROUTERS: tuple[APIRouter, ...] = tuple(
    module.router for module in (auth, series, style, images, versions, jobs, batches, runs, search)
)

__all__ = ["ROUTERS"]
