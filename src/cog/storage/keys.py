"""Storage keys. Made from ids Cog generates; nothing a user sends becomes part of a key.

Originals live under `images/`, thumbnails under `thumbs/`. `cog doctor` moves files no image
refers to under `quarantine/`, which Cog itself never reads.
"""

from __future__ import annotations

import uuid

IMAGES_PREFIX = "images"
THUMBS_PREFIX = "thumbs"
QUARANTINE_PREFIX = "quarantine"


def image_key(image_id: uuid.UUID, extension: str) -> str:
    return f"{IMAGES_PREFIX}/{image_id.hex[:2]}/{image_id}.{extension}"


def thumbnail_key(image_id: uuid.UUID) -> str:
    return f"{THUMBS_PREFIX}/{image_id.hex[:2]}/{image_id}.webp"


def image_id_of_thumbnail(key: str) -> uuid.UUID | None:
    """The image a thumbnail key was made for; None when the key is not one Cog makes."""
    name = key.rsplit("/", 1)[-1].removesuffix(".webp")
    try:
        image_id = uuid.UUID(name)
    except ValueError:
        return None
    return image_id if thumbnail_key(image_id) == key else None


def quarantine_key(folder: str, key: str) -> str:
    return f"{QUARANTINE_PREFIX}/{folder}/{key}"
