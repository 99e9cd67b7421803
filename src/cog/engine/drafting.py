"""Drafting a job's steps with the text model: the schema it answers in and the request it gets.

No database here: the service layer loads the series and saves the steps.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any, Literal

from pydantic import BaseModel, Field

from cog.engine.prompts import AncestorContext, StyleContext
from cog.providers.base import InputImage, TextProvider, TextResult

StepKind = Literal["llm", "image"]
ImageSize = Literal["1K", "2K", "4K"]

ASPECT_RATIOS = ("1:1", "2:3", "3:2", "3:4", "4:3", "4:5", "5:4", "9:16", "16:9", "21:9")


class DraftStepConfig(BaseModel):
    count: int = Field(
        1, ge=1, le=8, description="Image steps: how many images to make, one model call each."
    )
    aspect_ratio: str | None = Field(
        None, description=f"Image steps: one of {', '.join(ASPECT_RATIOS)}; null for 1:1."
    )
    image_size: ImageSize | None = Field(
        None, description="Image steps: 1K, 2K or 4K; null for 1K."
    )
    temperature: float | None = Field(
        None, ge=0.0, le=2.0, description="llm steps: sampling temperature; null for default."
    )
    answer_schema: str | None = Field(
        None,
        description="llm steps: a JSON Schema, as JSON text, when later steps need fields of "
        "the answer (a list to go over, a yes/no to decide on); null for a text answer.",
    )


class DraftStep(BaseModel):
    kind: StepKind = Field(description="llm: text out; image: one image per call.")
    prompt: str = Field(min_length=1, description="A Jinja template; see the instructions.")
    config: DraftStepConfig = Field(default_factory=DraftStepConfig)
    when: str | None = Field(
        None, description="An expression; the step runs only when it is true. Null: always."
    )
    for_each: str | None = Field(
        None,
        description="An expression giving a list of an earlier structured answer; the step runs "
        "once per item, the item as {{ item }}. Null: once.",
    )


class DraftedJob(BaseModel):
    title: str = Field(min_length=1, max_length=120, description="A few words naming the job.")
    steps: list[DraftStep] = Field(min_length=1, max_length=8)

    @classmethod
    def preview_example(cls, prompt: str) -> DraftedJob:
        """The draft the preview provider answers for a request made by `build_draft_request`."""
        return example_draft(base_prompt_from_request(prompt))


SYSTEM_INSTRUCTION = """\
You plan jobs for Cog, a tool that makes series of images. Answer with the job as JSON.

A job is an ordered list of steps that share one base prompt. Each step is one of:
- "llm": one call to a multimodal text model. It answers with text and sees the images of \
the series that come with the request. Use llm steps to turn a short base prompt into a \
precise image prompt: subject, setting, composition, lighting, palette, style and mood.
- "image": one call to an image model per picture. Each call makes exactly one picture; set \
config.count (1 to 8) to make several pictures of the same prompt, made in parallel. Set \
config.aspect_ratio (1:1, 2:3, 3:2, 3:4, 4:3, 4:5, 5:4, 9:16, 16:9 or 21:9) when the subject \
suits a format, and config.image_size ("1K", "2K" or "4K") only when fine detail matters \
(bigger costs more).

Every step prompt is a Jinja template, filled in just before the step runs. Variables:
- {{ base_prompt }}: the job's base prompt.
- {{ series.title }}, {{ series.description }}: the series' title and description.
- {{ series.tags }}: the series' tags, a list; write {{ series.tags | join(", ") }} in prose.
- {{ series.context }}: the descriptions of the series and of those above it, root first.
- {{ style.profile }}: the style to match, when the job has a style source (else empty); its \
images come with the image steps by themselves.
- {{ steps[0].text }}: the text that step 0 answered (positions count from 0); \
{{ steps[1].text }} for step 1, and so on. Only earlier steps have answers.
- {{ previous.text }}: the text of the step just before this one.
Write variables exactly like that, in double braces; no other template syntax is needed.

