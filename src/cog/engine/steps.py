"""A job's steps: their shape, their config, and the checks an edit must pass.

Every problem is reported at once, each naming its step, so a person can fix an edit in one go;
a refused edit changes nothing.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Collection, Sequence
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from cog.domain import ASPECT_RATIOS, IMAGE_SIZES, MAX_IMAGES_PER_STEP, MAX_STEPS, StepKind
from cog.engine.prompts import check_template
from cog.errors import Invalid

STEP_REF = re.compile(r"^step:(\d+)$")


class StepConfig(BaseModel):
    """Step settings. Unknown keys are refused so a typo never silently does nothing."""

    model_config = ConfigDict(extra="forbid")

    count: Annotated[int, Field(ge=1, le=MAX_IMAGES_PER_STEP)] = 1
    aspect_ratio: Literal[ASPECT_RATIOS] | None = None  # type: ignore[valid-type]
    image_size: Literal[IMAGE_SIZES] | None = None  # type: ignore[valid-type]
    temperature: Annotated[float, Field(ge=0.0, le=2.0)] | None = None
    input_images: Annotated[list[str], Field(max_length=14)] = []

    @field_validator("input_images")
    @classmethod
    def _refs_are_ids_or_steps(cls, refs: list[str]) -> list[str]:
        for ref in refs:
            if STEP_REF.match(ref):
                continue
            try:
                uuid.UUID(ref)
            except ValueError:
                raise ValueError(
                    f"{ref!r} is neither an image id nor a step reference like 'step:0'"
                ) from None
        return refs


class StepSpec(BaseModel):
    """A step as a person writes it: `{"kind", "prompt", "model", "config"}`."""

    model_config = ConfigDict(extra="forbid")

    kind: StepKind
    prompt: Annotated[str, Field(min_length=1, max_length=20_000)]
    model: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    config: StepConfig = StepConfig()


def step_refs(config: StepConfig) -> list[int]:
    return [int(m.group(1)) for ref in config.input_images if (m := STEP_REF.match(ref))]


def image_refs(config: StepConfig) -> list[uuid.UUID]:
    return [uuid.UUID(ref) for ref in config.input_images if not STEP_REF.match(ref)]


def _pydantic_problems(exc: ValidationError) -> list[str]:
    problems = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":
            problems.append(f"unknown key `{where}`")
        elif err["type"] == "enum" and where == "kind":
            problems.append(f"unknown kind {err.get('input')!r} (use 'llm' or 'image')")
        else:
            problems.append(f"`{where}`: {err['msg']}")
    return problems


def parse_steps(raw: Sequence[Any]) -> tuple[list[StepSpec | None], list[str]]:
    """Parse each raw step; answers the parsed steps (None where unparseable) and problems."""
    specs: list[StepSpec | None] = []
    problems: list[str] = []
    for position, item in enumerate(raw):
        try:
            specs.append(StepSpec.model_validate(item))
        except ValidationError as exc:
            specs.append(None)
            problems += [f"step {position}: {p}" for p in _pydantic_problems(exc)]
    return specs, problems


def validate_steps(
    raw: Sequence[Any], *, series_image_ids: Collection[uuid.UUID]
) -> list[StepSpec]:
    """Check a whole ordered step list; raise `Invalid` naming every problem."""
    if len(raw) > MAX_STEPS:
        raise Invalid(f"A job has at most {MAX_STEPS} steps; this one has {len(raw)}.")
    specs, problems = parse_steps(raw)
    for position, spec in enumerate(specs):
        if spec is None:
            continue
        where = f"step {position}"
        problems += [f"{where}: {p}" for p in check_template(spec.prompt, position)]
        config = spec.config
        if spec.kind is StepKind.llm:
            for key in ("aspect_ratio", "image_size"):
                if getattr(config, key) is not None:
                    problems.append(f"{where}: `{key}` applies to image steps only")
            if config.count != 1:
                problems.append(f"{where}: `count` applies to image steps only")
        elif config.temperature is not None:
            problems.append(f"{where}: `temperature` applies to llm steps only")
        for ref in step_refs(config):
            if ref >= position:
                problems.append(
                    f"{where}: input image 'step:{ref}' refers to a step that does not run "
                    "before it"
                )
            elif specs[ref] is not None and specs[ref].kind is not StepKind.image:  # type: ignore[union-attr]
                problems.append(f"{where}: 'step:{ref}' is an llm step and makes no images")
        for image_id in image_refs(config):
            if image_id not in series_image_ids:
                problems.append(f"{where}: input image {image_id} is not an image of this series")
    if problems:
        raise Invalid("The steps were not saved: " + "; ".join(problems) + ".", problems=problems)
    return [s for s in specs if s is not None]
