"""Step prompts: the checks made when a step is saved, and rendering in the sandbox."""

from __future__ import annotations

import contextlib
import time
import tracemalloc
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from cog.engine.prompts import (
    VARIABLES,
    SeriesContext,
    StepOutput,
    check_template,
    render,
    variables_of,
)
from cog.errors import Invalid

SERIES = SeriesContext(title="Autumn", description="Low sun, fog", tags=["autumn", "forest"])
EARLIER = [
    StepOutput("A red fox in silver fog.", []),
    StepOutput(
        "", ["3f1c0a6e-0000-4000-8000-000000000001", "3f1c0a6e-0000-4000-8000-000000000002"]
    ),
]


@dataclass
class Peak:
    bytes: int = 0


@contextlib.contextmanager
def peak_memory() -> Iterator[Peak]:
    """The most memory the block held at once beyond what was held before it. Tracing already
    on (`PYTHONTRACEMALLOC`) is left on, and what it traced before is not counted."""
    tracing = tracemalloc.is_tracing()
    if not tracing:
        tracemalloc.start()
    peak = Peak()
    try:
        tracemalloc.reset_peak()
        before, _ = tracemalloc.get_traced_memory()
        yield peak
        peak.bytes = tracemalloc.get_traced_memory()[1] - before
    finally:
        if not tracing:
            tracemalloc.stop()


def run(source: str, steps: list[StepOutput] | None = None, base: str = "a fox at dawn") -> str:
    return render(
        source, base_prompt=base, series=SERIES, steps=EARLIER if steps is None else steps
    )


# --- check_template -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "position"),
    [
        ("Plain words, no variables.", 0),
        ("{{ base_prompt }} in {{ series.title }}: {{ series.description }}", 0),
        ("{{ series.tags | join(', ') }}", 0),
        ("{{ steps[0].text }} and {{ steps[1].images | length }} images", 2),
        ("{{ steps.0.text }}", 1),
        ("{{ previous.text }} / {{ previous }}", 1),
        ("{% for s in steps %}{{ loop.index }}: {{ s.text }}\n{% endfor %}", 3),
        ("{% set mood = 'quiet' %}{{ mood }} {{ base_prompt | upper }}", 0),
        ("{% if series.tags %}{{ series.tags[0] }}{% else %}untagged{% endif %}", 0),
        ("{{ steps | map(attribute='text') | join(' ') }}", 2),
        ("{{ '%s, %d' % (base_prompt, 3) }} {{ 'ab' * 3 }} {{ 2 ** 10 }}", 0),
        ("{% macro frame(x) %}[{{ x }}]{% endmacro %}{{ frame(base_prompt) }}", 0),
    ],
)
def test_templates_that_pass(source: str, position: int) -> None:
    assert check_template(source, position) == []


@pytest.mark.parametrize(
    ("source", "position", "expected"),
    [
        ("{{ base_prompt ", 0, "not a valid template (line 1"),
        ("line one\n{% if base_prompt %}never closed", 0, "not a valid template (line 2"),
        ("{% break %}", 0, "not a valid template"),
        ("{{ colour }}", 0, "unknown variable(s) `colour`"),
        ("{{ b }}{{ a }}", 0, "`a`, `b`"),
        ("{{ previous.text }}", 0, "the first step has no `previous` step"),
        ("{{ steps[0].text }}", 0, "`steps[0]`, which does not run before this step"),
        ("{{ steps[2].text }}", 2, "`steps[2]`"),
        ("{{ steps[5] }}", 2, "`steps[5]`"),
        ("{{ steps.3 }}", 1, "`steps[3]`"),
        ("{{ steps[-1] }}", 2, "`steps[-1]` is not a step position"),
        ("{{ steps['x'] }}", 2, "`steps['x']` is not a step position"),
        ("{{ base_prompt | shout }}", 0, "unknown filter `shout`"),
        ("{% if base_prompt is loud %}!{% endif %}", 0, "unknown test `loud`"),
        ("{% include 'other.txt' %}", 0, "`include`"),
        ("{% extends 'base.txt' %}", 0, "`extends`"),
        ("{% import 'm.txt' as m %}", 0, "`import`"),
        ("{% from 'm.txt' import x %}{{ x }}", 0, "`from ... import`"),
        ("{% autoescape true %}{{ base_prompt }}{% endautoescape %}", 0, "`autoescape`"),
        ("{% for s in steps recursive %}{{ loop(steps) }}{% endfor %}", 1, "recursive loop"),
        ("{{ " + "(" * 400 + "1" + ")" * 400 + " }}", 0, "nests too deeply"),
    ],
)
def test_templates_that_are_refused(source: str, position: int, expected: str) -> None:
    problems = check_template(source, position)
    assert any(expected in p for p in problems), problems


