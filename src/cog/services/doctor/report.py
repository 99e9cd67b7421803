"""What `cog doctor` finds and does: kinds of findings, findings, the report, options."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

DEFAULT_GRACE = dt.timedelta(hours=1)


class Kind(StrEnum):
    """What a finding is about, in the order a report lists them."""

    file_missing = "file_missing"
    file_changed = "file_changed"
    file_without_row = "file_without_row"
    thumbnail_without_image = "thumbnail_without_image"
    run_stale = "run_stale"
    run_lost = "run_lost"
    recent_file_without_row = "recent_file_without_row"
    thumbnail_missing = "thumbnail_missing"
    thumbnail_outdated = "thumbnail_outdated"

    @property
    def label(self) -> str:
        return _LABELS[self]

    @property
    def fix(self) -> str:
        """What repair does about this kind, in a few words."""
        return _FIXES[self]

    @property
    def is_problem(self) -> bool:
        """Problems make `cog doctor` exit 1 until fixed; notices never do."""
        return self not in _NOTICES


_LABELS = {
    Kind.file_missing: "Images whose file is missing",
    Kind.file_changed: "Files whose bytes changed",
    Kind.file_without_row: "Files no image refers to",
    Kind.thumbnail_without_image: "Thumbnails of no image",
    Kind.run_stale: "Runs left running",
    Kind.run_lost: "Queued runs no worker will take",
    Kind.recent_file_without_row: "New files without a row yet",
    Kind.thumbnail_missing: "Thumbnails missing",
    Kind.thumbnail_outdated: "Thumbnails damaged or outdated",
}
_FIXES = {
    Kind.file_missing: "kept; --drop-missing deletes the rows",
    Kind.file_changed: "left as they are (restore from a backup)",
    Kind.file_without_row: "moved under quarantine/",
    Kind.thumbnail_without_image: "deleted",
    Kind.run_stale: "queued again to resume, or failed",
    Kind.run_lost: "given a new queue job",
    Kind.recent_file_without_row: "left alone while they are new",
    Kind.thumbnail_missing: "made again",
    Kind.thumbnail_outdated: "made again",
}
_NOTICES = {Kind.recent_file_without_row, Kind.thumbnail_missing, Kind.thumbnail_outdated}


class Outcome(StrEnum):
    """What `repair()` did about a finding."""

    fixed = "fixed"
    gone = "gone"  # no longer true when repair came to it (a row appeared, a run was taken)
    left = "left"  # repair does not touch it (it cannot, or was not asked to)
    failed = "failed"  # repair tried; `note` says what went wrong


@dataclass
class Finding:
    kind: Kind
    detail: str  # what is wrong, in words
    remedy: str  # what repair does about it, or why it does nothing
    key: str | None = None
    image_id: uuid.UUID | None = None
    run_id: uuid.UUID | None = None
    outcome: Outcome | None = None  # None until repair
    note: str = ""  # what repair did, or why it did not

    @property
    def is_open(self) -> bool:
        """A problem that is still there."""
        return self.kind.is_problem and self.outcome not in (Outcome.fixed, Outcome.gone)

    @property
    def subject(self) -> str:
        return str(self.image_id or self.run_id or self.key)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind.value,
            "problem": self.kind.is_problem,
            "image_id": str(self.image_id) if self.image_id else None,
            "run_id": str(self.run_id) if self.run_id else None,
            "key": self.key,
            "detail": self.detail,
            "remedy": self.remedy,
            "outcome": self.outcome.value if self.outcome else None,
            "note": self.note or None,
        }


@dataclass
class Report:
    store: str
    quick: bool
    queue: bool  # the queue executor's checks ran
    images: int = 0
    objects: int = 0  # objects listed under images/ and thumbs/
    files_read: int = 0
    bytes_read: int = 0
    runs: int = 0  # runs queued or running
    findings: list[Finding] = field(default_factory=list)
    repaired: bool = False

    @property
    def healthy(self) -> bool:
        return not any(f.is_open for f in self.findings)

    @property
    def problems(self) -> list[Finding]:
        return [f for f in self.findings if f.is_open]

    def of(self, kind: Kind) -> list[Finding]:
        return [f for f in self.findings if f.kind is kind]

    def kinds(self) -> list[Kind]:
        """The kinds this report looked for."""
        return [
            k
            for k in Kind
            if (k is not Kind.run_lost or self.queue)
            and (k is not Kind.thumbnail_outdated or not self.quick)
        ]

    def to_dict(self) -> dict[str, Any]:
        return {
            "healthy": self.healthy,
            "repaired": self.repaired,
            "store": self.store,
            "quick": self.quick,
            "checked": {
                "images": self.images,
                "objects": self.objects,
                "files_read": self.files_read,
                "bytes_read": self.bytes_read,
                "runs": self.runs,
            },
            "counts": {
                k.value: {
                    "found": len(self.of(k)),
                    "open": sum(f.is_open for f in self.of(k)),
                }
                for k in self.kinds()
            },
            "findings": [f.to_dict() for f in self.findings],
        }


@dataclass(frozen=True)
class Options:
    # Files without a row younger than this are left alone: an upload may be about to commit.
    grace: dt.timedelta = DEFAULT_GRACE
    # Compare sizes from the listing instead of reading every file for its sha256.
    quick: bool = False
    # With repair: delete the rows of images whose file is gone (see the package's docstring).
    drop_missing: bool = False
    # Files read at the same time (reads from S3 wait on the network, not the disk).
    concurrency: int = 8


class Progress(Protocol):
    """Told how the long parts go (reading every file, repairing); the CLI draws a bar."""

    def begin(self, description: str, total: int, *, in_bytes: bool) -> None: ...

    def advance(self, amount: int) -> None: ...

    def end(self) -> None: ...
