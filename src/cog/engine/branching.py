"""Branching steps: a structured answer (a JSON schema on an llm step), a condition (`when`) and
a loop (`for_each`).

`when` and `for_each` are Jinja expressions over the same variables as prompts, evaluated in the
same sandbox with the same budget: `"night" in steps[0].text | lower`,
`steps[0].json.needs_detail`, `steps[0].json.scenes`. They are checked when a step is saved (they
parse, use known variables, refer to steps that run before, and to fields the earlier step's
schema has) and evaluated when it runs; an evaluation that fails there fails the step in plain
words.

A step that is skipped (its condition was false, its loop had nothing to go over, or a step it
needs was skipped) offers later steps an empty output, and the steps that need it are skipped in
turn.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Collection, Iterable, Mapping, Sequence
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import jsonschema
from jinja2 import TemplateError, TemplateSyntaxError, nodes
from jinja2.environment import TemplateExpression
from jinja2.exceptions import SecurityError
from jinja2.parser import Parser
from jinja2.runtime import Undefined

from cog.domain import StepKind
from cog.engine.prompts import StepOutput, check_tree, environment, parsed
from cog.engine.sandbox import OverBudget, budget, printed_size
from cog.errors import Invalid

if TYPE_CHECKING:
    from cog.engine.steps import StepSpec

ITEM = "item"  # the variable an iteration of a loop sees its item as
MAX_ITERATIONS = 32
MAX_EXPRESSION_CHARS = 2_000
MAX_SCHEMA_CHARS = 20_000
# What a step's output offers an expression or a template (`steps[0].text`...).
OUTPUT_FIELDS = ("text", "images", "json", "skipped")
_LABELS = {"when": "the condition", "for_each": "the loop"}


# --- expressions: reading and checking ---------------------------------------------------------


def parse_expression(source: str) -> nodes.Expr:
    """The tree of one expression (raises `TemplateSyntaxError`): what Jinja's own
    `compile_expression` reads, nothing after it."""
    parser = Parser(environment(), source, state="variable")
    expr = parser.parse_expression()
    if not parser.stream.eos:
        token = parser.stream.current
        raise TemplateSyntaxError(
            f"unexpected {token.value!r} after the expression", token.lineno, None, None
        )
    return expr


def _as_template(expr: nodes.Expr) -> nodes.Template:
    return nodes.Template([nodes.Assign(nodes.Name("result", "store"), expr)], lineno=1)


def expression_variables(source: str) -> set[str]:
    """The variables an expression reads (none when it cannot be read)."""
    try:
        expr = parse_expression(source)
    except (TemplateSyntaxError, RecursionError):
        return set()
    return {node.name for node in expr.find_all(nodes.Name) if node.ctx == "load"}


def expression_problems(
    source: str, key: str, position: int, specs: Sequence[StepSpec | None], extra: Collection[str]
) -> list[str]:
    """Problems with a step's `when` or `for_each` (`key`), each starting with the key."""
    label = _LABELS[key]
    if not source.strip():
        return [f"`{key}` is empty; leave it out (null) instead"]
    try:
        expr = parse_expression(source)
    except TemplateSyntaxError as exc:
        return [f"`{key}` does not parse: {exc.message}"]
    except RecursionError:
        return [f"`{key}` nests too deeply to be read"]
    tree = _as_template(expr)
    problems = check_tree(tree, position, extra, what=label, count=len(specs))
    try:
        problems += field_problems(tree, position, specs, item_schema=None)
    except RecursionError:
        problems.append(f"{label} nests too deeply to be read")
    return [f"`{key}`: {p}" for p in problems]


def _chain(node: nodes.Node) -> tuple[nodes.Node, list[str | int]]:
    """The root of an attribute/index chain and its path (`steps[0].json.a` -> steps, [0,
    'json', 'a']). A part computed at run time ends the path there: it cannot be checked."""
    path: list[str | int] = []
    while isinstance(node, nodes.Getattr | nodes.Getitem):
        if isinstance(node, nodes.Getattr):
            path.append(node.attr)
        elif isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str | int):
            path.append(node.arg.value)
        else:
            path = []  # everything after a computed part is unknown
        node = node.node
    path.reverse()
    return node, path


