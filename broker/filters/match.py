"""Evaluate compiled filter patterns against a record's matchable document (spec §10.2).

The document is the parsed record (§10.4) with the data key already decoded by the caller
(:func:`decode_data` helps); numbers may be :class:`JsonNumber` (from :func:`load_json`) or
plain ``int``/``float``. Nothing here parses a pattern: :class:`FilterSet` compiles each
pattern once and then only walks the matcher tree.
"""

from __future__ import annotations

import binascii
import json
from binascii import a2b_base64
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, NoReturn

import orjson

from broker.errors import InvalidParameterValueError
from broker.filters.codegen import generate_matcher
from broker.filters.compile import (
    JsonNumber,
    LeafMatcher,
    ObjectMatcher,
    Predicate,
    compile_pattern,
)

__all__ = [
    "DEFAULT_MAX_FILTERS",
    "HARD_MAX_FILTERS",
    "UNDECODABLE",
    "FilterSet",
    "decode_base64_data",
    "decode_data",
    "iter_scalars",
    "load_event",
    "load_event_fast",
    "match_object",
]

DEFAULT_MAX_FILTERS = 5  # Lambda's default quota of filters per mapping
HARD_MAX_FILTERS = 10  # the quota can be raised this far and no further

_MISSING: Any = object()  # a key absent from the document
# A data field that could not be decoded (§10.4: the record is dropped): fails every rule,
# including ``exists: false``, wherever a pattern looks at it.
UNDECODABLE: Any = object()
_EMPTY: dict[str, Any] = {}
_SCALARS = frozenset({str, int, float, bool, type(None), JsonNumber})


def match_object(matcher: ObjectMatcher, value: Any) -> bool:
    """Does ``value`` (an event object, array of objects, scalar or missing) match?"""
    if type(value) is dict:
        return _match_dict(matcher, value)
    return object_node(lambda element: _match_dict(matcher, element), value)


def _iter_objects(values: list[Any]) -> Iterator[dict[str, Any]]:
    for item in values:
        if isinstance(item, dict):
            yield item
        elif isinstance(item, list):
            yield from _iter_objects(item)


def _match_dict(matcher: ObjectMatcher, doc: dict[str, Any]) -> bool:
    for key, leaf in matcher.leaves:
        value = doc.get(key, _MISSING)
        if type(value) in _SCALARS:
            if not (leaf.exists_true or leaf.test(value)):
                return False
        elif not _match_leaf(leaf, value):
            return False
    for key, sub in matcher.objects:
        if not match_object(sub, doc.get(key, _MISSING)):
            return False
    for branches in matcher.or_groups:
        if not any(_match_dict(branch, doc) for branch in branches):
            return False
    return True


def _match_leaf(leaf: LeafMatcher, value: Any) -> bool:
    """A leaf whose value is not a plain scalar: missing, an object, an array, undecodable."""
    if value is UNDECODABLE:
        return False
    if isinstance(value, list):
        saw_scalar = False
        for item in value:
            item_kind = type(item)
            if item_kind in _SCALARS:
                if leaf.exists_true or leaf.test(item):
                    return True
                saw_scalar = True
            elif item_kind is not dict:  # a nested array: flatten it the long way
                scalars = list(iter_scalars(value))
                if not scalars:
                    return leaf.exists_false
                return leaf.exists_true or any(leaf.test(scalar) for scalar in scalars)
        # An empty array (or one of objects) has no leaf values.
        return leaf.exists_false and not saw_scalar
    if value is _MISSING or isinstance(value, dict):
        return leaf.exists_false  # absent, or an intermediate node (rule 8)
    return leaf.exists_true or leaf.test(value)  # a scalar of a subclassed type


def load_event(text: str | bytes) -> Any:
    """Parse an event document for matching. Integers become ``int`` (their JSON text is
    ``str(int)``, except that ``-0`` reads as ``0``); other numbers keep their token text.
    Duplicate keys keep the last value. ``NaN`` and ``Infinity`` are not JSON: rejected."""
    return _EVENT_DECODER.decode(text if isinstance(text, str) else text.decode())


