"""The provider seam: what the engine asks of a text model and of an image model.

Providers raise `cog.errors.ProviderError` only. Its `extra` carries `attempts` (a tuple of
`Attempt`) and `status_code` (the provider's HTTP status, or None), so a failed step can show
what was tried.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol, TypeVar

from pydantic import BaseModel

T = TypeVar("T", bound=BaseModel)


@dataclass(frozen=True)
class InputImage:
    data: bytes
    mime_type: str


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    output_tokens: int
    total_tokens: int


ZERO_USAGE = Usage(prompt_tokens=0, output_tokens=0, total_tokens=0)


@dataclass(frozen=True)
class Attempt:
    """One try at a provider call; a call that was retried has several.

    `error` is None when the try succeeded. `status_code` is the HTTP status of a failed try,
    None for a success and for failures without one (a timeout, a safety block in a 200).
    """

    number: int
    started_at: datetime
    duration_ms: float
    error: str | None
    status_code: int | None


@dataclass(frozen=True)
class TextResult:
    text: str
    usage: Usage
    model: str
    provider: str
    attempts: tuple[Attempt, ...]


@dataclass(frozen=True)
class ImageResult:
    data: bytes
    mime_type: str
    text: str
    usage: Usage
    model: str
    provider: str
    attempts: tuple[Attempt, ...]


class TextProvider(Protocol):
    name: str

    async def generate_text(
        self,
        *,
        prompt: str,
        images: Sequence[InputImage] = (),
        model: str | None = None,
        temperature: float | None = None,
        system: str | None = None,
    ) -> TextResult: ...

    async def generate_json(
        self,
        *,
        prompt: str,
        images: Sequence[InputImage] = (),
        schema: type[T],
        model: str | None = None,
        system: str | None = None,
    ) -> tuple[T, TextResult]: ...

    async def generate_structured(
        self,
        *,
        prompt: str,
        images: Sequence[InputImage] = (),
        json_schema: Mapping[str, Any],
        model: str | None = None,
        temperature: float | None = None,
    ) -> tuple[Any, TextResult]:
        """An answer as JSON shaped by `json_schema` (a JSON Schema a person wrote): the parsed
        value and the call's result (its text is the JSON as sent). The caller validates it."""
        ...

    async def aclose(self) -> None:
        """Release connections; safe to call more than once."""
        ...


class ImageProvider(Protocol):
    name: str

    async def generate_image(
        self,
        *,
        prompt: str,
        references: Sequence[InputImage] = (),
        model: str | None = None,
        aspect_ratio: str | None = None,
        image_size: str | None = None,
    ) -> ImageResult:
        """Make exactly one image. Several images are several calls, made concurrently by the
        caller, because Gemini's image models refuse more than one candidate per request."""
        ...

    async def aclose(self) -> None:
        """Release connections; safe to call more than once."""
        ...
