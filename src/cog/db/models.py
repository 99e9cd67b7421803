"""The `cog_*` tables. PostgreSQL is the reference dialect; SQLite gets equivalent types."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from cog.db.base import Base, JsonDoc, TagList, UTCDateTime, utcnow


def _enum_check(column: str, values: list[str]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class Series(Base):
    __tablename__ = "cog_series"
    __table_args__ = (
        sa.CheckConstraint("parent_id IS NULL OR parent_id <> id", name="not_own_parent"),
        sa.CheckConstraint("length(title) > 0", name="title_not_empty"),
        sa.Index("ix_cog_series_parent_id_created_at", "parent_id", "created_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, primary_key=True, default=uuid.uuid4)
    parent_id: Mapped[uuid.UUID | None] = mapped_column(sa.ForeignKey("cog_series.id"))
    title: Mapped[str] = mapped_column(sa.Text)
    description: Mapped[str] = mapped_column(sa.Text, server_default="")
    tags: Mapped[list[str]] = mapped_column(TagList, default=list)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    # Whether templates and drafting see the ancestors' descriptions and tags as context.
    inherit_context: Mapped[bool] = mapped_column(sa.Boolean, server_default=sa.true())
    # A concise description of the series' look, drafted by the model or written by hand.
    style_profile: Mapped[str] = mapped_column(sa.Text, server_default="")
    style_profile_updated_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)


class Image(Base):
    __tablename__ = "cog_images"
    __table_args__ = (
        sa.CheckConstraint(_enum_check("source", ["upload", "generated"]), name="source"),
        sa.CheckConstraint("width > 0 AND height > 0 AND size_bytes >= 0", name="dimensions"),
        # Newest-first keyset pagination within a series walks this index.
        sa.Index("ix_cog_images_series_id_created_at_id", "series_id", "created_at", "id"),
        sa.Index("ix_cog_images_sha256", "sha256"),
        sa.Index("ix_cog_images_job_id", "job_id"),
        sa.Index("ix_cog_images_run_id", "run_id"),
        sa.Index("ix_cog_images_model", "model"),
        sa.Index("ix_cog_images_created_at_id", "created_at", "id"),
    )

    id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, primary_key=True, default=uuid.uuid4)
    series_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("cog_series.id"))
    source: Mapped[str] = mapped_column(sa.Text)
    storage_path: Mapped[str] = mapped_column(sa.Text, unique=True)
    original_filename: Mapped[str | None] = mapped_column(sa.Text)
    mime_type: Mapped[str] = mapped_column(sa.Text)
    width: Mapped[int] = mapped_column(sa.Integer)
    height: Mapped[int] = mapped_column(sa.Integer)
    size_bytes: Mapped[int] = mapped_column(sa.BigInteger)
    sha256: Mapped[str] = mapped_column(sa.String(64))
    prompt: Mapped[str | None] = mapped_column(sa.Text)
    model: Mapped[str | None] = mapped_column(sa.Text)
    provider: Mapped[str | None] = mapped_column(sa.Text)
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", JsonDoc, default=dict)
    job_id: Mapped[uuid.UUID | None] = mapped_column(
        sa.ForeignKey("cog_jobs.id", ondelete="SET NULL")
    )
    run_id: Mapped[uuid.UUID | None] = mapped_column(
        sa.ForeignKey("cog_job_runs.id", ondelete="SET NULL")
    )
    step_id: Mapped[uuid.UUID | None] = mapped_column(
        sa.ForeignKey("cog_step_runs.id", ondelete="SET NULL")
    )
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    # The image's own tags, beside its series' tags.
    tags: Mapped[list[str]] = mapped_column(TagList, default=list)
    # The number of the current version. The file columns above (storage_path .. provider)
    # always describe that version, so galleries read one row per image.
    version: Mapped[int] = mapped_column(sa.Integer, default=1, server_default="1")


class ImageVersion(Base):
    """One state of an image's file. Files are never overwritten: an edit, a replacement upload
    or a restore adds a version. Version 1 has the image's own id (and so its thumbnail key)."""

    __tablename__ = "cog_image_versions"
    __table_args__ = (
        sa.UniqueConstraint("image_id", "number"),
        sa.CheckConstraint(
            _enum_check("source", ["upload", "generated", "edit", "restore"]), name="source"
        ),
        sa.CheckConstraint("number > 0", name="number_positive"),
    )

    id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, primary_key=True, default=uuid.uuid4)
    image_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("cog_images.id", ondelete="CASCADE"))
    number: Mapped[int] = mapped_column(sa.Integer)
    source: Mapped[str] = mapped_column(sa.Text)
    storage_path: Mapped[str] = mapped_column(sa.Text, unique=True)
    original_filename: Mapped[str | None] = mapped_column(sa.Text)
    mime_type: Mapped[str] = mapped_column(sa.Text)
    width: Mapped[int] = mapped_column(sa.Integer)
    height: Mapped[int] = mapped_column(sa.Integer)
    size_bytes: Mapped[int] = mapped_column(sa.BigInteger)
    sha256: Mapped[str] = mapped_column(sa.String(64))
    prompt: Mapped[str | None] = mapped_column(sa.Text)
    model: Mapped[str | None] = mapped_column(sa.Text)
    provider: Mapped[str | None] = mapped_column(sa.Text)
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", JsonDoc, default=dict)
    # A restore copies an earlier version forward and says which.
    restored_from_id: Mapped[uuid.UUID | None] = mapped_column(
        sa.ForeignKey("cog_image_versions.id", ondelete="SET NULL")
    )
    job_id: Mapped[uuid.UUID | None] = mapped_column(
        sa.ForeignKey("cog_jobs.id", ondelete="SET NULL")
    )
    run_id: Mapped[uuid.UUID | None] = mapped_column(
        sa.ForeignKey("cog_job_runs.id", ondelete="SET NULL")
    )
    step_id: Mapped[uuid.UUID | None] = mapped_column(
        sa.ForeignKey("cog_step_runs.id", ondelete="SET NULL")
    )
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class ImageParent(Base):
    """Lineage: the image versions a version was made from (reference images of a step, the
    input image of a batch run, the version an edit started from)."""

    __tablename__ = "cog_image_parents"
    __table_args__ = (
        sa.CheckConstraint(
            _enum_check("role", ["reference", "input", "edit", "style"]), name="role"
        ),
        sa.Index("ix_cog_image_parents_child_image_id", "child_image_id"),
        sa.Index("ix_cog_image_parents_parent_image_id", "parent_image_id"),
    )

    child_version_id: Mapped[uuid.UUID] = mapped_column(
        sa.ForeignKey("cog_image_versions.id", ondelete="CASCADE"), primary_key=True
    )
    parent_version_id: Mapped[uuid.UUID] = mapped_column(
        sa.ForeignKey("cog_image_versions.id", ondelete="CASCADE"), primary_key=True
    )
    child_image_id: Mapped[uuid.UUID] = mapped_column(
        sa.ForeignKey("cog_images.id", ondelete="CASCADE")
    )
    parent_image_id: Mapped[uuid.UUID] = mapped_column(
        sa.ForeignKey("cog_images.id", ondelete="CASCADE")
    )
    role: Mapped[str] = mapped_column(sa.Text)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)


