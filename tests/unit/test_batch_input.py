"""`input`, the image a run of a batch is for: the template variable, the `"input"` reference,
and how a job's steps are found to need one."""

from __future__ import annotations

import uuid

import pytest

from cog.db.queue import batch_lock
from cog.engine.prompts import InputContext, SeriesContext, render, variables_of
from cog.engine.steps import StepSpec, image_refs, uses_input, validate_steps
from cog.errors import Invalid

SERIES = SeriesContext("Harbour", "Boats at dawn", ["sea"])
HERON = InputContext(
    id="7d1d3c0e-0000-4000-8000-000000000001",
    prompt="a heron on a post",
    tags=["bird", "grey"],
    filename="heron.png",
    width=640,
    height=480,
    series="Birds",
)


def test_input_renders_each_of_its_fields() -> None:
    template = (
        "{{ input.prompt }} | {{ input.filename }} | {{ input.tags | join(', ') }} | "
        "{{ input.width }}x{{ input.height }} | {{ input.series }} | {{ input.id[:8] }} | "
        "{{ input }}"
    )
    rendered = render(template, base_prompt="ink", series=SERIES, steps=[], input_image=HERON)
    assert rendered == (
        "a heron on a post | heron.png | bird, grey | 640x480 | Birds | 7d1d3c0e | "
        "a heron on a post"
    )


def test_input_is_undefined_outside_a_batch() -> None:
    with pytest.raises(Invalid, match="'input' is undefined"):
        render("{{ input.prompt }}", base_prompt="ink", series=SERIES, steps=[])


def test_input_fields_stay_in_the_sandbox() -> None:
    with pytest.raises(Invalid):
        render("{{ input.__class__ }}", base_prompt="", series=SERIES, steps=[], input_image=HERON)


def test_variables_of_a_template() -> None:
    assert variables_of("{{ input.prompt }} {{ base_prompt }}") == {"input", "base_prompt"}
    assert variables_of("{% for t in input.tags %}{{ t }}{% endfor %}") == {"input"}
    assert variables_of("no variables") == set()
    assert variables_of("{{ broken") == set()  # check_template says why when it is saved


def test_input_is_a_reference_and_a_variable_steps_may_use() -> None:
    other = uuid.uuid4()
    raw = [
        {"kind": "llm", "prompt": "Caption {{ input.filename }}"},
        {
            "kind": "image",
            "prompt": "{{ previous.text }}",
            "config": {"input_images": ["input", str(other)]},
        },
    ]
    specs = validate_steps(raw, series_image_ids={other})
    assert image_refs(specs[1].config) == [other]  # "input" is not an image of the series
    assert uses_input(specs)
    assert uses_input([specs[1]])  # the reference alone
    assert uses_input([StepSpec.model_validate(raw[0])])  # the variable alone
    plain = StepSpec.model_validate({"kind": "llm", "prompt": "{{ base_prompt }}"})
    assert not uses_input([plain])


def test_a_misspelt_reference_is_named() -> None:
    with pytest.raises(Invalid) as caught:
        validate_steps(
            [{"kind": "image", "prompt": "x", "config": {"input_images": ["Input"]}}],
            series_image_ids=set(),
        )
    assert "'Input'" in caught.value.message and "'input'" in caught.value.message


def test_a_batch_deals_its_queue_locks_round_its_slots() -> None:
    batch = uuid.UUID("00000000-0000-4000-8000-0000000000aa")
    locks = [batch_lock(batch, place, 2) for place in range(5)]
    assert locks == [f"cog-batch-{batch}-{n}" for n in (0, 1, 0, 1, 0)]
    assert len({batch_lock(batch, place, 3) for place in range(10)}) == 3
