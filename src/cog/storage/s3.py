"""Any S3-compatible store: AWS S3, MinIO, Cloudflare R2, Supabase Storage's S3 endpoint.

Credentials come from the usual AWS variables (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
AWS_SESSION_TOKEN), which obstore reads itself.
"""

from __future__ import annotations

from obstore.store import S3Store

from cog.storage.base import ObstoreStore


def make_s3_store(
    *, bucket: str, prefix: str | None, endpoint_url: str | None, region: str
) -> ObstoreStore:
    config: dict[str, str] = {"region": region}
    client_options: dict[str, bool] = {}
    if endpoint_url:
        config["endpoint"] = endpoint_url
        client_options["allow_http"] = endpoint_url.startswith("http://")
    store = S3Store(
        bucket,
        prefix=prefix,
        config=config,  # type: ignore[arg-type]
        client_options=client_options,  # type: ignore[arg-type]
    )
    return ObstoreStore(store, name=f"s3://{bucket}/{prefix or ''}")