class Batch(Base):
    """A job run once per image of a selection; each of those runs points here. Progress is
    counted from the runs themselves, so there is no counter to keep in step."""

    __tablename__ = "cog_batches"
    __table_args__ = (
        sa.CheckConstraint(
            _enum_check("status", ["running", "succeeded", "failed", "cancelled"]),
            name="status",
        ),
        sa.Index("ix_cog_batches_job_id_created_at", "job_id", "created_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, primary_key=True, default=uuid.uuid4)
    job_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("cog_jobs.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(sa.Text, server_default="running")
    total: Mapped[int] = mapped_column(sa.Integer)
    cancel_requested: Mapped[bool] = mapped_column(sa.Boolean, server_default=sa.false())
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)


class Job(Base):
    __tablename__ = "cog_jobs"
    __table_args__ = (
        sa.Index("ix_cog_jobs_series_id_created_at", "series_id", "created_at"),
        sa.Index("ix_cog_jobs_style_series_id", "style_series_id"),
    )

    id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, primary_key=True, default=uuid.uuid4)
    series_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("cog_series.id"))
    title: Mapped[str] = mapped_column(sa.Text)
    base_prompt: Mapped[str] = mapped_column(sa.Text)
    status: Mapped[str] = mapped_column(sa.Text, server_default="draft")
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    # Style source: another series whose profile and images the job's steps are given.
    style_series_id: Mapped[uuid.UUID | None] = mapped_column(
        sa.ForeignKey("cog_series.id", ondelete="SET NULL")
    )
    # The style series' images picked as references; empty: a sample of `style_image_count`.
    style_image_ids: Mapped[list[str]] = mapped_column(JsonDoc, default=list)
    style_image_count: Mapped[int] = mapped_column(sa.Integer, server_default="3")