Structured answers, conditions and loops (use them only where the base prompt calls for them):
- An llm step may answer in JSON: set config.answer_schema to a JSON Schema (as JSON text). Later \
steps read its fields as {{ steps[0].json.scenes }}, {{ steps[0].json.needs_detail }}.
- A step may have "when": an expression over earlier outputs, without braces, e.g. \
steps[0].json.needs_detail or "night" in steps[0].text | lower. When it is false the step is \
skipped (and so are the steps that use its output).
- A step may have "for_each": an expression giving a list of an earlier structured answer, \
without braces, e.g. steps[0].json.variations. The step runs once per item, all at once, and \
its prompt sees the item as {{ item }} (its fields as {{ item.prompt }}). A later step gets \
the images of every item with "step:N" in config.input_images; a later step with a for_each \
over the same list gets, for each item, only the images step N made for that item with \
"step:N:item" (to refine or vary each one).
- When the base prompt asks for several different things ("four variations of...", "a scene \
for each season"), let an llm step list them with a schema like {"type": "object", \
"properties": {"variations": {"type": "array", "minItems": 4, "maxItems": 4, "items": \
{"type": "object", "properties": {"prompt": {"type": "string"}}, "required": ["prompt"]}}}, \
"required": ["variations"]}, then an image step with for_each steps[0].json.variations and \
prompt {{ item.prompt }}. Do not use config.count for things that should differ.
- Otherwise leave answer_schema, when and for_each null.

How to plan:
- Keep it to 2 to 4 steps.
- Refine first: put an llm step before the image steps. Its prompt asks for a detailed image \
prompt built from {{ base_prompt }} and the series (its title, description, tags and the look \
of its images), and for that prompt alone, with no preamble, because its answer is passed \
word for word to an image step.
- Image steps then use the refined text as their prompt, e.g. "{{ steps[0].text }}" or \
"{{ previous.text }}", plus any wording that differs between them.
- Leave temperature null unless a step needs more or less variety.
- Title the job in a few words.
"""

_BASE_OPEN = "<base_prompt>"
_BASE_CLOSE = "</base_prompt>"


def build_draft_request(
    base_prompt: str,
    series_title: str,
    series_description: str,
    series_tags: Sequence[str],
    *,
    image_count: int = 0,
    inherited: Sequence[AncestorContext] = (),
    style: StyleContext | None = None,
) -> tuple[str, str]:
    """The system instruction and the prompt that ask a text model to draft a job: with the
    context the series inherits (root first) and the job's style source, when it has them."""
    lines = [
        "Plan a job for this base prompt:",
        _BASE_OPEN,
        base_prompt.strip(),
        _BASE_CLOSE,
        "",
        f"Series title: {series_title.strip() or '(untitled)'}",
        f"Series description: {series_description.strip() or '(none)'}",
        f"Series tags: {', '.join(series_tags) or '(none)'}",
    ]
    for above in inherited:
        lines.append(
            f"Inside the series “{above.title.strip()}”: {above.description.strip() or '(none)'}"
            f" (tags: {', '.join(above.tags) or 'none'})"
        )
    if style is not None and (style.title or style.profile):
        lines.append(
            f"Style source, the series “{style.title}”: "
            f"{' '.join(style.profile.split()) or '(no profile yet)'}. Use {{{{ style.profile }}}} "
            "in the image prompts; its images come with the image steps."
        )
    if image_count:
        lines.append(
            f"{image_count} image(s) of the series come with this request; "
            "match their look unless the base prompt asks otherwise."
        )
    return SYSTEM_INSTRUCTION, "\n".join(lines)


def base_prompt_from_request(prompt: str) -> str:
    """The base prompt inside a prompt made by `build_draft_request`, else the whole prompt."""
    start = prompt.find(_BASE_OPEN)
    end = prompt.rfind(_BASE_CLOSE)
    if start < 0 or end < start:
        return prompt.strip()
    return prompt[start + len(_BASE_OPEN) : end].strip()


