"""/api/images/search"""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query

from cog.domain import ImageSource
from cog.services import search as search_service
from cog.services.search import MAX_TEXT, Search, parse_when
from cog.web.deps import SessionDep
from cog.web.schemas import ImageList, ImageOut, SearchText, error_response, error_responses

router = APIRouter(prefix="/api", tags=["images"], responses=error_responses(401, 404, 422))

WHEN = (
    "A day, `YYYY-MM-DD` (in UTC), or an instant, `YYYY-MM-DDTHH:MM:SS` with an optional zone "
    "(UTC when left out)."
)


@router.get(
    "/images/search",
    summary="Search images",
    response_model=ImageList,
    responses=error_response(422, "A filter is not valid; `detail` says which and why."),
)
async def search_images(
    session: SessionDep,
    q: Annotated[
        SearchText,
        Query(
            max_length=MAX_TEXT,
            description=(
                "Words of the prompt or the original file name. Every word must be there; "
                '`"misty forest"` in double quotes is a phrase; the last word also finds the '
                "longer words it begins (`fo` finds `fox`) unless a space follows it, and so "
                "does any word ending in `*`. Case and punctuation do not matter."
            ),
        ),
    ] = "",
    tag: Annotated[
        list[SearchText] | None,
        Query(description="An image tag. Repeat for several: every one must be there."),
    ] = None,
    model: Annotated[
        SearchText | None, Query(description="The model that made the image, exactly.")
    ] = None,
    source: Annotated[ImageSource | None, Query(description="`upload` or `generated`.")] = None,
    series_id: Annotated[uuid.UUID | None, Query(description="Only this series.")] = None,
    include_subseries: Annotated[
        bool, Query(description="With `series_id`: also every series under it, at any depth.")
    ] = True,
    created_from: Annotated[
        SearchText | None, Query(alias="from", description=f"Made on or after. {WHEN}")
    ] = None,
    created_to: Annotated[
        SearchText | None,
        Query(alias="to", description=f"Made on or before (a day: until its end). {WHEN}"),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500, description="Images per page.")] = 50,
    cursor: Annotated[
        str | None, Query(description="The `next_cursor` of the page before.")
    ] = None,
) -> ImageList:
    """Images from every series, newest first. Every filter given must hold; with none, every
    image. Pages like the other lists: pass `next_cursor` back as `cursor`, with the same
    filters."""
    search = Search(
        q=q,
        tags=tuple(tag or ()),
        model=model,
        source=source,
        series_id=series_id,
        include_subseries=include_subseries,
        created_from=parse_when(created_from, "from") if created_from else None,
        created_to=parse_when(created_to, "to") if created_to else None,
    )
    page = await search_service.search(session, search, limit=limit, cursor=cursor)
    return ImageList(items=[ImageOut.of(i) for i in page.items], next_cursor=page.next_cursor)
