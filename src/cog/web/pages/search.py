"""`/cog/search`: every image, searched by words, tags, model, source, series and dates; the
results fragment htmx swaps in as the filters change, and the next pages as they scroll in."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse

from cog.db.models import Image
from cog.db.pages import Page
from cog.domain import ImageSource
from cog.errors import Invalid
from cog.services import search as search_service
from cog.services import series as series_service
from cog.services.search import MAX_TEXT, Search, parse_when
from cog.web.deps import SessionDep
from cog.web.pages._common import form_uuid, is_htmx, render
from cog.web.pages.series import GALLERY_PAGE, split_tags
from cog.web.schemas import SearchText

router = APIRouter(include_in_schema=False)


@dataclass(frozen=True)
class Form:
    """The search as its fields hold it: what the page shows back, and the query string of the
    page's URL and of its next pages (empty fields left out, so the URL stays short)."""

    q: str = ""
    tag: str = ""
    model: str = ""
    source: str = ""
    series_id: str = ""
    include_subseries: bool = False
    created_from: str = ""
    created_to: str = ""

    def params(self) -> list[tuple[str, str]]:
        pairs = [
            ("q", self.q),
            ("tag", self.tag),
            ("model", self.model),
            ("source", self.source),
            ("series_id", self.series_id),
            ("include_subseries", "true" if self.include_subseries and self.series_id else ""),
            ("from", self.created_from),
            ("to", self.created_to),
        ]
        return [(name, value) for name, value in pairs if value]

    def search(self) -> Search:
        source = None
        if self.source:
            try:
                source = ImageSource(self.source)
            except ValueError:
                raise Invalid("`source` is either `upload` or `generated`.") from None
        return Search(
            q=self.q,
            tags=tuple(split_tags(self.tag)),
            model=self.model or None,
            source=source,
            series_id=form_uuid(self.series_id, "series_id"),
            include_subseries=self.include_subseries,
            created_from=parse_when(self.created_from, "from") if self.created_from else None,
            created_to=parse_when(self.created_to, "to") if self.created_to else None,
        )


async def _form(  # async: FastAPI would run a plain function in a worker thread
    q: Annotated[SearchText, Query(max_length=MAX_TEXT)] = "",
    tag: Annotated[list[SearchText] | None, Query()] = None,
    model: Annotated[SearchText, Query(max_length=500)] = "",
    source: Annotated[str, Query(max_length=20)] = "",
    series_id: Annotated[str, Query(max_length=64)] = "",
    include_subseries: bool = False,
    created_from: Annotated[str, Query(alias="from", max_length=40)] = "",
    created_to: Annotated[str, Query(alias="to", max_length=40)] = "",
) -> Form:
    return Form(
        q=q,
        # The page's tag field takes several, separated by commas; the API's `tag` repeats.
        tag=", ".join(t for value in tag or [] for t in split_tags(value)),
        model=model.strip(),
        source=source.strip(),
        series_id=series_id.strip(),
        include_subseries=include_subseries,
        created_from=created_from.strip(),
        created_to=created_to.strip(),
    )


def _next_url(form: Form, page: Page[Image]) -> str | None:
    if page.next_cursor is None:
        return None
    return "/cog/search/images?" + urlencode([*form.params(), ("cursor", page.next_cursor)])


def _results(form: Form, search: Search, page: Page[Image]) -> dict[str, Any]:
    return {
        "form": form,
        "searching": not search.is_empty,
        "images": page.items,
        "next_url": _next_url(form, page),
    }


SearchForm = Annotated[Form, Depends(_form)]


@router.get("/cog/search", response_class=HTMLResponse)
async def search_page(request: Request, session: SessionDep, form: SearchForm) -> HTMLResponse:
    search = form.search()
    page = await search_service.search(session, search, limit=GALLERY_PAGE)
    context = _results(form, search, page)
    if is_htmx(request) and request.headers.get("hx-target") == "search-results":
        return render(request, "search/_results.html", **context)
    return render(
        request,
        "search/page.html",
        models=await search_service.models(session),
        entries=await series_service.outline(session),
        selected_series=search.series_id,
        # Sub-series are included unless the box was cleared for the chosen series.
        subseries_checked=form.include_subseries or not form.series_id,
        series=None,  # the selection bar's: results come from any series
        **context,
    )


@router.get("/cog/search/images", response_class=HTMLResponse)
async def search_more(
    request: Request, session: SessionDep, form: SearchForm, cursor: str | None = None
) -> HTMLResponse:
    """The next page of results, with the marker that loads the page after it."""
    page = await search_service.search(session, form.search(), limit=GALLERY_PAGE, cursor=cursor)
    return render(
        request, "series/_gallery_page.html", images=page.items, next_url=_next_url(form, page)
    )
