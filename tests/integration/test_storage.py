"""The object stores: the local folder and S3 (a real S3-compatible server on loopback).

Each test runs against both (`storage_kind`); what is checked is what a reader gets back.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import os
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import boto3
import pytest

from cog.errors import ConfigError, StoreError
from cog.storage import ObjectStore, StoredObjectMissing, make_store
from tests.conftest import make_settings, stored_keys


@pytest.fixture
def object_store(tmp_path: Path, storage_settings: dict[str, str]) -> ObjectStore:
    return make_store(make_settings(tmp_path, **storage_settings))


async def all_keys(store: ObjectStore, prefix: str = "") -> list[str]:
    return sorted([key async for key in store.list_keys(prefix)])


async def streamed(store: ObjectStore, key: str) -> bytes:
    return b"".join([chunk async for chunk in store.stream(key)])


async def test_put_bytes_file_object_and_path(object_store: ObjectStore, tmp_path: Path) -> None:
    as_bytes = b"\x89PNG bytes" + os.urandom(100)
    as_file = os.urandom(3000)
    as_path = os.urandom(70_000)
    on_disk = tmp_path / "source.bin"
    on_disk.write_bytes(as_path)
    spent = io.BytesIO(as_file)
    spent.read()  # a file already read to its end (as after verifying an upload) is put whole

    await object_store.put("images/aa/one.png", as_bytes)
    await object_store.put("images/bb/two.jpg", spent)
    await object_store.put("thumbs/aa/one.webp", on_disk)

    for key, data in [
        ("images/aa/one.png", as_bytes),
        ("images/bb/two.jpg", as_file),
        ("thumbs/aa/one.webp", as_path),
    ]:
        assert await object_store.get(key) == data
        assert await streamed(object_store, key) == data
        assert await object_store.size(key) == len(data)
    assert on_disk.read_bytes() == as_path  # the source is left alone


async def test_put_a_real_file_and_stream_a_large_object(
    object_store: ObjectStore, tmp_path: Path
) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)
    source = tmp_path / "large.bin"
    source.write_bytes(data)
    with source.open("rb") as fp:
        await object_store.put("images/cc/large.png", fp)
    chunks = [chunk async for chunk in object_store.stream("images/cc/large.png")]
    assert b"".join(chunks) == data
    assert all(isinstance(chunk, bytes) for chunk in chunks)
    assert await object_store.size("images/cc/large.png") == len(data)


async def test_put_replaces_an_object_whole(object_store: ObjectStore) -> None:
    await object_store.put("images/dd/x.png", b"a much longer first version")
    await object_store.put("images/dd/x.png", b"short")
    assert await object_store.get("images/dd/x.png") == b"short"
    assert await object_store.size("images/dd/x.png") == 5
    assert await all_keys(object_store) == ["images/dd/x.png"]


async def test_delete_and_missing_objects(object_store: ObjectStore) -> None:
    await object_store.put("images/ee/gone.png", b"bye")
    await object_store.put("images/ee/kept.png", b"stay")
    await object_store.delete("images/ee/gone.png")
    await object_store.delete("images/ee/gone.png")  # again: missing is fine
    await object_store.delete("never/was/there.png")

    assert await object_store.size("images/ee/gone.png") is None
    with pytest.raises(StoredObjectMissing):
        await object_store.get("images/ee/gone.png")
    with pytest.raises(StoredObjectMissing):
        await streamed(object_store, "images/ee/gone.png")
    with pytest.raises(StoredObjectMissing):
        await object_store.get("never/was/there.png")
    assert await object_store.get("images/ee/kept.png") == b"stay"
    assert await all_keys(object_store) == ["images/ee/kept.png"]


async def test_list_keys_with_a_prefix(object_store: ObjectStore) -> None:
    assert await all_keys(object_store) == []
    keys = ["images/aa/1.png", "images/bb/2.jpg", "thumbs/aa/1.webp", "imagesque/3.png"]
    for key in keys:
        await object_store.put(key, key.encode())

    assert await all_keys(object_store) == sorted(keys)
    assert await all_keys(object_store, "images") == ["images/aa/1.png", "images/bb/2.jpg"]
    assert await all_keys(object_store, "images/") == ["images/aa/1.png", "images/bb/2.jpg"]
    assert await all_keys(object_store, "images/bb") == ["images/bb/2.jpg"]
    assert await all_keys(object_store, "thumbs") == ["thumbs/aa/1.webp"]
    assert await all_keys(object_store, "videos") == []


async def test_list_objects_gives_sizes_and_times(object_store: ObjectStore) -> None:
    before = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=5)
    await object_store.put("images/aa/1.png", b"12345")
    await object_store.put("thumbs/aa/1.webp", b"12")
    listed = [o async for o in object_store.list_objects("images")]
    assert [(o.key, o.size) for o in listed] == [("images/aa/1.png", 5)]
    modified = listed[0].last_modified
    assert modified.tzinfo is not None
    assert before < modified < dt.datetime.now(dt.UTC) + dt.timedelta(seconds=5)


async def test_move_gives_an_object_another_key(object_store: ObjectStore) -> None:
    await object_store.put("images/aa/1.png", b"moved")
    await object_store.move("images/aa/1.png", "quarantine/x/images/aa/1.png")
    assert await all_keys(object_store) == ["quarantine/x/images/aa/1.png"]
    assert await object_store.get("quarantine/x/images/aa/1.png") == b"moved"
    with pytest.raises(StoredObjectMissing):
        await object_store.move("images/aa/1.png", "quarantine/y/1.png")


class _BrokenReader(io.RawIOBase):
    """A file that fails half way through, like a connection that drops."""

    def __init__(self, good: bytes) -> None:
        self._good = io.BytesIO(good)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._good.seek(offset, whence)

    def tell(self) -> int:
        return self._good.tell()

    def read(self, size: int = -1) -> bytes:
        chunk = self._good.read(size if size and size > 0 else 64 * 1024)
        if not chunk:
            raise OSError("the source went away")
        return chunk

    def readinto(self, buffer: Any) -> int:
        chunk = self.read(len(buffer))
        buffer[: len(chunk)] = chunk
        return len(chunk)


async def test_a_failed_put_leaves_no_object(object_store: ObjectStore) -> None:
    await object_store.put("images/ff/old.png", b"the old version")
    for key in ("images/ff/new.png", "images/ff/old.png"):
        with pytest.raises(StoreError, match="nothing was kept") as refused:
            await object_store.put(key, _BrokenReader(os.urandom(200_000)))
        assert "went away" in str(refused.value.__cause__)  # the reason, for the log

    assert await object_store.size("images/ff/new.png") is None
    assert await object_store.get("images/ff/old.png") == b"the old version"
    assert await all_keys(object_store) == ["images/ff/old.png"]


async def test_a_cancelled_put_leaves_no_object(object_store: ObjectStore) -> None:
    """Puts cancelled at every moment, from before the write starts to after it has landed:
    none leaves an object behind, whatever the store had done when the cancel came."""
    data = os.urandom(300_000)
    keys = [f"images/cc/{i}.png" for i in range(60)]
    for i, key in enumerate(keys):
        put = asyncio.ensure_future(object_store.put(key, data))
        for _ in range(i % 4):
            await asyncio.sleep(0)
        await asyncio.sleep(0.0005 * (i % 6))
        if put.done():  # it beat the cancel: a whole object, kept
            await put
            await object_store.delete(key)
            continue
        put.cancel()
        with pytest.raises(asyncio.CancelledError):
            await put
        await asyncio.sleep(0.02)  # time for a write the cancel did not stop to land
    await object_store.put("images/cc/kept.png", data)
    assert await all_keys(object_store, "images/cc") == ["images/cc/kept.png"]


async def test_a_put_cancelled_again_while_it_cleans_up_leaves_no_object(
    object_store: ObjectStore,
) -> None:
    """A second `Task.cancel()` (a TaskGroup cancels, then whoever stops the group does) while
    the cancelled put waits for its write and removes it: still nothing is left behind."""
    data = os.urandom(300_000)
    keys = [f"images/cd/{i}.png" for i in range(24)]
    for i, key in enumerate(keys):
        put = asyncio.ensure_future(object_store.put(key, data))
        await asyncio.sleep(0)
        if put.done():
            await put
            await object_store.delete(key)
            continue
        put.cancel()
        for _ in range(1 + i % 3):
            await asyncio.sleep(0.0003 * (i % 4))
            put.cancel()
        with pytest.raises(asyncio.CancelledError):
            await put
        await asyncio.sleep(0.02)  # time for a write the cancels did not stop to land
    assert await all_keys(object_store, "images/cd") == []


# --- the local folder ---------------------------------------------------------------------------


async def test_local_puts_leave_no_temporary_files(tmp_path: Path) -> None:
    root = tmp_path / "storage"
    store = make_store(make_settings(tmp_path, storage_url=root.as_uri()))
    source = tmp_path / "source.bin"
    source.write_bytes(b"from a path")
    await store.put("images/aa/a.png", b"bytes")
    await store.put("images/aa/a.png", b"bytes again")
    await store.put("images/bb/b.png", io.BytesIO(b"a file object"))
    await store.put("thumbs/aa/a.webp", source)
    with pytest.raises(StoreError) as refused:
        await store.put("images/cc/c.png", _BrokenReader(os.urandom(100_000)))
    assert "went away" in str(refused.value.__cause__)

    assert stored_keys(root) == ["images/aa/a.png", "images/bb/b.png", "thumbs/aa/a.webp"]
    assert (root / "images/aa/a.png").read_bytes() == b"bytes again"


def test_the_local_store_folder_is_made_when_missing(tmp_path: Path) -> None:
    root = tmp_path / "deep" / "er" / "storage"
    make_store(make_settings(tmp_path, storage_url=root.as_uri()))
    assert root.is_dir()


# --- S3 -----------------------------------------------------------------------------------------


@pytest.mark.s3
async def test_s3_keys_live_under_the_store_prefix(
    tmp_path: Path, s3_storage: dict[str, str]
) -> None:
    store = make_store(make_settings(tmp_path, **s3_storage))
    neighbour = make_store(
        make_settings(tmp_path, **{**s3_storage, "storage_url": s3_storage["storage_url"] + "-2"})
    )
    await store.put("images/aa/x.png", b"mine")
    await neighbour.put("images/aa/x.png", b"theirs")

    s3 = boto3.client(
        "s3",
        endpoint_url=s3_storage["s3_endpoint_url"],
        region_name="us-east-1",
        aws_access_key_id="test",
        aws_secret_access_key="test",
    )
    prefix = urlparse(s3_storage["storage_url"]).path.strip("/")
    listed = s3.list_objects_v2(Bucket="cog-images", Prefix=prefix + "/")
    assert [item["Key"] for item in listed["Contents"]] == [f"{prefix}/images/aa/x.png"]
    body = s3.get_object(Bucket="cog-images", Key=f"{prefix}/images/aa/x.png")["Body"].read()
    assert body == b"mine"
    assert await all_keys(store) == ["images/aa/x.png"]
    assert await neighbour.get("images/aa/x.png") == b"theirs"
    await store.delete("images/aa/x.png")
    assert await neighbour.get("images/aa/x.png") == b"theirs"


def test_store_urls_that_make_no_store_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="bucket"):
        make_store(make_settings(tmp_path, storage_url="s3://"))
    with pytest.raises(ConfigError, match="neither"):
        make_store(make_settings(tmp_path, storage_url="ftp://example.com/images"))
