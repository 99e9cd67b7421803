"""The Jinja2 sandbox prompts render in, with a budget: no template may take much time or memory.

Jinja's sandbox keeps a template away from Python's internals, not from work. Here every render
also has limits, and a template that reaches one fails with a message that says which:

- the rendered prompt, and every value a template makes on the way, is at most
  `MAX_PROMPT_CHARS` long once printed (a list holding one long text many times is short in
  memory and huge in print, so containers are measured as printed, without printing them);
- loop turns and calls together are at most `MAX_RENDER_STEPS` (recursive loops are refused);
- all the values a render makes add up to at most `MAX_RENDER_WORK` characters.

Operations whose result can be far larger than what goes in (`'x' * n`, `center(n)`, a format
width, `join`, `replace`...) are checked before they run; everything else is measured after.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import string
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from functools import wraps
from typing import Any

from jinja2 import nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.exceptions import SecurityError
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import Namespace, generate_lorem_ipsum

MAX_PROMPT_CHARS = 1_000_000
MAX_RENDER_STEPS = 10_000
MAX_RENDER_WORK = 20_000_000
# The longest text one `*` may make, and the largest number one `**` may (in bits).
MAX_REPEAT_CHARS = 100_000
MAX_POWER_BITS = 64 * 1024
# A `%` format with a width or precision of five digits or more, or taken from the arguments.
_WIDE_FORMAT = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(?:\*|\d{5,}|\d*\.(?:\*|\d{5,}))")
# The same in a `str.format` field's spec.
_WIDE_SPEC = re.compile(r"\d{5,}")


class OverBudget(Exception):
    """A render would take more than a prompt may; the message says what, to people."""


@dataclass
class _Budget:
    steps: int = MAX_RENDER_STEPS
    work: int = MAX_RENDER_WORK


_budget: ContextVar[_Budget | None] = ContextVar("cog_prompt_budget", default=None)


def _turn() -> None:
    budget = _budget.get()
    if budget is None:
        return
    budget.steps -= 1
    if budget.steps < 0:
        raise OverBudget(
            f"The prompt takes more than {MAX_RENDER_STEPS:,} loop turns and calls to render."
        )


def _spend(units: int) -> None:
    budget = _budget.get()
    if budget is None:
        return
    budget.work -= units
    if budget.work < 0:
        raise OverBudget(
            f"The prompt makes more than {MAX_RENDER_WORK:,} characters of text while it renders."
        )


def _too_long(what: str) -> OverBudget:
    return OverBudget(
        f"The prompt would make a value longer than {MAX_PROMPT_CHARS:,} characters ({what})."
    )


# --- sizes --------------------------------------------------------------------------------------


def printed_size(value: object, limit: int = MAX_PROMPT_CHARS) -> int:
    """About how long `value` is once printed, counted no further than just past `limit`.

    Containers are walked, never printed. A namespace met twice is taken as too large: only
    a namespace can be changed after it is made, so only one can hold itself. The count is
    spent from the render's budget."""
    total = 0
    stack: list[object] = [value]
    namespaces: set[int] = set()
    while stack and total <= limit:
        item = stack.pop()
        if isinstance(item, str):
            total += len(item) + 2
        elif isinstance(item, bytes | bytearray):
            total += 4 * len(item) + 3
        elif isinstance(item, bool | int):
            total += item.bit_length() * 3 // 10 + 2
        elif isinstance(item, float | complex) or item is None:
            total += 24
        elif isinstance(item, range):
            total += 32
        elif isinstance(item, Mapping):
            total += 2 + 4 * len(item)
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list | tuple | set | frozenset):
            total += 2 + 2 * len(item)
            stack.extend(item)
        elif isinstance(item, Namespace):  # `namespace()`: it prints what it holds
            if id(item) in namespaces:
                total = limit + 1
                break
            namespaces.add(id(item))
            total += 16
            stack.append(getattr(item, "_Namespace__attrs", {}))
        elif dataclasses.is_dataclass(item) and not isinstance(item, type):
            total += 32
            stack.extend(vars(item).values())
        else:
            total += 32
    _spend(total)
    return total


def _size_of(value: object) -> int:
    """The length of a text as it is, or the printed size of anything else."""
    return len(value) if isinstance(value, str) else printed_size(value)


def _check(value: object, what: str) -> Any:
    """After an operation: what it made is within the limit once printed."""
    if isinstance(value, str):
        size = len(value)
        _spend(size)
    elif isinstance(value, bytes | bytearray | Mapping | list | tuple | set | frozenset):
        size = printed_size(value)
    else:
        return value
    if size > MAX_PROMPT_CHARS:
        raise _too_long(what)
    return value


