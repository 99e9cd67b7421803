"""Where images are decoded: threads of their own, a few at a time, at a lower CPU priority.
A model's image is checked whole without decoding its pixels: a small one on the loop."""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import sys
import threading
import time
from pathlib import Path

import anyio
import pytest
from PIL import Image

from cog.config import Settings
from cog.errors import Invalid
from cog.services.images import CHECK_ON_LOOP_BYTES, DECODE_NICENESS, decoding, verify


def settings(tmp_path: Path, slots: int = 2) -> Settings:
    return Settings(_env_file=None, data_dir=tmp_path, decode_concurrency=slots)  # type: ignore[call-arg]


def niceness() -> int:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


@pytest.mark.skipif(sys.platform != "linux", reason="a thread's own priority is Linux's")
async def test_decoding_threads_yield_the_cpu_to_the_threads_answering_requests(
    tmp_path: Path,
) -> None:
    ours = niceness()
    theirs = await decoding(settings(tmp_path), niceness)
    assert theirs == min(19, ours + DECODE_NICENESS)
    assert niceness() == ours  # the event loop's thread keeps its priority


async def test_no_more_images_decode_at_once_than_the_slots(tmp_path: Path) -> None:
    running = peak = 0
    lock = threading.Lock()

    def work() -> None:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.05)
        with lock:
            running -= 1

    await asyncio.gather(*(decoding(settings(tmp_path, slots=3), work) for _ in range(9)))
    assert peak == 3


async def test_a_cancelled_caller_waits_for_the_decoding_it_started(tmp_path: Path) -> None:
    """The file the work reads is closed when the caller unwinds: not before the work ends."""
    finished = threading.Event()

    def work() -> None:
        time.sleep(0.3)
        finished.set()

    async def caller() -> None:
        await decoding(settings(tmp_path), work)

    async with anyio.create_task_group() as group:  # how a request is cancelled
        group.start_soon(caller)
        await asyncio.sleep(0.05)
        group.cancel_scope.cancel()
    assert finished.is_set()


async def test_images_decode_on_no_more_threads_than_the_slots(tmp_path: Path) -> None:
    """Each thread that decodes keeps memory of its own (its malloc arena) after the pixels are
    freed: the threads, not only the decodings at once, are as many as the slots."""
    threads: set[int] = set()

    def work() -> None:
        threads.add(threading.get_native_id())
        time.sleep(0.001)

    for _ in range(20):
        await asyncio.gather(*(decoding(settings(tmp_path, slots=2), work) for _ in range(4)))
    assert len(threads) == 2


def noise_png(side: int) -> bytes:
    """A PNG that does not compress: its size grows with its side."""
    out = io.BytesIO()
    pixels = Image.frombytes("RGB", (side, side), os.urandom(side * side * 3))
    pixels.save(out, format="PNG", compress_level=1)
    return out.getvalue()


@pytest.mark.parametrize("side", [48, 320], ids=["on the loop", "in a thread"])
async def test_a_models_image_is_checked_whole_whatever_its_size(tmp_path: Path, side: int) -> None:
    data = noise_png(side)
    assert (len(data) <= CHECK_ON_LOOP_BYTES) == (side == 48)
    checked = await verify(settings(tmp_path), io.BytesIO(data), thumbnail=False)
    assert (checked.info.width, checked.info.height) == (side, side)
    assert checked.info.size_bytes == len(data)
    assert checked.info.sha256 == hashlib.sha256(data).hexdigest()
    assert checked.thumbnail is None  # made when first asked for

    middle = len(data) // 2  # inside the pixel data: its chunk's checksum no longer matches
    damaged = data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1 :]
    with pytest.raises(Invalid, match="damaged"):
        await verify(settings(tmp_path), io.BytesIO(damaged), thumbnail=False)
    with pytest.raises(Invalid, match="damaged or truncated"):
        await verify(settings(tmp_path), io.BytesIO(data[: len(data) * 2 // 3]), thumbnail=False)
