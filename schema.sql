-- Cog's schema for PostgreSQL (Supabase included), as one migration.
-- Apply it to an empty database (Supabase: paste it into the SQL editor), or run
-- `cog db upgrade` instead; both give the same schema, and a test proves it.
-- Made by `cog db sql`; do not edit by hand.
BEGIN;

CREATE TABLE cog_alembic_version (
    version_num VARCHAR(32) NOT NULL, 
    CONSTRAINT cog_alembic_version_pkc PRIMARY KEY (version_num)
);

-- Running upgrade  -> 0001

CREATE TABLE cog_series (
    id UUID NOT NULL, 
    parent_id UUID, 
    title TEXT NOT NULL, 
    description TEXT DEFAULT '' NOT NULL, 
    tags TEXT[] NOT NULL, 
    created_at TIMESTAMP WITH TIME ZONE NOT NULL, 
    updated_at TIMESTAMP WITH TIME ZONE NOT NULL, 
    CONSTRAINT pk_cog_series PRIMARY KEY (id), 
    CONSTRAINT ck_cog_series_title_not_empty CHECK (length(title) > 0), 
    CONSTRAINT ck_cog_series_not_own_parent CHECK (parent_id IS NULL OR parent_id <> id), 
    CONSTRAINT fk_cog_series_parent_id_cog_series FOREIGN KEY(parent_id) REFERENCES cog_series (id)
);

CREATE INDEX ix_cog_series_parent_id_created_at ON cog_series (parent_id, created_at);

CREATE TABLE cog_jobs (
    id UUID NOT NULL, 
    series_id UUID NOT NULL, 
    title TEXT NOT NULL, 
    base_prompt TEXT NOT NULL, 
    status TEXT DEFAULT 'draft' NOT NULL, 
    created_at TIMESTAMP WITH TIME ZONE NOT NULL, 
    updated_at TIMESTAMP WITH TIME ZONE NOT NULL, 
    CONSTRAINT pk_cog_jobs PRIMARY KEY (id), 
    CONSTRAINT fk_cog_jobs_series_id_cog_series FOREIGN KEY(series_id) REFERENCES cog_series (id)
);

CREATE INDEX ix_cog_jobs_series_id_created_at ON cog_jobs (series_id, created_at);

CREATE TABLE cog_job_runs (
    id UUID NOT NULL, 
    job_id UUID NOT NULL, 
    status TEXT DEFAULT 'queued' NOT NULL, 
    steps_snapshot JSONB NOT NULL, 
    base_prompt TEXT DEFAULT '' NOT NULL, 
    error TEXT, 
    cancel_requested BOOLEAN DEFAULT false NOT NULL, 
    claimed_by TEXT, 
    heartbeat_at TIMESTAMP WITH TIME ZONE, 
    attempts INTEGER DEFAULT '0' NOT NULL, 
    created_at TIMESTAMP WITH TIME ZONE NOT NULL, 
    started_at TIMESTAMP WITH TIME ZONE, 
    finished_at TIMESTAMP WITH TIME ZONE, 
    CONSTRAINT pk_cog_job_runs PRIMARY KEY (id), 
    CONSTRAINT ck_cog_job_runs_status CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')), 
    CONSTRAINT fk_cog_job_runs_job_id_cog_jobs FOREIGN KEY(job_id) REFERENCES cog_jobs (id) ON DELETE CASCADE
);

CREATE INDEX ix_cog_job_runs_job_id_created_at ON cog_job_runs (job_id, created_at);

CREATE INDEX ix_cog_job_runs_status ON cog_job_runs (status);

CREATE TABLE cog_job_steps (
    id UUID NOT NULL, 
    job_id UUID NOT NULL, 
    position INTEGER NOT NULL, 
    kind TEXT NOT NULL, 
    prompt TEXT NOT NULL, 
    model TEXT, 
    config JSONB NOT NULL, 
    CONSTRAINT pk_cog_job_steps PRIMARY KEY (id), 
    CONSTRAINT ck_cog_job_steps_kind CHECK (kind IN ('llm', 'image')), 
    CONSTRAINT ck_cog_job_steps_position CHECK (position >= 0), 
    CONSTRAINT fk_cog_job_steps_job_id_cog_jobs FOREIGN KEY(job_id) REFERENCES cog_jobs (id) ON DELETE CASCADE, 
    CONSTRAINT uq_cog_job_steps_job_id_position UNIQUE (job_id, position)
);

