"""Zip exports of a selection of images, with a manifest of what each image is and where it came
from. The archive streams: files go out as the store hands them over, whatever the total size.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import re
import tempfile
import unicodedata
import uuid
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from typing import IO, Any

from sqlalchemy.ext.asyncio import AsyncSession

from cog import __version__
from cog.db import series as series_db
from cog.db.models import Image, Series
from cog.db.session import SessionMaker
from cog.services import selection as selection_service
from cog.services.selection import Selection
from cog.storage import ObjectStore, StoredObjectMissing
from cog.zipstream import ZipStream

MANIFEST_JSON = "manifest.json"
MANIFEST_CSV = "manifest.csv"
COLUMNS = (
    "id",
    "file",
    "series_id",
    "series",
    "original_filename",
    "source",
    "prompt",
    "model",
    "provider",
    "job_id",
    "run_id",
    "step_id",
    "width",
    "height",
    "mime_type",
    "size_bytes",
    "sha256",
    "tags",
    "created_at",
    "version",
)
SEGMENT_CHARS = 80  # longest folder or file name part; whole paths stay far under any limit
SPOOL_BYTES = 8 * 1024 * 1024  # manifest text held in memory before it spills to a temp file
COPY_CHUNK = 256 * 1024
_UNSAFE = re.compile(r'[<>:"/\\|?*\x00-\x1f\x7f]')
_WINDOWS_RESERVED = {"CON", "PRN", "AUX", "NUL"} | {
    f"{port}{n}" for port in ("COM", "LPT") for n in "123456789"
}
_FORMULA = ("=", "+", "-", "@", "\t", "\r")


@dataclass(frozen=True)
class ExportPlan:
    selection: Selection
    count: int
    total_bytes: int
    filename: str  # the archive's suggested name


async def plan(session: AsyncSession, selection: Selection) -> ExportPlan:
    """Check the selection (404 naming what is missing) and measure it, before any byte goes."""
    await selection_service.check(session, selection)
    count, total = await selection_service.size(session, selection)
    name = "cog-images"
    if selection.root is not None:
        root = await series_db.get(session, selection.root)
        name = safe_segment(root.title if root else "", "series")
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M")
    return ExportPlan(selection, count, total, f"{name}-{stamp}.zip")


def safe_segment(text: str, fallback: str) -> str:
    """A name part that is safe in a zip and on every file system: no separators, no control
    or reserved characters, no leading or trailing dots or spaces, bounded."""
    clean = unicodedata.normalize("NFC", text)
    clean = "".join(ch for ch in _UNSAFE.sub("-", clean) if ch.isprintable())
    clean = re.sub(r"-{2,}", "-", " ".join(clean.split())).strip(" .-")
    clean = clean[:SEGMENT_CHARS].rstrip(" .-")
    if not clean or clean.split(".")[0].upper() in _WINDOWS_RESERVED:
        return fallback
    return clean


def _slug(text: str) -> str:
    """The first words of a prompt as a file name."""
    words = re.findall(r"\w+", unicodedata.normalize("NFC", text).lower())[:8]
    return "-".join(words)[:60].strip("-_")


def _stem(image: Image) -> str:
    if image.original_filename:
        stem = image.original_filename.rsplit(".", 1)[0] if "." in image.original_filename else ""
        return safe_segment(stem or image.original_filename, "image")
    return safe_segment(_slug(image.prompt or ""), "generated" if image.prompt else "image")


class Folders:
    """Where each series' images go in the archive: one folder per series, named by its title,
    nested like the tree, from the filter's series down (or from the top). Sibling series of the
    same title get their short id added, so no two series share a folder."""

    def __init__(self, root: uuid.UUID | None) -> None:
        self.root = root
        self.series: dict[uuid.UUID, Series] = {}
        self._names: dict[uuid.UUID, str] = {}
        self._taken: dict[uuid.UUID | None, set[str]] = {None: {MANIFEST_JSON, MANIFEST_CSV}}

    async def learn(self, session: AsyncSession, series_ids: Iterable[uuid.UUID]) -> None:
        unknown = [i for i in set(series_ids) if i not in self.series]
        if not unknown:
            return
        found = await series_db.with_ancestors(session, unknown)
        for s in sorted(found, key=lambda s: (s.created_at, s.id)):
            self.series.setdefault(s.id, s)

    def chain(self, series_id: uuid.UUID) -> list[Series]:
        """The series from the top (or the root) down to this one."""
        chain: list[Series] = []
        node = self.series.get(series_id)
        while node is not None:
            chain.append(node)
            if node.id == self.root or node.parent_id is None:
                break
            node = self.series.get(node.parent_id)
        return chain[::-1]

    def path(self, series_id: uuid.UUID) -> str:
        parts: list[str] = []
        parent: uuid.UUID | None = None
        for s in self.chain(series_id):
            parts.append(self._name(s, parent))
            parent = s.id
        return "/".join(parts) or "series"

    def titles(self, series_id: uuid.UUID) -> str:
        return " / ".join(s.title for s in self.chain(series_id))

    def _name(self, s: Series, parent: uuid.UUID | None) -> str:
        if s.id not in self._names:
            name = safe_segment(s.title, "series")
            taken = self._taken.setdefault(parent, set())
            if name.lower() in taken:
                name = f"{name[: SEGMENT_CHARS - 9]}-{s.id.hex[:8]}"
            taken.add(name.lower())
            self._names[s.id] = name
        return self._names[s.id]


class _Manifest:
    """The manifest's rows as they are written, in a spooled temp file (memory, then disk), so
    an export of any size holds none of them in memory."""

    def __init__(self, json_spool: IO[bytes], csv_spool: IO[bytes]) -> None:
        self.json = json_spool
        self.csv = csv_spool
        self._text = io.StringIO()
        self._writer = csv.writer(self._text, lineterminator="\r\n")
        self.count = 0
        self.missing = 0
        self._csv_row(list(COLUMNS))

    def add(self, record: dict[str, Any]) -> None:
        if self.count:
            self.json.write(b",\n")
        self.json.write(json.dumps(record, ensure_ascii=False).encode())
        self.count += 1
        self.missing += record["file"] is None
        row = [record[c] for c in COLUMNS]
        row[COLUMNS.index("tags")] = ", ".join(record["tags"])
        self._csv_row(["" if v is None else _cell(v) for v in row])

    def _csv_row(self, row: list[Any]) -> None:
        self._writer.writerow(row)
        self.csv.write(self._text.getvalue().encode())
        self._text.seek(0)
        self._text.truncate()


def _cell(value: Any) -> Any:
    """A text cell a spreadsheet would read as a formula starts with a quote (the JSON keeps
    every value exactly)."""
    if isinstance(value, str) and value.startswith(_FORMULA):
        return "'" + value
    return value


def record(image: Image, file: str | None, folders: Folders) -> dict[str, Any]:
    return {
        "id": str(image.id),
        "file": file,
        "series_id": str(image.series_id),
        "series": folders.titles(image.series_id),
        "original_filename": image.original_filename,
        "source": image.source,
        "prompt": image.prompt,
        "model": image.model,
        "provider": image.provider,
        "job_id": _text(image.job_id),
        "run_id": _text(image.run_id),
        "step_id": _text(image.step_id),
        "width": image.width,
        "height": image.height,
        "mime_type": image.mime_type,
        "size_bytes": image.size_bytes,
        "sha256": image.sha256,
        "tags": list(image.tags or []),
        "created_at": image.created_at.isoformat(),
        "version": image.version,
        "metadata": image.meta,
    }


def _text(value: uuid.UUID | None) -> str | None:
    return None if value is None else str(value)


async def stream(
    sessions: SessionMaker,
    store: ObjectStore,
    plan: ExportPlan,
    *,
    progress: Callable[[int], None] | None = None,
) -> AsyncIterator[bytes]:
    """The archive, chunk by chunk: each image's file, then `manifest.json` and `manifest.csv`.

    An image whose file is missing from the store is listed in the manifest with `file: null`
    rather than failing the whole export. `progress` is told the bytes of each piece of an image
    file as it goes out.
    """
    archive = ZipStream()
    folders = Folders(plan.selection.root)
    used: set[str] = set()
    seen: set[uuid.UUID] = set()
    started = dt.datetime.now(dt.UTC)
    with (
        tempfile.SpooledTemporaryFile(SPOOL_BYTES) as json_spool,
        tempfile.SpooledTemporaryFile(SPOOL_BYTES) as csv_spool,
    ):
        manifest = _Manifest(json_spool, csv_spool)
        async for page in selection_service.pages(sessions, plan.selection):
            async with sessions() as session:
                await folders.learn(session, (i.series_id for i in page))
            for image in page:
                if image.id in seen:  # moved between two pages of a filter: once is enough
                    continue
                seen.add(image.id)
                name = _file_name(image, folders, used)
                written = False
                async for chunk in _write_file(archive, store, image, name, progress):
                    written = True
                    if chunk:
                        yield chunk
                manifest.add(record(image, name if written else None, folders))
        for chunk in _write_manifests(archive, manifest, started):
            yield chunk
        yield archive.close()


def _file_name(image: Image, folders: Folders, used: set[str]) -> str:
    folder = folders.path(image.series_id)
    ext = image.storage_path.rsplit(".", 1)[-1]
    name = f"{folder}/{_stem(image)}-{image.id.hex[:8]}.{ext}"
    if name.lower() in used:  # two short ids alike in one folder: the whole id tells them apart
        name = f"{folder}/{_stem(image)}-{image.id.hex}.{ext}"
    used.add(name.lower())
    return name


async def _write_file(
    archive: ZipStream,
    store: ObjectStore,
    image: Image,
    name: str,
    progress: Callable[[int], None] | None,
) -> AsyncIterator[bytes]:
    chunks = store.stream(image.storage_path)
    try:
        first = await anext(chunks)
    except StopAsyncIteration:
        first = b""
    except StoredObjectMissing:
        return
    entry = archive.open(name, when=image.created_at, size=image.size_bytes)
    entry.write(first)
    if progress:
        progress(len(first))
    yield archive.take()
    async for chunk in chunks:
        entry.write(chunk)
        if progress:
            progress(len(chunk))
        yield archive.take()
    entry.close()
    yield archive.take()


def _write_manifests(
    archive: ZipStream, manifest: _Manifest, started: dt.datetime
) -> Iterable[bytes]:
    head = {
        "cog_version": __version__,
        "exported_at": started.isoformat(),
        "count": manifest.count,
        "missing_files": manifest.missing,
    }
    opening = "{\n" + "".join(f" {json.dumps(k)}: {json.dumps(v)},\n" for k, v in head.items())
    opening += ' "images": [\n'
    entry = archive.open(MANIFEST_JSON, when=started, compress=True)
    entry.write(opening.encode())
    yield from _copy(manifest.json, entry, archive)
    entry.write(b"\n ]\n}\n")
    entry.close()
    yield archive.take()
    entry = archive.open(MANIFEST_CSV, when=started, compress=True)
    yield from _copy(manifest.csv, entry, archive)
    entry.close()
    yield archive.take()


def _copy(source: IO[bytes], entry: IO[bytes], archive: ZipStream) -> Iterable[bytes]:
    source.seek(0)
    while block := source.read(COPY_CHUNK):
        entry.write(block)
        yield archive.take()
