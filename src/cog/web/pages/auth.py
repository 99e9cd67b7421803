"""`/` and the login form (only needed when `COG_API_TOKEN` is set)."""

from __future__ import annotations

from hmac import compare_digest
from typing import Annotated

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from cog.web.deps import SettingsDep
from cog.web.pages._common import render
from cog.web.security import COOKIE, session_cookie_value

router = APIRouter(include_in_schema=False)


@router.get("/")
async def root() -> RedirectResponse:
    return RedirectResponse("/cog", status_code=307)


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
async def login_form(request: Request, settings: SettingsDep, next: str = "/cog") -> HTMLResponse:
    return render(
        request, "login.html", next=_safe_next(next), error=None, guarded=settings.token is not None
    )


@router.post("/cog/login", response_model=None)
async def login(
    request: Request,
    settings: SettingsDep,
    token: Annotated[str, Form()],
    next: Annotated[str, Form()] = "/cog",
) -> Response:
    expected = settings.token
    if expected is None:
        return RedirectResponse(_safe_next(next), status_code=303)
    if not compare_digest(token.encode(), expected.encode()):
        return render(
            request,
            "login.html",
            status_code=401,
            next=_safe_next(next),
            error="Wrong token.",
            guarded=True,
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
