"""Step prompts are Jinja2 templates, rendered in the sandbox.

A prompt sees `base_prompt`, `series` (`.title`, `.description`, `.tags`, and what it inherits
down the tree: `.ancestors`, `.context`), `style` (the job's style source: `.title`, `.tags`,
`.profile`; empty when it has none), `steps` (earlier steps' outputs by position:
`steps[0].text`, `steps[0].images`) and `previous` (the step just before). Anything else is
refused when the step is saved, not when it runs: other variables, unknown filters and tests,
other templates, and names starting with `_` (`''.__class__`).

Saving a prompt only reads it; nothing in it is computed. What a template builds only when it
runs (a name put together from pieces, a huge repetition) meets the sandbox then, with its
budget (`cog.engine.sandbox`), and the step fails in plain words before anything reaches a
model.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from jinja2 import StrictUndefined, Template, TemplateError, TemplateSyntaxError, meta, nodes
from jinja2.compiler import Frame
from jinja2.exceptions import SecurityError

from cog.engine.sandbox import OverBudget, PromptEnvironment, budget
from cog.errors import Invalid

VARIABLES = ("base_prompt", "series", "style", "steps", "previous", "input")

_env = PromptEnvironment(
    undefined=StrictUndefined, autoescape=False, trim_blocks=True, lstrip_blocks=True
)


class _Introspection(meta.TrackingCodeGenerator):
    """Finds a template's variables without evaluating any part of it: Jinja's compiler folds
    constant expressions (filters with constant arguments too) as it goes."""

    def __init__(self, environment: PromptEnvironment) -> None:
        super().__init__(environment)
        self.optimizer = None

    def _output_child_to_const(self, node: nodes.Expr, frame: Frame, finalize: Any) -> str:
        raise nodes.Impossible()


@dataclass(frozen=True)
class AncestorContext:
    """A series above the job's, as its templates see it (`series.ancestors`)."""

    title: str
    description: str
    tags: list[str]

    def __str__(self) -> str:
        return self.title


@dataclass(frozen=True)
class SeriesContext:
    title: str
    description: str
    tags: list[str]
    # The series above it whose context it inherits, root first (`cog.engine.context`), and
    # their descriptions with its own, root down, one a line.
    ancestors: list[AncestorContext] = field(default_factory=list)
    context: str = ""


@dataclass(frozen=True)
class StyleContext:
    """The job's style source (`style`); a job without one sees empty values, so a template
    that mentions the style renders with or without it."""

    title: str = ""
    tags: list[str] = field(default_factory=list)
    profile: str = ""

    def __str__(self) -> str:
        return self.profile


@dataclass(frozen=True)
class InputContext:
    """The image a run of a batch is for: `input`, a variable only runs of a batch have."""

    id: str
    prompt: str
    tags: list[str]
    filename: str
    width: int
    height: int
    series: str  # the title of its series

    def __str__(self) -> str:
        return self.prompt


@dataclass(frozen=True)
class StepOutput:
    """What a finished step offers later templates: its text, its images, its structured answer
    (`json`, when its config declares a schema) and whether it was skipped."""

    text: str = ""
    images: list[str] = field(default_factory=list)
    json: Any = None
    skipped: bool = False
    # A step with a loop: the images of each item, in item order ("step:N:item").
    item_images: list[list[str]] | None = None

    def __str__(self) -> str:
        return self.text


# Reading a template (parsing it, walking its tree) costs about a third of a millisecond. A
# job's templates are read again on every edit of any of its steps and at the start of every
# run, and are nearly always unchanged: the tree, and what a reading finds in it, are kept by
# source, as `_compiled` keeps the compiled templates. The answers depend on nothing else.


@functools.lru_cache(maxsize=512)
def parsed(source: str) -> nodes.Template:
    """A template's tree (raises `TemplateSyntaxError`, or `RecursionError` when it nests too
    deeply). Shared by every reader of the same source: read it, never change it."""
    return _env.parse(source)


