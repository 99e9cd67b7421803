"""Two requests changing the same rows at the same moment: the one that loses gets a 409 that
says so, never a 500, and leaves nothing behind."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import sqlalchemy as sa

from cog.db.session import make_engine
from cog.web.app import create_app
from tests.conftest import make_settings, open_client, pg_url, stored_keys
from tests.factories import image_bytes, make_series, upload


@pytest.mark.postgres
async def test_an_upload_into_a_series_deleted_meanwhile_is_a_conflict(
    pg_database: str, tmp_path: Path
) -> None:
    """The upload finds the series, then the series is deleted before the image row is in:
    PostgreSQL makes the insert wait for the delete, then refuses it."""
    url = pg_url(pg_database)
    settings = make_settings(tmp_path, database_url=url, storage_url=(tmp_path / "s").as_uri())
    engine = make_engine(url)
    try:
        async for client in open_client(create_app(settings)):
            series = await make_series(client, "Going away")
            async with engine.connect() as other:
                await other.execute(
                    sa.text("DELETE FROM cog_series WHERE id = :id"), {"id": series["id"]}
                )  # not committed yet: the row is locked, still seen by others
                sending = asyncio.create_task(
                    upload(client, series["id"], ("late.png", image_bytes(32, 32), "image/png"))
                )
                await asyncio.sleep(1.0)  # the upload's insert now waits on the lock
                assert not sending.done(), sending.exception() if sending.done() else None
                await other.commit()
            answer = await sending
            assert answer.status_code == 409, answer.text
            assert "nothing was saved" in answer.json()["detail"]
            images = stored_keys(tmp_path / "s")
            assert images == [], "no file of the refused upload stays"
    finally:
        await engine.dispose()