def _refuse_over(size: int, what: str) -> None:
    if size > MAX_PROMPT_CHARS:
        raise _too_long(what)


def _biggest(values: Iterable[object]) -> int:
    return max((_size_of(v) for v in values), default=0)


def _percent_size(fmt: str, args: object) -> int:
    """An upper bound of `fmt % args`'s length (each `%` taking the largest argument)."""
    if isinstance(args, Mapping):
        values: Iterable[object] = args.values()
    elif isinstance(args, tuple):
        values = args
    else:
        values = (args,)
    return len(fmt) + fmt.count("%") * _biggest(values)


def _format_size(fmt: str, args: tuple[Any, ...], kwargs: Mapping[str, Any], what: str) -> int:
    """An upper bound of `fmt.format(...)`'s length; a wide or nested field spec is refused."""
    try:
        fields = [spec for _, name, spec, _ in string.Formatter().parse(fmt) if name is not None]
    except ValueError:
        return 0  # the call itself says what is wrong
    for spec in fields:
        if spec and ("{" in spec or _WIDE_SPEC.search(spec)):
            raise _too_long(what)
    return len(fmt) + len(fields) * _biggest([*args, *kwargs.values()])


def _join_size(separator: object, items: list[Any]) -> int:
    return _size_of(separator) * max(len(items) - 1, 0) + sum(_size_of(i) for i in items)


def _replace_size(text: str, old: object, new: object, count: object) -> int:
    if not isinstance(old, str) or not isinstance(new, str):
        return 0
    found = len(text) + 1 if old == "" else text.count(old)
    if isinstance(count, int) and count >= 0:
        found = min(found, count)
    return len(text) + found * len(new)


def _width(value: object) -> int:
    """A width given as a number, or as the text to repeat."""
    return value if isinstance(value, int) else _size_of(value)


# --- calls made from templates ------------------------------------------------------------------


