"""The embedded default: a folder in the data dir."""

from __future__ import annotations

from pathlib import Path

from obstore.store import LocalStore

from cog.storage.base import ObstoreStore


def make_local_store(folder: str | Path) -> ObstoreStore:
    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    return ObstoreStore(LocalStore(root.resolve(), automatic_cleanup=True), name=f"file://{root}")
