"""The context a series inherits down the tree, the style variables, and the style marker."""

from __future__ import annotations

from dataclasses import dataclass, field

from cog.engine.context import StyleSnapshot, series_context, style_marker, with_style_marker
from cog.engine.prompts import SeriesContext, StyleContext, check_template, render


@dataclass
class Node:
    title: str
    description: str = ""
    tags: list[str] = field(default_factory=list)
    inherit_context: bool = True


def chain(*flags: bool) -> list[Node]:
    return [Node(f"S{n}", f"d{n}", [f"t{n}"], flag) for n, flag in enumerate(flags)]


def test_a_series_sees_every_level_above_it() -> None:
    context = series_context(chain(True, True, True))
    assert [a.title for a in context.ancestors] == ["S0", "S1"]
    assert [a.tags for a in context.ancestors] == [["t0"], ["t1"]]
    assert context.context == "d0\nd1\nd2"
    assert (context.title, context.tags) == ("S2", ["t2"])


def test_inheriting_off_stops_at_that_series() -> None:
    assert series_context(chain(True, False, True)).context == "d1\nd2"
    assert series_context(chain(True, True, False)).ancestors == []
    assert series_context(chain(True, True, False)).context == "d2"
    # The root's flag changes nothing: there is nothing above it.
    assert series_context(chain(False, True, True)).context == "d0\nd1\nd2"


def test_empty_descriptions_are_left_out_of_the_context() -> None:
    nodes = chain(True, True, True)
    nodes[1].description = "  "
    assert series_context(nodes).context == "d0\nd2"


def test_style_and_the_new_series_names_are_template_variables() -> None:
    source = "{{ series.context }} {{ series.ancestors | join(' / ') }} {{ style.profile }}"
    assert check_template(source, 0) == []
    series = SeriesContext(
        "Dawn", "", [], ancestors=series_context(chain(True, True, True)).ancestors, context="c"
    )
    assert render(source, base_prompt="", series=series, steps=[]) == "c S0 / S1"
    styled = render(
        "{{ style }}|{{ style.title }}|{{ style.tags | join(',') }}",
        base_prompt="",
        series=series,
        steps=[],
        style=StyleContext(title="Gouache", tags=["paint"], profile="thick"),
    )
    assert styled == "thick|Gouache|paint"


def test_the_style_marker_counts_the_style_images() -> None:
    snapshot = StyleSnapshot("id", "Gouache", [], "", ["a", "b"])
    assert style_marker(None, 2) == "" and style_marker(snapshot, 0) == ""
    assert style_marker(snapshot, 1).startswith("The last image is a style reference")
    assert with_style_marker("p", snapshot, 2).startswith("p\n\nThe last 2 images are style")
    assert StyleSnapshot.of(snapshot.as_json()) == snapshot
    assert StyleSnapshot.of(None) is None