CREATE TABLE cog_step_runs (
    id UUID NOT NULL, 
    run_id UUID NOT NULL, 
    position INTEGER NOT NULL, 
    kind TEXT NOT NULL, 
    model TEXT, 
    status TEXT DEFAULT 'pending' NOT NULL, 
    rendered_prompt TEXT, 
    text TEXT, 
    image_ids JSONB NOT NULL, 
    error TEXT, 
    attempts INTEGER DEFAULT '0' NOT NULL, 
    attempt_log JSONB NOT NULL, 
    usage JSONB NOT NULL, 
    started_at TIMESTAMP WITH TIME ZONE, 
    finished_at TIMESTAMP WITH TIME ZONE, 
    CONSTRAINT pk_cog_step_runs PRIMARY KEY (id), 
    CONSTRAINT ck_cog_step_runs_status CHECK (status IN ('pending', 'running', 'succeeded', 'failed', 'cancelled', 'skipped')), 
    CONSTRAINT fk_cog_step_runs_run_id_cog_job_runs FOREIGN KEY(run_id) REFERENCES cog_job_runs (id) ON DELETE CASCADE, 
    CONSTRAINT uq_cog_step_runs_run_id_position UNIQUE (run_id, position)
);

CREATE TABLE cog_images (
    id UUID NOT NULL, 
    series_id UUID NOT NULL, 
    source TEXT NOT NULL, 
    storage_path TEXT NOT NULL, 
    original_filename TEXT, 
    mime_type TEXT NOT NULL, 
    width INTEGER NOT NULL, 
    height INTEGER NOT NULL, 
    size_bytes BIGINT NOT NULL, 
    sha256 VARCHAR(64) NOT NULL, 
    prompt TEXT, 
    model TEXT, 
    provider TEXT, 
    metadata JSONB NOT NULL, 
    job_id UUID, 
    run_id UUID, 
    step_id UUID, 
    created_at TIMESTAMP WITH TIME ZONE NOT NULL, 
    CONSTRAINT pk_cog_images PRIMARY KEY (id), 
    CONSTRAINT ck_cog_images_source CHECK (source IN ('upload', 'generated')), 
    CONSTRAINT ck_cog_images_dimensions CHECK (width > 0 AND height > 0 AND size_bytes >= 0), 
    CONSTRAINT fk_cog_images_job_id_cog_jobs FOREIGN KEY(job_id) REFERENCES cog_jobs (id) ON DELETE SET NULL, 
    CONSTRAINT fk_cog_images_run_id_cog_job_runs FOREIGN KEY(run_id) REFERENCES cog_job_runs (id) ON DELETE SET NULL, 
    CONSTRAINT fk_cog_images_series_id_cog_series FOREIGN KEY(series_id) REFERENCES cog_series (id), 
    CONSTRAINT fk_cog_images_step_id_cog_step_runs FOREIGN KEY(step_id) REFERENCES cog_step_runs (id) ON DELETE SET NULL, 
    CONSTRAINT uq_cog_images_storage_path UNIQUE (storage_path)
);

CREATE INDEX ix_cog_images_job_id ON cog_images (job_id);

CREATE INDEX ix_cog_images_run_id ON cog_images (run_id);

CREATE INDEX ix_cog_images_series_id_created_at_id ON cog_images (series_id, created_at, id);

CREATE INDEX ix_cog_images_sha256 ON cog_images (sha256);

CREATE INDEX ix_cog_series_tags ON cog_series USING gin (tags);

ALTER TABLE cog_series ENABLE ROW LEVEL SECURITY;

ALTER TABLE cog_images ENABLE ROW LEVEL SECURITY;

ALTER TABLE cog_jobs ENABLE ROW LEVEL SECURITY;

ALTER TABLE cog_job_steps ENABLE ROW LEVEL SECURITY;

ALTER TABLE cog_job_runs ENABLE ROW LEVEL SECURITY;

ALTER TABLE cog_step_runs ENABLE ROW LEVEL SECURITY;

ALTER TABLE cog_alembic_version ENABLE ROW LEVEL SECURITY;

INSERT INTO cog_alembic_version (version_num) VALUES ('0001') RETURNING cog_alembic_version.version_num;

-- Running upgrade 0001 -> 0002

ALTER TABLE cog_images ADD COLUMN tags TEXT[] DEFAULT '{}'::text[] NOT NULL;

