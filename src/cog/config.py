"""Settings, read from the environment (prefix `COG_`) and a `.env` file.

Settings are built by `load_settings()` and passed down; nothing reads them at import time.
"""

from __future__ import annotations

import ipaddress
from enum import StrEnum
from pathlib import Path
from typing import Annotated

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class ExecutorKind(StrEnum):
    embedded = "embedded"
    queue = "queue"


class ProviderKind(StrEnum):
    auto = "auto"
    gemini = "gemini"
    preview = "preview"


class Settings(BaseSettings):
    """Every setting Cog reads. Each field is documented in README.md (a test checks it)."""

    model_config = SettingsConfigDict(
        env_prefix="COG_", env_file=".env", env_file_encoding="utf-8", extra="ignore"
    )

    data_dir: Path = Field(
        Path("./cog-data"), description="Folder for the embedded database and files."
    )
    database_url: str = Field(
        "", description="SQLAlchemy async URL; default: SQLite in the data dir."
    )
    storage_url: str = Field(
        "", description="`file://<folder>` or `s3://<bucket>`; default: a folder in the data dir."
    )
    s3_endpoint_url: str = Field(
        "", description="Endpoint of an S3-compatible store (MinIO, R2, Supabase)."
    )
    s3_region: str = Field("us-east-1", description="Region of the S3 bucket.")
    host: str = Field("127.0.0.1", description="Address `cog serve` listens on.")
    port: int = Field(8000, description="Port `cog serve` listens on.")
    web_workers: Annotated[int, Field(ge=1, le=64)] = Field(
        1, description="Processes `cog serve` answers with; each also executes runs."
    )
    # Off by default: a gallery asks for a thumbnail per image, and a line for each buries what
    # matters in the log (and costs a request a good part of its time).
    access_log: bool = Field(
        False, description="Whether `cog serve` logs a line for every request it answers."
    )
    api_token: SecretStr | None = Field(
        None, description="Token every route requires; required off loopback."
    )
    max_upload_bytes: Annotated[int, Field(gt=0)] = Field(
        50 * 1024 * 1024, description="Largest accepted image file, in bytes."
    )
    max_image_pixels: Annotated[int, Field(gt=0)] = Field(
        64_000_000, description="Largest accepted image, in pixels (width x height)."
    )
    max_files_per_upload: Annotated[int, Field(gt=0)] = Field(
        100, description="Most files accepted in one upload request."
    )
    thumbnail_px: Annotated[int, Field(ge=64, le=2048)] = Field(
        512, description="Longest side of a thumbnail, in pixels."
    )
    thumbnail_cache_mb: Annotated[int, Field(ge=0, le=4096)] = Field(
        64, description="Memory each process keeps the thumbnails it served last in, in MB."
    )
    decode_concurrency: Annotated[int, Field(ge=1, le=64)] = Field(
        2, description="Images a process decodes at once (each holds its pixels in memory)."
    )
    executor: ExecutorKind = Field(
        ExecutorKind.embedded, description="`embedded` (in `cog serve`) or `queue` (workers)."
    )
    provider: ProviderKind = Field(ProviderKind.auto, description="`auto`, `gemini` or `preview`.")
    gemini_base_url: str = Field("", description="Another endpoint for the Gemini API.")
    text_model: str = Field("gemini-3.5-flash", description="Model for drafting and llm steps.")
    image_model: str = Field("gemini-3-pro-image", description="Model for image steps.")
    provider_max_attempts: Annotated[int, Field(ge=1, le=10)] = Field(
        4, description="Tries per model call before a step fails (429, 5xx, timeouts)."
    )
    provider_retry_initial_s: Annotated[float, Field(ge=0)] = Field(
        1.0, description="Wait before the first retry, in seconds; it doubles on each retry."
    )
    provider_timeout_s: Annotated[float, Field(gt=0)] = Field(
        120.0, description="Longest wait for one model call, in seconds."
    )
    image_concurrency: Annotated[int, Field(ge=1, le=32)] = Field(
        4, description="Image calls made at the same time, across all runs of the process."
    )
    run_concurrency: Annotated[int, Field(ge=1, le=64)] = Field(
        4, description="Runs one process executes at the same time."
    )
    batch_concurrency: Annotated[int, Field(ge=1, le=32)] = Field(
        2, description="Runs of one batch that execute at the same time, across all processes."
    )
    run_stale_after_s: Annotated[float, Field(gt=0)] = Field(
        30.0, description="Seconds without a heartbeat after which a running run is resumed."
    )
    run_max_attempts: Annotated[int, Field(ge=1)] = Field(
        3, description="Times a run is started (first try and resumes) before it is failed."
    )

    worker_shutdown_grace_s: Annotated[float, Field(ge=0)] = Field(
        5.0,
        description="Seconds `cog worker` lets its runs go on after SIGTERM, then hands them back.",
    )

    @model_validator(mode="after")
    def _fill_defaults(self) -> Settings:
        if not self.database_url:
            self.database_url = f"sqlite+aiosqlite:///{(self.data_dir / 'cog.db').resolve()}"
        if not self.storage_url:
            self.storage_url = (self.data_dir / "storage").resolve().as_uri()
        return self

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def uses_queue(self) -> bool:
        return self.executor is ExecutorKind.queue

    @property
    def token(self) -> str | None:
        return self.api_token.get_secret_value() if self.api_token else None


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def load_settings(**overrides: object) -> Settings:
    """Read the environment and `.env`; keyword overrides win (the CLI passes its flags here)."""
    return Settings(**overrides)  # type: ignore[arg-type]
