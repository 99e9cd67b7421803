"""`cog images versions | edit | replace | restore | split` as a person runs them: real
`python -m cog` subprocesses, editing through the fake Gemini server on loopback."""

from __future__ import annotations

import hashlib
import io
import re
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from cog.runtime import Runtime
from cog.services import images as images_service
from cog.services import series as series_service
from cog.testing.gemini_server import GeminiTestServer
from tests.e2e.cli import MISSING, Cli, gemini_env, seed
from tests.factories import image_bytes

pytestmark = pytest.mark.slow

UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"


@pytest.fixture(scope="module")
def gemini() -> Iterator[GeminiTestServer]:
    with GeminiTestServer() as server:
        yield server


def test_edit_replace_restore_split_and_list(
    cli: Cli,
    gemini: GeminiTestServer,
) -> None:
    original = image_bytes(48, 32, color=(30, 60, 200))

    async def work(runtime: Runtime, session: AsyncSession) -> str:
        series = await series_service.create(session, title="Harbour")
        incoming = images_service.IncomingFile("harbour.png", io.BytesIO(original))
        (image,) = await images_service.upload(
            session, runtime.store, runtime.settings, series.id, [incoming]
        )
        return str(image.id)

    image_id = seed(cli.settings(), work)
    gemini.reset()
    edited = cli(
        "images", "edit", image_id, "--prompt", "make the sky [bold]stormy", env=gemini_env(gemini)
    )
    assert edited.code == 0, edited
    assert f"Image {image_id} is now at version 2 (an edit)." in edited.said
    (call,) = gemini.requests
    assert call.prompt == "make the sky [bold]stormy"
    assert [i.data for i in call.images] == [original]

    (cli.tmp_path / "night.jpg").write_bytes(image_bytes(20, 20, "JPEG"))
    (cli.tmp_path / "notes.txt").write_bytes(b"not a picture")
    replaced, refused = cli.many(
        ("images", "replace", image_id, "night.jpg"), ("images", "replace", image_id, "notes.txt")
    )
    # Both at once: the one accepted is version 3, the refused one changes nothing.
    assert replaced.code == 0, replaced
    assert f"Image {image_id} is now at version 3 (night.jpg)." in replaced.said
    assert refused.code == 1 and "Cog accepts" in refused.said

    restored = cli("images", "restore", image_id, "1")
    assert "is now at version 4, a copy of version 1." in restored.said
    split = cli("images", "split", image_id, "2")
    assert split.code == 0, split
    found = re.search(rf"Version 2 of image {image_id} is now image ({UUID})\.", split.said)
    assert found, split

    listed, table, again = cli.many(
        ("images", "versions", image_id, "--json"),
        ("images", "versions", image_id),
        ("images", "restore", image_id, "4"),
    )
    versions = listed.json()
    assert [(v["number"], v["source"], v["is_current"]) for v in versions] == [
        (1, "upload", False),
        (2, "edit", False),
        (3, "upload", False),
        (4, "restore", True),
    ]
    assert versions[0]["sha256"] == versions[3]["sha256"] == hashlib.sha256(original).hexdigest()
    assert versions[1]["prompt"] == "make the sky [bold]stormy"
    assert "make the sky [bold]stormy" in table.stdout  # printed as it is, never as markup
    assert "restore of 1" in table.stdout and "current" in table.stdout
    assert again.code == 1 and "already the current version" in again.said

    missing, malformed, no_version = cli.many(
        ("images", "versions", MISSING),
        ("images", "edit", "nope", "--prompt", "x"),
        ("images", "split", image_id, "9"),
    )
    assert missing.code == 1 and f"There is no image {MISSING}." in missing.said
    assert malformed.code == 2 and "'nope' is not a" in malformed.said
    assert no_version.code == 1 and "has no version 9" in no_version.said
    assert uuid.UUID(found[1])
