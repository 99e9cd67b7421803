"""The job editor's form: steps as typed, the step tools, and problems sorted to their field."""

from __future__ import annotations

import pytest
from starlette.datastructures import FormData

from cog.web.pages.stepforms import (
    StepDraft,
    apply_action,
    field_of,
    sort_problems,
    step_choices,
    steps_from_form,
)


def test_a_saved_step_round_trips_through_the_form() -> None:
    config = {"count": 3, "aspect_ratio": "16:9", "image_size": "2K", "input_images": ["step:0"]}
    draft = StepDraft.of_saved("image", "Paint {{ previous.text }}", None, config)
    assert draft.count == "3" and draft.temperature == ""
    assert draft.to_raw() == {
        "kind": "image",
        "prompt": "Paint {{ previous.text }}",
        "model": None,
        "config": {
            "count": "3",
            "aspect_ratio": "16:9",
            "image_size": "2K",
            "input_images": ["step:0"],
        },
    }


def test_fields_hidden_for_the_kind_are_not_sent() -> None:
    llm = StepDraft(kind="llm", prompt="p", count="4", aspect_ratio="1:1", temperature="0.3")
    assert llm.to_raw()["config"] == {"temperature": "0.3"}
    image = StepDraft(kind="image", prompt="p", count="", temperature="0.3", model="  m  ")
    assert image.to_raw() == {"kind": "image", "prompt": "p", "model": "m", "config": {}}


def test_the_form_is_read_in_its_order_with_plain_newlines() -> None:
    form = FormData(
        [
            ("title", "T"),
            ("steps-1-kind", "image"),
            ("steps-1-prompt", "second"),
            ("steps-1-input_images", "step:0"),
            ("steps-1-input_images", "step:0"),
            ("steps-0-kind", "llm"),
            ("steps-0-prompt", "first\r\nline two"),
            ("steps-0-temperature", "0.5"),
            ("steps-x-kind", "ignored"),
        ]
    )
    first, second = steps_from_form(form)
    assert (first.kind, first.prompt, first.temperature) == ("llm", "first\nline two", "0.5")
    assert (second.kind, second.input_images) == ("image", ["step:0"])


def steps(*prompts: str) -> list[StepDraft]:
    return [StepDraft(prompt=p) for p in prompts]


@pytest.mark.parametrize(
    ("action", "order", "focus"),
    [
        ("up:1", ["b", "a", "c"], 0),
        ("down:1", ["a", "c", "b"], 2),
        ("up:0", ["a", "b", "c"], 0),
        ("down:2", ["a", "b", "c"], 2),
        ("remove:2", ["a", "b"], 1),
        ("duplicate:0", ["a", "a", "b", "c"], 1),
        ("add:llm", ["a", "b", "c", ""], 3),
        ("remove:9", ["a", "b", "c"], None),
        ("nonsense", ["a", "b", "c"], None),
    ],
)
def test_the_step_tools(action: str, order: list[str], focus: int | None) -> None:
    result, position = apply_action(steps("a", "b", "c"), action)
    assert [s.prompt for s in result] == order
    assert position == focus


def test_a_duplicate_is_a_copy() -> None:
    original = StepDraft(prompt="a", input_images=["x"])
    (first, copy), _ = apply_action([original], "duplicate:0")
    copy.input_images.append("y")
    assert first.input_images == ["x"]


def test_an_added_step_has_the_kind_asked_for() -> None:
    (added,), _ = apply_action([], "add:llm")
    assert added.kind == "llm"
    (added,), _ = apply_action([], "add:image")
    assert added.kind == "image"


@pytest.mark.parametrize(
    ("message", "field"),
    [
        ("the prompt uses unknown variable(s) `colour` (available: base_prompt)", "prompt"),
        ("the prompt uses `steps[2]`, which does not run before this step", "prompt"),
        ("the first step has no `previous` step", "prompt"),
        ("`config.count`: Input should be less than or equal to 8", "count"),
        ("`temperature` applies to llm steps only", "temperature"),
        ("`aspect_ratio` applies to image steps only", "aspect_ratio"),
        ("input image 'step:3' refers to a step that does not run before it", "input_images"),
        ("'step:0' is an llm step and makes no images", "input_images"),
        ("unknown kind 'video' (use 'llm' or 'image')", "kind"),
        ("unknown key `config.seed`", "step"),
        ("`prompt`: String should have at least 1 character", "prompt"),
    ],
)
def test_each_problem_finds_its_field(message: str, field: str) -> None:
    assert field_of(message) == field


def test_problems_are_sorted_by_step_and_field() -> None:
    problems = sort_problems(
        [
            "step 0: `prompt`: String should have at least 1 character",
            "step 1: `config.count`: Input should be less than or equal to 8",
            "step 1: unknown key `config.seed`",
            "A job has at most 20 steps; this one has 21.",
        ]
    )
    assert problems.at(0, "prompt") == ["Write a prompt for this step."]
    assert problems.at(1, "count") == ["Images: input should be less than or equal to 8"]
    assert problems.at(1, "step") == ["Unknown key `config.seed`"]
    assert problems.general == ["A job has at most 20 steps; this one has 21."]
    assert (problems.of_step(1), problems.count) == (2, 4)


def test_a_loop_step_is_offered_each_items_images_of_an_earlier_loop() -> None:
    loop = "steps[0].json.scenes"
    steps = [
        StepDraft(kind="llm", prompt="List scenes"),
        StepDraft(kind="image", prompt="Sketch {{ item }}", for_each=loop),
        StepDraft(kind="image", prompt="Once"),
        StepDraft(kind="image", prompt="Paint {{ item }}", for_each=loop),
    ]
    assert [(c.ref, c.label) for c in step_choices(steps, 3)] == [
        ("step:1", "Images of step 2"),
        ("step:1:item", "This item's images of step 2"),
        ("step:2", "Images of step 3"),
    ]
    # Without a loop of its own, a step takes every image of a loop, never an item's.
    assert [c.ref for c in step_choices(steps, 2)] == ["step:1"]