def test_the_unknown_variables_message_lists_what_there_is() -> None:
    (problem,) = check_template("{{ titel }}", 1)
    for name in VARIABLES:
        assert name in problem


def test_every_problem_of_a_template_is_named() -> None:
    problems = check_template("{{ previous }}{{ steps[4] }}{{ nope }}{{ ''.__class__ }}", 0)
    assert len(problems) == 4, problems


def test_a_template_read_again_is_judged_by_its_place_each_time() -> None:
    """What a reading finds is kept by source; the step's place and extra variables still
    decide, and a caller that changes an answer changes no later one."""
    source = "{{ previous.text }} {{ steps[1].text }} {{ item }}"
    at_two = check_template(source, 2, ("item",))
    assert at_two == []
    at_zero = check_template(source, 0, ("item",))
    assert any("no `previous`" in p for p in at_zero), at_zero
    assert any("`steps[1]`" in p and "does not run before" in p for p in at_zero), at_zero
    without_item = check_template(source, 2)
    assert len(without_item) == 1 and "`item`" in without_item[0], without_item
    at_zero.clear()
    without_item.append("changed by the caller")
    assert len(check_template(source, 0, ("item",))) == 2
    assert len(check_template(source, 2)) == 1
    assert check_template("{{ broken", 1) == check_template("{{ broken", 1) != []

    found = variables_of(source)
    assert found == {"previous", "steps", "item"}
    found.add("input")
    assert variables_of(source) == {"previous", "steps", "item"}


@pytest.mark.parametrize(
    ("source", "name"),
    [
        ("{{ ''.__class__ }}", "__class__"),
        ("{{ base_prompt.__class__.__mro__ }}", "__mro__"),
        ("{{ base_prompt['__class__'] }}", "__class__"),
        ("{{ base_prompt | attr('__class__') }}", "__class__"),
        ("{{ steps | map(attribute='__class__') | list }}", "__class__"),
        ("{{ steps | selectattr('__dict__') | list }}", "__dict__"),
        ("{{ series._private }}", "_private"),
        ("{% for c in ''.__class__.__base__.__subclasses__() %}{{ c }}{% endfor %}", "__base__"),
    ],
)
def test_names_starting_with_an_underscore_are_refused(source: str, name: str) -> None:
    problems = check_template(source, 1)
    assert any(f"`{name}`" in p and "may not" in p for p in problems), problems


def test_saving_a_template_computes_nothing() -> None:
    """Jinja folds constant expressions while it compiles; the check compiles nothing it would
    have to compute, however large (a 20 MB string, a 2.5 MB number, a number too long to
    print) or slow."""
    sources = [
        "{{ 'x' | center(20000000) }}",
        "{{ 'x' * 20000000 }}",
        "{{ 2 ** 20000000 }}",
        "{{ 10 ** 5000 }}",
        "{{ 9 ** (9 ** 7) }}",
        "{{ '%020000000d' % 1 }}",
        "{% if 'x' | center(20000000) %}{{ base_prompt }}{% endif %}",
    ]
    started = time.perf_counter()
    with peak_memory() as peak:
        for source in sources:
            assert check_template(source, 0) == [], source
    assert time.perf_counter() - started < 1.0
    assert peak.bytes < 2_000_000


# --- render -------------------------------------------------------------------------------------


def test_render_sees_the_base_prompt_the_series_and_earlier_steps() -> None:
    source = (
        "{{ base_prompt }} | {{ series.title }} | {{ series.description }} | "
        "{{ series.tags | join(', ') }} | {{ steps[0].text }} | {{ steps[0] }} | "
        "{{ previous.images | length }} | {{ steps[1].images[0] }}"
    )
    assert run(source) == (
        "a fox at dawn | Autumn | Low sun, fog | autumn, forest | A red fox in silver fog. | "
        "A red fox in silver fog. | 2 | 3f1c0a6e-0000-4000-8000-000000000001"
    )