class JobStep(Base):
    __tablename__ = "cog_job_steps"
    __table_args__ = (
        sa.UniqueConstraint("job_id", "position"),
        sa.CheckConstraint(_enum_check("kind", ["llm", "image"]), name="kind"),
        sa.CheckConstraint("position >= 0", name="position"),
    )

    id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, primary_key=True, default=uuid.uuid4)
    job_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("cog_jobs.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(sa.Integer)
    kind: Mapped[str] = mapped_column(sa.Text)
    prompt: Mapped[str] = mapped_column(sa.Text)
    model: Mapped[str | None] = mapped_column(sa.Text)
    config: Mapped[dict[str, Any]] = mapped_column(JsonDoc, default=dict)
    # The step's `when` expression: false, the step is skipped.
    condition: Mapped[str | None] = mapped_column(sa.Text)
    # An expression giving a list of an earlier structured output: one iteration per item.
    for_each: Mapped[str | None] = mapped_column(sa.Text)


class JobRun(Base):
    __tablename__ = "cog_job_runs"
    __table_args__ = (
        sa.CheckConstraint(
            _enum_check("status", ["queued", "running", "succeeded", "failed", "cancelled"]),
            name="status",
        ),
        sa.Index("ix_cog_job_runs_job_id_created_at", "job_id", "created_at"),
        sa.Index("ix_cog_job_runs_status", "status"),
        sa.Index("ix_cog_job_runs_batch_id", "batch_id"),
    )

    id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, primary_key=True, default=uuid.uuid4)
    job_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("cog_jobs.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(sa.Text, server_default="queued")
    # The steps as they were when the run was triggered; later edits of the job do not touch it.
    steps_snapshot: Mapped[list[dict[str, Any]]] = mapped_column(JsonDoc, default=list)
    base_prompt: Mapped[str] = mapped_column(sa.Text, server_default="")
    error: Mapped[str | None] = mapped_column(sa.Text)
    cancel_requested: Mapped[bool] = mapped_column(sa.Boolean, server_default=sa.false())
    # Which executor holds the run and when it last said so; recovery looks for stale claims.
    claimed_by: Mapped[str | None] = mapped_column(sa.Text)
    heartbeat_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    attempts: Mapped[int] = mapped_column(sa.Integer, server_default="0")
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    # A run of a batch: its batch, and the image it was run for (the `input` variable).
    batch_id: Mapped[uuid.UUID | None] = mapped_column(
        sa.ForeignKey("cog_batches.id", ondelete="SET NULL")
    )
    input_image_id: Mapped[uuid.UUID | None] = mapped_column(
        sa.ForeignKey("cog_images.id", ondelete="SET NULL")
    )
    # The style source as the run used it (series, title, tags, profile, image ids).
    style: Mapped[dict[str, Any] | None] = mapped_column(JsonDoc)


class StepRun(Base):
    __tablename__ = "cog_step_runs"
    __table_args__ = (
        sa.UniqueConstraint("run_id", "position"),
        sa.CheckConstraint(
            _enum_check(
                "status", ["pending", "running", "succeeded", "failed", "cancelled", "skipped"]
            ),
            name="status",
        ),
    )

    id: Mapped[uuid.UUID] = mapped_column(sa.Uuid, primary_key=True, default=uuid.uuid4)
    run_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("cog_job_runs.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(sa.Integer)
    kind: Mapped[str] = mapped_column(sa.Text)
    model: Mapped[str | None] = mapped_column(sa.Text)
    status: Mapped[str] = mapped_column(sa.Text, server_default="pending")
    rendered_prompt: Mapped[str | None] = mapped_column(sa.Text)
    text: Mapped[str | None] = mapped_column(sa.Text)
    image_ids: Mapped[list[str]] = mapped_column(JsonDoc, default=list)
    error: Mapped[str | None] = mapped_column(sa.Text)
    attempts: Mapped[int] = mapped_column(sa.Integer, server_default="0")
    attempt_log: Mapped[list[dict[str, Any]]] = mapped_column(JsonDoc, default=list)
    usage: Mapped[dict[str, Any]] = mapped_column(JsonDoc, default=dict)
    # An llm step's structured answer, validated against the schema its config declares.
    json_output: Mapped[Any] = mapped_column(JsonDoc)
    # Why a step did not run: its condition was false, or a step it needs was skipped.
    skip_reason: Mapped[str | None] = mapped_column(sa.Text)
    # A `for_each` step's iterations, in order: item, status, text, image ids, error of each.
    iterations: Mapped[list[dict[str, Any]]] = mapped_column(JsonDoc, default=list)
    started_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime)
