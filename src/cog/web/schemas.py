"""Request and response bodies of the JSON API."""

from __future__ import annotations

import datetime as dt
import math
import uuid
from collections.abc import Sequence
from typing import Annotated, Any, Literal, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    WithJsonSchema,
    model_validator,
)
from pydantic.json_schema import SkipJsonSchema

from cog.db.models import Image, ImageVersion, Series
from cog.domain import MAX_BATCH_IMAGES, MAX_REFERENCE_IMAGES
from cog.engine.steps import StepSpec
from cog.engine.style_profile import MAX_PROFILE_CHARS
from cog.services.selection import Selection
from cog.services.series import SeriesView

# Trimmed, then at least one character: the pattern says so in the document (a title of spaces
# only is refused, and `minLength` alone would count the spaces).
# Something that is not a space, in every regex dialect that reads the schema and to Python's
# strip(), which also counts the separators U+001C..U+001F and U+0085 as spaces.
VISIBLE = r"[^\s\x1c-\x1f\x85]"
Title = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200, pattern=VISIBLE)
]
Description = Annotated[str, StringConstraints(max_length=20_000)]
Tag = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64, pattern=VISIBLE)
]
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


# --- errors -------------------------------------------------------------------------------------


class ErrorOut(BaseModel):
    """Every refusal: `detail` says what went wrong, in plain words. Some carry more (an upload
    names each refused file in `files`)."""

    model_config = ConfigDict(extra="allow")

    detail: str


class ValidationErrorOut(ErrorOut):
    """A request that does not parse lists each problem in `errors`, as Pydantic found it."""

    errors: list[dict[str, Any]] | None = None


ERRORS: dict[int, tuple[type[ErrorOut], str]] = {
    400: (ErrorOut, "The body could not be read (it is not UTF-8 JSON, or not multipart)."),
    401: (ErrorOut, "This Cog has a token (`COG_API_TOKEN`) and the request did not send it."),
    404: (ErrorOut, "Something the request names does not exist."),
    409: (ErrorOut, "The request clashes with the current state."),
    413: (ErrorOut, "A file or the batch is too large."),
    415: (ErrorOut, "A file is not an accepted image type."),
    422: (ValidationErrorOut, "The request is malformed or breaks a rule; `detail` says which."),
    502: (ErrorOut, "The model provider failed or refused."),
}


def error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for the refusals a route can answer, each `{"detail": ...}` JSON."""
    return {code: {"model": ERRORS[code][0], "description": ERRORS[code][1]} for code in codes}


def error_response(code: int, description: str) -> dict[int | str, dict[str, Any]]:
    """One refusal, described for the route that answers it."""
    return {code: {"model": ERRORS[code][0], "description": description}}


def json_error_responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The same for a route whose answer is not JSON (a stream): FastAPI documents a `model`
    under the route's own media type, so these name the JSON schema by reference instead."""
    return {
        code: {
            "description": ERRORS[code][1],
            "content": {
                "application/json": {
                    "schema": {"$ref": f"#/components/schemas/{ERRORS[code][0].__name__}"}
                }
            },
        }
        for code in codes
    }


InheritContext = Annotated[
    bool,
    Field(
        description="Whether the job templates and drafts of the series see the descriptions "
        "and tags of the series above it (`series.ancestors`, `series.context`). Off, it and "
        "the series under it see nothing above it."
    ),
]
StyleProfile = Annotated[
    str,
    StringConstraints(max_length=MAX_PROFILE_CHARS),
    Field(description="The series' style profile, written by hand; an empty text clears it."),
]


class SeriesCreate(Input):
    title: Title
    description: Description = ""
    tags: Tags = []
    parent_id: uuid.UUID | None = None
    inherit_context: InheritContext = True


# A field of a PATCH body that may be left out but not sent as null: the document says so, and
# the route refuses a null with a 422 that names the field.
NotNull = SkipJsonSchema[None]