def test_previous_is_the_step_just_before() -> None:
    assert run("{{ previous.images | join(',') }}").endswith("0002")
    assert run("{{ previous }}", steps=EARLIER[:1]) == "A red fox in silver fog."


def test_render_strips_the_result_and_keeps_blocks_tidy() -> None:
    source = "\n  {% for tag in series.tags %}\n#{{ tag }}\n{% endfor %}\n"
    assert run(source) == "#autumn\n#forest"


def test_render_does_not_escape_html() -> None:
    assert run("{{ base_prompt }}", base="<b>fox</b> & 'hare'") == "<b>fox</b> & 'hare'"


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("{{ nope }}", "could not be rendered"),
        ("{{ steps[7].text }}", "could not be rendered"),
        ("{{ series.colour }}", "could not be rendered"),
        ("{{ base_prompt | int / 0 }}", "could not be rendered"),
        ("{{ base_prompt ", "could not be rendered"),
        # Python warns while it compiles this; the warning is no reason to fail otherwise.
        ("{{ 0[1:] }}", "could not be rendered"),
        ("{% macro m() %}{{ m() }}{% endmacro %}{{ m() }}", "recurses too deeply"),
        ("{{ " + "(" * 400 + "1" + ")" * 400 + " }}", "nests or recurses too deeply"),
    ],
)
def test_a_template_that_fails_at_run_says_so(source: str, expected: str) -> None:
    with pytest.raises(Invalid) as caught:
        run(source)
    assert expected in caught.value.message


@pytest.mark.parametrize(
    "source",
    [
        # Python's internals, however the name is spelled or built.
        "{{ ''.__class__ }}",
        "{{ base_prompt | attr('__cla' ~ 'ss__') }}",
        "{% set n = '_' * 2 ~ 'globals' ~ '_' * 2 %}{{ series[n] }}",
        "{{ run.__globals__ }}",
        # Changing what the template was given.
        "{{ series.tags.append('x') }}",
        "{{ steps.pop() }}",
        # Values too large to make.
        "{{ 'x' * 10 ** 10 }}",
        "{{ 10 ** 10 * [0] }}",
        "{{ 9 ** (9 ** 7) }}",
        "{{ '%0999999999d' % 1 }}",
        "{{ '%(a)0999999999d' % {'a': 1} }}",
        "{{ '%.*f' % (999999999, 1) }}",
    ],
)
def test_the_sandbox_refuses_at_run_in_plain_words(source: str) -> None:
    with pytest.raises(Invalid) as caught:
        run(source)
    message = caught.value.message
    assert "could not be rendered" in message or "may not do" in message
    assert "Traceback" not in message