def load_event_fast(text: str | bytes) -> Any:
    """:func:`load_event` for filters without literal number rules, about three times as
    fast: non-integers become ``float`` (numeric rules read a float as its shortest repr,
    so they answer alike). Whatever orjson refuses (integers beyond 64 bits, ``1e400``,
    lone surrogates) is read by :func:`load_event`, which decides."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return load_event(text)


def _reject_constant(token: str) -> NoReturn:
    raise ValueError(f"{token} is not JSON")


# Built once: ``json.loads`` with any keyword argument builds a decoder on every call.
_EVENT_DECODER = json.JSONDecoder(parse_float=JsonNumber, parse_constant=_reject_constant)
Loads = Callable[[str | bytes], Any]


def iter_scalars(values: Iterable[Any]) -> Iterable[Any]:
    """The scalar leaves of an event array, flattening nested arrays and skipping objects."""
    for item in values:
        if isinstance(item, list):
            yield from iter_scalars(item)
        elif not isinstance(item, dict):
            yield item


def decode_data(text: str, loads: Loads = load_event) -> Any:
    """A text data field as filters see it: parsed JSON when it is an object or array, else
    the raw string (§10.4: only JSON objects/arrays are matched as JSON)."""
    stripped = text.lstrip()
    if not stripped or stripped[0] not in "{[":
        return text
    try:
        return loads(text)
    except ValueError:
        return text


def decode_base64_data(data: str, loads: Loads = load_event) -> Any:
    """Kinesis ``data``: base64, then JSON. Non-JSON yields ``UNDECODABLE``, so a data
    pattern never matches it (§10.4: the record is dropped)."""
    try:
        return loads(a2b_base64(data, strict_mode=True))  # JSON is UTF-8 only
    except (binascii.Error, ValueError):
        return UNDECODABLE


class FilterSet:
    """A mapping's filters: a record passes when any pattern matches; none ⇒ all pass."""

    __slots__ = ("_match_dict", "_matchers", "loads", "patterns")

    def __init__(self, patterns: Sequence[str], *, max_filters: int = DEFAULT_MAX_FILTERS):
        if not 1 <= max_filters <= HARD_MAX_FILTERS:
            raise ValueError(f"max_filters must be between 1 and {HARD_MAX_FILTERS}")
        if len(patterns) > max_filters:
            raise InvalidParameterValueError(
                f"Number of filters exceeds the limit of {max_filters}"
            )
        self.patterns = tuple(patterns)
        self._matchers = tuple(compile_pattern(pattern) for pattern in patterns)
        # How events should be parsed for these filters: exact number text only when a
        # literal number rule compares it.
        exact = any(_reads_number_text(matcher) for matcher in self._matchers)
        self.loads: Loads = load_event if exact else load_event_fast
        self._match_dict = generate_matcher(
            self._matchers, leaf_test=leaf_test, object_node=object_node, missing=_MISSING
        )

    def __len__(self) -> int:
        return len(self._matchers)

    def matches(self, document: Any) -> bool:
        if not self._matchers:
            return True
        if type(document) is dict:
            return self._match_dict(document)
        return any(match_object(matcher, document) for matcher in self._matchers)


def _reads_number_text(matcher: ObjectMatcher) -> bool:
    return (
        any(leaf.reads_number_text for _, leaf in matcher.leaves)
        or any(_reads_number_text(sub) for _, sub in matcher.objects)
        or any(_reads_number_text(b) for group in matcher.or_groups for b in group)
    )


def leaf_test(leaf: LeafMatcher) -> Predicate:
    """The leaf's test for any node value: a scalar, an array, an object, missing."""
    exists_true, test = leaf.exists_true, leaf.test

    def any_value(value: Any) -> bool:
        if type(value) in _SCALARS:
            return exists_true or test(value)
        return _match_leaf(leaf, value)

    return any_value


def object_node(dict_test: Callable[[dict[str, Any]], bool], value: Any) -> bool:
    """``dict_test`` (one sub-pattern) applied to any node: an object; an array, where one
    object element must satisfy the whole sub-pattern (rule 6, array-consistent); else (a
    scalar, missing, an array without objects) every leaf below is missing (rule 2)."""
    if type(value) is dict:
        return dict_test(value)
    if value is UNDECODABLE:
        return False
    if type(value) is list:
        saw_object = False
        for item in value:
            item_kind = type(item)
            if item_kind is dict:
                if dict_test(item):
                    return True
                saw_object = True
            elif item_kind is list:  # nested arrays: flatten them the long way
                elements = list(_iter_objects(value))
                return (
                    any(dict_test(element) for element in elements)
                    if elements
                    else (dict_test(_EMPTY))
                )
        if saw_object:
            return False
    return dict_test(_EMPTY)
