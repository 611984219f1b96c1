"""The YAML half of document.py: strict, safe, bounded. Imported only when the input is YAML.

Pure: takes text, returns plain dicts, lists and scalars, or raises InvalidInputError.
"""

from __future__ import annotations

from typing import Any

import yaml

from kindplan.errors import InvalidInputError

_BaseLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _StrictLoader(_BaseLoader):  # type: ignore[misc]
    """SafeLoader (the C parser where available) that refuses duplicate mapping keys."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                duplicate = key in seen
            except TypeError:  # an unhashable key; the base class reports it
                break
            if duplicate:
                mark = key_node.start_mark
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", mark)
            seen.add(key)
        mapping: dict[Any, Any] = super().construct_mapping(node, deep=deep)
        return mapping


def parse_yaml(text: str, source: str) -> Any:
    """One YAML document as plain values, strictly (see document.parse_document)."""
    try:
        documents = _load_all(text)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
        raise InvalidInputError.one(where, f"invalid YAML: {e.problem or e.context}") from e
    except yaml.YAMLError as e:  # e.g. a ReaderError (a control character), whose text spans lines
        raise InvalidInputError.one(source, f"invalid YAML: {str(e).splitlines()[0]}") from e
    except (ValueError, TypeError, KeyError, OverflowError) as e:
        # PyYAML's constructors raise these for tagged or implicit scalars they cannot build
        # (a date like 2001-13-01, `!!int abc`, `!!bool maybe`, `!!set` as a key).
        raise InvalidInputError.one(source, f"invalid YAML value: {e!s:.100}") from e
    documents = [d for d in documents if d is not None]
    if len(documents) != 1:
        raise InvalidInputError.one(source, f"expected one YAML document, found {len(documents)}")
    _check_keys(documents[0])
    return documents[0]


def _load_all(text: str) -> list[Any]:
    """Every document, refusing aliases to collections before anything is built from them:
    a few hundred bytes of nested aliases would otherwise expand into billions of values."""
    _check_depth(text)
    loader = _StrictLoader(text)
    try:
        documents = []
        while loader.check_node():
            node = loader.get_node()
            _refuse_shared_collections(node)
            documents.append(loader.construct_document(node))
        return documents
    finally:
        loader.dispose()


MAX_DEPTH = 64  # a snapshot nests 4 deep; PyYAML's C composer recurses and would crash at ~30,000


def _check_depth(text: str) -> None:
    """Refuse deep nesting from the event stream (libyaml's parser does not recurse)."""
    depth = 0
    for event in yaml.parse(text, Loader=_BaseLoader):
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"nested more than {MAX_DEPTH} deep",
                    event.start_mark,  # type: ignore[arg-type]
                )
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1


def _refuse_shared_collections(root: yaml.Node) -> None:
    seen: set[int] = set()
    stack = [root]
    while stack:
        node = stack.pop()
        if isinstance(node, yaml.ScalarNode):
            continue
        if id(node) in seen:
            raise yaml.constructor.ConstructorError(
                None,
                None,
                "aliases to collections (&anchor / *alias) are not supported",
                node.start_mark,
            )
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            stack.extend(part for pair in node.value for part in pair)
        else:
            stack.extend(node.value)


def _check_keys(value: Any) -> None:
    """YAML allows keys that JSON does not (numbers, null); a snapshot has string keys only."""
    stack = [(value, "")]
    while stack:
        item, path = stack.pop()
        if isinstance(item, dict):
            for key, child in item.items():
                if not isinstance(key, str):
                    raise InvalidInputError.one(
                        path or "(top)", f"mapping key {key!r} is not a string"
                    )
                stack.append((child, f"{path}.{key}" if path else key))
        elif isinstance(item, list):
            stack.extend((child, f"{path}[{i}]") for i, child in enumerate(item))