def _resolve(node: Any, root: Mapping[str, Any]) -> Any:
    ref = node.get("$ref") if isinstance(node, Mapping) else None
    if isinstance(ref, str) and ref.startswith("#/"):
        target: Any = root
        for part in ref[2:].split("/"):
            target = target.get(part) if isinstance(target, Mapping) else None
        return target if isinstance(target, Mapping) else {}
    return node


def _schema_type(node: Mapping[str, Any]) -> str | None:
    kind = node.get("type")
    if isinstance(kind, list):
        kinds = [k for k in kind if k != "null"]
        kind = kinds[0] if len(kinds) == 1 else None
    if kind is None and "properties" in node:
        return "object"
    if kind is None and "items" in node:
        return "array"
    return kind if isinstance(kind, str) else None


def _walk(
    schema: Mapping[str, Any], path: Sequence[str | int], where: str
) -> tuple[Mapping[str, Any] | None, str | None]:
    """Follow `path` into `schema`; answers the node it reaches (None: not known) or the first
    problem on the way."""
    node: Any = _resolve(schema, schema)
    for part in path:
        if not isinstance(node, Mapping):
            return None, None
        kind = _schema_type(node)
        if isinstance(part, int):
            if kind != "array":
                return None, None
            node = _resolve(node.get("items", {}), schema)
            where = f"{where}[{part}]"
            continue
        properties = node.get("properties")
        if kind == "array":
            return None, f"{where} is a list; it has no field `{part}`"
        if kind in ("string", "number", "integer", "boolean"):
            return None, f"{where} is a {kind}; it has no field `{part}`"
        if not isinstance(properties, Mapping):
            return None, None  # a free-form object: anything may be in it
        if part not in properties:
            extra = node.get("additionalProperties", False)
            if extra not in (False, None):
                return None, None
            known = ", ".join(f"`{name}`" for name in properties) or "none"
            return None, f"{where} has no field `{part}` in its schema (it has {known})"
        node = _resolve(properties[part], schema)
        where = f"{where}.{part}"
    return (node if isinstance(node, Mapping) else None), None


def output_schema(spec: StepSpec) -> dict[str, Any] | None:
    """The schema of `steps[N].json` of a step: its answer's, or a list of them for a loop."""
    schema = spec.config.json_schema
    if schema is None or spec.for_each is None:
        return schema
    # Definitions stay at the top, where the answer's `$ref`s point.
    defs: dict[str, Any] = {key: schema[key] for key in ("$defs", "definitions") if key in schema}
    return {"type": "array", "items": schema, **defs}


def field_problems(
    tree: nodes.Template,
    position: int,
    specs: Sequence[StepSpec | None],
    item_schema: Mapping[str, Any] | None,
) -> list[str]:
    """What a template or expression reads of earlier steps' outputs (and of `item`) that they
    do not have: `steps[0].tetx`, `steps[0].json` of a step without a schema, a field its schema
    does not name."""
    problems: dict[str, None] = {}
    for node in tree.find_all((nodes.Getattr, nodes.Getitem)):
        root, path = _chain(node)
        if not isinstance(root, nodes.Name):
            continue
        if root.name == "steps" and path and isinstance(path[0], int):
            index, rest = path[0], path[1:]
        elif root.name == "previous" and position > 0:
            index, rest = position - 1, path
        elif root.name == ITEM and item_schema is not None:
            _, problem = _walk(item_schema, path, "`item`")
            if problem:
                problems[problem] = None
            continue
        else:
            continue
        if not 0 <= index < min(position, len(specs)) or not rest:
            continue  # a reference forward or past the end is named elsewhere
        field = rest[0]
        if field not in OUTPUT_FIELDS:
            problems[
                f"`steps[{index}].{field}` is not an output of a step (use "
                + ", ".join(OUTPUT_FIELDS)
                + ")"
            ] = None
            continue
        spec = specs[index]
        if field != "json" or spec is None:
            continue
        schema = output_schema(spec)
        if schema is None:
            problems[
                f"`steps[{index}].json` is empty: step {index} declares no schema "
                "(an llm step's `config.schema`)"
            ] = None
            continue
        _, problem = _walk(schema, rest[1:], f"step {index}'s answer")
        if problem:
            problems[problem] = None
    return list(problems)


