"""Server-rendered pages under /cog."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from cog.services import images as images_service
from cog.services import series as series_service
from cog.web.deps import SessionDep, SettingsDep
from cog.web.security import COOKIE, session_cookie_value

templates = Jinja2Templates(directory=Path(__file__).parent / "templates")

router = APIRouter(include_in_schema=False)


def render(request: Request, name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    return templates.TemplateResponse(request, name, context, status_code=status_code)


@router.get("/")
async def root() -> RedirectResponse:
    return RedirectResponse("/cog", status_code=307)


@router.get("/cog", response_class=HTMLResponse)
async def series_list(request: Request, session: SessionDep) -> HTMLResponse:
    page, counts = await series_service.listing(session, limit=500)
    items = [
        {
            "series": s,
            "image_count": counts[s.id].image_count,
            "child_count": counts[s.id].child_count,
        }
        for s in page.items
    ]
    return render(request, "series/list.html", items=items)


@router.get("/cog/series/{series_id}", response_class=HTMLResponse)
async def series_detail(
    request: Request, series_id: uuid.UUID, session: SessionDep
) -> HTMLResponse:
    view = await series_service.view(session, series_id)
    children, _ = await series_service.listing(session, parent_id=series_id, limit=500)
    images = await images_service.listing(session, series_id, limit=200)
    return render(
        request, "series/detail.html", view=view, children=children.items, images=images.items
    )


@router.get("/cog/images/{image_id}", response_class=HTMLResponse)
async def image_detail(request: Request, image_id: uuid.UUID, session: SessionDep) -> HTMLResponse:
    image = await images_service.require(session, image_id)
    view = await series_service.view(session, image.series_id)
    return render(
        request, "images/detail.html", image=image, series=view.series, ancestors=view.ancestors
    )


def _safe_next(target: str) -> str:
    # Only paths on this site: "//evil.example" or "https://..." would be an open redirect, and
    # browsers drop tabs and newlines from URLs, so "/\t/evil.example" would become one too.
    if (
        target.startswith("/")
        and not target.startswith("//")
        and "\\" not in target
        and all(ch.isprintable() and not ch.isspace() for ch in target)
    ):
        return target
    return "/cog"


@router.get("/cog/login", response_class=HTMLResponse)
async def login_form(request: Request, next: str = "/cog") -> HTMLResponse:
    return render(request, "login.html", next=_safe_next(next), error=None)


@router.post("/cog/login", response_model=None)
async def login(
    request: Request,
    settings: SettingsDep,
    token: Annotated[str, Form()],
    next: Annotated[str, Form()] = "/cog",
) -> Response:
    from hmac import compare_digest

    expected = settings.token
    if expected is None:
        return RedirectResponse(_safe_next(next), status_code=303)
    if not compare_digest(token.encode(), expected.encode()):
        return render(
            request, "login.html", status_code=401, next=_safe_next(next), error="Wrong token."
        )
    response = RedirectResponse(_safe_next(next), status_code=303)
    response.set_cookie(
        COOKIE,
        session_cookie_value(expected),
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        max_age=30 * 24 * 3600,
    )
    return response
