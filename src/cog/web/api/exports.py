"""Zip exports: /api/images/export (ids or a filter) and /api/series/{id}/export."""

from __future__ import annotations

import uuid
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse

from cog.errors import Invalid
from cog.services import export as export_service
from cog.services.selection import Selection
from cog.web.deps import SessionDep, StateDep
from cog.web.schemas import SearchText, SelectionIn, error_responses

router = APIRouter(prefix="/api", tags=["export"], responses=error_responses(401, 404, 422))

ZIP: dict[int | str, dict[str, Any]] = {
    200: {"content": {"application/zip": {}}, "description": "A zip archive, streamed."}
}


def _ids(values: list[str]) -> list[uuid.UUID]:
    found: list[uuid.UUID] = []
    for value in values:
        for part in value.split(","):
            if part.strip():
                try:
                    found.append(uuid.UUID(part.strip()))
                except ValueError:
                    raise Invalid(f"ids: {part.strip()[:60]!r} is not an image id.") from None
    return found


async def zip_response(
    session: SessionDep, state: StateDep, selection: Selection
) -> StreamingResponse:
    """Check and measure the selection, then stream its archive with sessions of its own."""
    plan = await export_service.plan(session, selection)
    await session.close()  # nothing of this request's transaction is held while it streams
    fallback = plan.filename.encode("ascii", "replace").decode().replace("?", "_").replace('"', "")
    headers = {
        "Content-Disposition": (
            f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(plan.filename)}"
        ),
        "Cache-Control": "no-store",
        "X-Image-Count": str(plan.count),
        "X-Image-Bytes": str(plan.total_bytes),
    }
    body = export_service.stream(state.sessions, state.store, plan)
    return StreamingResponse(body, media_type="application/zip", headers=headers)


@router.get("/images/export", response_class=StreamingResponse, responses=ZIP)
async def export_images(
    session: SessionDep,
    state: StateDep,
    ids: Annotated[
        list[str] | None, Query(description="Image ids, comma-separated or repeated.")
    ] = None,
    series_id: Annotated[uuid.UUID | None, Query(description="Images of this series.")] = None,
    include_subseries: Annotated[
        bool, Query(description="With `series_id`: its sub-series' images too.")
    ] = False,
    tag: Annotated[SearchText | None, Query(description="Only images with this tag.")] = None,
) -> StreamingResponse:
    """A zip of the images named by `ids`, or of those a filter matches (`series_id`,
    `include_subseries`, `tag`), with `manifest.json` and `manifest.csv`."""
    if ids and (series_id or tag or include_subseries):
        raise Invalid("Send either `ids` or a filter (`series_id`, `tag`), not both.")
    if ids:
        selection = Selection.of_ids(_ids(ids))
    else:
        selection = Selection.of_filter(
            series_id=series_id, include_subseries=include_subseries, tag=tag
        )
    return await zip_response(session, state, selection)


@router.post(
    "/images/export", response_class=StreamingResponse, responses={**ZIP, **error_responses(400)}
)
async def export_selection(
    body: SelectionIn, session: SessionDep, state: StateDep
) -> StreamingResponse:
    """The same as `GET /api/images/export`, for selections too long for a URL:
    `{"ids": [...]}` or `{"filter": {"series_id", "include_subseries", "tag"}}`."""
    return await zip_response(session, state, body.selection())


@router.get("/series/{series_id}/export", response_class=StreamingResponse, responses=ZIP)
async def export_series(
    series_id: uuid.UUID,
    session: SessionDep,
    state: StateDep,
    include_subseries: Annotated[
        bool, Query(description="Also the images of every series under it.")
    ] = True,
    tag: Annotated[SearchText | None, Query(description="Only images with this tag.")] = None,
) -> StreamingResponse:
    """A zip of the series' images and its sub-series', one folder per series."""
    selection = Selection.of_filter(
        series_id=series_id, include_subseries=include_subseries, tag=tag
    )
    return await zip_response(session, state, selection)