def loop_items_schema(
    spec: StepSpec, position: int, specs: Sequence[StepSpec | None]
) -> tuple[Mapping[str, Any] | None, str | None]:
    """The schema of the items a step's `for_each` gives, when it reads straight from an earlier
    structured answer (None: not known), or why it cannot give a list."""
    if spec.for_each is None:
        return None, None
    try:
        expr = parse_expression(spec.for_each)
    except (TemplateSyntaxError, RecursionError):
        return None, None
    root, path = _chain(expr)
    if not (isinstance(root, nodes.Name) and root.name in ("steps", "previous")):
        return None, None
    if root.name == "steps":
        if not path or not isinstance(path[0], int):
            return None, None
        index, rest = path[0], path[1:]
    else:
        index, rest = position - 1, path
    if not (0 <= index < min(position, len(specs))) or rest[:1] != ["json"]:
        return None, None
    source = specs[index]
    schema = None if source is None else output_schema(source)
    if schema is None:
        return None, None
    node, problem = _walk(schema, rest[1:], f"step {index}'s answer")
    if problem or node is None:
        return None, None
    kind = _schema_type(node)
    if kind is not None and kind != "array":
        return None, f"`for_each`: the loop goes over a {kind}, not a list"
    items = _resolve(node.get("items", {}), schema)
    return (items if isinstance(items, Mapping) else None), None


def schema_problems(schema: Mapping[str, Any]) -> list[str]:
    """Problems with a step's JSON schema: valid JSON Schema, of a sensible size, self-contained."""
    if printed_size(schema, MAX_SCHEMA_CHARS) > MAX_SCHEMA_CHARS:
        return [f"`config.schema` is longer than {MAX_SCHEMA_CHARS:,} characters"]
    dialect = schema.get("$schema")
    if dialect is not None and dialect not in _DIALECTS:
        return [
            f"`config.schema` names a JSON Schema version Cog does not know ({dialect!r}); "
            "leave `$schema` out"
        ]
    try:
        _validator_class(schema).check_schema(dict(schema))
    except jsonschema.SchemaError as exc:
        where = ".".join(str(p) for p in exc.path)
        return [
            f"`config.schema` is not a valid JSON Schema"
            f"{f' (at `{where}`)' if where else ''}: {exc.message}"
        ]
    except RecursionError:
        return ["`config.schema` nests too deeply to be read"]
    for ref in _refs(schema):
        if not ref.startswith("#"):
            return [f"`config.schema` refers to {ref!r}; a schema must hold all it uses (`#/...`)"]
        if not _points_to_something(schema, ref):
            return [f"`config.schema` refers to {ref!r}, which is not in it"]
    return []


# The JSON Schema versions jsonschema knows, by their `$schema` (with and without a final `#`).
_DIALECTS = frozenset(
    uri
    for cls in (
        jsonschema.Draft4Validator,
        jsonschema.Draft6Validator,
        jsonschema.Draft7Validator,
        jsonschema.Draft201909Validator,
        jsonschema.Draft202012Validator,
    )
    for uri in (cls.META_SCHEMA["$schema"], cls.META_SCHEMA["$schema"].rstrip("#"))
)


def _validator_class(schema: Mapping[str, Any]) -> Any:
    if schema.get("$schema") not in _DIALECTS:  # unknown ones are refused when saved
        return jsonschema.Draft202012Validator
    return jsonschema.validators.validator_for(schema)


def _points_to_something(schema: Mapping[str, Any], ref: str) -> bool:
    target: Any = schema
    for part in ref[2:].split("/") if ref.startswith("#/") else []:
        part = part.replace("~1", "/").replace("~0", "~")
        if isinstance(target, Mapping) and part in target:
            target = target[part]
        elif isinstance(target, list) and part.isdigit() and int(part) < len(target):
            target = target[int(part)]
        else:
            return False
    return ref in ("#", "") or ref.startswith("#/")


