"""Step prompts are Jinja2 templates, rendered in the sandbox.

A prompt sees `base_prompt`, `series` (`.title`, `.description`, `.tags`), `steps` (earlier
steps' outputs by position: `steps[0].text`, `steps[0].images`) and `previous` (the step just
before). Anything else is refused when the step is saved, not when it runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from jinja2 import StrictUndefined, TemplateError, TemplateSyntaxError, meta, nodes
from jinja2.exceptions import SecurityError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from cog.errors import Invalid

VARIABLES = ("base_prompt", "series", "steps", "previous")

_env = ImmutableSandboxedEnvironment(
    undefined=StrictUndefined, autoescape=False, trim_blocks=True, lstrip_blocks=True
)


@dataclass(frozen=True)
class SeriesContext:
    title: str
    description: str
    tags: list[str]


@dataclass(frozen=True)
class StepOutput:
    """What a finished step offers later templates."""

    text: str = ""
    images: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        return self.text


def check_template(source: str, position: int) -> list[str]:
    """Problems with a step's template: syntax, unknown variables, references forward."""
    try:
        tree = _env.parse(source)
    except TemplateSyntaxError as exc:
        return [f"the prompt is not a valid template (line {exc.lineno}: {exc.message})"]
    problems = []
    unknown = sorted(meta.find_undeclared_variables(tree) - set(VARIABLES))
    if unknown:
        problems.append(
            "the prompt uses unknown variable(s) "
            + ", ".join(f"`{name}`" for name in unknown)
            + f" (available: {', '.join(VARIABLES)})"
        )
    if position == 0 and "previous" in meta.find_undeclared_variables(tree):
        problems.append("the first step has no `previous` step")
    for node in tree.find_all(nodes.Getitem):
        if (
            isinstance(node.node, nodes.Name)
            and node.node.name == "steps"
            and isinstance(node.arg, nodes.Const)
        ):
            index = node.arg.value
            if not isinstance(index, int) or index < 0:
                problems.append(f"`steps[{index!r}]` is not a step position")
            elif index >= position:
                problems.append(
                    f"the prompt uses `steps[{index}]`, which does not run before this step"
                )
    return problems


def render(
    source: str,
    *,
    base_prompt: str,
    series: SeriesContext,
    steps: list[StepOutput],
) -> str:
    """Render in the sandbox; a template that still fails at run time says why in plain words."""
    context: dict[str, Any] = {
        "base_prompt": base_prompt,
        "series": series,
        "steps": steps,
        "previous": steps[-1] if steps else None,
    }
    try:
        return _env.from_string(source).render(context).strip()
    except SecurityError as exc:
        raise Invalid(f"The prompt tried something templates may not do: {exc}") from exc
    except TemplateError as exc:
        raise Invalid(f"The prompt could not be rendered: {exc}") from exc
    except (TypeError, ValueError, LookupError, AttributeError, ArithmeticError) as exc:
        raise Invalid(f"The prompt could not be rendered: {exc}") from exc
