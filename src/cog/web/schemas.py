"""Request and response bodies of the JSON API."""

from __future__ import annotations

import datetime as dt
import math
import uuid
from typing import Annotated, Any, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    model_validator,
)

from cog.db.models import Image, Series
from cog.services.series import SeriesView

Title = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Description = Annotated[str, StringConstraints(max_length=20_000)]
Tag = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)]
Tags = Annotated[list[Tag], Field(max_length=100)]


def _unstorable(value: Any, where: str) -> str | None:
    """Why a value from a request cannot be stored as it is, or None when it can.

    JSON lets through what the databases refuse: NUL characters (PostgreSQL text and JSONB),
    lone surrogates (not Unicode text) and NaN or Infinity (not JSON). Refused up front, they
    are a 422 naming the field, not a database error.
    """
    if isinstance(value, str):
        if "\x00" in value:
            return f"{where}: text cannot contain NUL characters (\\u0000)"
        try:
            value.encode()
        except UnicodeEncodeError:
            return f"{where}: text is not valid Unicode (a lone surrogate)"
    elif isinstance(value, float) and not math.isfinite(value):
        return f"{where}: numbers must be finite (no NaN or Infinity)"
    elif isinstance(value, dict):
        for key, item in value.items():
            reason = _unstorable(key, where) or _unstorable(item, f"{where}.{key}")
            if reason:
                return reason
    elif isinstance(value, list | tuple):
        for index, item in enumerate(value):
            if reason := _unstorable(item, f"{where}[{index}]"):
                return reason
    return None


def _storable_text(value: str) -> str:
    if reason := _unstorable(value, "text"):
        raise ValueError(reason)
    return value


# A query parameter compared with stored text.
SearchText = Annotated[str, AfterValidator(_storable_text)]


class Input(BaseModel):
    """Request bodies refuse unknown fields, so a typo is an error, not a silent no-op, and
    values no database can store."""

    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="after")
    def _storable(self) -> Self:
        for name in type(self).model_fields:
            if reason := _unstorable(getattr(self, name), name):
                raise ValueError(reason)
        return self


class SeriesCreate(Input):
    title: Title
    description: Description = ""
    tags: Tags = []
    parent_id: uuid.UUID | None = None


class SeriesUpdate(Input):
    """Only the fields sent change. `parent_id: null` moves the series to the top level."""

    title: Title | None = None
    description: Description | None = None
    tags: Tags | None = None
    parent_id: uuid.UUID | None = None


class SeriesRef(BaseModel):
    id: uuid.UUID
    title: str


class SeriesOut(BaseModel):
    id: uuid.UUID
    parent_id: uuid.UUID | None
    title: str
    description: str
    tags: list[str]
    image_count: int
    child_count: int
    ancestors: list[SeriesRef] | None = Field(
        None, description="From the root down to the parent; given when one series is asked for."
    )
    created_at: dt.datetime
    updated_at: dt.datetime

    @classmethod
    def of(
        cls,
        series: Series,
        *,
        image_count: int,
        child_count: int,
        ancestors: list[Series] | None = None,
    ) -> SeriesOut:
        return cls(
            id=series.id,
            parent_id=series.parent_id,
            title=series.title,
            description=series.description,
            tags=list(series.tags),
            image_count=image_count,
            child_count=child_count,
            ancestors=None
            if ancestors is None
            else [SeriesRef(id=a.id, title=a.title) for a in ancestors],
            created_at=series.created_at,
            updated_at=series.updated_at,
        )

    @classmethod
    def of_view(cls, view: SeriesView) -> SeriesOut:
        return cls.of(
            view.series,
            image_count=view.image_count,
            child_count=view.child_count,
            ancestors=view.ancestors,
        )


class SeriesList(BaseModel):
    items: list[SeriesOut]
    next_cursor: str | None


class ImageOut(BaseModel):
    id: uuid.UUID
    series_id: uuid.UUID
    source: str
    original_filename: str | None
    mime_type: str
    width: int
    height: int
    size_bytes: int
    sha256: str
    prompt: str | None
    model: str | None
    provider: str | None
    metadata: dict[str, Any]
    job_id: uuid.UUID | None
    run_id: uuid.UUID | None
    step_id: uuid.UUID | None
    created_at: dt.datetime
    file_url: str
    thumbnail_url: str

    @classmethod
    def of(cls, image: Image) -> ImageOut:
        return cls(
            id=image.id,
            series_id=image.series_id,
            source=image.source,
            original_filename=image.original_filename,
            mime_type=image.mime_type,
            width=image.width,
            height=image.height,
            size_bytes=image.size_bytes,
            sha256=image.sha256,
            prompt=image.prompt,
            model=image.model,
            provider=image.provider,
            metadata=image.meta,
            job_id=image.job_id,
            run_id=image.run_id,
            step_id=image.step_id,
            created_at=image.created_at,
            file_url=f"/api/images/{image.id}/file",
            thumbnail_url=f"/api/images/{image.id}/thumbnail",
        )