# Each would take seconds and gigabytes (or run forever) without the render's budget.
BOMBS = {
    "center": ("{{ 'x' | center(10**9) }}", "longer than 1,000,000 characters (`center`)"),
    "center of a number": ("{{ 10**9 | center(10**9) }}", "(`center`)"),
    "method": ("{{ base_prompt.ljust(10**9) }}", "(`ljust`)"),
    "format width": ("{{ '{:>999999999}'.format(1) }}", "(`format`)"),
    "nested format width": ("{{ '{:{}}'.format(1, 10**9) }}", "(`format`)"),
    "format filter": (
        "{% set x = 'x' * 99999 %}{{ ('%s' * 20) | format(" + ", ".join(["x"] * 20) + ") }}",
        "(`format`)",
    ),
    "indent": ("{{ ('a\\n' * 50000) | indent(99999) }}", "(`indent`)"),
    "replace": ("{% set x = 'x' * 99999 %}{{ x | replace('x', x) }}", "(`replace`)"),
    "str.replace": ("{% set x = 'x' * 99999 %}{{ x.replace('x', x) }}", "(`replace`)"),
    "join": ("{% set x = 'x' * 99999 %}{{ [x, x, x, x, x, x, x, x, x, x, x] | join }}", "(`join`)"),
    "str.join": ("{% set x = 'x' * 99999 %}{{ x.join(x) }}", "(`join`)"),
    "translate": ("{% set x = 'x' * 99999 %}{{ x.translate({120: x}) }}", "(`translate`)"),
    "expandtabs": ("{{ ('\t' * 99999).expandtabs(99999) }}", "(`expandtabs`)"),
    "to_bytes": ("{{ (1).to_bytes(10**9, 'big') | length }}", "(`to_bytes`)"),
    "lipsum": ("{{ lipsum(10**6) }}", "(`lipsum`)"),
    "doubling": ("{% set x = 'x' * 99999 %}" + "{% set x = x ~ x %}" * 30, "(`~`)"),
    "doubling in a loop": (
        "{% set ns = namespace(x='ab') %}{% for i in range(64) %}"
        "{% set ns.x = ns.x ~ ns.x %}{% endfor %}",
        "(`~`)",
    ),
    "repeated references": ("{% set x = 'x' * 99999 %}{{ [x] * 99999 }}", "(`*`)"),
    "a namespace that holds itself": (
        "{% set ns = namespace() %}{% set ns.me = ns %}{{ ns }}",
        "characters",
    ),
    "output": ("{% for i in range(99) %}{{ 'x' * 99999 }}{% endfor %}", "rendered prompt"),
    "nested loops": (
        "{% for a in range(99999) %}{% for b in range(99999) %}{% endfor %}{% endfor %}",
        "10,000 loop turns and calls",
    ),
    "loops over text": (
        "{% for a in 'x' * 99999 %}{% for b in 'x' * 99999 %}{% endfor %}{% endfor %}",
        "loop turns",
    ),
    "fan-out": (
        "{% macro m(n) %}{% if n %}{{ m(n - 1) }}{{ m(n - 1) }}{% endif %}{% endmacro %}"
        "{{ m(60) }}",
        "loop turns and calls",
    ),
    "slow filters": (
        "{% for i in range(99) %}{{ ('ab ' * 33333) | wordwrap(5) }}{% endfor %}",
        "characters of text",
    ),
    "lorem ipsum": ("{% for i in range(99) %}{{ lipsum(99) }}{% endfor %}", "characters of text"),
    "recursive loop": (
        "{% for x in range(9) recursive %}{{ loop(range(9)) }}{% endfor %}",
        "recursive loops",
    ),
    "slices": ("{{ range(9) | slice(10**9) | list }}", "`slice`"),
    "padding": ("{{ [1] | batch(10**9, 'x') | list }}", "(`batch`)"),
    "json indent": ("{{ (['x'] * 9999) | tojson(indent=9999) }}", "(`tojson`)"),
}


@pytest.mark.parametrize(("source", "expected"), list(BOMBS.values()), ids=list(BOMBS))
def test_a_render_is_bounded_in_time_and_memory(source: str, expected: str) -> None:
    started = time.perf_counter()
    with pytest.raises(Invalid) as caught:
        run(source)
    assert time.perf_counter() - started < 2.0
    assert expected in caught.value.message

    with peak_memory() as peak, pytest.raises(Invalid):  # again: tracing makes it slower
        run(source)
    assert peak.bytes < 30_000_000


def test_a_render_within_the_budget_is_whole() -> None:
    # Near each limit, but within it.
    assert len(run("{{ 'x' * 99999 }}" * 10)) == 999_990
    assert run("{% for a in range(90) %}{% for b in range(90) %}.{% endfor %}{% endfor %}") == (
        "." * 8100
    )
    # What is measured before it is made is still all there when it is made.
    assert run("{{ ', '.join(steps | map(attribute='text')) }}") == "A red fox in silver fog.,"
    assert run("{{ steps | map(attribute='text') | join('/') }}") == "A red fox in silver fog./"
    assert run("{{ steps | map(attribute='images') | sum(start=[]) | length }}") == "2"
    assert run("{{ 'ab' | center(9) }}|{{ '{:>6}'.format('fox') }}|{{ 'a\tb'.expandtabs(4) }}") == (
        "ab   |   fox|a   b"
    )


def test_the_sandbox_leaves_the_context_unchanged() -> None:
    tags = ["autumn"]
    series = SeriesContext("T", "", tags)
    with pytest.raises(Invalid):
        render("{{ series.tags.append('x') }}", base_prompt="", series=series, steps=[])
    assert tags == ["autumn"]


def test_ordinary_arithmetic_and_formatting_still_work() -> None:
    assert run("{{ 'ab' * 3 }} {{ 3 * 'ab' }} {{ [1] * 2 }} {{ 2 ** 10 }} {{ 7 % 3 }}") == (
        "ababab ababab [1, 1] 1024 1"
    )
    assert run("{{ '%-6s|%5.2f' % ('fox', 2.5) }}") == "fox   | 2.50"