def variables_of(source: str) -> set[str]:
    """The variables a template uses (none when it cannot be read; `check_template` says why)."""
    return set(_variables(source))


@functools.lru_cache(maxsize=512)
def _variables(source: str) -> frozenset[str]:
    try:
        tree = parsed(source)
    except TemplateSyntaxError:
        return frozenset()
    if _unsupported(tree):
        return frozenset()
    codegen = _Introspection(_env)
    codegen.visit(tree)
    return frozenset(codegen.undeclared_identifiers)


def check_template(source: str, position: int, extra: Collection[str] = ()) -> list[str]:
    """Problems with a step's template: syntax, unknown variables, references forward.
    `extra` are variables this step has beside the usual ones (`item`, in a loop)."""
    return list(_template_problems(source, position, tuple(extra)))


@functools.lru_cache(maxsize=512)
def _template_problems(source: str, position: int, extra: tuple[str, ...]) -> tuple[str, ...]:
    try:
        tree = parsed(source)
    except TemplateSyntaxError as exc:
        return (f"the prompt is not a valid template (line {exc.lineno}: {exc.message})",)
    except RecursionError:
        return ("the prompt nests too deeply to be read",)
    return tuple(check_tree(tree, position, extra))


def environment() -> PromptEnvironment:
    """The sandbox templates render in; a step's expressions are evaluated in it too."""
    return _env


def check_tree(
    tree: nodes.Template,
    position: int,
    extra: Collection[str] = (),
    *,
    what: str = "the prompt",
    count: int | None = None,
) -> list[str]:
    """`check_template` on a parsed tree: also how a step's expressions are checked. With the
    job's step `count`, a reference past its end is named as such."""
    try:
        problems = _check_tree(tree, position, extra, count)
    except RecursionError:
        return [f"{what} nests too deeply to be read"]
    return [p.replace("the prompt", what, 1) for p in problems]


def _check_tree(
    tree: nodes.Template, position: int, extra: Collection[str], count: int | None
) -> list[str]:
    problems = _unsupported(tree)
    if problems:  # the checks below compile the template, which these would break
        return problems
    codegen = _Introspection(_env)
    codegen.visit(tree)
    variables = codegen.undeclared_identifiers
    available = [*VARIABLES, *extra]
    unknown = sorted(variables - set(available))
    if unknown:
        problems.append(
            "the prompt uses unknown variable(s) "
            + ", ".join(f"`{name}`" for name in unknown)
            + f" (available: {', '.join(available)})"
        )
    if position == 0 and "previous" in variables:
        problems.append("the first step has no `previous` step")
    problems += [
        f"the prompt reaches for `{name}`; templates may not use names that start with `_`"
        for name in sorted(_private_names(tree))
    ]
    for node in tree.find_all(nodes.Getitem):
        if not (isinstance(node.node, nodes.Name) and node.node.name == "steps"):
            continue
        arg = node.arg
        if isinstance(arg, nodes.Neg) and isinstance(arg.node, nodes.Const):  # `steps[-1]`
            problems.append(f"`steps[-{arg.node.value!r}]` is not a step position")
        elif isinstance(arg, nodes.Const):
            index = arg.value
            if not isinstance(index, int) or index < 0:
                problems.append(f"`steps[{index!r}]` is not a step position")
            elif count is not None and index >= count:
                problems.append(
                    f"the prompt uses `steps[{index}]`, a step that does not exist "
                    f"(the job has {count})"
                )
            elif index >= position:
                problems.append(
                    f"the prompt uses `steps[{index}]`, which does not run before this step"
                )
    return problems