ALTER TABLE cog_images ADD COLUMN version INTEGER DEFAULT '1' NOT NULL;

CREATE INDEX ix_cog_images_model ON cog_images (model);

CREATE INDEX ix_cog_images_created_at_id ON cog_images (created_at, id);

CREATE TABLE cog_image_versions (
    id UUID NOT NULL, 
    image_id UUID NOT NULL, 
    number INTEGER NOT NULL, 
    source TEXT NOT NULL, 
    storage_path TEXT NOT NULL, 
    original_filename TEXT, 
    mime_type TEXT NOT NULL, 
    width INTEGER NOT NULL, 
    height INTEGER NOT NULL, 
    size_bytes BIGINT NOT NULL, 
    sha256 VARCHAR(64) NOT NULL, 
    prompt TEXT, 
    model TEXT, 
    provider TEXT, 
    metadata JSONB NOT NULL, 
    restored_from_id UUID, 
    job_id UUID, 
    run_id UUID, 
    step_id UUID, 
    created_at TIMESTAMP WITH TIME ZONE NOT NULL, 
    CONSTRAINT pk_cog_image_versions PRIMARY KEY (id), 
    CONSTRAINT ck_cog_image_versions_source CHECK (source IN ('upload', 'generated', 'edit', 'restore')), 
    CONSTRAINT ck_cog_image_versions_number_positive CHECK (number > 0), 
    CONSTRAINT fk_cog_image_versions_image_id_cog_images FOREIGN KEY(image_id) REFERENCES cog_images (id) ON DELETE CASCADE, 
    CONSTRAINT fk_cog_image_versions_restored_from_id_cog_image_versions FOREIGN KEY(restored_from_id) REFERENCES cog_image_versions (id) ON DELETE SET NULL, 
    CONSTRAINT fk_cog_image_versions_job_id_cog_jobs FOREIGN KEY(job_id) REFERENCES cog_jobs (id) ON DELETE SET NULL, 
    CONSTRAINT fk_cog_image_versions_run_id_cog_job_runs FOREIGN KEY(run_id) REFERENCES cog_job_runs (id) ON DELETE SET NULL, 
    CONSTRAINT fk_cog_image_versions_step_id_cog_step_runs FOREIGN KEY(step_id) REFERENCES cog_step_runs (id) ON DELETE SET NULL, 
    CONSTRAINT uq_cog_image_versions_image_id_number UNIQUE (image_id, number), 
    CONSTRAINT uq_cog_image_versions_storage_path UNIQUE (storage_path)
);

INSERT INTO cog_image_versions (id, image_id, number, source, storage_path, original_filename, mime_type, width, height, size_bytes, sha256, prompt, model, provider, metadata, job_id, run_id, step_id, created_at) SELECT id, id, 1, source, storage_path, original_filename, mime_type, width, height, size_bytes, sha256, prompt, model, provider, metadata, job_id, run_id, step_id, created_at FROM cog_images;

CREATE TABLE cog_image_parents (
    child_version_id UUID NOT NULL, 
    parent_version_id UUID NOT NULL, 
    child_image_id UUID NOT NULL, 
    parent_image_id UUID NOT NULL, 
    role TEXT NOT NULL, 
    created_at TIMESTAMP WITH TIME ZONE NOT NULL, 
    CONSTRAINT pk_cog_image_parents PRIMARY KEY (child_version_id, parent_version_id), 
    CONSTRAINT ck_cog_image_parents_role CHECK (role IN ('reference', 'input', 'edit')), 
    CONSTRAINT fk_cog_image_parents_child_version_id_cog_image_versions FOREIGN KEY(child_version_id) REFERENCES cog_image_versions (id) ON DELETE CASCADE, 
    CONSTRAINT fk_cog_image_parents_parent_version_id_cog_image_versions FOREIGN KEY(parent_version_id) REFERENCES cog_image_versions (id) ON DELETE CASCADE, 
    CONSTRAINT fk_cog_image_parents_child_image_id_cog_images FOREIGN KEY(child_image_id) REFERENCES cog_images (id) ON DELETE CASCADE, 
    CONSTRAINT fk_cog_image_parents_parent_image_id_cog_images FOREIGN KEY(parent_image_id) REFERENCES cog_images (id) ON DELETE CASCADE
);

CREATE INDEX ix_cog_image_parents_child_image_id ON cog_image_parents (child_image_id);

