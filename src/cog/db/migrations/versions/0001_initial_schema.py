"""Initial schema: series, images, jobs, steps and runs.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


TABLES = ("cog_series", "cog_images", "cog_jobs", "cog_job_steps", "cog_job_runs", "cog_step_runs")


def upgrade() -> None:
    op.create_table(
        "cog_series",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("parent_id", sa.Uuid(), nullable=True),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("description", sa.Text(), server_default="", nullable=False),
        sa.Column(
            "tags",
            sa.JSON().with_variant(postgresql.ARRAY(sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("length(title) > 0", name=op.f("ck_cog_series_title_not_empty")),
        sa.CheckConstraint(
            "parent_id IS NULL OR parent_id <> id", name=op.f("ck_cog_series_not_own_parent")
        ),
        sa.ForeignKeyConstraint(
            ["parent_id"], ["cog_series.id"], name=op.f("fk_cog_series_parent_id_cog_series")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_cog_series")),
    )
    op.create_index(
        "ix_cog_series_parent_id_created_at",
        "cog_series",
        ["parent_id", "created_at"],
        unique=False,
    )
    op.create_table(
        "cog_jobs",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("series_id", sa.Uuid(), nullable=False),
        sa.Column("title", sa.Text(), nullable=False),
        sa.Column("base_prompt", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), server_default="draft", nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["series_id"], ["cog_series.id"], name=op.f("fk_cog_jobs_series_id_cog_series")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_cog_jobs")),
    )
    op.create_index(
        "ix_cog_jobs_series_id_created_at", "cog_jobs", ["series_id", "created_at"], unique=False
    )
    op.create_table(
        "cog_job_runs",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("job_id", sa.Uuid(), nullable=False),
        sa.Column("status", sa.Text(), server_default="queued", nullable=False),
        sa.Column(
            "steps_snapshot",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("base_prompt", sa.Text(), server_default="", nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column(
            "cancel_requested", sa.Boolean(), server_default=sa.text("false"), nullable=False
        ),
        sa.Column("claimed_by", sa.Text(), nullable=True),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')",
            name=op.f("ck_cog_job_runs_status"),
        ),
        sa.ForeignKeyConstraint(
            ["job_id"],
            ["cog_jobs.id"],
            name=op.f("fk_cog_job_runs_job_id_cog_jobs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_cog_job_runs")),
    )
    op.create_index(
        "ix_cog_job_runs_job_id_created_at", "cog_job_runs", ["job_id", "created_at"], unique=False
    )
    op.create_index("ix_cog_job_runs_status", "cog_job_runs", ["status"], unique=False)
    op.create_table(
        "cog_job_steps",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("job_id", sa.Uuid(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("prompt", sa.Text(), nullable=False),
        sa.Column("model", sa.Text(), nullable=True),
        sa.Column(
            "config",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.CheckConstraint("kind IN ('llm', 'image')", name=op.f("ck_cog_job_steps_kind")),
        sa.CheckConstraint("position >= 0", name=op.f("ck_cog_job_steps_position")),
        sa.ForeignKeyConstraint(
            ["job_id"],
            ["cog_jobs.id"],
            name=op.f("fk_cog_job_steps_job_id_cog_jobs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_cog_job_steps")),
        sa.UniqueConstraint("job_id", "position", name=op.f("uq_cog_job_steps_job_id_position")),
    )
    op.create_table(
        "cog_step_runs",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("run_id", sa.Uuid(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("model", sa.Text(), nullable=True),
        sa.Column("status", sa.Text(), server_default="pending", nullable=False),
        sa.Column("rendered_prompt", sa.Text(), nullable=True),
        sa.Column("text", sa.Text(), nullable=True),
        sa.Column(
            "image_ids",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column(
            "attempt_log",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "usage",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "status IN ('pending', 'running', 'succeeded', 'failed', 'cancelled', 'skipped')",
            name=op.f("ck_cog_step_runs_status"),
        ),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["cog_job_runs.id"],
            name=op.f("fk_cog_step_runs_run_id_cog_job_runs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_cog_step_runs")),
        sa.UniqueConstraint("run_id", "position", name=op.f("uq_cog_step_runs_run_id_position")),
    )
    op.create_table(
        "cog_images",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("series_id", sa.Uuid(), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("storage_path", sa.Text(), nullable=False),
        sa.Column("original_filename", sa.Text(), nullable=True),
        sa.Column("mime_type", sa.Text(), nullable=False),
        sa.Column("width", sa.Integer(), nullable=False),
        sa.Column("height", sa.Integer(), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("prompt", sa.Text(), nullable=True),
        sa.Column("model", sa.Text(), nullable=True),
        sa.Column("provider", sa.Text(), nullable=True),
        sa.Column(
            "metadata",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("job_id", sa.Uuid(), nullable=True),
        sa.Column("run_id", sa.Uuid(), nullable=True),
        sa.Column("step_id", sa.Uuid(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("source IN ('upload', 'generated')", name=op.f("ck_cog_images_source")),
        sa.CheckConstraint(
            "width > 0 AND height > 0 AND size_bytes >= 0", name=op.f("ck_cog_images_dimensions")
        ),
        sa.ForeignKeyConstraint(
            ["job_id"],
            ["cog_jobs.id"],
            name=op.f("fk_cog_images_job_id_cog_jobs"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["cog_job_runs.id"],
            name=op.f("fk_cog_images_run_id_cog_job_runs"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["series_id"], ["cog_series.id"], name=op.f("fk_cog_images_series_id_cog_series")
        ),
        sa.ForeignKeyConstraint(
            ["step_id"],
            ["cog_step_runs.id"],
            name=op.f("fk_cog_images_step_id_cog_step_runs"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_cog_images")),
        sa.UniqueConstraint("storage_path", name=op.f("uq_cog_images_storage_path")),
    )
    op.create_index("ix_cog_images_job_id", "cog_images", ["job_id"], unique=False)
    op.create_index("ix_cog_images_run_id", "cog_images", ["run_id"], unique=False)
    op.create_index(
        "ix_cog_images_series_id_created_at_id",
        "cog_images",
        ["series_id", "created_at", "id"],
        unique=False,
    )
    op.create_index("ix_cog_images_sha256", "cog_images", ["sha256"], unique=False)
    if op.get_context().dialect.name == "postgresql":
        # Tag filters use `tags @> ARRAY[...]`, which a GIN index answers.
        op.create_index(
            "ix_cog_series_tags", "cog_series", ["tags"], unique=False, postgresql_using="gin"
        )
        # Supabase exposes the public schema to its API keys; with RLS on and no policies they
        # reach nothing, while Cog, connecting as the owner, is unaffected.
        for table in (*TABLES, "cog_alembic_version"):
            op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")


def downgrade() -> None:
    if op.get_context().dialect.name == "postgresql":
        op.drop_index("ix_cog_series_tags", table_name="cog_series")
    op.drop_index("ix_cog_images_sha256", table_name="cog_images")
    op.drop_index("ix_cog_images_series_id_created_at_id", table_name="cog_images")
    op.drop_index("ix_cog_images_run_id", table_name="cog_images")
    op.drop_index("ix_cog_images_job_id", table_name="cog_images")
    op.drop_table("cog_images")
    op.drop_table("cog_step_runs")
    op.drop_table("cog_job_steps")
    op.drop_index("ix_cog_job_runs_status", table_name="cog_job_runs")
    op.drop_index("ix_cog_job_runs_job_id_created_at", table_name="cog_job_runs")
    op.drop_table("cog_job_runs")
    op.drop_index("ix_cog_jobs_series_id_created_at", table_name="cog_jobs")
    op.drop_table("cog_jobs")
    op.drop_index("ix_cog_series_parent_id_created_at", table_name="cog_series")
    op.drop_table("cog_series")
