"""Importing a folder (with its sub-folders) or a zip archive of images into a series.

Each file is verified like an upload and kept on its own, so one bad file refuses only itself.
A file whose bytes are already in the series (the same SHA-256), or earlier in the same import,
is skipped and the report says which image it duplicates.
"""

from __future__ import annotations

import hashlib
import io
import os
import uuid
import zipfile
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from sqlalchemy.ext.asyncio import AsyncSession

from cog.config import Settings
from cog.db import images as images_db
from cog.errors import CogError, Invalid, TooLarge
from cog.imaging import bytes_text
from cog.services import images as images_service
from cog.services import series as series_service
from cog.storage import ObjectStore

# Names a file manager leaves behind, never pictures of anyone's.
_LITTER = {"thumbs.db", "desktop.ini"}


@dataclass(frozen=True)
class Source:
    """One file to import: its name as the person knows it (relative to what they named) and a
    way to open it."""

    name: str
    size: int
    open: Callable[[], AbstractContextManager[IO[bytes]]]


@dataclass
class ImportReport:
    imported: list[tuple[str, uuid.UUID]] = field(default_factory=list)
    skipped: list[tuple[str, uuid.UUID]] = field(default_factory=list)  # name, the image it is
    refused: list[tuple[str, str]] = field(default_factory=list)  # name, why


def _ignored(parts: tuple[str, ...]) -> bool:
    """Hidden files and folders, macOS's resource forks and the like."""
    return any(p.startswith(".") or p == "__MACOSX" for p in parts) or parts[-1].lower() in _LITTER


def folder_sources(root: Path) -> list[Source]:
    """Every file under `root`, in name order, without following links out of it."""
    found: list[Source] = []
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(files):
            path = Path(folder) / name
            relative = path.relative_to(root)
            if _ignored(relative.parts) or not path.is_file():
                continue
            found.append(Source(relative.as_posix(), path.stat().st_size, _opener(path)))
    return found


def _opener(path: Path) -> Callable[[], AbstractContextManager[IO[bytes]]]:
    @contextmanager
    def open_file() -> Iterator[IO[bytes]]:
        with path.open("rb") as fp:
            yield fp

    return open_file


@contextmanager
def zip_sources(path: Path, settings: Settings) -> Iterator[list[Source]]:
    """The files of a zip archive; opened one at a time and read at most to the upload limit, so
    a member that claims one size and inflates to another cannot fill the memory."""
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise Invalid(f"{path.name} is not a zip archive Cog can read ({exc}).") from exc
    with archive:
        found = []
        for info in sorted(archive.infolist(), key=lambda i: i.filename):
            parts = tuple(p for p in info.filename.replace("\\", "/").split("/") if p)
            if info.is_dir() or not parts or _ignored(parts):
                continue
            found.append(Source("/".join(parts), info.file_size, _member(archive, info, settings)))
        yield found


def _member(
    archive: zipfile.ZipFile, info: zipfile.ZipInfo, settings: Settings
) -> Callable[[], AbstractContextManager[IO[bytes]]]:
    @contextmanager
    def open_member() -> Iterator[IO[bytes]]:
        limit = settings.max_upload_bytes
        if info.flag_bits & 0x1:
            raise Invalid("The file is encrypted in the archive.")
        try:
            with archive.open(info) as member:
                data = member.read(limit + 1)
        except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError) as exc:
            raise Invalid(f"The archive's copy of the file cannot be read ({exc}).") from exc
        if len(data) > limit:
            raise TooLarge(f"The file is over {bytes_text(limit)}, the largest accepted.")
        yield io.BytesIO(data)

    return open_member


def _sha256(fp: IO[bytes]) -> str:
    digest = hashlib.sha256()
    while block := fp.read(1024 * 1024):
        digest.update(block)
    fp.seek(0)
    return digest.hexdigest()


async def import_files(
    session: AsyncSession,
    store: ObjectStore,
    settings: Settings,
    series_id: uuid.UUID,
    sources: list[Source],
    *,
    progress: Callable[[Source], None] | None = None,
) -> ImportReport:
    """Import each source into the series on its own; `progress` is told of each one done."""
    await series_service.require(session, series_id)
    known = await images_db.sha256_in_series(session, series_id)
    report = ImportReport()
    for source in sources:
        try:
            if source.size > settings.max_upload_bytes:
                raise TooLarge(
                    f"The file is {bytes_text(source.size)}; the largest accepted is "
                    f"{bytes_text(settings.max_upload_bytes)}."
                )
            with source.open() as fp:
                sha = _sha256(fp)
                if sha in known:
                    report.skipped.append((source.name, known[sha]))
                else:
                    incoming = images_service.IncomingFile(source.name, fp)
                    image = (
                        await images_service.upload(session, store, settings, series_id, [incoming])
                    )[0]
                    known[image.sha256] = image.id
                    report.imported.append((source.name, image.id))
        except images_service.UploadRefused as exc:
            report.refused.append((source.name, exc.extra["files"][0]["error"]))
        except CogError as exc:
            report.refused.append((source.name, exc.message))
        if progress:
            progress(source)
    return report
