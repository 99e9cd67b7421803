"""Branching steps, context inherited down the series tree, and style between series.

- `cog_job_steps` gains `condition` (the step's `when` expression) and `for_each` (the list
  an earlier structured output gives, one iteration per item);
- `cog_step_runs` gains the step's structured answer (`json_output`), why it was skipped
  (`skip_reason`) and its `iterations` (item, images, text and status of each);
- `cog_series` gains `inherit_context` and a `style_profile` (with when it was last written);
- `cog_jobs` gains a style source: another series, the images of it picked as references (none
  picked: a sample of `style_image_count`);
- `cog_job_runs` keeps the `style` it ran with (series, profile, images), as it keeps its steps;
- lineage learns the role `style`: a style reference an image was made with.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD_ROLES = "role IN ('reference', 'input', 'edit')"
NEW_ROLES = "role IN ('reference', 'input', 'edit', 'style')"


def _json() -> sa.types.TypeEngine[Any]:
    return sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    postgres = op.get_context().dialect.name == "postgresql"
    empty_list = sa.text("'[]'::jsonb" if postgres else "'[]'")

    op.add_column("cog_job_steps", sa.Column("condition", sa.Text(), nullable=True))
    op.add_column("cog_job_steps", sa.Column("for_each", sa.Text(), nullable=True))

    op.add_column("cog_step_runs", sa.Column("json_output", _json(), nullable=True))
    op.add_column("cog_step_runs", sa.Column("skip_reason", sa.Text(), nullable=True))
    op.add_column(
        "cog_step_runs",
        sa.Column("iterations", _json(), server_default=empty_list, nullable=False),
    )

    op.add_column(
        "cog_series",
        sa.Column("inherit_context", sa.Boolean(), server_default=sa.true(), nullable=False),
    )
    op.add_column(
        "cog_series", sa.Column("style_profile", sa.Text(), server_default="", nullable=False)
    )
    op.add_column(
        "cog_series",
        sa.Column("style_profile_updated_at", sa.DateTime(timezone=True), nullable=True),
    )

    if postgres:
        op.add_column("cog_jobs", sa.Column("style_series_id", sa.Uuid(), nullable=True))
        op.create_foreign_key(
            op.f("fk_cog_jobs_style_series_id_cog_series"),
            "cog_jobs",
            "cog_series",
            ["style_series_id"],
            ["id"],
            ondelete="SET NULL",
        )
    else:
        # In place, as 0002 does: a copy-and-rename of cog_jobs would cascade to its steps.
        op.execute(
            "ALTER TABLE cog_jobs ADD COLUMN style_series_id CHAR(32) "
            "REFERENCES cog_series (id) ON DELETE SET NULL"
        )
    op.add_column(
        "cog_jobs",
        sa.Column("style_image_ids", _json(), server_default=empty_list, nullable=False),
    )
    op.add_column(
        "cog_jobs",
        sa.Column("style_image_count", sa.Integer(), server_default="3", nullable=False),
    )
    op.create_index("ix_cog_jobs_style_series_id", "cog_jobs", ["style_series_id"], unique=False)

    op.add_column("cog_job_runs", sa.Column("style", _json(), nullable=True))

    # Nothing references cog_image_parents, so SQLite may rebuild it to change the check.
    with op.batch_alter_table("cog_image_parents") as batch:
        batch.drop_constraint(op.f("ck_cog_image_parents_role"), type_="check")
        batch.create_check_constraint(op.f("ck_cog_image_parents_role"), NEW_ROLES)


def downgrade() -> None:
    if op.get_context().dialect.name != "postgresql":
        raise NotImplementedError(
            "Going back from 0003 on SQLite would rebuild cog_jobs; restore a backup of the "
            "database file instead."
        )
    op.execute("DELETE FROM cog_image_parents WHERE role = 'style'")
    op.drop_constraint(op.f("ck_cog_image_parents_role"), "cog_image_parents", type_="check")
    op.create_check_constraint(op.f("ck_cog_image_parents_role"), "cog_image_parents", OLD_ROLES)
    op.drop_column("cog_job_runs", "style")
    op.drop_index("ix_cog_jobs_style_series_id", table_name="cog_jobs")
    op.drop_constraint(
        op.f("fk_cog_jobs_style_series_id_cog_series"), "cog_jobs", type_="foreignkey"
    )
    for column in ("style_image_count", "style_image_ids", "style_series_id"):
        op.drop_column("cog_jobs", column)
    for column in ("style_profile_updated_at", "style_profile", "inherit_context"):
        op.drop_column("cog_series", column)
    for column in ("iterations", "skip_reason", "json_output"):
        op.drop_column("cog_step_runs", column)
    for column in ("for_each", "condition"):
        op.drop_column("cog_job_steps", column)