class SeriesUpdate(Input):
    """Only the fields sent change. `parent_id: null` moves the series to the top level."""

    title: Title | NotNull = None
    description: Description | NotNull = None
    tags: Tags | NotNull = None
    parent_id: uuid.UUID | None = None
    inherit_context: InheritContext | NotNull = None
    style_profile: StyleProfile | NotNull = None


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
    inherit_context: bool = Field(
        description="Whether it sees the context (descriptions, tags) of the series above it."
    )
    style_profile: str = Field(
        description="A concise description of its style (palette, medium, lighting, "
        "composition, mood); empty when it has none. Drafted by POST "
        "/api/series/{id}/style-profile, edited with PATCH."
    )
    style_profile_updated_at: dt.datetime | None = Field(
        description="When the style profile was last written (drafted or edited)."
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
            inherit_context=series.inherit_context,
            style_profile=series.style_profile,
            style_profile_updated_at=series.style_profile_updated_at,
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
    tags: list[str]
    created_at: dt.datetime
    version: int = Field(
        description="The number of the current version; also how many versions there are, "
        "since every change adds one and none is ever removed."
    )
    file_url: str
    thumbnail_url: str
    versions_url: str

    @classmethod
    def of(cls, image: Image) -> ImageOut:
        # Built from a row the database typed already: nothing to validate, and galleries list
        # hundreds of images per request.
        urls = f"/api/images/{image.id}/"
        return cls.model_construct(
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
            tags=list(image.tags or []),
            created_at=image.created_at,
            version=image.version,
            file_url=urls + "file",
            thumbnail_url=urls + "thumbnail",
            versions_url=urls + "versions",
        )


class ImageList(BaseModel):
    items: list[ImageOut]
    next_cursor: str | None


class ImageUpdate(Input):
    """Only the fields sent change. `series_id` moves the image to another series; `tags`
    replaces its tags (trimmed, lower case, each once)."""

    series_id: uuid.UUID | NotNull = None
    original_filename: Annotated[str, StringConstraints(max_length=255)] | None = None
    metadata: dict[str, Any] | NotNull = None
    tags: Tags | NotNull = None


# --- versions and lineage ----------------------------------------------------------------------


class VersionEdit(Input):
    """An edit by prompt: the image model gets the version's file and the prompt."""

    prompt: Annotated[
        str, StringConstraints(strip_whitespace=True, min_length=1, max_length=20_000)
    ]
    version: int | None = Field(
        None, ge=1, description="The version to start from; the current one when left out."
    )


class VersionOut(BaseModel):
    image_id: uuid.UUID
    number: int
    is_current: bool
    source: str = Field(description="`upload`, `generated`, `edit` or `restore`.")
    original_filename: str | None
    mime_type: str
    width: int
    height: int
    size_bytes: int
    sha256: str
    prompt: str | None
    model: str | None
    provider: str | None
    metadata: dict[str, Any] = Field(description="For an edit, `model_text`: what the model said.")
    restored_from: int | None = Field(None, description="For a restore: the version it copies.")
    job_id: uuid.UUID | None
    run_id: uuid.UUID | None
    step_id: uuid.UUID | None
    created_at: dt.datetime
    file_url: str
    thumbnail_url: str

    @classmethod
    def of(
        cls, version: ImageVersion, *, current: int, restored_from: int | None = None
    ) -> VersionOut:
        base = f"/api/images/{version.image_id}/versions/{version.number}"
        return cls(
            image_id=version.image_id,
            number=version.number,
            is_current=version.number == current,
            source=version.source,
            original_filename=version.original_filename,
            mime_type=version.mime_type,
            width=version.width,
            height=version.height,
            size_bytes=version.size_bytes,
            sha256=version.sha256,
            prompt=version.prompt,
            model=version.model,
            provider=version.provider,
            metadata=version.meta,
            restored_from=restored_from,
            job_id=version.job_id,
            run_id=version.run_id,
            step_id=version.step_id,
            created_at=version.created_at,
            file_url=f"{base}/file",
            thumbnail_url=f"{base}/thumbnail",
        )

    @classmethod
    def all_of(cls, image: Image, versions: Sequence[ImageVersion]) -> list[VersionOut]:
        """Every version of the image, each saying which one it restores."""
        numbers = {v.id: v.number for v in versions}
        return [
            cls.of(
                v,
                current=image.version,
                restored_from=numbers.get(v.restored_from_id) if v.restored_from_id else None,
            )
            for v in versions
        ]


class VersionList(BaseModel):
    """Every version, oldest first, in one page (`next_cursor` is always null)."""

    items: list[VersionOut]
    next_cursor: str | None = None


class LinkOut(BaseModel):
    """One lineage link: the image at the other end, the versions it joins, and the job, run
    and step that made the child version (null when there were none, or they were deleted)."""

    image_id: uuid.UUID
    version: int = Field(description="The version of that image.")
    own_version: int = Field(description="The version of this image the link belongs to.")
    role: str = Field(
        description="`reference`, `input`, `style` (a style reference) or `edit` (edits, splits)."
    )
    label: str
    thumbnail_url: str
    job_id: uuid.UUID | None
    run_id: uuid.UUID | None
    step_id: uuid.UUID | None
    step_position: int | None
    created_at: dt.datetime


class LineageOut(BaseModel):
    parents: list[LinkOut] = Field(description="What the image's versions were made from.")
    children: list[LinkOut] = Field(description="What was made from the image's versions.")
    metadata: dict[str, Any] | None = None
    tags: Tags | None = None


class ImageFilterIn(Input):
    """Images by place and tag: a series (with `include_subseries`, everything under it too),
    a tag of the images' own, or both."""

    series_id: uuid.UUID | None = None
    include_subseries: bool = False
    tag: Tag | None = None


class SelectionIn(Input):
    """Either `ids` (at most 10,000) or a `filter`."""

    ids: list[uuid.UUID] | None = None
    filter: ImageFilterIn | None = None

    @model_validator(mode="after")
    def _one_way(self) -> Self:
        if (self.ids is None) == (self.filter is None):
            raise ValueError("send either `ids` or a `filter`, not both or neither")
        return self

    def selection(self) -> Selection:
        if self.filter is not None:
            return Selection.of_filter(
                series_id=self.filter.series_id,
                include_subseries=self.filter.include_subseries,
                tag=self.filter.tag,
            )
        return Selection.of_ids(self.ids or [])


class ImageBatchIn(SelectionIn):
    """One change to every selected image: `move` (to `series_id`), `tag` or `untag` (`tags`),
    or `delete`. All or nothing: when any image cannot be changed, none is."""

    action: Literal["move", "tag", "untag", "delete"]
    series_id: uuid.UUID | None = Field(None, description="Where `move` puts the images.")
    tags: Tags | None = Field(None, description="What `tag` adds or `untag` removes.")


class ImageBatchOut(BaseModel):
    action: str
    count: int = Field(description="Images the batch changed.")
    ids: list[uuid.UUID] = Field(description="The images the batch changed.")
    matched: int = Field(description="Images selected (some may already have been as asked).")
    series_id: uuid.UUID | None = None
    tags: list[str] | None = None


# --- jobs and runs ------------------------------------------------------------------------------

BasePrompt = Annotated[str, StringConstraints(max_length=20_000)]
JobTitle = Annotated[str, StringConstraints(strip_whitespace=True, max_length=200)]


StyleSeriesId = Annotated[
    uuid.UUID | None,
    Field(
        description="The style source: a series (any, the job's own too) whose profile is "
        "`style.profile` in the templates and whose images go to every image step as style "
        "references. null: none."
    ),
]
StyleImageIds = Annotated[
    list[uuid.UUID],
    Field(
        max_length=MAX_REFERENCE_IMAGES,
        description="Images of the style series to send as style references; empty: a sample "
        "of `style_image_count`.",
    ),
]
StyleImageCount = Annotated[
    int,
    Field(
        ge=0,
        le=MAX_REFERENCE_IMAGES,
        description="How many images of the style series to sample when none are picked. With "
        "a step's own references, at most 14 per image step.",
    ),
]


class JobCreate(Input):
    title: JobTitle = ""
    base_prompt: BasePrompt
    style_series_id: StyleSeriesId = None
    style_image_ids: StyleImageIds | NotNull = None
    style_image_count: StyleImageCount | NotNull = None


class JobUpdate(Input):
    """Only the fields sent change; `style_series_id: null` removes the style source."""

    title: JobTitle | NotNull = None
    base_prompt: BasePrompt | NotNull = None
    style_series_id: StyleSeriesId = None
    style_image_ids: StyleImageIds | NotNull = None
    style_image_count: StyleImageCount | NotNull = None


def _inline_refs(schema: Any, defs: dict[str, Any]) -> Any:
    if isinstance(schema, dict):
        if "$ref" in schema:
            return _inline_refs(defs[schema["$ref"].rsplit("/", 1)[-1]], defs)
        return {key: _inline_refs(value, defs) for key, value in schema.items() if key != "$defs"}
    if isinstance(schema, list):
        return [_inline_refs(item, defs) for item in schema]
    return schema


def _step_json_schema(*, partial: bool) -> dict[str, Any]:
    """The documented shape of a step, from the model the service checks steps with (inlined:
    a body's schema cannot bring definitions of its own). Steps arrive as plain objects so that
    the service can name every problem of a list at once, step by step."""
    schema = StepSpec.model_json_schema()
    inlined: dict[str, Any] = _inline_refs(schema, schema.get("$defs", {}))
    if partial:
        inlined.pop("required", None)
        inlined["title"] = "StepChange"
    return inlined


StepIn = Annotated[dict[str, Any], WithJsonSchema(_step_json_schema(partial=False))]


class StepsReplace(Input):
    """The whole ordered list. Each step: `{"kind", "prompt", "model", "config"}`."""

    steps: list[StepIn] = Field(max_length=50)


def _storable_step(value: dict[str, Any]) -> dict[str, Any]:
    if reason := _unstorable(value, "step"):
        raise ValueError(reason)
    return value


# The fields of one step to change (`PATCH /api/jobs/{id}/steps/{position}`); the step rules
# are checked by the service, what no database can store is refused here, as in `Input`.
StepChange = Annotated[
    dict[str, Any],
    AfterValidator(_storable_step),
    WithJsonSchema(_step_json_schema(partial=True)),
]


class StepOut(BaseModel):
    id: uuid.UUID
    position: int
    kind: str
    prompt: str
    model: str | None
    config: dict[str, Any]
    when: str | None = Field(None, description="The condition; when false the step is skipped.")
    for_each: str | None = Field(None, description="The list the step runs once per item of.")


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
    style_series_id: uuid.UUID | None = Field(description="The style source, if any.")
    style_image_ids: list[uuid.UUID] = Field(description="Style images picked; empty: a sample.")
    style_image_count: int = Field(description="Style images sampled when none are picked.")
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


class IterationOut(BaseModel):
    """One turn of a step's `for_each` loop."""

    index: int
    item: Any = Field(description="The item of the list this turn was for (`item`).")
    status: str
    prompt: str | None = Field(None, description="The prompt as sent for this item.")
    text: str | None
    json_: Any = Field(None, alias="json", description="The structured answer, if any.")
    image_ids: list[str]
    error: str | None

    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True)


