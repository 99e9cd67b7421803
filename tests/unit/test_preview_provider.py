from __future__ import annotations

import io
from typing import Any

import pytest
from jinja2 import StrictUndefined
from jinja2.sandbox import SandboxedEnvironment
from PIL import Image
from pydantic import BaseModel, Field, model_validator

from cog.engine.drafting import (
    DraftedJob,
    base_prompt_from_request,
    build_draft_request,
    draft_steps,
)
from cog.errors import ProviderError
from cog.providers.base import InputImage
from cog.providers.preview import PreviewProvider, image_dimensions

PROMPT = "A lighthouse on a rocky coast at dusk, waves crashing, warm light in the window"


def png(color: str = "orange", size: tuple[int, int] = (40, 30)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, format="PNG")
    return out.getvalue()


@pytest.mark.parametrize(
    ("aspect_ratio", "image_size", "expected"),
    [
        (None, None, (1024, 1024)),
        ("16:9", "1K", (1024, 576)),
        ("3:4", "2K", (1536, 2048)),
        ("21:9", "4K", (4096, 1755)),
    ],
)
async def test_image_is_a_png_of_the_requested_shape(
    aspect_ratio: str | None, image_size: str | None, expected: tuple[int, int]
) -> None:
    result = await PreviewProvider().generate_image(
        prompt=PROMPT, aspect_ratio=aspect_ratio, image_size=image_size
    )
    assert result.mime_type == "image/png"
    assert result.provider == "preview"
    with Image.open(io.BytesIO(result.data)) as image:
        image.verify()
    with Image.open(io.BytesIO(result.data)) as image:
        assert image.format == "PNG"
        assert image.size == expected
    assert len(result.attempts) == 1
    assert result.attempts[0].error is None


async def test_image_is_deterministic_and_follows_the_inputs() -> None:
    provider = PreviewProvider()
    refs = [InputImage(png(), "image/png")]
    first = await provider.generate_image(prompt=PROMPT, references=refs, aspect_ratio="4:3")
    again = await provider.generate_image(prompt=PROMPT, references=refs, aspect_ratio="4:3")
    other_prompt = await provider.generate_image(
        prompt="A fox", references=refs, aspect_ratio="4:3"
    )
    other_refs = await provider.generate_image(prompt=PROMPT, aspect_ratio="4:3")
    assert first.data == again.data
    assert first.data != other_prompt.data
    assert first.data != other_refs.data
    assert PROMPT[:40] in first.text


async def test_broken_reference_does_not_break_the_preview() -> None:
    result = await PreviewProvider().generate_image(
        prompt=PROMPT, references=[InputImage(b"not an image", "image/png")]
    )
    with Image.open(io.BytesIO(result.data)) as image:
        assert image.size == (1024, 1024)


@pytest.mark.parametrize(
    ("aspect_ratio", "image_size"), [("wide", None), ("1:0", None), (None, "8K")]
)
async def test_unsupported_shape_is_a_clear_provider_error(
    aspect_ratio: str | None, image_size: str | None
) -> None:
    with pytest.raises(ProviderError, match="Unsupported") as caught:
        await PreviewProvider().generate_image(
            prompt=PROMPT, aspect_ratio=aspect_ratio, image_size=image_size
        )
    assert caught.value.retryable is False
    assert len(caught.value.extra["attempts"]) == 1


def test_image_dimensions_round_the_short_side() -> None:
    assert image_dimensions("2:3", "1K", {"1K": 1024}) == (683, 1024)
    assert image_dimensions("1:1", None, {"1K": 256}) == (256, 256)