CREATE INDEX ix_cog_image_parents_parent_image_id ON cog_image_parents (parent_image_id);

CREATE TABLE cog_batches (
    id UUID NOT NULL, 
    job_id UUID NOT NULL, 
    status TEXT DEFAULT 'running' NOT NULL, 
    total INTEGER NOT NULL, 
    cancel_requested BOOLEAN DEFAULT false NOT NULL, 
    created_at TIMESTAMP WITH TIME ZONE NOT NULL, 
    finished_at TIMESTAMP WITH TIME ZONE, 
    CONSTRAINT pk_cog_batches PRIMARY KEY (id), 
    CONSTRAINT ck_cog_batches_status CHECK (status IN ('running', 'succeeded', 'failed', 'cancelled')), 
    CONSTRAINT fk_cog_batches_job_id_cog_jobs FOREIGN KEY(job_id) REFERENCES cog_jobs (id) ON DELETE CASCADE
);

CREATE INDEX ix_cog_batches_job_id_created_at ON cog_batches (job_id, created_at);

ALTER TABLE cog_job_runs ADD COLUMN batch_id UUID;

ALTER TABLE cog_job_runs ADD COLUMN input_image_id UUID;

ALTER TABLE cog_job_runs ADD CONSTRAINT fk_cog_job_runs_batch_id_cog_batches FOREIGN KEY(batch_id) REFERENCES cog_batches (id) ON DELETE SET NULL;

ALTER TABLE cog_job_runs ADD CONSTRAINT fk_cog_job_runs_input_image_id_cog_images FOREIGN KEY(input_image_id) REFERENCES cog_images (id) ON DELETE SET NULL;

CREATE INDEX ix_cog_job_runs_batch_id ON cog_job_runs (batch_id);

CREATE INDEX ix_cog_images_search ON cog_images USING gin (to_tsvector('simple'::regconfig, coalesce(prompt, '') || ' ' || coalesce(original_filename, '')));

CREATE INDEX ix_cog_images_tags ON cog_images USING gin (tags);

ALTER TABLE cog_image_versions ENABLE ROW LEVEL SECURITY;

ALTER TABLE cog_image_parents ENABLE ROW LEVEL SECURITY;

ALTER TABLE cog_batches ENABLE ROW LEVEL SECURITY;

UPDATE cog_alembic_version SET version_num='0002' WHERE cog_alembic_version.version_num = '0001';

-- Running upgrade 0002 -> 0003

ALTER TABLE cog_job_steps ADD COLUMN condition TEXT;

ALTER TABLE cog_job_steps ADD COLUMN for_each TEXT;

ALTER TABLE cog_step_runs ADD COLUMN json_output JSONB;

ALTER TABLE cog_step_runs ADD COLUMN skip_reason TEXT;

ALTER TABLE cog_step_runs ADD COLUMN iterations JSONB DEFAULT '[]'::jsonb NOT NULL;

ALTER TABLE cog_series ADD COLUMN inherit_context BOOLEAN DEFAULT true NOT NULL;

ALTER TABLE cog_series ADD COLUMN style_profile TEXT DEFAULT '' NOT NULL;

ALTER TABLE cog_series ADD COLUMN style_profile_updated_at TIMESTAMP WITH TIME ZONE;

ALTER TABLE cog_jobs ADD COLUMN style_series_id UUID;

ALTER TABLE cog_jobs ADD CONSTRAINT fk_cog_jobs_style_series_id_cog_series FOREIGN KEY(style_series_id) REFERENCES cog_series (id) ON DELETE SET NULL;

ALTER TABLE cog_jobs ADD COLUMN style_image_ids JSONB DEFAULT '[]'::jsonb NOT NULL;

ALTER TABLE cog_jobs ADD COLUMN style_image_count INTEGER DEFAULT '3' NOT NULL;

CREATE INDEX ix_cog_jobs_style_series_id ON cog_jobs (style_series_id);

ALTER TABLE cog_job_runs ADD COLUMN style JSONB;

ALTER TABLE cog_image_parents DROP CONSTRAINT ck_cog_image_parents_role;

ALTER TABLE cog_image_parents ADD CONSTRAINT ck_cog_image_parents_role CHECK (role IN ('reference', 'input', 'edit', 'style'));

UPDATE cog_alembic_version SET version_num='0003' WHERE cog_alembic_version.version_num = '0002';

COMMIT;

