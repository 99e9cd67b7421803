"""Errors met by a person in the pages, rather than by a program calling the API.

The API answers every error as JSON `{"detail": ...}`. A browser that opens a page gets the same
words in a page of its own; an htmx request keeps the JSON body but swaps nothing into the
page and shows the words in the page's status area instead.
"""

from __future__ import annotations

import json

from fastapi import Request
from fastapi.responses import HTMLResponse

from cog.web.pages._common import is_htmx, render

TITLES = {404: "Not found", 409: "Conflict", 413: "Too large", 422: "Not accepted"}


def error_page(request: Request, status_code: int, message: str) -> HTMLResponse | None:
    """A page for an error met while navigating to a page; None for anything else."""
    path = request.url.path
    if (
        request.method != "GET"
        or is_htmx(request)
        or not (path == "/cog" or path.startswith("/cog/"))
        or "text/html" not in request.headers.get("accept", "")
    ):
        return None
    return render(
        request,
        "error.html",
        status_code=status_code,
        title=TITLES.get(status_code, "Something went wrong"),
        message=message,
    )


def htmx_error_headers(request: Request, message: str) -> dict[str, str]:
    """For htmx: swap nothing (a 422 is otherwise swapped like a form with its errors) and say
    what went wrong. `HX-Trigger` carries the words as JSON, so any text is safe in a header."""
    if not is_htmx(request):
        return {}
    return {
        "HX-Reswap": "none",
        "HX-Trigger": json.dumps({"cog:toast": {"message": message, "error": True}}),
    }
