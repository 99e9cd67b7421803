"""Storage keys. Made from ids Cog generates; nothing a user sends becomes part of a key."""

from __future__ import annotations

import uuid


def image_key(image_id: uuid.UUID, extension: str) -> str:
    return f"images/{image_id.hex[:2]}/{image_id}.{extension}"


def thumbnail_key(image_id: uuid.UUID) -> str:
    return f"thumbs/{image_id.hex[:2]}/{image_id}.webp"
