"""Properties of step prompts and step lists, whatever a person (or a model) writes.

- Checking a template answers a list of problems; it never raises, and computes nothing.
- Rendering any template, checked or not, in a context of bounded size answers a text within
  the prompt limit or refuses with `Invalid` (a 422 when saved, a failed step when run):
  never another exception, never a long wait.
- Validating any step list answers the steps or refuses with `Invalid`; the prompts of an
  accepted list then render (or fail in plain words) in the context their run gives them.

The templates are made from Jinja's own pieces: variables (known, unknown, private), literals
(huge numbers too), operators, filters, method calls, loops, macros, sets, filter blocks, and
broken syntax, so a run explores both what passes and what each check refuses.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from cog.domain import ASPECT_RATIOS, IMAGE_SIZES
from cog.engine.prompts import SeriesContext, StepOutput, check_template, render
from cog.engine.sandbox import MAX_PROMPT_CHARS
from cog.engine.steps import StepSpec, validate_steps
from cog.errors import Invalid

MAX_SECONDS = 5.0  # for one render, on a busy machine; a bounded one takes milliseconds

# --- templates ----------------------------------------------------------------------------------

# Jinja's tokens, for templates that are mostly broken.
SOUP = [
    *("{{", "}}", "{%", "%}", "{#", "#}", "{%-", "-%}", "for", "in", "endfor", "if", "endif"),
    *("set", "=", "|", "(", ")", "[", "]", ".", "~", "*", "**", "x", "base_prompt", "'a'", "9"),
    *(" ", "\n", "raw", "endraw", "macro", "endmacro", "call", "-", "+", ",", ":", "loop"),
]

NAMES = st.sampled_from(
    [
        "base_prompt",
        "series",
        "series.title",
        "series.tags",
        "series.description",
        "steps",
        "steps[0]",
        "steps[0].text",
        "steps[1].images",
        "steps[-1]",
        "previous",
        "previous.text",
        "loop",
        "loop.index",
        "x",
        "nope",
        "range",
        "lipsum",
        "namespace",
        "dict",
        "cycler",
        "''.__class__",
        "series.__dict__",
        "steps._x",
        "base_prompt.__class__.__mro__",
    ]
)
NUMBERS = st.one_of(
    st.integers(-3, 40),
    st.sampled_from([99, 9_999, 99_999, 100_001, 10**6, 10**9, 2**63, 10**100]),
    st.sampled_from(["10**9", "9**9**9", "2**64", "-1", "0.5", "1e308"]),
).map(str)
STRINGS = st.one_of(
    st.text(st.characters(codec="utf-8", exclude_characters="'\\"), max_size=12),
    st.sampled_from(["%s", "%0999999d", "{}", "{:>999999}", "{0.__class__}", "\t", "x" * 50]),
).map(lambda s: f"'{s}'")
FILTERS = st.sampled_from(
    [
        "upper",
        "length",
        "join",
        "join(', ')",
        "list",
        "string",
        "first",
        "last",
        "reverse",
        "sort",
        "unique",
        "center(10**9)",
        "center(40)",
        "indent(10**6)",
        "wordwrap(1, wrapstring='ab')",
        "format(1)",
        "replace('a', 'aaaa')",
        "replace('', 'xyz')",
        "batch(10**9, 'x')",
        "slice(10**9)",
        "tojson(indent=999)",
        "pprint",
        "sum",
        "attr('__class__')",
        "map(attribute='text')",
        "map('upper')",
        "select('odd')",
        "int",
        "float",
        "round(10**9)",
        "truncate(5)",
        "urlize(target='x' * 99)",
        "default('d')",
        "e",
        "trim",
        "title",
        "nosuchfilter",
    ]
)
METHODS = st.sampled_from(
    [
        ".upper()",
        ".center(10**9)",
        ".ljust(999999)",
        ".zfill(10**7)",
        ".expandtabs(99999)",
        ".format(1, 2)",
        ".format(base_prompt)",
        ".format_map({})",
        ".join(steps | map(attribute='text'))",
        ".replace('a', 'b' * 99999)",
        ".split()",
        ".translate({97: 'z' * 999})",
        ".encode()",
        ".to_bytes(10**9, 'big')",
        ".append(1)",
        ".pop()",
        ".items()",
        "[0]",
        "[1:]",
        "['__class__']",
    ]
)
BINARY = st.sampled_from([" * ", " ** ", " % ", " ~ ", " + ", " - ", " // ", " / "])
COMPARE = st.sampled_from([" == ", " in ", " is defined", " is odd", " and ", " or "])


def expressions() -> st.SearchStrategy[str]:
    atoms = st.one_of(
        NAMES,
        NUMBERS,
        STRINGS,
        st.sampled_from(["[1, 2, 3]", "{'a': 1}", "('ab' * 50000)", "range(99999)", "[x, x, x]"]),
    )
    return st.recursive(
        atoms,
        lambda inner: st.one_of(
            st.tuples(inner, BINARY, inner).map("".join),
            st.tuples(inner, st.just(" | "), FILTERS).map("".join),
            st.tuples(inner, METHODS).map("".join),
            st.tuples(inner, COMPARE, inner).map(lambda t: t[0] + t[1] + t[2].lstrip()),
            inner.map(lambda e: f"({e})"),
            st.lists(inner, max_size=3).map(lambda items: "[" + ", ".join(items) + "]"),
            st.tuples(st.sampled_from(["range", "lipsum", "dict", "namespace"]), inner).map(
                lambda t: f"{t[0]}({t[1]})"
            ),
        ),
        max_leaves=6,
    )


def templates() -> st.SearchStrategy[str]:
    expr = expressions()
    text = st.text(max_size=20)
    pieces = st.recursive(
        st.one_of(text, expr.map(lambda e: "{{ " + e + " }}")),
        lambda body: st.one_of(
            st.tuples(st.sampled_from(["x", "s", "tag"]), expr, body).map(
                lambda t: f"{{% for {t[0]} in {t[1]} %}}{t[2]}{{% endfor %}}"
            ),
            st.tuples(expr, body, body).map(
                lambda t: f"{{% if {t[0]} %}}{t[1]}{{% else %}}{t[2]}{{% endif %}}"
            ),
            st.tuples(expr, body).map(lambda t: f"{{% set x = {t[0]} %}}{t[1]}"),
            st.tuples(body, expr).map(
                lambda t: (
                    f"{{% macro m(n) %}}{t[0]}{{{{ m({t[1]}) }}}}{{% endmacro %}}{{{{ m(3) }}}}"
                )
            ),
            body.map(lambda b: f"{{% filter upper %}}{b}{{% endfilter %}}"),
            body.map(lambda b: f"{{% for x in range(9) recursive %}}{b}{{% endfor %}}"),
            st.lists(body, max_size=3).map("".join),
        ),
        max_leaves=5,
    )
    soup = st.lists(st.sampled_from(SOUP), max_size=30).map("".join)
    return st.one_of(pieces, soup, st.text(max_size=60))


# --- the context a run gives ---------------------------------------------------------------------

SHORT = st.text(max_size=40)
IDS = st.lists(st.uuids().map(str), max_size=3)


@st.composite
def contexts(draw: st.DrawFn) -> dict[str, Any]:
    return {
        "base_prompt": draw(SHORT),
        "series": SeriesContext(draw(SHORT), draw(SHORT), draw(st.lists(SHORT, max_size=4))),
        "steps": draw(st.lists(st.builds(StepOutput, SHORT, IDS), max_size=4)),
    }


def render_within_bounds(source: str, context: dict[str, Any]) -> None:
    """Rendering answers a text within the limit, or `Invalid`; nothing else, and soon."""
    started = time.perf_counter()
    try:
        out = render(source, **context)
    except Invalid as exc:
        assert exc.message.strip(), source
        assert "Traceback" not in exc.message
        event(f"render refused: {exc.message.split(':')[0].split('(')[0][:60]}")
    else:
        assert isinstance(out, str)
        assert len(out) <= MAX_PROMPT_CHARS
        event("rendered")
    assert time.perf_counter() - started < MAX_SECONDS, source


PROPERTY = settings(max_examples=700, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(source=templates(), position=st.integers(0, 4), context=contexts())
def test_any_template_is_checked_without_raising_and_renders_or_is_refused(
    source: str, position: int, context: dict[str, Any]
) -> None:
    started = time.perf_counter()
    problems = check_template(source, position)
    event("check: passes" if not problems else "check: refused")
    assert isinstance(problems, list)
    assert all(isinstance(p, str) and p for p in problems)
    assert time.perf_counter() - started < MAX_SECONDS
    render_within_bounds(source, context)


# --- step lists ---------------------------------------------------------------------------------

MINE = uuid.UUID("11111111-1111-4111-8111-111111111111")
ANY_JSON = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(allow_nan=True, allow_infinity=True),
        st.text(max_size=8),
    ),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=5,
)


@st.composite
def configs(draw: st.DrawFn) -> Any:
    known = {
        "count": st.one_of(st.integers(1, 8), st.sampled_from([0, 9, 10**9, "2", 1.5, None])),
        "aspect_ratio": st.one_of(st.sampled_from(ASPECT_RATIOS), st.text(max_size=6)),
        "image_size": st.one_of(st.sampled_from(IMAGE_SIZES), st.text(max_size=3)),
        "temperature": st.one_of(st.floats(-1, 3), st.just(float("nan")), st.just(10**400)),
        "input_images": st.lists(
            st.one_of(
                st.just(str(MINE)),
                st.uuids().map(str),
                st.integers(0, 5).map(lambda n: f"step:{n}"),
                st.text(max_size=8),
            ),
            max_size=16,
        ),
    }
    if not draw(st.integers(0, 9)):
        known["colour"] = ANY_JSON
    keys = draw(st.lists(st.sampled_from(sorted(known)), unique=True, max_size=3))
    config = {key: draw(known[key]) for key in keys}
    return config if draw(st.integers(0, 9)) else draw(ANY_JSON)


PLAUSIBLE_PROMPTS = st.one_of(
    templates(),
    st.sampled_from(
        [
            "{{ base_prompt }}",
            "{{ series.title }}: {{ series.tags | join(', ') }}",
            "{{ previous.text | upper }}",
            "{% for s in steps %}{{ loop.index }} {{ s.text }}\n{% endfor %}",
            "{{ steps[0].text * 3 }}",
            "{{ (base_prompt ~ ' ') * 99999 }}",
            "{% for t in series.tags %}{% for u in series.tags %}{{ t ~ u }}{% endfor %}"
            "{% endfor %}",
        ]
    ),
)


@st.composite
def sound_step(draw: st.DrawFn) -> dict[str, Any]:
    """A step as the editor would send it: a kind, a prompt and a config that suits it."""
    kind = draw(st.sampled_from(["llm", "image"]))
    if kind == "llm":
        config: dict[str, Any] = draw(
            st.fixed_dictionaries({}, optional={"temperature": st.floats(0, 2)})
        )
    else:
        config = draw(
            st.fixed_dictionaries(
                {},
                optional={
                    "count": st.integers(1, 8),
                    "aspect_ratio": st.sampled_from(ASPECT_RATIOS),
                    "image_size": st.sampled_from(IMAGE_SIZES),
                    "input_images": st.lists(st.just(str(MINE)), max_size=2),
                },
            )
        )
    return {"kind": kind, "prompt": draw(PLAUSIBLE_PROMPTS), "config": config}


@st.composite
def one_step(draw: st.DrawFn) -> Any:
    """Mostly a sound step, and now and then one with anything in it."""
    if draw(st.integers(0, 3)):
        return draw(sound_step())
    if not draw(st.integers(0, 4)):
        return draw(ANY_JSON)
    step: dict[str, Any] = {}
    if draw(st.integers(0, 9)):
        step["kind"] = draw(st.one_of(st.sampled_from(["llm", "image"]), ANY_JSON))
    if draw(st.integers(0, 9)):
        step["prompt"] = draw(st.one_of(templates(), ANY_JSON, st.just("x" * 20_001)))
    if draw(st.booleans()):
        step["model"] = draw(st.one_of(st.none(), st.text(max_size=10), st.just("m" * 201)))
    if draw(st.booleans()):
        step["config"] = draw(configs())
    if not draw(st.integers(0, 4)):
        step["extra"] = draw(ANY_JSON)
    return step


@st.composite
def raw_steps(draw: st.DrawFn) -> list[Any]:
    steps = draw(st.lists(one_step(), min_size=1, max_size=4)) if draw(st.integers(0, 19)) else []
    if not draw(st.integers(0, 49)):
        steps += [{"kind": "llm", "prompt": "x"}] * 21  # over MAX_STEPS
    return steps


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw=raw_steps(), context=contexts())
def test_any_step_list_is_accepted_and_renders_or_is_refused_with_invalid(
    raw: list[Any], context: dict[str, Any]
) -> None:
    try:
        specs = validate_steps(raw, series_image_ids={MINE})
    except Invalid as exc:
        assert exc.status_code == 422
        problems = exc.extra.get("problems", [exc.message])
        assert problems and all(isinstance(p, str) and p for p in problems)
        assert all(p in exc.message for p in problems)
        event("steps refused")
        return
    event("steps accepted" if specs else "steps accepted (none)")
    assert all(isinstance(s, StepSpec) for s in specs)
    assert len(specs) == len(raw)
    # Each prompt renders in the context its run gives it: the outputs of the steps before.
    for position, spec in enumerate(specs):
        earlier = [StepOutput(f"output {i}", []) for i in range(position)]
        render_within_bounds(spec.prompt, {**context, "steps": earlier})
