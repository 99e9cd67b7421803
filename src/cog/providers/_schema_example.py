"""A deterministic example value for a JSON Schema, for answers made without a model.

It reads both dialects a Gemini request can carry: JSON Schema (`responseJsonSchema`, and what
Pydantic's `model_json_schema()` gives) and Gemini's OpenAPI subset (`responseSchema`: upper-case
types, `nullable`, snake_case keys such as `min_items` as the SDK sends them, and integer bounds
that may arrive as strings).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from typing import Any

_MAX_DEPTH = 8


def example_for_schema(schema: Mapping[str, Any], *, seed: str = "", items: int = 1) -> Any:
    """`items`: how many items a list has when its schema does not say (`minItems`)."""
    defs = schema.get("$defs") or schema.get("definitions") or {}
    return _example(schema, defs, seed, "value", 0, items)


def _pick(seed: str, name: str, n: int) -> int:
    digest = hashlib.sha256(f"{seed}\0{name}".encode()).digest()
    return int.from_bytes(digest[:4], "big") % n


def camel_or_snake(mapping: Mapping[str, Any], camel: str) -> Any:
    """A field by its camelCase name or its snake_case one: Google's JSON accepts both, and the
    SDK sends some of each."""
    if camel in mapping:
        return mapping[camel]
    return mapping.get(re.sub(r"([A-Z])", r"_\1", camel).lower())


def _number(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _resolve(node: Mapping[str, Any], defs: Mapping[str, Any]) -> Mapping[str, Any]:
    ref = node.get("$ref")
    if isinstance(ref, str):
        target = defs.get(ref.rsplit("/", 1)[-1])
        if isinstance(target, Mapping):
            return target
    return node


def _example(
    node: Mapping[str, Any], defs: Mapping[str, Any], seed: str, name: str, depth: int, items: int
) -> Any:
    node = _resolve(node, defs)
    if depth > _MAX_DEPTH:
        return None
    if "const" in node:
        return node["const"]
    if node.get("default") is not None:
        return node["default"]
    enum = node.get("enum")
    if isinstance(enum, list) and enum:
        return enum[_pick(seed, name, len(enum))]
    for key in ("anyOf", "oneOf", "allOf"):
        options = [o for o in camel_or_snake(node, key) or [] if isinstance(o, Mapping)]
        typed = [o for o in options if str(o.get("type", "")).lower() != "null"]
        if typed:
            return _example(typed[0], defs, seed, name, depth + 1, items)
    kind = node.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if str(k).lower() != "null"), "null")
    kind = str(kind or ("object" if "properties" in node else "string")).lower()

    if kind == "object":
        props = node.get("properties") or {}
        return {
            key: _example(sub, defs, seed, f"{name}.{key}", depth + 1, items)
            for key, sub in props.items()
            if isinstance(sub, Mapping)
        }
    if kind == "array":
        low = _number(camel_or_snake(node, "minItems"))
        high = _number(camel_or_snake(node, "maxItems"))
        count = int(low) if low else items
        count = min(count, int(high)) if high is not None else count
        sub = node.get("items")
        sub = sub if isinstance(sub, Mapping) else {}
        return [_example(sub, defs, seed, f"{name}[{i}]", depth + 1, items) for i in range(count)]
    if kind in ("integer", "number"):
        return _bounded_number(node, integer=kind == "integer")
    if kind == "boolean":
        return False
    if kind == "null":
        return None
    return _string(node, seed, name)


def _bounded_number(node: Mapping[str, Any], *, integer: bool) -> float | int:
    low = _number(node.get("minimum"))
    exclusive_low = _number(camel_or_snake(node, "exclusiveMinimum"))
    high = _number(node.get("maximum"))
    value = 1.0
    if low is not None:
        value = max(value, low)
    if exclusive_low is not None and value <= exclusive_low:
        value = exclusive_low + 1
    if high is not None:
        value = min(value, high)
    return int(value) if integer else value


def _string(node: Mapping[str, Any], seed: str, name: str) -> str:
    fmt = node.get("format")
    if fmt == "date-time":
        return "2026-01-01T00:00:00Z"
    if fmt == "date":
        return "2026-01-01"
    words = ("amber", "cobalt", "fern", "harbor", "lumen", "quartz", "saffron", "tidal")
    value = f"example {name.rsplit('.', 1)[-1]} {words[_pick(seed, name, len(words))]}"
    low = int(_number(camel_or_snake(node, "minLength")) or 0)
    high = _number(camel_or_snake(node, "maxLength"))
    value = value.ljust(low, "x")
    return value[: int(high)] if high is not None else value
