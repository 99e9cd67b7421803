"""A job's steps: their shape, their config and the checks a whole list must pass."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from cog.domain import MAX_IMAGES_PER_STEP, MAX_STEPS, StepKind
from cog.engine.steps import (
    StepConfig,
    StepSpec,
    image_refs,
    parse_steps,
    step_refs,
    validate_steps,
)
from cog.errors import Invalid

MINE = uuid.UUID("11111111-1111-4111-8111-111111111111")
THEIRS = uuid.UUID("22222222-2222-4222-8222-222222222222")
GONE = uuid.UUID("33333333-3333-4333-8333-333333333333")


def llm(prompt: str = "{{ base_prompt }}", **config: Any) -> dict[str, Any]:
    return {"kind": "llm", "prompt": prompt, "config": config}


def image(prompt: str = "{{ base_prompt }}", **config: Any) -> dict[str, Any]:
    return {"kind": "image", "prompt": prompt, "config": config}


def check(*raw: Any) -> list[StepSpec]:
    return validate_steps(list(raw), series_image_ids={MINE}, elsewhere_image_ids={THEIRS})


def problems_of(*raw: Any) -> list[str]:
    with pytest.raises(Invalid) as caught:
        check(*raw)
    problems: list[str] = caught.value.extra["problems"]
    assert caught.value.message.startswith("The steps were not saved: ")
    for problem in problems:
        assert problem in caught.value.message
    return problems


# --- the shapes ---------------------------------------------------------------------------------


def test_defaults() -> None:
    spec = StepSpec.model_validate({"kind": "image", "prompt": "x"})
    assert spec.kind is StepKind.image
    assert spec.model is None
    assert spec.config == StepConfig()
    assert spec.config.count == 1 and spec.config.input_images == []
    assert spec.config.aspect_ratio is None and spec.config.image_size is None
    assert spec.config.temperature is None


def test_a_spec_round_trips_through_json() -> None:
    spec = StepSpec.model_validate(
        image(count=3, aspect_ratio="21:9", image_size="4K", input_images=[str(MINE), "step:0"])
        | {"model": "gemini-3-pro-image"}
    )
    dumped = spec.model_dump(mode="json")
    assert dumped["config"]["input_images"] == [str(MINE), "step:0"]
    assert StepSpec.model_validate(dumped) == spec


def test_references_split_into_steps_and_images() -> None:
    config = StepConfig(input_images=["step:0", str(MINE), "step:12", str(THEIRS)])
    assert step_refs(config) == [0, 12]
    assert image_refs(config) == [MINE, THEIRS]


def test_each_default_config_is_its_own() -> None:
    first = StepSpec.model_validate(image())
    second = StepSpec.model_validate(image())
    first.config.input_images.append("step:0")
    assert second.config.input_images == []


def test_parse_steps_keeps_positions() -> None:
    specs, problems = parse_steps([llm(), {"kind": "nope", "prompt": "x"}, image()])
    assert specs[0] is not None and specs[1] is None and specs[2] is not None
    assert problems == ["step 1: unknown kind 'nope' (use 'llm' or 'image')"]


# --- lists that pass ----------------------------------------------------------------------------


def test_a_valid_list_passes_as_specs() -> None:
    specs = check(
        llm("Describe {{ base_prompt }}", temperature=0.0, input_images=[str(MINE)]),
        image("{{ previous.text }}", count=MAX_IMAGES_PER_STEP, aspect_ratio="16:9"),
        image("{{ steps[0].text }}", input_images=["step:1", str(MINE)], image_size="1K"),
        llm("Name it: {{ steps[2].images | length }}", input_images=["step:2"], temperature=2),
    )
    assert [s.kind for s in specs] == ["llm", "image", "image", "llm"]
    assert specs[1].config.count == MAX_IMAGES_PER_STEP


def test_an_empty_list_passes() -> None:
    assert check() == []


def test_the_step_limit_itself_passes() -> None:
    assert len(check(*[llm()] * MAX_STEPS)) == MAX_STEPS


# --- refusals -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ([{"kind": "video", "prompt": "x"}], "step 0: unknown kind 'video'"),
        ([{"prompt": "x"}], "step 0: `kind`: Field required"),
        ([{"kind": "llm"}], "step 0: `prompt`: Field required"),
        ([llm("")], "step 0: `prompt`"),
        ([{"kind": "llm", "prompt": 4}], "step 0: `prompt`"),
        ([{"kind": "llm", "prompt": "x", "model": ""}], "step 0: `model`"),
        ([{"kind": "llm", "prompt": "x", "name": "a"}], "step 0: unknown key `name`"),
        ([image(cuont=2)], "step 0: unknown key `config.cuont`"),
        ([{"kind": "llm", "prompt": "x", "config": "hot"}], "step 0: `config`"),
        ([image(count=0)], "step 0: `config.count`"),
        ([image(count=MAX_IMAGES_PER_STEP + 1)], "step 0: `config.count`"),
        ([image(count="two")], "step 0: `config.count`"),
        ([image(aspect_ratio="7:5")], "step 0: `config.aspect_ratio`"),
        ([image(image_size="8K")], "step 0: `config.image_size`"),
        ([llm(temperature=-0.1)], "step 0: `config.temperature`"),
        ([llm(temperature=2.5)], "step 0: `config.temperature`"),
        ([image(input_images="step:0")], "step 0: `config.input_images`"),
        ([image(input_images=["fox.png"])], "'fox.png' is neither an image id"),
        ([image(input_images=["step:x"])], "'step:x' is neither an image id"),
        ([image(input_images=[str(MINE)] * 15)], "step 0: `config.input_images`"),
        ([llm(count=2)], "step 0: `count` applies to image steps only"),
        ([llm(aspect_ratio="1:1")], "step 0: `aspect_ratio` applies to image steps only"),
        ([llm(image_size="2K")], "step 0: `image_size` applies to image steps only"),
        ([image(temperature=1.0)], "step 0: `temperature` applies to llm steps only"),
        ([image(input_images=["step:0"])], "step 0: input image 'step:0' refers to a step"),
        ([image(), image(input_images=["step:1"])], "step 1: input image 'step:1'"),
        ([image(input_images=["step:1"]), image()], "step 0: input image 'step:1'"),
        ([llm(), image(input_images=["step:0"])], "step 1: 'step:0' is an llm step"),
        ([image(input_images=[str(THEIRS)])], f"step 0: input image {THEIRS} belongs to another"),
        ([llm(input_images=[str(GONE)])], f"step 0: input image {GONE} does not exist"),
        ([llm("{{ x")], "step 0: the prompt is not a valid template"),
        ([llm("{{ x }}")], "step 0: the prompt uses unknown variable(s) `x`"),
        ([llm("{{ previous }}")], "step 0: the first step has no `previous` step"),
        ([llm(), llm("{{ steps[1] }}")], "step 1: the prompt uses `steps[1]`"),
    ],
)
def test_refusals_name_the_step_and_the_problem(raw: list[Any], expected: str) -> None:
    problems = problems_of(*raw)
    assert any(p.startswith(expected) or expected in p for p in problems), problems


def test_more_steps_than_the_limit() -> None:
    with pytest.raises(Invalid) as caught:
        check(*[llm()] * (MAX_STEPS + 1))
    assert str(MAX_STEPS) in caught.value.message and str(MAX_STEPS + 1) in caught.value.message


def test_every_problem_is_named_at_once_in_order() -> None:
    problems = problems_of(
        {"kind": "video", "prompt": "{{ nope }}"},
        llm("{{ previous }}{{ steps[1] }}"),
        image("{{ steps[9] }}", count=9, cuont=1, input_images=[str(GONE)]),
        image(temperature=0.3, input_images=["step:1", "step:3", str(THEIRS)]),
    )
    assert [p.split(":")[0] for p in problems] == sorted(p.split(":")[0] for p in problems)
    joined = "\n".join(problems)
    for expected in (
        "step 0: unknown kind 'video'",
        "step 0: the prompt uses unknown variable(s) `nope`",
        "step 1: the prompt uses `steps[1]`",
        "step 2: `config.count`",
        "step 2: unknown key `config.cuont`",
        "step 2: the prompt uses `steps[9]`",
        "step 3: `temperature` applies to llm steps only",
        "step 3: 'step:1' is an llm step",
        "step 3: input image 'step:3' refers to a step that does not run before it",
        f"step 3: input image {THEIRS} belongs to another series",
    ):
        assert expected in joined, (expected, problems)


def test_a_reference_to_a_step_that_did_not_parse_is_not_blamed_twice() -> None:
    problems = problems_of({"kind": "video", "prompt": "x"}, image(input_images=["step:0"]))
    assert problems == ["step 0: unknown kind 'video' (use 'llm' or 'image')"]


def test_images_are_checked_against_what_the_caller_found() -> None:
    raw = [image(input_images=[str(MINE), str(THEIRS)])]
    with pytest.raises(Invalid) as caught:
        validate_steps(raw, series_image_ids={MINE})  # THEIRS unknown to the caller: missing
    assert "does not exist" in caught.value.message
    specs = validate_steps(raw, series_image_ids={MINE, THEIRS})
    assert image_refs(specs[0].config) == [MINE, THEIRS]
