"""What the page modules share: templates, rendering, the cross-site guard, htmx replies."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from pathlib import Path
from typing import Any

from fastapi import HTTPException, Request
from fastapi.responses import HTMLResponse, Response
from fastapi.templating import Jinja2Templates

from cog.errors import Invalid
from cog.imaging import bytes_text as filesize
from cog.runtime import Runtime
from cog.web.security import cross_site

TEMPLATES_DIR = Path(__file__).parent.parent / "templates"

# Notices a page shows after a redirect (`?notice=<key>`). Only these fixed texts can appear,
# so the query string can never put words of its own on a page.
NOTICES = {
    "job-deleted": "The job was deleted. Every image it made is still in this series.",
    "series-deleted": "The series was deleted.",
    "image-deleted": "The image was deleted.",
    "image-edited": "The edit is the image's new version; the versions before it are kept.",
    "image-replaced": "The new file is the image's new version; the versions before it are kept.",
    "version-restored": "The version was restored: a copy of it is now the current version.",
    "version-split": "This image was split off from a version of another image.",
}


def _page_globals(request: Request) -> dict[str, Any]:
    state: Runtime = request.app.state.cog
    return {
        # Generation is free and local while either provider is the preview one; the banner says
        # so on every page, with how to switch to Gemini.
        "preview": "preview" in (state.text_provider.name, state.image_provider.name),
        "thumbnail_px": state.settings.thumbnail_px,
        "max_upload_bytes": state.settings.max_upload_bytes,
        "text_model": state.settings.text_model,
        "image_model": state.settings.image_model,
        "notice": NOTICES.get(request.query_params.get("notice", "")),
    }


def duration(start: dt.datetime | None, end: dt.datetime | None) -> str:
    """How long something took (or has taken so far), the way a person reads it."""
    if start is None:
        return ""
    seconds = ((end or dt.datetime.now(dt.UTC)) - start).total_seconds()
    if seconds < 10:
        return f"{seconds:.1f} s"
    if seconds < 90:
        return f"{seconds:.0f} s"
    minutes, rest = divmod(int(seconds), 60)
    if minutes < 90:
        return f"{minutes} min {rest} s"
    return f"{minutes // 60} h {minutes % 60} min"


def thumb_box(width: int, height: int, longest: int) -> tuple[int, int]:
    """The size of an image's thumbnail: the `width` and `height` attributes of its <img>, so
    the browser reserves the space before the file arrives."""
    scale = min(1.0, longest / max(width, height, 1))
    return max(1, round(width * scale)), max(1, round(height * scale))


def plural(count: int, one: str, many: str | None = None) -> str:
    return f"{count} {one if count == 1 else (many or one + 's')}"


def utc_text(when: dt.datetime | None) -> str:
    """A time as text, in UTC; cog.js shows it in the reader's own zone."""
    return "" if when is None else when.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


templates = Jinja2Templates(directory=TEMPLATES_DIR, context_processors=[_page_globals])
templates.env.filters.update(
    filesize=filesize, duration=duration, plural=plural, utc_text=utc_text, thumb_box=thumb_box
)
templates.env.trim_blocks = True
templates.env.lstrip_blocks = True


def render(
    request: Request,
    name: str,
    status_code: int = 200,
    headers: dict[str, str] | None = None,
    **context: Any,
) -> HTMLResponse:
    response = templates.TemplateResponse(
        request, name, context, status_code=status_code, headers=headers
    )
    # Some routes answer htmx with a fragment and a browser with the whole page.
    response.headers["Vary"] = "HX-Request"
    return response


def render_text(request: Request, name: str, **context: Any) -> str:
    """A fragment as a string (for the live run stream), with the same globals as a page."""
    return templates.get_template(name).render({**_page_globals(request), **context})


def form_uuid(value: str, name: str) -> uuid.UUID | None:
    """An id from a form field; empty means none. Anything else is the person's 422."""
    if not value.strip():
        return None
    try:
        return uuid.UUID(value.strip())
    except ValueError:
        raise Invalid(f"`{name}` is not an id.") from None


def is_htmx(request: Request) -> bool:
    return request.headers.get("hx-request") == "true"


async def same_origin(request: Request) -> None:
    """Refuse a page mutation that another site's page could have sent (CSRF).

    Without a token there is no cookie to steal a session with, but a page elsewhere could still
    post to a Cog on 127.0.0.1; with a token the cookie is SameSite=Strict already. Browsers
    say where a request comes from in `Sec-Fetch-Site` (all current ones) or `Origin` (older
    ones, on every POST). A request with neither is not from a browser form; it must then carry
    htmx's `HX-Request` header, which a cross-site page cannot add without a CORS preflight that
    Cog never grants.
    """
    headers = request.headers
    if "sec-fetch-site" in headers or "origin" in headers:
        allowed = not cross_site(request.scope)
    else:
        allowed = is_htmx(request)
    if not allowed:
        raise HTTPException(403, "Cross-site requests are refused; use Cog's own pages.")


def hx_redirect(url: str) -> Response:
    """Send the browser to another page after an htmx request (a full page load)."""
    return Response(status_code=204, headers={"HX-Redirect": url})


def toast(response: Response, message: str) -> Response:
    """Show a short message in the page's status area (cog.js listens for `cog:toast`)."""
    response.headers["HX-Trigger"] = json.dumps({"cog:toast": message})
    return response
