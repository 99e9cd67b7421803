"""Object storage: a folder on the embedded default, any S3-compatible store in deployment."""

from __future__ import annotations

from urllib.parse import urlparse

from cog.config import Settings
from cog.errors import ConfigError
from cog.storage.base import ObjectStore, StoredObject, StoredObjectMissing
from cog.storage.local import make_local_store
from cog.storage.s3 import make_s3_store

__all__ = ["ObjectStore", "StoredObject", "StoredObjectMissing", "make_store"]


def make_store(settings: Settings) -> ObjectStore:
    url = urlparse(settings.storage_url)
    if url.scheme == "file":
        return make_local_store(url.path)
    if url.scheme == "s3":
        if not url.netloc:
            raise ConfigError("COG_STORAGE_URL must name a bucket, like s3://cog-images")
        return make_s3_store(
            bucket=url.netloc,
            prefix=url.path.strip("/") or None,
            endpoint_url=settings.s3_endpoint_url or None,
            region=settings.s3_region,
        )
    raise ConfigError(
        f"COG_STORAGE_URL {settings.storage_url!r} is neither file://<folder> nor s3://<bucket>"
    )
