"""Image tags and versions, lineage, batches of runs, and full-text search of images.

- `cog_images` gains its own `tags` and the number of its current `version`;
- `cog_image_versions` keeps every state of an image's file (existing images get version 1,
  with the image's own id, storage path and provenance);
- `cog_image_parents` records which image versions a version was made from;
- `cog_batches` groups the runs of a job made once per image, and runs say their batch and
  input image;
- search: on PostgreSQL a GIN index over the `simple` text-search vector of prompt and file
  name, and GIN on the image tags; on SQLite an FTS5 index kept by triggers.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

NEW_TABLES = ("cog_image_versions", "cog_image_parents", "cog_batches")

# The same document the queries search (cog.db.search); frozen here as a migration must be.
PG_SEARCH_DOCUMENT = (
    "to_tsvector('simple'::regconfig, "
    "coalesce(prompt, '') || ' ' || coalesce(original_filename, ''))"
)

SQLITE_FTS = [
    # External content: the words live in cog_images; the index holds only what finds them.
    "CREATE VIRTUAL TABLE cog_images_fts USING fts5("
    "prompt, original_filename, tags, content='cog_images', content_rowid='rowid', "
    "tokenize='unicode61 remove_diacritics 2')",
    "CREATE TRIGGER cog_images_fts_insert AFTER INSERT ON cog_images BEGIN "
    "INSERT INTO cog_images_fts(rowid, prompt, original_filename, tags) "
    "VALUES (new.rowid, new.prompt, new.original_filename, new.tags); END",
    "CREATE TRIGGER cog_images_fts_delete AFTER DELETE ON cog_images BEGIN "
    "INSERT INTO cog_images_fts(cog_images_fts, rowid, prompt, original_filename, tags) "
    "VALUES ('delete', old.rowid, old.prompt, old.original_filename, old.tags); END",
    "CREATE TRIGGER cog_images_fts_update AFTER UPDATE OF prompt, original_filename, tags "
    "ON cog_images BEGIN "
    "INSERT INTO cog_images_fts(cog_images_fts, rowid, prompt, original_filename, tags) "
    "VALUES ('delete', old.rowid, old.prompt, old.original_filename, old.tags); "
    "INSERT INTO cog_images_fts(rowid, prompt, original_filename, tags) "
    "VALUES (new.rowid, new.prompt, new.original_filename, new.tags); END",
    "INSERT INTO cog_images_fts(cog_images_fts) VALUES ('rebuild')",
]


def _tag_list() -> sa.types.TypeEngine[Any]:
    return sa.JSON().with_variant(postgresql.ARRAY(sa.Text()), "postgresql")


def _json_doc() -> sa.types.TypeEngine[Any]:
    return sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def _provenance_fks(table: str) -> list[sa.ForeignKeyConstraint]:
    return [
        sa.ForeignKeyConstraint(
            ["job_id"],
            ["cog_jobs.id"],
            name=op.f(f"fk_{table}_job_id_cog_jobs"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["run_id"],
            ["cog_job_runs.id"],
            name=op.f(f"fk_{table}_run_id_cog_job_runs"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["step_id"],
            ["cog_step_runs.id"],
            name=op.f(f"fk_{table}_step_id_cog_step_runs"),
            ondelete="SET NULL",
        ),
    ]


def upgrade() -> None:
    postgres = op.get_context().dialect.name == "postgresql"

    # --- image tags and current version -------------------------------------------------------
    op.add_column(
        "cog_images",
        sa.Column(
            "tags",
            _tag_list(),
            server_default=sa.text("'{}'::text[]" if postgres else "'[]'"),
            nullable=False,
        ),
    )
    op.add_column(
        "cog_images", sa.Column("version", sa.Integer(), server_default="1", nullable=False)
    )
    op.create_index("ix_cog_images_model", "cog_images", ["model"], unique=False)
    op.create_index("ix_cog_images_created_at_id", "cog_images", ["created_at", "id"], unique=False)

    # --- versions -----------------------------------------------------------------------------
    op.create_table(
        "cog_image_versions",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("image_id", sa.Uuid(), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
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
        sa.Column("metadata", _json_doc(), nullable=False),
        sa.Column("restored_from_id", sa.Uuid(), nullable=True),
        sa.Column("job_id", sa.Uuid(), nullable=True),
        sa.Column("run_id", sa.Uuid(), nullable=True),
        sa.Column("step_id", sa.Uuid(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "source IN ('upload', 'generated', 'edit', 'restore')",
            name=op.f("ck_cog_image_versions_source"),
        ),
        sa.CheckConstraint("number > 0", name=op.f("ck_cog_image_versions_number_positive")),
        sa.ForeignKeyConstraint(
            ["image_id"],
            ["cog_images.id"],
            name=op.f("fk_cog_image_versions_image_id_cog_images"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["restored_from_id"],
            ["cog_image_versions.id"],
            name=op.f("fk_cog_image_versions_restored_from_id_cog_image_versions"),
            ondelete="SET NULL",
        ),
        *_provenance_fks("cog_image_versions"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_cog_image_versions")),
        sa.UniqueConstraint(
            "image_id", "number", name=op.f("uq_cog_image_versions_image_id_number")
        ),
        sa.UniqueConstraint("storage_path", name=op.f("uq_cog_image_versions_storage_path")),
    )
    # Every image so far is its own version 1.
    op.execute(
        "INSERT INTO cog_image_versions (id, image_id, number, source, storage_path, "
        "original_filename, mime_type, width, height, size_bytes, sha256, prompt, model, "
        "provider, metadata, job_id, run_id, step_id, created_at) "
        "SELECT id, id, 1, source, storage_path, original_filename, mime_type, width, height, "
        "size_bytes, sha256, prompt, model, provider, metadata, job_id, run_id, step_id, "
        "created_at FROM cog_images"
    )

    # --- lineage ------------------------------------------------------------------------------
    op.create_table(
        "cog_image_parents",
        sa.Column("child_version_id", sa.Uuid(), nullable=False),
        sa.Column("parent_version_id", sa.Uuid(), nullable=False),
        sa.Column("child_image_id", sa.Uuid(), nullable=False),
        sa.Column("parent_image_id", sa.Uuid(), nullable=False),
        sa.Column("role", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "role IN ('reference', 'input', 'edit')", name=op.f("ck_cog_image_parents_role")
        ),
        sa.ForeignKeyConstraint(
            ["child_version_id"],
            ["cog_image_versions.id"],
            name=op.f("fk_cog_image_parents_child_version_id_cog_image_versions"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["parent_version_id"],
            ["cog_image_versions.id"],
            name=op.f("fk_cog_image_parents_parent_version_id_cog_image_versions"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["child_image_id"],
            ["cog_images.id"],
            name=op.f("fk_cog_image_parents_child_image_id_cog_images"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["parent_image_id"],
            ["cog_images.id"],
            name=op.f("fk_cog_image_parents_parent_image_id_cog_images"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "child_version_id", "parent_version_id", name=op.f("pk_cog_image_parents")
        ),
    )
    op.create_index(
        "ix_cog_image_parents_child_image_id", "cog_image_parents", ["child_image_id"], unique=False
    )
    op.create_index(
        "ix_cog_image_parents_parent_image_id",
        "cog_image_parents",
        ["parent_image_id"],
        unique=False,
    )

    # --- batches ------------------------------------------------------------------------------
    op.create_table(
        "cog_batches",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("job_id", sa.Uuid(), nullable=False),
        sa.Column("status", sa.Text(), server_default="running", nullable=False),
        sa.Column("total", sa.Integer(), nullable=False),
        sa.Column("cancel_requested", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "status IN ('running', 'succeeded', 'failed', 'cancelled')",
            name=op.f("ck_cog_batches_status"),
        ),
        sa.ForeignKeyConstraint(
            ["job_id"],
            ["cog_jobs.id"],
            name=op.f("fk_cog_batches_job_id_cog_jobs"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_cog_batches")),
    )
    op.create_index(
        "ix_cog_batches_job_id_created_at", "cog_batches", ["job_id", "created_at"], unique=False
    )
    if postgres:
        op.add_column("cog_job_runs", sa.Column("batch_id", sa.Uuid(), nullable=True))
        op.add_column("cog_job_runs", sa.Column("input_image_id", sa.Uuid(), nullable=True))
        op.create_foreign_key(
            op.f("fk_cog_job_runs_batch_id_cog_batches"),
            "cog_job_runs",
            "cog_batches",
            ["batch_id"],
            ["id"],
            ondelete="SET NULL",
        )
        op.create_foreign_key(
            op.f("fk_cog_job_runs_input_image_id_cog_images"),
            "cog_job_runs",
            "cog_images",
            ["input_image_id"],
            ["id"],
            ondelete="SET NULL",
        )
    else:
        # Not a batch (copy, drop, rename) migration: dropping cog_job_runs with foreign keys
        # on would cascade to every step run. SQLite adds a referencing column in place.
        op.execute(
            "ALTER TABLE cog_job_runs ADD COLUMN batch_id CHAR(32) "
            "REFERENCES cog_batches (id) ON DELETE SET NULL"
        )
        op.execute(
            "ALTER TABLE cog_job_runs ADD COLUMN input_image_id CHAR(32) "
            "REFERENCES cog_images (id) ON DELETE SET NULL"
        )
    op.create_index("ix_cog_job_runs_batch_id", "cog_job_runs", ["batch_id"], unique=False)

    # --- search -------------------------------------------------------------------------------
    if postgres:
        op.execute(
            f"CREATE INDEX ix_cog_images_search ON cog_images USING gin ({PG_SEARCH_DOCUMENT})"
        )
        op.create_index(
            "ix_cog_images_tags", "cog_images", ["tags"], unique=False, postgresql_using="gin"
        )
        for table in NEW_TABLES:
            op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
    else:
        for statement in SQLITE_FTS:
            op.execute(statement)


def downgrade() -> None:
    if op.get_context().dialect.name != "postgresql":
        raise NotImplementedError(
            "Going back from 0002 on SQLite would rebuild cog_job_runs; restore a backup of "
            "the database file instead."
        )
    op.drop_index("ix_cog_images_tags", table_name="cog_images")
    op.execute("DROP INDEX ix_cog_images_search")
    op.drop_index("ix_cog_job_runs_batch_id", table_name="cog_job_runs")
    op.drop_constraint(
        op.f("fk_cog_job_runs_input_image_id_cog_images"), "cog_job_runs", type_="foreignkey"
    )
    op.drop_constraint(
        op.f("fk_cog_job_runs_batch_id_cog_batches"), "cog_job_runs", type_="foreignkey"
    )
    op.drop_column("cog_job_runs", "input_image_id")
    op.drop_column("cog_job_runs", "batch_id")
    op.drop_index("ix_cog_batches_job_id_created_at", table_name="cog_batches")
    op.drop_table("cog_batches")
    op.drop_index("ix_cog_image_parents_parent_image_id", table_name="cog_image_parents")
    op.drop_index("ix_cog_image_parents_child_image_id", table_name="cog_image_parents")
    op.drop_table("cog_image_parents")
    op.drop_table("cog_image_versions")
    op.drop_index("ix_cog_images_created_at_id", table_name="cog_images")
    op.drop_index("ix_cog_images_model", table_name="cog_images")
    op.drop_column("cog_images", "version")
    op.drop_column("cog_images", "tags")