def _refs(value: Any) -> Iterable[str]:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, Mapping):
            ref = item.get("$ref")
            if isinstance(ref, str):
                yield ref
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def step_problems(spec: StepSpec, position: int, specs: Sequence[StepSpec | None]) -> list[str]:
    """What is wrong with a step's schema, condition and loop in its place in the list."""
    problems: list[str] = []
    schema = spec.config.json_schema
    if schema is not None:
        if spec.kind is not StepKind.llm:
            problems.append("`config.schema` applies to llm steps only")
        else:
            problems += schema_problems(schema)
    if spec.when is not None:
        problems += expression_problems(spec.when, "when", position, specs, ())
    if spec.for_each is not None:
        found = expression_problems(spec.for_each, "for_each", position, specs, ())
        problems += found
        if not found:
            _, problem = loop_items_schema(spec, position, specs)
            if problem:
                problems.append(problem)
    return problems


def prompt_problems(spec: StepSpec, position: int, specs: Sequence[StepSpec | None]) -> list[str]:
    """What a step's prompt reads of earlier outputs (and of its loop's `item`) that is not
    there; the template itself is checked by `check_template`."""
    try:
        tree = parsed(spec.prompt)
        item_schema, _ = loop_items_schema(spec, position, specs)
        return field_problems(tree, position, specs, item_schema)
    except (TemplateSyntaxError, RecursionError):
        return []  # `check_template` says why


def template_extra(spec: StepSpec) -> tuple[str, ...]:
    """The variables a step's prompt has beside the usual ones."""
    return (ITEM,) if spec.for_each is not None else ()


# --- dependencies -------------------------------------------------------------------------------


@lru_cache(maxsize=1024)
def _tree(source: str, *, expression: bool) -> nodes.Template | None:
    """A step's template or expression, parsed (None when it cannot be). Kept: a run asks
    what each step reads, and parsing is most of what that costs."""
    try:
        return _as_template(parse_expression(source)) if expression else parsed(source)
    except (TemplateSyntaxError, RecursionError):
        return None


def _step_reads(source: str, position: int, *, expression: bool) -> set[int]:
    """The earlier steps a template or expression reads by position (`steps[N]`, `previous`)."""
    tree = _tree(source, expression=expression)
    if tree is None:
        return set()  # a step that saved cannot be one of these; the render says what is wrong
    found: set[int] = set()
    for node in tree.find_all(nodes.Getitem):
        if (
            isinstance(node.node, nodes.Name)
            and node.node.name == "steps"
            and isinstance(node.arg, nodes.Const)
            and isinstance(node.arg.value, int)
        ):
            found.add(node.arg.value)
    if position > 0 and any(n.name == "previous" for n in tree.find_all(nodes.Name)):
        found.add(position - 1)
    return {i for i in found if 0 <= i < position}


def _reads_any_step(source: str, *, expression: bool) -> bool:
    """Whether a template or expression reads earlier steps at all, by any index or in a loop
    over them (an unreadable one is taken to)."""
    tree = _tree(source, expression=expression)
    return tree is None or any(n.name in ("steps", "previous") for n in tree.find_all(nodes.Name))


def reads_no_step(spec: StepSpec, image_steps: Collection[int]) -> bool:
    """Whether nothing of a step (prompt, condition, loop, input images: `image_steps`, the
    `step:N` of its config) reads an earlier step's output, however it is written."""
    sources = [(spec.prompt, False), (spec.when, True), (spec.for_each, True)]
    if any(_reads_any_step(s, expression=e) for s, e in sources if s is not None):
        return False
    return not image_steps


def needs(spec: StepSpec, position: int, image_steps: Iterable[int]) -> list[int]:
    """The earlier steps whose output a step uses: in its prompt, condition, loop, or as input
    images (`image_steps`, the `step:N` of its config)."""
    found = _step_reads(spec.prompt, position, expression=False)
    for source in (spec.when, spec.for_each):
        if source is not None:
            found |= _step_reads(source, position, expression=True)
    found |= {i for i in image_steps if 0 <= i < position}
    return sorted(found)