async def test_text_elaborates_the_prompt_deterministically_and_says_it_is_a_preview() -> None:
    provider = PreviewProvider()
    prompt = "Write a detailed image prompt for: a red fox in snow\nIt is for the series Foxes."
    first = await provider.generate_text(prompt=prompt, images=[InputImage(png(), "image/png")])
    again = await provider.generate_text(prompt=prompt, images=[InputImage(png(), "image/png")])
    assert first.text == again.text
    assert first.text.startswith("A red fox in snow. ")
    assert "Preview" in first.text
    assert "1 reference image" in first.text
    assert first.provider == "preview"
    assert first.usage.total_tokens == 0


def render(template: str, **context: Any) -> str:
    env = SandboxedEnvironment(undefined=StrictUndefined)
    return env.from_string(template).render(**context)


async def test_draft_is_a_sensible_job_whose_prompts_are_valid_templates() -> None:
    job, result = await draft_steps(
        PreviewProvider(),
        base_prompt="a red fox in the snow, portrait",
        series_title="Foxes",
        series_description="Foxes through the seasons",
        series_tags=["fox", "winter"],
        images=[InputImage(png(), "image/png")],
    )
    assert isinstance(job, DraftedJob)
    assert 2 <= len(job.steps) <= 3
    assert job.steps[0].kind == "llm"
    assert job.steps[-1].kind == "image"
    assert "{{ base_prompt }}" in job.steps[0].prompt
    assert "{{ steps[0].text }}" in job.steps[1].prompt
    assert job.steps[1].config.aspect_ratio == "3:4"  # "portrait" in the base prompt
    assert "fox" in job.title
    assert DraftedJob.model_validate_json(result.text) == job

    series = {"title": "Foxes", "description": "Foxes in winter", "tags": ["fox", "winter"]}
    first = render(job.steps[0].prompt, base_prompt="a red fox", series=series, steps=[])
    assert "a red fox" in first
    assert "Foxes" in first
    second = render(
        job.steps[1].prompt,
        base_prompt="a red fox",
        series=series,
        steps=[{"text": "A detailed fox"}],
        previous={"text": "A detailed fox"},
    )
    assert second == "A detailed fox"


def test_draft_request_teaches_the_step_model_and_carries_the_series() -> None:
    system, prompt = build_draft_request(
        "a red fox", "Foxes", "Foxes through the seasons", ["fox", "winter"], image_count=2
    )
    for variable in (
        "{{ base_prompt }}",
        "{{ series.title }}",
        "{{ series.description }}",
        "{{ series.tags",
        "{{ steps[0].text }}",
        "{{ previous.text }}",
    ):
        assert variable in system
    assert "exactly one picture" in system
    assert "config.count" in system
    assert "2 to 4 steps" in system
    assert "Foxes through the seasons" in prompt
    assert "fox, winter" in prompt
    assert "2 image(s)" in prompt
    assert base_prompt_from_request(prompt) == "a red fox"


class Palette(BaseModel):
    name: str = Field(min_length=3)
    colors: list[str] = Field(min_length=2, max_length=4)
    weight: float = Field(ge=0.5, le=0.9)
    mood: str | None = None


class Board(BaseModel):
    palettes: list[Palette]
    count: int = Field(gt=2)
    public: bool


async def test_json_for_any_schema_is_a_deterministic_valid_instance() -> None:
    provider = PreviewProvider()
    board, result = await provider.generate_json(prompt="moods", schema=Board)
    again, _ = await provider.generate_json(prompt="moods", schema=Board)
    assert isinstance(board, Board)
    assert board == again
    assert len(board.palettes[0].colors) == 2
    assert 0.5 <= board.palettes[0].weight <= 0.9
    assert board.count > 2
    assert Board.model_validate_json(result.text) == board


class Impossible(BaseModel):
    value: int

    @model_validator(mode="after")
    def never(self) -> Impossible:
        raise ValueError("nothing is valid")


async def test_json_for_an_impossible_schema_is_a_provider_error_not_a_crash() -> None:
    with pytest.raises(ProviderError, match="Impossible") as caught:
        await PreviewProvider().generate_json(prompt="x", schema=Impossible)
    assert caught.value.retryable is False