_WIDE = re.compile(r"\b(landscape|panorama|panoramic|wide|cinematic|banner|skyline)\b", re.I)
_TALL = re.compile(r"\b(portrait|poster|phone|vertical|full[- ]length|standing)\b", re.I)


_NUMBERS = {"two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8}
_SEVERAL = re.compile(
    r"\b(\d+|" + "|".join(_NUMBERS) + r")\s+(?:\w+\s+)?"
    r"(variations|versions|variants|takes|scenes|views|styles|moods)\b",
    re.I,
)


def variations_schema(count: int) -> dict[str, Any]:
    """The answer an llm step lists `count` different image prompts in."""
    return {
        "type": "object",
        "properties": {
            "variations": {
                "type": "array",
                "minItems": count,
                "maxItems": count,
                "items": {
                    "type": "object",
                    "properties": {"prompt": {"type": "string"}},
                    "required": ["prompt"],
                },
            }
        },
        "required": ["variations"],
    }


def example_draft(base_prompt: str) -> DraftedJob:
    """A sensible two-step job for `base_prompt`, made without a model: when it asks for several
    variations of something, an llm step lists them and an image step goes over the list.

    The preview provider and the fake Gemini server answer drafting requests with it, so the
    whole flow can be tried, and tested, without an API key.
    """
    words = " ".join(base_prompt.split())
    title = words if len(words) <= 60 else words[:57].rstrip() + "..."
    aspect_ratio = "16:9" if _WIDE.search(words) else "3:4" if _TALL.search(words) else "1:1"
    several = _SEVERAL.search(words)
    if several:
        number = several.group(1).lower()
        count = max(1, min(int(number) if number.isdigit() else _NUMBERS[number], 8))
        return DraftedJob(
            title=title or "Untitled job",
            steps=[
                DraftStep(
                    kind="llm",
                    prompt=(
                        f"List {count} clearly different {several.group(2).lower()} for: "
                        "{{ base_prompt }}\n"
                        'They are for the image series "{{ series.title }}". '
                        "{{ series.description }}\n"
                        "For each, write a detailed image prompt: subject, setting, "
                        "composition, lighting, palette and style."
                    ),
                    config=DraftStepConfig(
                        temperature=0.9, answer_schema=json.dumps(variations_schema(count))
                    ),
                ),
                DraftStep(
                    kind="image",
                    prompt="{{ item.prompt }}",
                    config=DraftStepConfig(count=1, aspect_ratio=aspect_ratio, image_size="1K"),
                    for_each="steps[0].json.variations",
                ),
            ],
        )
    return DraftedJob(
        title=title or "Untitled job",
        steps=[
            DraftStep(
                kind="llm",
                prompt=(
                    "Write a detailed image prompt for: {{ base_prompt }}\n"
                    'It is for the image series "{{ series.title }}". {{ series.description }}\n'
                    "Describe the subject, setting, composition, lighting, palette and style "
                    "in one paragraph. Answer with the prompt only."
                ),
                config=DraftStepConfig(temperature=0.7),
            ),
            DraftStep(
                kind="image",
                prompt="{{ steps[0].text }}",
                config=DraftStepConfig(count=1, aspect_ratio=aspect_ratio, image_size="1K"),
            ),
        ],
    )


async def draft_steps(
    provider: TextProvider,
    *,
    base_prompt: str,
    series_title: str,
    series_description: str,
    series_tags: Sequence[str],
    images: Sequence[InputImage] = (),
    inherited: Sequence[AncestorContext] = (),
    style: StyleContext | None = None,
) -> tuple[DraftedJob, TextResult]:
    """Ask `provider` to draft a job; raises `ProviderError` when it cannot."""
    system, prompt = build_draft_request(
        base_prompt,
        series_title,
        series_description,
        series_tags,
        image_count=len(images),
        inherited=inherited,
        style=style,
    )
    return await provider.generate_json(
        prompt=prompt, images=images, schema=DraftedJob, system=system
    )