# --- evaluation ---------------------------------------------------------------------------------


@lru_cache(maxsize=256)
def _compiled(source: str) -> TemplateExpression:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", SyntaxWarning)
        return environment().compile_expression(source, undefined_to_none=False)


def evaluate(source: str, key: str, context: Mapping[str, Any]) -> Any:
    """The value of a step's `when` or `for_each`; `Invalid` saying why in plain words when it
    cannot be evaluated."""
    try:
        expression = _compiled(source)
        with budget():
            value = expression(**context)
            if isinstance(value, Undefined):
                value._fail_with_undefined_error()
            return value
    except OverBudget as exc:
        raise Invalid(f"`{key}` could not be evaluated: {exc}") from exc
    except RecursionError as exc:
        raise Invalid(f"`{key}` could not be evaluated: it nests too deeply.") from exc
    except SecurityError as exc:
        raise Invalid(f"`{key}` tried something expressions may not do: {exc}") from exc
    except TemplateError as exc:
        raise Invalid(f"`{key}` could not be evaluated: {exc}") from exc
    except (TypeError, ValueError, LookupError, AttributeError, ArithmeticError) as exc:
        raise Invalid(f"`{key}` could not be evaluated: {exc}") from exc


def condition_holds(source: str, context: Mapping[str, Any]) -> bool:
    value = evaluate(source, "when", context)
    try:
        return bool(value)
    except Exception as exc:  # a value whose truth cannot be told
        raise Invalid(f"`when` gave a value that is neither true nor false: {exc}") from exc


def loop_items(source: str, context: Mapping[str, Any]) -> list[Any]:
    """The items a step's `for_each` goes over: a list of at most `MAX_ITERATIONS`."""
    value = evaluate(source, "for_each", context)
    if isinstance(value, str | bytes | Mapping) or not isinstance(value, list | tuple):
        raise Invalid(
            f"`for_each` gave {_kind(value)}, not a list; it must give a list to go over."
        )
    if len(value) > MAX_ITERATIONS:
        raise Invalid(
            f"`for_each` gave {len(value)} items; a step goes over at most {MAX_ITERATIONS}."
        )
    return [_plain(item) for item in value]


def _kind(value: Any) -> str:
    if isinstance(value, str):
        return "a text"
    if isinstance(value, Mapping):
        return "an object"
    if value is None:
        return "nothing (null)"
    return f"a {type(value).__name__}"


def _plain(item: Any) -> Any:
    """An item as JSON can keep it (it is recorded with the iteration and its images)."""
    try:
        return json.loads(json.dumps(item))
    except (TypeError, ValueError):
        return str(item)


def skip_reason(
    spec: StepSpec,
    position: int,
    image_steps: Iterable[int],
    outputs: Sequence[StepOutput],
    context: Mapping[str, Any],
) -> str | None:
    """Why a step does not run, or None when it does: a step it needs was skipped, or its
    condition is false. `Invalid` when the condition cannot be evaluated."""
    for index in needs(spec, position, image_steps):
        if outputs[index].skipped:
            return f"It needs step {index}, which was skipped."
    if spec.when is not None and not condition_holds(spec.when, context):
        return f"Its condition was false: {spec.when}"
    return None


# --- structured answers -------------------------------------------------------------------------


def check_answer(schema: Mapping[str, Any], value: Any) -> None:
    """`Invalid`, saying where and what, when a structured answer does not match its schema."""
    try:
        validator = _validator_class(schema)(schema)
        error = jsonschema.exceptions.best_match(validator.iter_errors(value))
    except Exception as exc:  # a schema that saved but cannot be applied (a run's old snapshot)
        raise Invalid(f"The step's schema could not be applied to the answer: {exc}") from exc
    if error is None:
        return
    where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path)
    place = f" at `{where.lstrip('.')}`" if where else ""
    raise Invalid(f"The model's answer does not match the step's schema{place}: {error.message}")
