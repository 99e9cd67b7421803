"""Domain enums shared by the database, the engine and the web layer."""

from __future__ import annotations

from enum import StrEnum


class ImageSource(StrEnum):
    upload = "upload"
    generated = "generated"


class VersionSource(StrEnum):
    """How a version of an image came to be."""

    upload = "upload"  # the first file, or a replacement a person uploaded
    generated = "generated"  # made by a job's image step
    edit = "edit"  # the image model changed the version before it, by a prompt
    restore = "restore"  # an earlier version made current again (a copy of it)


class LineageRole(StrEnum):
    """Why one image version is a parent of another."""

    reference = "reference"  # a reference image of the step that made the child
    input = "input"  # the image a batch run was run for
    edit = "edit"  # the child is an edit of it (or was split off from it)
    style = "style"  # a style reference of the step that made the child (the job's style source)


class StepKind(StrEnum):
    llm = "llm"
    image = "image"


class JobStatus(StrEnum):
    draft = "draft"
    ready = "ready"


class RunStatus(StrEnum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"

    @property
    def is_final(self) -> bool:
        return self in (RunStatus.succeeded, RunStatus.failed, RunStatus.cancelled)


class BatchStatus(StrEnum):
    running = "running"  # while any of its runs is queued or running
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"

    @property
    def is_final(self) -> bool:
        return self is not BatchStatus.running


class StepStatus(StrEnum):
    pending = "pending"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"
    skipped = "skipped"


# Accepted image formats: Pillow format name -> (mime type, file extension).
IMAGE_FORMATS: dict[str, tuple[str, str]] = {
    "PNG": ("image/png", "png"),
    "JPEG": ("image/jpeg", "jpg"),
    "WEBP": ("image/webp", "webp"),
    "GIF": ("image/gif", "gif"),
    "AVIF": ("image/avif", "avif"),
}


ASPECT_RATIOS = ("1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "9:16", "16:9", "21:9")
IMAGE_SIZES = ("1K", "2K", "4K")
MAX_IMAGES_PER_STEP = 8
MAX_STEPS = 20
MAX_BATCH_IMAGES = 1000
# Reference images one image call may send (Nano Banana Pro takes up to 14): a step's own and
# its job's style references together.
MAX_REFERENCE_IMAGES = 14