def _unsupported(tree: nodes.Template) -> list[str]:
    """Unknown filters and tests, other templates, and `{% autoescape %}`: none has a place in
    a prompt, and each would fail (or compute something) when the template compiles."""
    problems = [
        f"the prompt uses `{tag}`, which prompts do not support (a prompt stands alone)"
        for node_type, tag in (
            (nodes.Extends, "extends"),
            (nodes.Include, "include"),
            (nodes.Import, "import"),
            (nodes.FromImport, "from ... import"),
            (nodes.EvalContextModifier, "autoescape"),
        )
        if tree.find(node_type) is not None
    ]
    if any(loop.recursive for loop in tree.find_all(nodes.For)):
        problems.append("the prompt uses a recursive loop, which prompts do not support")
    filters = sorted({n.name for n in tree.find_all(nodes.Filter) if n.name not in _env.filters})
    tests = sorted({n.name for n in tree.find_all(nodes.Test) if n.name not in _env.tests})
    problems += [f"the prompt uses an unknown filter `{name}`" for name in filters]
    problems += [f"the prompt uses an unknown test `{name}`" for name in tests]
    return problems


_ATTRIBUTE_FILTERS = ("attr", "selectattr", "rejectattr")


def _private_names(tree: nodes.Template) -> set[str]:
    """Attribute names starting with `_` a template spells out (`x.__class__`,
    `x['__class__']`, `x | attr('__class__')`): refused when saved. A name only built at run
    time meets the sandbox instead, which refuses it then."""
    spelled: list[object] = [node.attr for node in tree.find_all(nodes.Getattr)]
    spelled += [
        node.arg.value for node in tree.find_all(nodes.Getitem) if isinstance(node.arg, nodes.Const)
    ]
    for node in tree.find_all(nodes.Filter):  # `attr('_x')`, `map(attribute='_x')`...
        named = node.args[:1] if node.name in _ATTRIBUTE_FILTERS else []
        named += [kw.value for kw in node.kwargs if kw.key == "attribute"]
        spelled += [arg.value for arg in named if isinstance(arg, nodes.Const)]
    return {name for name in spelled if isinstance(name, str) and name.startswith("_")}


def template_context(
    *,
    base_prompt: str,
    series: SeriesContext,
    steps: list[StepOutput],
    input_image: InputContext | None = None,
    style: StyleContext | None = None,
) -> dict[str, Any]:
    """The variables a step's template and expressions see."""
    context: dict[str, Any] = {
        "base_prompt": base_prompt,
        "series": series,
        "style": style or StyleContext(),
        "steps": steps,
        "previous": steps[-1] if steps else None,
    }
    if input_image is not None:  # only runs of a batch have one
        context["input"] = input_image
    return context


@functools.lru_cache(maxsize=512)
def _compiled(source: str) -> Template:
    """A template compiled once: a run renders the same few prompts over and over (each
    iteration of a loop, each run of a batch), and compiling costs more than rendering."""
    with warnings.catch_warnings():
        # Python warns of code it can tell will fail (`0[1:]`); the template fails when it
        # runs, in plain words, and the server's log need not hear of it.
        warnings.simplefilter("ignore", SyntaxWarning)
        return _env.from_string(source)


def render(
    source: str,
    *,
    base_prompt: str,
    series: SeriesContext,
    steps: list[StepOutput],
    input_image: InputContext | None = None,
    style: StyleContext | None = None,
    extra: Mapping[str, Any] | None = None,
) -> str:
    """Render in the sandbox; a template that still fails at run time says why in plain words.
    `extra` adds variables (`item`, in an iteration of a loop)."""
    context = template_context(
        base_prompt=base_prompt, series=series, steps=steps, input_image=input_image, style=style
    )
    context.update(extra or {})
    try:
        template = _compiled(source)
        with budget():
            return template.render(context).strip()
    except OverBudget as exc:
        raise Invalid(str(exc)) from exc
    except RecursionError as exc:  # a macro that calls itself, a template nested too deeply
        raise Invalid("The prompt could not be rendered: it nests or recurses too deeply.") from exc
    except SecurityError as exc:
        raise Invalid(f"The prompt tried something templates may not do: {exc}") from exc
    except TemplateError as exc:
        raise Invalid(f"The prompt could not be rendered: {exc}") from exc
    except (TypeError, ValueError, LookupError, AttributeError, ArithmeticError) as exc:
        raise Invalid(f"The prompt could not be rendered: {exc}") from exc