class StepRunOut(BaseModel):
    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True)

    position: int
    kind: str
    prompt: str
    model: str | None
    config: dict[str, Any]
    when: str | None = None
    for_each: str | None = None
    status: str
    skip_reason: str | None = Field(None, description="Why the step was skipped, if it was.")
    rendered_prompt: str | None
    text: str | None
    json_: Any = Field(
        None, alias="json", description="The structured answer (a step with `config.schema`)."
    )
    iterations: list[IterationOut] = Field(
        default=[], description="A `for_each` step's turns, one per item, in order."
    )
    image_ids: list[str]
    error: str | None
    attempts: int
    attempt_log: list[AttemptOut]
    usage: dict[str, Any]
    started_at: dt.datetime | None
    finished_at: dt.datetime | None


class RunStyleOut(BaseModel):
    series_id: uuid.UUID
    title: str
    tags: list[str]
    profile: str
    image_ids: list[uuid.UUID] = Field(description="The style images sent with image steps.")


class RunOut(BaseModel):
    id: uuid.UUID
    job_id: uuid.UUID
    batch_id: uuid.UUID | None = Field(None, description="The batch the run is part of, if any.")
    input_image_id: uuid.UUID | None = Field(
        None, description="In a batch: the image the run is for (`input` in its templates)."
    )
    style: RunStyleOut | None = Field(
        None, description="The style source as the run used it; null when it had none."
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
    with those of its sub-series when `include_subseries`; only those tagged `tag`, when
    given)."""

    image_ids: Annotated[list[uuid.UUID], Field(max_length=1000)] | None = None
    series_id: uuid.UUID | None = None
    include_subseries: bool = False
    tag: Tag | None = Field(None, description="With `series_id`: only its images with this tag.")


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


# --- restyles -----------------------------------------------------------------------------------


class RestyleCreate(Input):
    """Re-render images in the style of another series: `image_ids` (any images, at most
    1,000), or the images of `series_id` (with its sub-series' when `include_subseries`; only
    those tagged `tag`, when given)."""

    image_ids: Annotated[list[uuid.UUID], Field(max_length=MAX_BATCH_IMAGES)] | None = None
    series_id: uuid.UUID | None = Field(None, description="Restyle every image of this series.")
    include_subseries: bool = False
    tag: Tag | None = Field(None, description="With `series_id`: only its images with this tag.")
    style_series_id: uuid.UUID = Field(description="The series whose style the images take.")
    target_series_id: uuid.UUID | None = Field(
        None, description="The series the restyled images go to."
    )
    target_title: Title | None = Field(
        None, description="Instead of `target_series_id`: a new top-level series for them."
    )
    prompt: Annotated[str, StringConstraints(max_length=2_000)] = Field(
        "", description="Words added to the prompt of every image (optional)."
    )
    style_image_ids: StyleImageIds = []
    style_image_count: StyleImageCount = 3
