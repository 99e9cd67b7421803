"""The images a step asks for, and the record of those it has committed.

A plain image step records its images on the step run (`image_ids`); a step with a loop records
each on its iteration too (`cog.engine.fanout`). Either way an image and its record are committed
in one transaction, so an image is never stored without being counted, nor counted twice.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from cog.db.lineage import Parent
from cog.providers.base import InputImage


@dataclass(frozen=True)
class ImageCall:
    """One image to make: its prompt, its place among the step's (or the iteration's) images,
    what its metadata records beside the usual (the item of a loop), and, when they are its
    own rather than the step's, its reference images and their versions (an item's images of
    an earlier step, `step:N:item`)."""

    prompt: str
    index: int
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)
    iteration: int | None = None
    inputs: list[InputImage] | None = None
    parents: list[Parent] | None = None


class StepImages:
    """The images a step has committed, in order, and the step run's columns that record them.
    Only changed inside the images' transactions, which run one at a time
    (`cog.services.image_commits`)."""

    def __init__(self, recorded: list[str]) -> None:
        self.recorded = recorded

    def add(self, call: ImageCall, image_id: str) -> None:
        self.recorded.append(image_id)

    def remove(self, call: ImageCall, image_id: str) -> None:
        if image_id in self.recorded:
            self.recorded.remove(image_id)

    def said(self, call: ImageCall, text: str) -> None:
        """What the model said with an image (an iteration keeps its own)."""

    def failed(self, call: ImageCall, message: str) -> None:
        """A call failed (an iteration records it)."""

    def describe(self, message: str) -> str:
        """The step's error, from the first call that failed."""
        return message

    def image_ids(self) -> list[str]:
        return list(self.recorded)

    def values(self) -> dict[str, Any]:
        return {"image_ids": self.image_ids()}
