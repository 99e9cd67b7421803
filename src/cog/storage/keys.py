"""Storage keys. Made from ids Cog generates; nothing a user sends becomes part of a key.

Originals live under `images/`, thumbnails under `thumbs/`. `cog doctor` moves files no image
refers to under `quarantine/`, which Cog itself never reads.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable

IMAGES_PREFIX = "images"
THUMBS_PREFIX = "thumbs"
QUARANTINE_PREFIX = "quarantine"


def image_key(image_id: uuid.UUID, extension: str) -> str:
    return f"{IMAGES_PREFIX}/{image_id.hex[:2]}/{image_id}.{extension}"


def thumbnail_key(version_id: uuid.UUID) -> str:
    """The thumbnail of one version of an image; an image's own id names that of version 1."""
    return f"{THUMBS_PREFIX}/{version_id.hex[:2]}/{version_id}.webp"


def image_id_of_thumbnail(key: str) -> uuid.UUID | None:
    """The version (for version 1: the image) a thumbnail key was made for; None when the key
    is not one Cog makes."""
    name = key.rsplit("/", 1)[-1].removesuffix(".webp")
    try:
        version_id = uuid.UUID(name)
    except ValueError:
        return None
    return version_id if thumbnail_key(version_id) == key else None


def quarantine_key(folder: str, key: str) -> str:
    return f"{QUARANTINE_PREFIX}/{folder}/{key}"


def version_key(version_id: uuid.UUID, extension: str) -> str:
    """The file of one version of an image. Version 1 has the image's own id, so its key is the
    image's key; every later version has a key of its own, and no file is ever overwritten."""
    return image_key(version_id, extension)


def version_objects(
    versions: Iterable[tuple[uuid.UUID, str]], extra: Iterable[str] = ()
) -> list[str]:
    """Every stored object of the given versions (id, file key): files and thumbnails, each
    once, with `extra` keys first."""
    pairs = list(versions)
    keys = dict.fromkeys([*extra, *(path for _, path in pairs)])
    keys.update(dict.fromkeys(thumbnail_key(version_id) for version_id, _ in pairs))
    return list(keys)
