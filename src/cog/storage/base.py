"""The `ObjectStore` seam and its one implementation over obstore (local folder or S3)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Protocol

import obstore
from obstore.exceptions import NotFoundError

from cog.errors import StoreError
from cog.shield import to_the_end

log = logging.getLogger(__name__)


class StoredObjectMissing(Exception):
    """The key has no object behind it."""


@dataclass(frozen=True)
class StoredObject:
    """One object as a listing shows it."""

    key: str
    size: int
    last_modified: dt.datetime  # aware UTC


class ObjectStore(Protocol):
    """Where image bytes live. Keys are made by Cog, never taken from user input."""

    name: str

    async def put(self, key: str, data: bytes | IO[bytes] | Path) -> None:
        """Write the whole object; readers never see a partial one. A put that is cancelled
        leaves no object under the key."""

    async def get(self, key: str) -> bytes: ...

    def stream(self, key: str) -> AsyncIterator[bytes]: ...

    async def size(self, key: str) -> int | None:
        """The object's size, or None when it does not exist."""

    async def delete(self, key: str) -> None:
        """Remove the object; a missing one is not an error."""

    def list_keys(self, prefix: str = "") -> AsyncIterator[str]: ...

    def list_objects(self, prefix: str = "") -> AsyncIterator[StoredObject]:
        """Every object under `prefix` (whole path segments: `images` is not `imagesque`)."""

    async def move(self, key: str, to: str) -> None:
        """Give the object another key (a rename on a folder, a copy and a delete on S3)."""


class ObstoreStore:
    """Any obstore backend. Local puts are atomic (written aside, then renamed), S3 puts are
    atomic by nature, so a crash never leaves a half-written object under its key."""

    def __init__(self, store: Any, name: str) -> None:
        self._store = store
        self.name = name

    async def put(self, key: str, data: bytes | IO[bytes] | Path) -> None:
        if not isinstance(data, bytes | Path):
            data.seek(0)  # noqa: ASYNC240 - a seek on an open file, not path I/O
        write = asyncio.ensure_future(obstore.put_async(self._store, key, data))
        try:
            await asyncio.shield(write)
        except asyncio.CancelledError:
            # Cancelling the wait does not stop the write: obstore's own threads may finish it
            # a moment later. It is seen to its end, then removed: a cancelled put leaves
            # nothing behind, and every caller that cancels one may forget its key.
            await to_the_end(self._remove_after(write, key))
            raise
        except Exception as exc:
            log.warning("writing %s to %s failed: %r", key, self.name, exc)
            raise StoreError(
                "Cog could not write the file to its image store, so nothing was kept. "
                "Try again; if it keeps failing, the server's log says why."
            ) from exc

    async def _remove_after(self, write: asyncio.Future[Any], key: str) -> None:
        with contextlib.suppress(Exception):
            await write
        await delete_quietly(self, key)

    async def get(self, key: str) -> bytes:
        try:
            result = await obstore.get_async(self._store, key)
            return bytes(await result.bytes_async())
        except (FileNotFoundError, NotFoundError) as exc:
            raise StoredObjectMissing(key) from exc

    async def stream(self, key: str) -> AsyncIterator[bytes]:
        try:
            result = await obstore.get_async(self._store, key)
        except (FileNotFoundError, NotFoundError) as exc:
            raise StoredObjectMissing(key) from exc
        async for chunk in result.stream(min_chunk_size=256 * 1024):
            yield bytes(chunk)

    async def size(self, key: str) -> int | None:
        try:
            meta = await obstore.head_async(self._store, key)
        except (FileNotFoundError, NotFoundError):
            return None
        return int(meta["size"])

    async def delete(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError, NotFoundError):
            await obstore.delete_async(self._store, key)

    async def list_keys(self, prefix: str = "") -> AsyncIterator[str]:
        async for item in self.list_objects(prefix):
            yield item.key

    async def list_objects(self, prefix: str = "") -> AsyncIterator[StoredObject]:
        async for batch in obstore.list(self._store, prefix or None, chunk_size=1000):
            for meta in batch:
                modified = meta["last_modified"]
                if modified.tzinfo is None:
                    modified = modified.replace(tzinfo=dt.UTC)
                yield StoredObject(str(meta["path"]), int(meta["size"]), modified)

    async def move(self, key: str, to: str) -> None:
        try:
            await obstore.rename_async(self._store, key, to)
        except (FileNotFoundError, NotFoundError) as exc:
            raise StoredObjectMissing(key) from exc


async def delete_quietly(store: ObjectStore, *keys: str) -> None:
    """Delete objects while undoing something else, or whose rows are gone: a failure is
    logged, not raised, so it never hides the error being handled (and a stray file is
    harmless: `cog doctor` finds it)."""
    for key in keys:
        try:
            await store.delete(key)
        except Exception:
            log.warning("could not delete stored object %s", key, exc_info=True)
