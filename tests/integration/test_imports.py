"""Importing a folder or a zip into a series, through the service, on SQLite and PostgreSQL:
duplicates (of the series' images, and within the import) are skipped and say which image they
are; bad files are refused with the reason, alone; everything else is kept, bytes and all."""

from __future__ import annotations

import hashlib
import io
import uuid
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from cog.config import Settings
from cog.db.session import make_engine, make_sessionmaker
from cog.errors import Invalid
from cog.services import images as images_service
from cog.services import imports as imports_service
from cog.services import series as series_service
from cog.storage import ObjectStore
from tests.factories import image_bytes, padded_png


@pytest.fixture
async def session(settings: Settings) -> AsyncIterator[AsyncSession]:
    engine = make_engine(settings.database_url)
    try:
        async with make_sessionmaker(engine)() as s:
            yield s
    finally:
        await engine.dispose()


def write(path: Path, data: bytes) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return data


async def contents(
    session: AsyncSession, store: ObjectStore, series_id: uuid.UUID
) -> dict[str, str]:
    """The series' images as file name -> SHA-256 of the stored bytes."""
    page = await images_service.listing(session, series_id, limit=500)
    found = {}
    for image in page.items:
        found[str(image.original_filename)] = hashlib.sha256(
            await store.get(image.storage_path)
        ).hexdigest()
    return found


async def test_a_folder_with_duplicates_and_a_bad_file(
    session: AsyncSession, store: ObjectStore, settings: Settings, tmp_path: Path
) -> None:
    series = await series_service.create(session, title="Imports")
    old = image_bytes(30, 30, color=(1, 2, 3))
    existing = await images_service.upload(
        session,
        store,
        settings,
        series.id,
        [images_service.IncomingFile("old.png", io.BytesIO(old))],
    )
    root = tmp_path / "pictures"
    a = write(root / "a.png", image_bytes(40, 30, color=(200, 0, 0)))
    b = write(root / "deep" / "er" / "b.webp", image_bytes(20, 20, "WEBP", color=(0, 90, 0)))
    write(root / "deep" / "again-a.png", a)
    write(root / "deep" / "old-copy.png", old)
    write(root / "notes.txt", b"just words")
    write(root / "cut.png", a[: len(a) // 2])
    write(root / ".hidden" / "x.png", a)
    write(root / "Thumbs.db", b"\x00")

    sources = imports_service.folder_sources(root)
    assert [s.name for s in sources] == [
        "a.png", "cut.png", "notes.txt", "deep/again-a.png", "deep/old-copy.png", "deep/er/b.webp",
    ]  # fmt: skip
    done: list[str] = []
    report = await imports_service.import_files(
        session, store, settings, series.id, sources, progress=lambda s: done.append(s.name)
    )
    assert done == [s.name for s in sources]
    assert [name for name, _ in report.imported] == ["a.png", "deep/er/b.webp"]
    imported = dict(report.imported)
    assert report.skipped == [
        ("deep/again-a.png", imported["a.png"]),
        ("deep/old-copy.png", existing[0].id),
    ]
    refused = dict(report.refused)
    assert set(refused) == {"cut.png", "notes.txt"}
    assert "damaged or truncated" in refused["cut.png"]
    assert "not an image" in refused["notes.txt"]
    assert await contents(session, store, series.id) == {
        "old.png": hashlib.sha256(old).hexdigest(),
        "a.png": hashlib.sha256(a).hexdigest(),
        "b.webp": hashlib.sha256(b).hexdigest(),
    }


async def test_a_zip_with_a_member_too_large_and_one_that_lies_about_its_size(
    session: AsyncSession, store: ObjectStore, tmp_path: Path, database_url: str
) -> None:
    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        data_dir=tmp_path / "small",
        database_url=database_url,
        storage_url=(tmp_path / "storage").as_uri(),
        max_upload_bytes=50_000,
    )
    series = await series_service.create(session, title="Zipped")
    a = image_bytes(40, 30, color=(200, 0, 0))
    archive = tmp_path / "pictures.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as out:
        out.writestr("a.png", a)
        out.writestr("dup/a.png", a)
        out.writestr("big.png", padded_png(60_000))
        out.writestr("__MACOSX/._a.png", b"fork")
        out.writestr("folder/", b"")
    # A member whose header claims a small size but inflates to a large one is read no further
    # than the claim (nor ever past the limit), and refused.
    liar = tmp_path / "liar.zip"
    with zipfile.ZipFile(liar, "w", zipfile.ZIP_DEFLATED) as out:
        out.writestr("bomb.png", padded_png(2_000_000))
    raw = bytearray(liar.read_bytes())
    size = (2_000_000).to_bytes(4, "little")
    for at in [i for i in range(len(raw) - 4) if raw[i : i + 4] == size]:
        raw[at : at + 4] = (1000).to_bytes(4, "little")
    liar.write_bytes(bytes(raw))

    with imports_service.zip_sources(archive, settings) as sources:
        assert [s.name for s in sources] == ["a.png", "big.png", "dup/a.png"]
        report = await imports_service.import_files(session, store, settings, series.id, sources)
    assert [n for n, _ in report.imported] == ["a.png"]
    assert report.skipped == [("dup/a.png", report.imported[0][1])]
    assert [n for n, _ in report.refused] == ["big.png"]
    assert "largest accepted" in report.refused[0][1]

    with imports_service.zip_sources(liar, settings) as sources:
        assert [s.size for s in sources] == [1000]
        report = await imports_service.import_files(session, store, settings, series.id, sources)
    assert report.imported == [] and [n for n, _ in report.refused] == ["bomb.png"]
    assert await contents(session, store, series.id) == {"a.png": hashlib.sha256(a).hexdigest()}

    (tmp_path / "not.zip").write_bytes(b"PK\x03\x04 but no more")
    with (
        pytest.raises(Invalid, match="not a zip archive"),
        imports_service.zip_sources(tmp_path / "not.zip", settings),
    ):
        pass