class ImageList(BaseModel):
    items: list[ImageOut]
    next_cursor: str | None


class ImageUpdate(Input):
    """Only the fields sent change. `series_id` moves the image to another series."""

    series_id: uuid.UUID | None = None
    original_filename: Annotated[str, StringConstraints(max_length=255)] | None = None
    metadata: dict[str, Any] | None = None


# --- jobs and runs ------------------------------------------------------------------------------

BasePrompt = Annotated[str, StringConstraints(max_length=20_000)]
JobTitle = Annotated[str, StringConstraints(strip_whitespace=True, max_length=200)]


class JobCreate(Input):
    title: JobTitle = ""
    base_prompt: BasePrompt


class JobUpdate(Input):
    title: JobTitle | None = None
    base_prompt: BasePrompt | None = None


class StepsReplace(Input):
    """The whole ordered list. Each step: `{"kind", "prompt", "model", "config"}`."""

    steps: list[dict[str, Any]] = Field(max_length=50)


def _storable_step(value: dict[str, Any]) -> dict[str, Any]:
    if reason := _unstorable(value, "step"):
        raise ValueError(reason)
    return value


# The fields of one step to change (`PATCH /api/jobs/{id}/steps/{position}`); the step rules
# are checked by the service, what no database can store is refused here, as in `Input`.
StepChange = Annotated[dict[str, Any], AfterValidator(_storable_step)]


class StepOut(BaseModel):
    id: uuid.UUID
    position: int
    kind: str
    prompt: str
    model: str | None
    config: dict[str, Any]


class RunSummary(BaseModel):
    id: uuid.UUID
    status: str
    created_at: dt.datetime
    finished_at: dt.datetime | None


class JobOut(BaseModel):
    id: uuid.UUID
    series_id: uuid.UUID
    title: str
    base_prompt: str
    status: str
    steps: list[StepOut]
    last_run: RunSummary | None
    created_at: dt.datetime
    updated_at: dt.datetime


class JobList(BaseModel):
    items: list[JobOut]
    next_cursor: str | None


class AttemptOut(BaseModel):
    number: int
    started_at: str
    duration_ms: float
    error: str | None
    status_code: int | None


class StepRunOut(BaseModel):
    position: int
    kind: str
    prompt: str
    model: str | None
    config: dict[str, Any]
    status: str
    rendered_prompt: str | None
    text: str | None
    image_ids: list[str]
    error: str | None
    attempts: int
    attempt_log: list[AttemptOut]
    usage: dict[str, Any]
    started_at: dt.datetime | None
    finished_at: dt.datetime | None


class RunOut(BaseModel):
    id: uuid.UUID
    job_id: uuid.UUID
    batch_id: uuid.UUID | None = Field(None, description="The batch the run is part of, if any.")
    input_image_id: uuid.UUID | None = Field(
        None, description="In a batch: the image the run is for (`input` in its templates)."
    )
    status: str
    error: str | None
    base_prompt: str
    attempts: int
    cancel_requested: bool
    created_at: dt.datetime
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    steps: list[StepRunOut]


class RunList(BaseModel):
    items: list[RunOut]
    next_cursor: str | None


# --- batches ------------------------------------------------------------------------------------


class BatchCreate(Input):
    """Either `image_ids` (any images, each run once, at most 1,000) or `series_id` (its images,
    with those of its sub-series when `include_subseries`)."""

    image_ids: Annotated[list[uuid.UUID], Field(max_length=1000)] | None = None
    series_id: uuid.UUID | None = None
    include_subseries: bool = False


class BatchOut(BaseModel):
    id: uuid.UUID
    job_id: uuid.UUID
    status: str = Field(description="`running`, then `succeeded`, `failed` or `cancelled`.")
    total: int = Field(description="Runs in the batch: one per image.")
    done: int = Field(description="Runs that have ended (succeeded, failed or cancelled).")
    succeeded: int
    failed: int
    cancelled: int
    running: int
    queued: int
    cancel_requested: bool
    created_at: dt.datetime
    finished_at: dt.datetime | None


class BatchRunOut(BaseModel):
    id: uuid.UUID
    status: str
    input_image_id: uuid.UUID | None
    image_ids: list[str] = Field(description="The images the run made so far.")
    error: str | None
    started_at: dt.datetime | None
    finished_at: dt.datetime | None


class BatchDetail(BatchOut):
    runs: list[BatchRunOut] = Field(description="Every run of the batch, in the order of images.")


class BatchList(BaseModel):
    items: list[BatchOut]
    next_cursor: str | None
