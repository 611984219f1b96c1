"""A fast yes/no check of a document against the snapshot schema, compiled into closures.

jsonschema is the reference: it gives the messages. But it spends about 100 us per node on a
5,000-node snapshot (0.5-1 s), which is most of a render. Valid input is the common case, so the
schema is compiled once into plain Python predicates for the subset of keywords that it uses; only
when that says "invalid" does jsonschema run, to say why. Unknown keywords refuse to compile, so the
schema cannot outgrow this check unnoticed; tests check that both agree on generated documents.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

Check = Callable[[Any], bool]

_TYPES: dict[str, Callable[[Any], bool]] = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: (
        (isinstance(v, int) and not isinstance(v, bool))
        or (isinstance(v, float) and v.is_integer())
    ),
    "null": lambda v: v is None,
    "boolean": lambda v: isinstance(v, bool),
}
_ANNOTATIONS = {"$schema", "$id", "$defs", "title", "description"}


def compile_schema(schema: dict[str, Any]) -> Check:
    """A predicate equivalent to `jsonschema.Draft202012Validator(schema).is_valid`."""
    return _compile(schema, schema.get("$defs", {}))


def _compile(schema: dict[str, Any], defs: dict[str, Any]) -> Check:
    if "$ref" in schema:
        ref = schema["$ref"]
        if not ref.startswith("#/$defs/") or len(schema) != 1:
            raise NotImplementedError(f"$ref {ref!r}")
        return _compile(defs[ref.removeprefix("#/$defs/")], defs)
    keywords = set(schema) - _ANNOTATIONS
    if schema.get("type") == "string" and keywords <= _STRING_KEYWORDS:
        return _string(schema)
    if schema.get("type") == "array" and keywords <= _ARRAY_KEYWORDS:
        return _array(schema, defs)
    checks: list[Check] = []
    for keyword, value in schema.items():
        if keyword in _ANNOTATIONS:
            continue
        factory = _KEYWORDS.get(keyword)
        if factory is None:
            raise NotImplementedError(f"schema keyword {keyword!r}")
        checks.append(factory(value, schema, defs))
    return _all_of(checks)


def _all_of(checks: list[Check]) -> Check:
    # Plain closures rather than all(generator): this runs for every value of 5,000 nodes.
    if len(checks) == 1:
        return checks[0]
    if len(checks) == 2:
        first, second = checks
        return lambda v: first(v) and second(v)

    def check(instance: Any) -> bool:
        for one in checks:  # noqa: SIM110 (all() with a generator is slower here)
            if not one(instance):
                return False
        return True

    return check


# A typed string or array is one closure, not one per keyword each testing the type again: the
# values of 5,000 nodes go through these (measured: 57 % fewer instructions per node).
_STRING_KEYWORDS = {"type", "minLength", "maxLength", "pattern"}
_ARRAY_KEYWORDS = {"type", "minItems", "maxItems", "items"}


def _string(schema: dict[str, Any]) -> Check:
    shortest, longest = schema.get("minLength", 0), schema.get("maxLength", float("inf"))
    pattern = schema.get("pattern")
    search = re.compile(pattern).search if pattern is not None else None

    def check(v: Any) -> bool:
        if not isinstance(v, str) or not shortest <= len(v) <= longest:
            return False
        return search is None or search(v) is not None

    return check


def _array(schema: dict[str, Any], defs: dict[str, Any]) -> Check:
    fewest, most = schema.get("minItems", 0), schema.get("maxItems", float("inf"))
    item = _compile(schema["items"], defs) if "items" in schema else None

    def check(v: Any) -> bool:
        if not isinstance(v, list) or not fewest <= len(v) <= most:
            return False
        if item is not None:
            for x in v:
                if not item(x):
                    return False
        return True

    return check


def _type(name: Any, schema: dict[str, Any], defs: dict[str, Any]) -> Check:
    if isinstance(name, list):  # one of several types
        checks = [_TYPES[n] for n in name]
        return lambda v: any(check(v) for check in checks)
    return _TYPES[name]


def _any_of(subs: Any, schema: dict[str, Any], defs: dict[str, Any]) -> Check:
    checks = [_compile(sub, defs) for sub in subs]

    def check(v: Any) -> bool:
        for one in checks:  # noqa: SIM110 (all() with a generator is slower here)
            if one(v):
                return True
        return False

    return check


def _properties(props: Any, schema: dict[str, Any], defs: dict[str, Any]) -> Check:
    compiled = {key: _compile(sub, defs) for key, sub in props.items()}
    closed = schema.get("additionalProperties") is False
    required = tuple(schema.get("required", ()))

    def check(instance: Any) -> bool:
        if not isinstance(instance, dict):
            return True
        for key in required:
            if key not in instance:
                return False
        for key, value in instance.items():
            sub = compiled.get(key)
            if sub is None:
                if closed:
                    return False
            elif not sub(value):
                return False
        return True

    return check


def _handled_by_properties(value: Any, schema: dict[str, Any], defs: dict[str, Any]) -> Check:
    if "properties" not in schema:
        raise NotImplementedError("required/additionalProperties without properties")
    if "additionalProperties" in schema and schema["additionalProperties"] is not False:
        raise NotImplementedError("additionalProperties other than false")
    return lambda instance: True


def _items(sub: Any, schema: dict[str, Any], defs: dict[str, Any]) -> Check:
    item = _compile(sub, defs)

    def check(v: Any) -> bool:
        if isinstance(v, list):
            for x in v:
                if not item(x):
                    return False
        return True

    return check


def _bound(kind: type, compare: Callable[[Any, Any], bool]) -> Callable[..., Check]:
    def factory(limit: Any, schema: dict[str, Any], defs: dict[str, Any]) -> Check:
        return lambda v: not isinstance(v, kind) or compare(v, limit)

    return factory


def _numeric(compare: Callable[[Any, Any], bool]) -> Callable[..., Check]:
    def factory(limit: Any, schema: dict[str, Any], defs: dict[str, Any]) -> Check:
        def check(v: Any) -> bool:
            if isinstance(v, bool) or not isinstance(v, int | float):
                return True
            return compare(v, limit)

        return check

    return factory


def _pattern(pattern: Any, schema: dict[str, Any], defs: dict[str, Any]) -> Check:
    search = re.compile(pattern).search  # JSON Schema patterns are unanchored searches
    return lambda v: not isinstance(v, str) or search(v) is not None


def _const(value: Any, schema: dict[str, Any], defs: dict[str, Any]) -> Check:
    return _enum([value], schema, defs)


def _enum(values: Any, schema: dict[str, Any], defs: dict[str, Any]) -> Check:
    # Strings only: JSON Schema's equality of numbers and booleans differs from Python's.
    if not all(isinstance(x, str) for x in values):
        raise NotImplementedError("const/enum of non-strings")
    allowed = frozenset(values)
    return lambda v: isinstance(v, str) and v in allowed


_KEYWORDS: dict[str, Callable[[Any, dict[str, Any], dict[str, Any]], Check]] = {
    "type": _type,
    "properties": _properties,
    "required": _handled_by_properties,
    "additionalProperties": _handled_by_properties,
    "items": _items,
    "minItems": _bound(list, lambda v, n: len(v) >= n),
    "maxItems": _bound(list, lambda v, n: len(v) <= n),
    "minLength": _bound(str, lambda v, n: len(v) >= n),
    "maxLength": _bound(str, lambda v, n: len(v) <= n),
    "minimum": _numeric(lambda v, n: v >= n),
    "maximum": _numeric(lambda v, n: v <= n),
    "pattern": _pattern,
    "const": _const,
    "enum": _enum,
    "anyOf": _any_of,
}