def _method_size(obj: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> int:
    """An upper bound of what a text method (or `int.to_bytes`) makes, for the methods whose
    result can be far longer than the text and the arguments; 0 for any other call."""
    name = getattr(obj, "__name__", "")
    owner = getattr(obj, "__self__", None)
    wrapped = getattr(obj, "__wrapped__", None)  # the sandbox's `str.format` wrapper
    if name in ("format", "format_map") and isinstance(getattr(wrapped, "__self__", None), str):
        fmt: str = wrapped.__self__  # type: ignore[union-attr]
        if name == "format_map":
            mapping = args[0] if args and isinstance(args[0], Mapping) else {}
            return _format_size(fmt, (), mapping, f"`{name}`")
        return _format_size(fmt, args, kwargs, f"`{name}`")
    if isinstance(owner, int) and not isinstance(owner, bool) and name == "to_bytes":
        length = args[0] if args else kwargs.get("length", 1)
        return length if isinstance(length, int) else 0
    if not isinstance(owner, str | bytes | bytearray):
        return 0
    argument = args[0] if args else None
    if name in ("center", "ljust", "rjust", "zfill"):
        return max(len(owner), argument) if isinstance(argument, int) else 0
    if name == "expandtabs":
        size = argument if isinstance(argument, int) else kwargs.get("tabsize", 8)
        tab = "\t" if isinstance(owner, str) else b"\t"
        return len(owner) + owner.count(tab) * max(size if isinstance(size, int) else 0, 0)  # type: ignore[arg-type]
    if name == "join" and isinstance(owner, str) and isinstance(argument, list | tuple | str):
        return _join_size(owner, list(argument))
    if name == "replace" and isinstance(owner, str) and len(args) >= 2:
        return _replace_size(owner, args[0], args[1], args[2] if len(args) > 2 else None)
    if name == "translate" and isinstance(owner, str) and isinstance(argument, Mapping):
        longest = max((_size_of(v) for v in argument.values()), default=1)
        return len(owner) * max(longest, 1)
    return 0


def _lipsum(n: int = 5, html: bool = True, min: int = 20, max: int = 100) -> str:
    """Jinja's `lipsum`, within the limit (a word is under 12 characters), its work counted."""
    if isinstance(n, int) and isinstance(max, int):  # anything else fails in `lipsum` itself
        if n * max * 12 > MAX_PROMPT_CHARS:
            raise _too_long("`lipsum`")
        _spend(n * max * _SLOW["lipsum"])
    return generate_lorem_ipsum(n, html, min, max)


# --- filters ------------------------------------------------------------------------------------


# What a few slow operations cost per character (per word for `lipsum`), in the characters
# copying would cost the same time: work is counted in those.
_SLOW = {"urlize": 50, "wordwrap": 40, "pprint": 15, "title": 10, "lipsum": 100}
_SLOW |= dict.fromkeys(("striptags", "wordcount", "groupby", "sort", "unique", "dictsort"), 5)

_TEXT_FILTERS = frozenset({"center", "indent", "wordwrap", "format", "replace", "urlize"})


def _filter_size(name: str, arguments: Mapping[str, Any]) -> int:
    """An upper bound of what a filter makes, for the filters whose result can be far longer
    than their input; 0 for the others (measured after they run)."""
    value = arguments.get("value", arguments.get("s", arguments.get("iterable")))
    text: str | None = value if isinstance(value, str) else None
    if text is None and name in _TEXT_FILTERS:  # they work on the value as text
        _refuse_over(printed_size(value), f"`{name}`")
        text = str(value)
    if name == "center" and text is not None:
        return max(len(text), _width(arguments.get("width", 80)))
    if name == "indent" and text is not None:
        return len(text) + (text.count("\n") + 1) * _width(arguments.get("width", 4))
    if name == "wordwrap" and text is not None:
        width = arguments.get("width", 79)
        lines = len(text) // width if isinstance(width, int) and width > 0 else 0
        wrap = arguments.get("wrapstring") or "\n"
        return len(text) + (lines + text.count("\n") + 1) * _width(wrap)
    if name == "format" and text is not None:
        rest = arguments.get("args", ()) or arguments.get("kwargs", {})
        if isinstance(rest, Mapping | tuple) and _WIDE_FORMAT.search(text):
            raise _too_long("`format`")
        return _percent_size(text, rest)
    if name == "replace" and text is not None:
        return _replace_size(
            text, arguments.get("old"), arguments.get("new"), arguments.get("count")
        )
    if name == "urlize" and text is not None:
        extra = _width(arguments.get("target") or "") + _width(arguments.get("rel") or "")
        links = text.count(".") + text.count("@") + text.count(":") + 1
        return 2 * len(text) + links * (64 + extra)
    if name in ("string", "pprint"):
        return printed_size(value)
    if name == "tojson":
        indent = arguments.get("indent") or 0
        return printed_size(value) * (1 + _width(indent))
    if name == "slice":
        slices = arguments.get("slices")
        if isinstance(slices, int) and slices > MAX_RENDER_STEPS:
            raise OverBudget(f"The prompt asks `slice` for more than {MAX_RENDER_STEPS:,} slices.")
    if name == "batch" and arguments.get("fill_with") is not None:
        count = arguments.get("linecount")
        return count if isinstance(count, int) else 0
    return 0


def _materialize(name: str, arguments: dict[str, Any]) -> None:
    """`join` and `sum` go over their input twice (measured, then used): make it a list."""
    key = "value" if name == "join" else "iterable"
    items = arguments.get(key)
    if items is not None and not isinstance(items, list | tuple | str):
        arguments[key] = list(items)


def _checked_filter(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    try:
        signature: inspect.Signature | None = inspect.signature(func)
    except ValueError:  # a builtin without one (`string` is markupsafe's `soft_str`)
        signature = None
    # Jinja's filters with an async twin take an evaluation context their signature leaves out.
    hidden = int(
        getattr(func, "jinja_pass_arg", None) is not None
        and getattr(inspect.unwrap(func), "jinja_pass_arg", None) is None
    )

    @wraps(func)
    def checked(*args: Any, **kwargs: Any) -> Any:
        _turn()
        if signature is None:
            _refuse_over(_filter_size(name, {"value": args[0] if args else None}), f"`{name}`")
            return _check(func(*args, **kwargs), f"`{name}`")
        try:
            bound = signature.bind(*args[hidden:], **kwargs)
        except TypeError:
            return func(*args, **kwargs)  # the filter says what is wrong with its arguments
        arguments = bound.arguments
        if name in ("join", "sum"):
            _materialize(name, arguments)
        if name == "join":
            items = arguments.get("value")
            if isinstance(items, list | tuple):
                size = _join_size(arguments.get("d", ""), list(items))
                _refuse_over(size, "`join`")
        elif name == "sum" and not isinstance(arguments.get("start", 0), int | float):
            items = arguments.get("iterable")
            if isinstance(items, list | tuple):  # adding sequences copies them again each time
                _refuse_over(len(items) * printed_size(items) // 4, "`sum`")
        else:
            _refuse_over(_filter_size(name, arguments), f"`{name}`")
        if name in _SLOW:
            value = arguments.get("value", arguments.get("s"))
            _spend(_SLOW[name] * _size_of(value))
        return _check(func(*args[:hidden], *bound.args, **bound.kwargs), f"`{name}`")

    return checked


# --- the environment ----------------------------------------------------------------------------


class _BudgetedCodeGenerator(CodeGenerator):
    """Compiles loops to count their turns, and `~` to measure what it joins."""

    def visit_For(self, node: nodes.For, frame: Frame) -> None:
        if node.recursive:
            self.fail("recursive loops are not supported in prompts", node.lineno)
        counted = nodes.Call(
            nodes.EnvironmentAttribute("counted"), [node.iter], [], None, None, lineno=node.lineno
        )
        loop = nodes.For(
            node.target, counted, node.body, node.else_, node.test, False, lineno=node.lineno
        )
        super().visit_For(loop, frame)

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        self.write("environment.joined((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")


def _finalize(value: object) -> object:
    """Each `{{ ... }}` is measured before it is printed."""
    _refuse_over(_size_of(value), "a `{{ ... }}` output")
    return value


class PromptEnvironment(ImmutableSandboxedEnvironment):
    """The sandbox, with the budget above.

    Intercepted operators are also never evaluated while a template compiles (Jinja would
    otherwise fold `{{ 'x' * 10**10 }}` as a constant), so compiling a prompt computes nothing."""

    intercepted_binops = frozenset({"+", "-", "*", "/", "//", "%", "**"})
    code_generator_class = _BudgetedCodeGenerator

    def __init__(self, **options: Any) -> None:
        super().__init__(finalize=_finalize, **options)
        self.filters = {name: _checked_filter(name, f) for name, f in self.filters.items()}
        self.globals["lipsum"] = _lipsum

    def getattr(self, obj: Any, attribute: str) -> Any:
        """A structured answer's fields read as attributes (`steps[0].json.items`), even where
        a dict method has the same name: the data comes first."""
        if isinstance(obj, dict) and isinstance(attribute, str) and attribute in obj:
            return obj[attribute]
        return super().getattr(obj, attribute)

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        if _too_large(operator, left, right):
            raise SecurityError(f"`{operator}` would make a value too large for a prompt")
        if operator == "%" and isinstance(left, str):
            _refuse_over(_percent_size(left, right), "`%`")
        elif operator == "+" and isinstance(left, str | list | tuple):
            _refuse_over(_size_of(left) + _size_of(right), "`+`")
        return _check(super().call_binop(context, operator, left, right), f"`{operator}`")

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        _turn()
        what = f"`{getattr(__obj, '__name__', 'a call')}`"
        if what == "`join`" and args and not isinstance(args[0], list | tuple | str):
            args = (list(args[0]), *args[1:])  # measured, then joined: a list goes over twice
        _refuse_over(_method_size(__obj, args, kwargs), what)
        return _check(super().call(__context, __obj, *args, **kwargs), what)

    def concat(self, parts: Iterable[str]) -> str:
        """Joins what a template (a macro, a block) prints: within the limit as it goes."""
        kept: list[str] = []
        total = 0
        for part in parts:
            total += len(part)
            if total > MAX_PROMPT_CHARS:
                raise OverBudget(
                    f"The rendered prompt would be longer than {MAX_PROMPT_CHARS:,} characters."
                )
            kept.append(part)
        _spend(total)
        return "".join(kept)

    def joined(self, parts: tuple[Any, ...]) -> str:
        """`a ~ b`: measured before it is joined."""
        _refuse_over(sum(_size_of(p) for p in parts), "`~`")
        return "".join(str(p) for p in parts)

    def counted(self, iterable: Iterable[Any]) -> Iterator[Any]:
        """What a loop goes over: each turn counts."""
        for item in iterable:
            _turn()
            yield item


def _too_large(operator: str, left: Any, right: Any) -> bool:
    if operator == "*":
        return any(
            isinstance(seq, str | list | tuple)
            and isinstance(times, int)
            and len(seq) * times > MAX_REPEAT_CHARS
            for seq, times in ((left, right), (right, left))
        )
    if operator == "**":
        return (
            isinstance(left, int)
            and isinstance(right, int)
            and abs(left) > 1
            and right * abs(left).bit_length() > MAX_POWER_BITS
        )
    return operator == "%" and isinstance(left, str) and _WIDE_FORMAT.search(left) is not None


@contextmanager
def budget() -> Iterator[None]:
    """The render inside the block has a budget of its own."""
    token = _budget.set(_Budget())
    try:
        yield
    finally:
        _budget.reset(token)
