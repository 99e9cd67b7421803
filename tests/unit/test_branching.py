"""Conditions, loops and schemas as pure code: what is checked when steps are saved, what the
expressions give when they run, which steps a step needs."""

from __future__ import annotations

from typing import Any

import pytest

from cog.db.models import StepRun
from cog.engine import branching
from cog.engine.fanout import output_of
from cog.engine.prompts import SeriesContext, StepOutput, render, template_context
from cog.engine.steps import StepSpec, needs, validate_steps
from cog.errors import Invalid

SCHEMA = {
    "type": "object",
    "properties": {
        "scenes": {
            "type": "array",
            "items": {"type": "object", "properties": {"title": {"type": "string"}}},
        },
        "items": {"type": "array", "items": {"type": "string"}},
        "needs_detail": {"type": "boolean"},
    },
}


def context(*outputs: StepOutput) -> dict[str, Any]:
    return template_context(
        base_prompt="a harbour", series=SeriesContext("S", "", []), steps=list(outputs)
    )


def spec(**fields: Any) -> StepSpec:
    return StepSpec.model_validate({"kind": "image", "prompt": "x", **fields})


def test_conditions_read_text_and_structured_fields() -> None:
    night = context(StepOutput("The harbour at NIGHT", [], {"needs_detail": True}))
    assert branching.condition_holds('"night" in steps[0].text | lower', night)
    assert branching.condition_holds("steps[0].json.needs_detail", night)
    assert not branching.condition_holds("previous.json.needs_detail and false", night)


def test_a_field_named_like_a_dict_method_is_the_field() -> None:
    found = context(StepOutput("", [], {"items": ["a", "b"], "keys": 3}))
    assert branching.loop_items("steps[0].json.items", found) == ["a", "b"]
    assert (
        render(
            "{{ steps[0].json.keys }}",
            base_prompt="",
            series=SeriesContext("", "", []),
            steps=found["steps"],
        )
        == "3"
    )


@pytest.mark.parametrize(
    ("source", "words"),
    [
        ("steps[0].text", "gave a text, not a list"),
        ("steps[0].json", "gave an object, not a list"),
        ("steps[0].json.missing", "could not be evaluated"),
        ("range(40) | list", "gave 40 items; a step goes over at most 32"),
        ("steps[0].__class__", "tried something expressions may not do"),
        ("'x' * 1000000", "tried something"),
    ],
)
def test_a_loop_that_cannot_give_a_list_says_why(source: str, words: str) -> None:
    with pytest.raises(Invalid, match=words):
        branching.loop_items(source, context(StepOutput("text", [], {"a": 1})))


def test_loop_items_are_kept_as_json() -> None:
    assert branching.loop_items("[1, 'two', {'three': 3}]", context()) == [1, "two", {"three": 3}]


def test_a_step_needs_what_its_prompt_condition_loop_and_inputs_read() -> None:
    step = spec(
        prompt="{{ steps[0].text }} {{ previous.text }}",
        when="steps[1].json.x",
        for_each="steps[2].json.y",
        config={"input_images": ["step:3"]},
    )
    assert needs(step, 6) == [0, 1, 2, 3, 5]
    assert needs(spec(), 3) == []


def test_a_skipped_step_skips_the_steps_that_need_it() -> None:
    outputs = [StepOutput("a"), StepOutput(skipped=True)]
    reason = branching.skip_reason(
        spec(prompt="{{ steps[1].text }}"), 2, [], outputs, context(*outputs)
    )
    assert reason == "It needs step 1, which was skipped."
    assert branching.skip_reason(spec(when="false"), 2, [], outputs, context(*outputs)) == (
        "Its condition was false: false"
    )
    assert branching.skip_reason(spec(when="true"), 2, [], outputs, context(*outputs)) is None


def test_answers_are_checked_against_their_schema() -> None:
    branching.check_answer(SCHEMA, {"scenes": [{"title": "a"}]})
    with pytest.raises(Invalid, match=r"at `scenes\[0\].title`: 3 is not of type 'string'"):
        branching.check_answer(SCHEMA, {"scenes": [{"title": 3}]})


def test_a_loop_over_a_loop_reads_a_list_of_answers() -> None:
    steps = [
        {"kind": "llm", "prompt": "x", "config": {"schema": SCHEMA}},
        {
            "kind": "llm",
            "prompt": "{{ item.title }}",
            "config": {"schema": SCHEMA},
            "for_each": "steps[0].json.scenes",
        },
        {"kind": "image", "prompt": "{{ item }}", "for_each": "steps[1].json[0].items"},
    ]
    validate_steps(steps, series_image_ids=set())
    wrong = [*steps[:2], {**steps[2], "for_each": "steps[1].json.items"}]
    with pytest.raises(Invalid, match="step 1's answer is a list; it has no field `items`"):
        validate_steps(wrong, series_image_ids=set())


def test_old_steps_dump_as_they_always_did() -> None:
    dumped = spec().model_dump(mode="json", by_alias=True)
    assert set(dumped) == {"kind", "prompt", "model", "config"}
    assert "schema" not in dumped["config"]


def test_a_finished_loop_offers_each_items_images_to_a_resumed_run() -> None:
    """A run resumed after a loop finished reads each item's images back from the step's row,
    in item order, for `step:N:item`."""
    row = StepRun(
        status="succeeded",
        text="",
        image_ids=["a", "b", "c"],
        iterations=[
            {"index": 1, "status": "succeeded", "image_ids": ["c"]},
            {"index": 0, "status": "succeeded", "image_ids": ["a", "b"]},
        ],
    )
    assert output_of(row).item_images == [["a", "b"], ["c"]]
    plain = StepRun(status="succeeded", text="", image_ids=["a"], iterations=[])
    assert output_of(plain).item_images is None


@pytest.mark.parametrize(
    ("step", "free"),
    [
        ({"prompt": "{{ base_prompt }} in {{ series.title }}"}, True),
        ({"prompt": "{{ base_prompt }}", "when": "series.tags | length > 0"}, True),
        ({"prompt": "{{ steps[0].text }}"}, False),
        ({"prompt": "{{ previous }}"}, False),
        ({"prompt": "{% for s in steps %}{{ s.text }}{% endfor %}"}, False),
        ({"prompt": "{{ (steps | last).text }}"}, False),
        ({"prompt": "{{ base_prompt }}", "when": "steps | length > 1"}, False),
        ({"prompt": "{{ base_prompt }}", "config": {"input_images": ["step:0"]}}, False),
    ],
)
def test_a_step_reads_no_earlier_step_only_when_nothing_of_it_names_them(
    step: dict[str, Any], free: bool
) -> None:
    """What lets an image step start while the one before it still keeps its images: any
    mention of the steps, by any index or in a loop, counts as reading them."""
    spec = StepSpec.model_validate({"kind": "image", **step})
    refs = [int(r.split(":")[1]) for r in spec.config.input_images if r.startswith("step:")]
    assert branching.reads_no_step(spec, refs) is free
