"""/api/series"""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Response, status

from cog.errors import Invalid
from cog.services import series as series_service
from cog.services import style as style_service
from cog.web.deps import SessionDep, StateDep, StoreDep
from cog.web.schemas import (
    SearchText,
    SeriesCreate,
    SeriesList,
    SeriesOut,
    SeriesUpdate,
    error_response,
    error_responses,
)

router = APIRouter(prefix="/api/series", tags=["series"], responses=error_responses(401, 404, 422))


@router.get("", response_model=SeriesList)
async def list_series(
    session: SessionDep,
    parent_id: Annotated[
        uuid.UUID | None, Query(description="List the children of this series.")
    ] = None,
    tag: Annotated[
        SearchText | None, Query(description="Only series with this tag (whole tree).")
    ] = None,
    q: Annotated[
        SearchText | None, Query(description="Text in the title or description (whole tree).")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    cursor: str | None = None,
) -> SeriesList:
    """Top-level series; children with `parent_id`; with `tag` or `q`, matches at any depth."""
    page, counts = await series_service.listing(
        session, parent_id=parent_id, tag=tag, text=q, limit=limit, cursor=cursor
    )
    return SeriesList(
        items=[
            SeriesOut.of(
                s, image_count=counts[s.id].image_count, child_count=counts[s.id].child_count
            )
            for s in page.items
        ],
        next_cursor=page.next_cursor,
    )


@router.post(
    "",
    response_model=SeriesOut,
    status_code=status.HTTP_201_CREATED,
    responses=error_responses(400),
)
async def create_series(body: SeriesCreate, session: SessionDep) -> SeriesOut:
    created = await series_service.create(
        session,
        title=body.title,
        description=body.description,
        tags=body.tags,
        parent_id=body.parent_id,
        inherit_context=body.inherit_context,
    )
    return SeriesOut.of_view(await series_service.view(session, created.id))


@router.get("/{series_id}", response_model=SeriesOut)
async def get_series(series_id: uuid.UUID, session: SessionDep) -> SeriesOut:
    return SeriesOut.of_view(await series_service.view(session, series_id))


@router.patch("/{series_id}", response_model=SeriesOut, responses=error_responses(400, 409))
async def update_series(series_id: uuid.UUID, body: SeriesUpdate, session: SessionDep) -> SeriesOut:
    """Change the fields sent. `style_profile` sets the style profile by hand (an empty text
    clears it); `inherit_context` turns inheriting the context of the series above on or off."""
    sent = body.model_fields_set
    for field in ("title", "description", "tags", "inherit_context", "style_profile"):
        if field in sent and getattr(body, field) is None:
            raise Invalid(f"`{field}` cannot be null.")
    changes = {field: getattr(body, field) for field in sent}
    await series_service.update(session, series_id, **changes)
    return SeriesOut.of_view(await series_service.view(session, series_id))


@router.post(
    "/{series_id}/style-profile",
    response_model=SeriesOut,
    responses=error_response(502, "The text model failed or refused; the profile is unchanged."),
)
async def draft_style_profile(
    series_id: uuid.UUID, session: SessionDep, store: StoreDep, state: StateDep
) -> SeriesOut:
    """The text model looks at a sample of the series' images with its title, description and
    tags, and writes its style profile (palette, medium, lighting, composition, mood), which is
    saved, replacing the one before. A series with no images gets a profile from its title,
    description and tags alone. Edit it by hand with PATCH (`style_profile`)."""
    await style_service.draft_profile(session, store, state.text_provider, series_id)
    return SeriesOut.of_view(await series_service.view(session, series_id))


@router.delete(
    "/{series_id}", status_code=status.HTTP_204_NO_CONTENT, responses=error_responses(409)
)
async def delete_series(
    series_id: uuid.UUID,
    session: SessionDep,
    store: StoreDep,
    recursive: Annotated[
        bool, Query(description="Also delete every sub-series and image under it.")
    ] = False,
) -> Response:
    await series_service.delete(session, store, series_id, recursive=recursive)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
