"""A job's steps: their shape, their config, and the checks an edit must pass.

Every problem is reported at once, each naming its step, so a person can fix an edit in one go;
a refused edit changes nothing.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Collection, Sequence
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    field_validator,
    model_serializer,
)

from cog.domain import ASPECT_RATIOS, IMAGE_SIZES, MAX_IMAGES_PER_STEP, MAX_STEPS, StepKind
from cog.engine import branching
from cog.engine.branching import MAX_EXPRESSION_CHARS
from cog.engine.prompts import check_template, variables_of
from cog.errors import Invalid

STEP_REF = re.compile(r"^step:(\d+)$")
# The images an earlier step with a loop made for the same item (both steps go over a list).
ITEM_REF = re.compile(r"^step:(\d+):item$")
# The image a run of a batch is for, as a reference (`input` in templates).
INPUT_REF = "input"


def _not_a_bool(value: Any) -> Any:
    """Pydantic reads `true` as 1 and `false` as 0; a number given as a boolean is a mistake.
    (Numbers as text still pass: the page's form sends them so.)"""
    if isinstance(value, bool):
        raise ValueError("should be a number, not true or false")
    return value


def _json_object(value: Any) -> Any:
    """A schema may come as JSON text (from a form, or a YAML file that quotes it)."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError as exc:
            raise ValueError(f"is not valid JSON ({exc})") from None
    if value is not None and not isinstance(value, dict):
        raise ValueError('must be a JSON Schema object, like {"type": "object", ...}')
    return value


class StepConfig(BaseModel):
    """Step settings. Unknown keys are refused so a typo never silently does nothing."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    count: Annotated[int, Field(ge=1, le=MAX_IMAGES_PER_STEP), BeforeValidator(_not_a_bool)] = 1
    aspect_ratio: Literal[ASPECT_RATIOS] | None = None  # type: ignore[valid-type]
    image_size: Literal[IMAGE_SIZES] | None = None  # type: ignore[valid-type]
    temperature: Annotated[float, Field(ge=0.0, le=2.0), BeforeValidator(_not_a_bool)] | None = None
    input_images: Annotated[list[str], Field(max_length=14)] = []
    # llm steps: the JSON Schema of a structured answer (`steps[N].json` to later steps).
    json_schema: Annotated[dict[str, Any] | None, BeforeValidator(_json_object)] = Field(
        None, alias="schema"
    )

    @model_serializer(mode="wrap")
    def _without_unset_schema(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # Steps without a schema keep the shape they always had.
        data: dict[str, Any] = handler(self)
        for key in ("schema", "json_schema"):
            if key in data and data[key] is None:
                del data[key]
        return data

    @field_validator("input_images")
    @classmethod
    def _refs_are_ids_or_steps(cls, refs: list[str]) -> list[str]:
        for ref in refs:
            if ref == INPUT_REF or step_of(ref) is not None:
                continue
            try:
                uuid.UUID(ref)
            except ValueError:
                raise ValueError(
                    f"{ref!r} is neither an image id, a step reference like 'step:0' (or "
                    "'step:0:item', the same item's images of a step with a loop), nor 'input' "
                    "(the image a run of a batch is for)"
                ) from None
        return refs


Expression = Annotated[str, Field(max_length=MAX_EXPRESSION_CHARS)]


class StepSpec(BaseModel):
    """A step as a person writes it: `{"kind", "prompt", "model", "config", "when",
    "for_each"}` (the last two may be left out)."""

    model_config = ConfigDict(extra="forbid")

    kind: StepKind
    prompt: Annotated[str, Field(min_length=1, max_length=20_000)]
    model: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    config: StepConfig = StepConfig()
    when: Expression | None = Field(
        None, description="An expression over earlier outputs; when false, the step is skipped."
    )
    for_each: Expression | None = Field(
        None,
        description="An expression giving a list (e.g. `steps[0].json.scenes`): the step runs "
        "once per item, the item as `item` in its prompt.",
    )

    @model_serializer(mode="wrap")
    def _without_unset_branching(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # Steps without a condition or a loop keep the shape they always had.
        data: dict[str, Any] = handler(self)
        for key in ("when", "for_each"):
            if key in data and data[key] is None:
                del data[key]
        return data


def step_of(ref: str) -> int | None:
    """The step a reference takes images of, whole (`step:N`) or item by item (`step:N:item`);
    None for an image id or `input`."""
    match = STEP_REF.match(ref) or ITEM_REF.match(ref)
    return int(match.group(1)) if match else None


def step_refs(config: StepConfig) -> list[int]:
    """The steps whose images a step takes."""
    return [n for ref in config.input_images if (n := step_of(ref)) is not None]


def item_refs(config: StepConfig) -> list[int]:
    """The steps whose images a step with a loop takes item by item."""
    return [int(m.group(1)) for ref in config.input_images if (m := ITEM_REF.match(ref))]


def image_refs(config: StepConfig) -> list[uuid.UUID]:
    return [
        uuid.UUID(ref) for ref in config.input_images if ref != INPUT_REF and step_of(ref) is None
    ]


def uses_input(specs: Sequence[StepSpec]) -> bool:
    """Whether the steps need a batch's input image (the `input` variable or reference)."""
    return any(
        INPUT_REF in spec.config.input_images
        or INPUT_REF in variables_of(spec.prompt)
        or any(
            INPUT_REF in branching.expression_variables(source)
            for source in (spec.when, spec.for_each)
            if source is not None
        )
        for spec in specs
    )


def needs(spec: StepSpec, position: int) -> list[int]:
    """The earlier steps whose output a step uses (a skipped one skips it too)."""
    return branching.needs(spec, position, step_refs(spec.config))


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


def _parse(item: Any) -> tuple[StepSpec | None, list[str]]:
    try:
        return StepSpec.model_validate(item), []
    except ValidationError as exc:
        return None, _pydantic_problems(exc)


def parse_steps(raw: Sequence[Any]) -> tuple[list[StepSpec | None], list[str]]:
    """Parse each raw step; answers the parsed steps (None where unparseable) and problems."""
    parsed = [_parse(item) for item in raw]
    problems = [
        f"step {position}: {p}" for position, (_, found) in enumerate(parsed) for p in found
    ]
    return [spec for spec, _ in parsed], problems


def validate_steps(
    raw: Sequence[Any],
    *,
    series_image_ids: Collection[uuid.UUID],
    elsewhere_image_ids: Collection[uuid.UUID] = (),
) -> list[StepSpec]:
    """Check a whole ordered step list; raise `Invalid` naming every problem, step by step.

    `series_image_ids` are the referenced images that belong to the job's series;
    `elsewhere_image_ids` those that exist in another series (any other does not exist)."""
    if len(raw) > MAX_STEPS:
        raise Invalid(f"A job has at most {MAX_STEPS} steps; this one has {len(raw)}.")
    parsed = [_parse(item) for item in raw]
    specs = [spec for spec, _ in parsed]
    problems: list[str] = []
    for position, (item, (spec, found)) in enumerate(zip(raw, parsed, strict=True)):
        where = f"step {position}"
        problems += [f"{where}: {p}" for p in found]
        if spec is None:
            # Its prompt is still checked, so one edit learns of every problem at once.
            if isinstance(item, dict) and isinstance(item.get("prompt"), str) and item["prompt"]:
                problems += [f"{where}: {p}" for p in check_template(item["prompt"], position)]
            continue
        problems += [f"{where}: {p}" for p in _step_problems(spec, position, specs)]
        for image_id in image_refs(spec.config):
            if image_id in series_image_ids:
                continue
            if image_id in elsewhere_image_ids:
                problems.append(
                    f"{where}: input image {image_id} belongs to another series; a step can "
                    "only use images of its job's series"
                )
            else:
                problems.append(
                    f"{where}: input image {image_id} does not exist (it may have been deleted)"
                )
    if problems:
        raise Invalid("The steps were not saved: " + "; ".join(problems) + ".", problems=problems)
    return [s for s in specs if s is not None]


def _step_problems(spec: StepSpec, position: int, specs: Sequence[StepSpec | None]) -> list[str]:
    """What is wrong with one parsed step in its place in the list (images of the series
    aside)."""
    problems = check_template(spec.prompt, position, branching.template_extra(spec))
    problems += branching.prompt_problems(spec, position, specs)
    problems += branching.step_problems(spec, position, specs)
    config = spec.config
    if spec.kind is StepKind.llm:
        for key in ("aspect_ratio", "image_size"):
            if getattr(config, key) is not None:
                problems.append(f"`{key}` applies to image steps only")
        if config.count != 1:
            problems.append("`count` applies to image steps only")
    elif config.temperature is not None:
        problems.append("`temperature` applies to llm steps only")
    items = set(item_refs(config))
    for ref in step_refs(config):
        source = specs[ref] if ref < position else None
        name = f"step:{ref}:item" if ref in items else f"step:{ref}"
        if ref >= position:
            problems.append(f"input image '{name}' refers to a step that does not run before it")
        elif source is not None and source.kind is not StepKind.image:
            problems.append(f"'{name}' is an llm step and makes no images")
        elif ref in items and source is not None and (spec.for_each is None or not source.for_each):
            problems.append(
                f"'{name}' gives each item the images step {ref} made for the same item: both "
                "steps need a loop (`for_each`)"
            )
    return problems
