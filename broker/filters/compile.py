"""Validate an event-filter pattern (spec §10.3) and compile it once into matcher objects.

A pattern string is parsed a single time; the result is a tree of small objects that
``broker.filters.match`` walks for every record without touching the pattern text again:

* :class:`ObjectMatcher`: the keys of one pattern object (ANDed) plus its ``$or`` groups;
* :class:`LeafMatcher`: one leaf array of rules (ORed): literal sets for the common exact
  cases, flags for ``exists``, and one predicate closure per operator rule.

Numbers keep their JSON token text (:class:`JsonNumber`) because literal rules compare text
(``300`` is not ``300.0``) while numeric rules compare values as ``Decimal`` (§10.2 rule 4).
Every invalid pattern raises ``InvalidParameterValueError("Invalid filter pattern definition.")``.
"""

from __future__ import annotations

import ipaddress
import json
import operator
import re
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, NoReturn

from broker.errors import InvalidParameterValueError, ValidationError

__all__ = [
    "INVALID_PATTERN",
    "MAX_DEPTH",
    "MAX_PATTERN_CHARS",
    "JsonNumber",
    "LeafMatcher",
    "ObjectMatcher",
    "Predicate",
    "compile_pattern",
    "load_json",
    "number_text",
]

INVALID_PATTERN = "Invalid filter pattern definition."
MAX_PATTERN_CHARS = 4096  # BC Filter.Pattern length constraint
NUMERIC_LIMIT = Decimal("5e9")  # Event Ruler's numeric range, both signs
NUMERIC_MAX_EXPONENT = -6  # at most 6 decimal places
MAX_DEPTH = 100  # (D) deeper object nesting is rejected: matching stays clear of recursion limits

Predicate = Callable[[Any], bool]
# (kind, argument): how one rule treats a *string* value. Kinds: ``in``/``not_in`` (a
# frozenset), ``eq``/``ne``, ``startswith``, ``endswith``, ``casefold_eq`` (a folded
# string), ``fullmatch`` (a compiled pattern's method), each of these but ``in``/``not_in``
# also negated as ``not_<kind>``, ``true`` (every string matches) and ``call`` (a predicate).
StringRule = tuple[str, Any]


class JsonNumber:
    """A JSON number that remembers its token text; its ``Decimal`` value is made on demand."""

    __slots__ = ("_decimal", "text")

    def __init__(self, text: str) -> None:
        self.text = text
        self._decimal: Decimal | None = None

    @property
    def decimal(self) -> Decimal:
        if self._decimal is None:
            self._decimal = Decimal(self.text)
        return self._decimal

    def __eq__(self, other: object) -> bool:
        return isinstance(other, JsonNumber) and other.text == self.text

    def __hash__(self) -> int:
        return hash(self.text)

    def __repr__(self) -> str:
        return f"JsonNumber({self.text!r})"


def _reject_constant(token: str) -> NoReturn:
    raise ValueError(f"non-standard JSON constant {token}")


def load_json(text: str | bytes) -> Any:
    """Parse JSON keeping number text; duplicate object keys keep the last value (rule 7)."""
    return json.loads(
        text,
        object_pairs_hook=dict,
        parse_int=JsonNumber,
        parse_float=JsonNumber,
        parse_constant=_reject_constant,
    )


def _invalid() -> NoReturn:
    raise InvalidParameterValueError(INVALID_PATTERN)


@dataclass(slots=True)
class LeafMatcher:
    """One leaf array: the value must satisfy at least one rule (§10.2 rule 3)."""

    strings: frozenset[str] = frozenset()
    numbers: frozenset[str] = frozenset()  # number token texts
    # A literal number rule (plain or in ``anything-but``): events must keep number text.
    reads_number_text: bool = False
    match_true: bool = False
    match_false: bool = False
    match_null: bool = False
    exists_true: bool = False
    exists_false: bool = False
    predicates: list[Predicate] = field(default_factory=list)
    # What each rule does to a string value, as data (:data:`StringRule`), so that
    # ``broker.filters.codegen`` can inline string tests; the literal strings come last.
    string_rules: list[StringRule] = field(default_factory=list)
    # Tests one present scalar against the literal and operator rules (exists excluded).
    test: Predicate = field(default=lambda _value: False)


@dataclass(slots=True)
class ObjectMatcher:
    """One pattern object: every key must match (AND), and each ``$or`` group must too."""

    leaves: list[tuple[str, LeafMatcher]] = field(default_factory=list)
    objects: list[tuple[str, ObjectMatcher]] = field(default_factory=list)
    or_groups: list[list[ObjectMatcher]] = field(default_factory=list)


def compile_pattern(pattern: str) -> ObjectMatcher:
    """Validate ``pattern`` (a JSON object as text) and compile it into a matcher tree."""
    if len(pattern) > MAX_PATTERN_CHARS:
        raise ValidationError(
            "1 validation error detected: Value at 'filterCriteria.filters.member.pattern' "
            f"failed to satisfy constraint: Member must have length less than or equal to "
            f"{MAX_PATTERN_CHARS}"
        )
    try:
        parsed = load_json(pattern)
    except (ValueError, RecursionError):
        _invalid()
    if not isinstance(parsed, dict):
        _invalid()
    return _compile_object(parsed, depth=0)


def _compile_object(obj: dict[str, Any], *, depth: int) -> ObjectMatcher:
    if depth >= MAX_DEPTH or (not obj and depth > 0):
        _invalid()  # an empty nested object has no leaves (a leaf must be a non-empty array)
    matcher = ObjectMatcher()
    for key, value in obj.items():
        if key == "$or":
            if not isinstance(value, list) or len(value) < 2:
                _invalid()
            branches = []
            for branch in value:
                if not isinstance(branch, dict) or not branch:
                    _invalid()
                branches.append(_compile_object(branch, depth=depth + 1))
            matcher.or_groups.append(branches)
        elif isinstance(value, dict):
            matcher.objects.append((key, _compile_object(value, depth=depth + 1)))
        elif isinstance(value, list):
            matcher.leaves.append((key, _compile_leaf(value)))
        else:
            _invalid()
    return matcher


def _compile_leaf(rules: list[Any]) -> LeafMatcher:
    if not rules:
        _invalid()
    leaf = LeafMatcher()
    strings: set[str] = set()
    numbers: set[str] = set()
    for rule in rules:
        if rule is True:
            leaf.match_true = True
        elif rule is False:
            leaf.match_false = True
        elif rule is None:
            leaf.match_null = True
        elif isinstance(rule, str):
            strings.add(rule)
        elif isinstance(rule, JsonNumber):
            numbers.add(rule.text)
        elif isinstance(rule, dict):
            _compile_rule(rule, leaf)
        else:
            _invalid()  # nested arrays
    leaf.strings = frozenset(strings)
    leaf.numbers = frozenset(numbers)
    leaf.reads_number_text = leaf.reads_number_text or bool(numbers)
    if strings:
        leaf.string_rules.append(("in", leaf.strings))
    leaf.test = _scalar_test(leaf)
    return leaf


def _scalar_test(leaf: LeafMatcher) -> Predicate:
    """One closure for the leaf's scalar rules, specialised for the common all-strings case."""
    strings, numbers, predicates = leaf.strings, leaf.numbers, tuple(leaf.predicates)
    constants = tuple(
        constant
        for constant, wanted in ((True, leaf.match_true), (False, leaf.match_false))
        if wanted
    )
    match_null = leaf.match_null
    if strings and not (numbers or predicates or constants or match_null):
        return lambda v: type(v) is str and v in strings
    if len(predicates) == 1 and not (strings or numbers or constants or match_null):
        return predicates[0]

    def test(value: Any) -> bool:
        kind = type(value)
        if kind is str:
            if value in strings:
                return True
        elif kind is bool:
            if value in constants:
                return True
        elif value is None:
            if match_null:
                return True
        elif numbers and number_text(value) in numbers:
            return True
        return any(predicate(value) for predicate in predicates)

    return test


def _compile_rule(rule: dict[str, Any], leaf: LeafMatcher) -> None:
    if len(rule) != 1:
        _invalid()
    ((op, arg),) = rule.items()
    if op == "exists":
        if not isinstance(arg, bool):
            _invalid()
        if arg:
            leaf.exists_true = True
        else:
            leaf.exists_false = True
    elif op == "anything-but":
        listed = arg if isinstance(arg, list) else [arg]
        if any(isinstance(item, JsonNumber) for item in listed):
            leaf.reads_number_text = True
        predicate, string_rule = _anything_but(arg)
        leaf.predicates.append(predicate)
        leaf.string_rules.append(string_rule)
    elif op == "numeric":
        leaf.predicates.append(_numeric(arg))  # never matches a string: no string rule
    elif op == "cidr":
        predicate = _cidr(arg)
        leaf.predicates.append(predicate)
        leaf.string_rules.append(("call", predicate))
    else:
        string_rule = _string_rule(op, arg)
        leaf.predicates.append(_string_predicate(string_rule))
        leaf.string_rules.append(string_rule)


def _string_rule(op: str, arg: Any) -> StringRule:
    """prefix / suffix / equals-ignore-case / wildcard: strings only, never other types."""
    if not isinstance(arg, str):
        _invalid()
    if op == "prefix":
        return ("startswith", arg)
    if op == "suffix":
        return ("endswith", arg)
    if op == "equals-ignore-case":
        return ("casefold_eq", arg.casefold())
    if op == "wildcard":
        return _wildcard(arg)
    _invalid()


_STRING_TESTS: dict[str, Callable[[str, Any], bool]] = {
    "in": lambda v, arg: v in arg,
    "eq": lambda v, arg: v == arg,
    "startswith": lambda v, arg: v.startswith(arg),
    "endswith": lambda v, arg: v.endswith(arg),
    "casefold_eq": lambda v, arg: v.casefold() == arg,
    "fullmatch": lambda v, arg: arg(v) is not None,
    "call": lambda v, arg: bool(arg(v)),
    "true": lambda _v, _arg: True,
}


def _string_predicate(rule: StringRule) -> Predicate:
    """A predicate over any value for a string rule: a non-string never matches."""
    kind, arg = rule
    negated = kind.startswith("not_")
    test = _STRING_TESTS[kind[4:] if negated else kind]
    if negated:
        return lambda v: isinstance(v, str) and not test(v, arg)
    return lambda v: isinstance(v, str) and test(v, arg)


def _wildcard(arg: str) -> StringRule:
    parts: list[str] = []
    literal: list[str] = []
    has_star = False
    i = 0
    while i < len(arg):
        char = arg[i]
        if char == "\\":
            if i + 1 >= len(arg) or arg[i + 1] not in "*\\":
                _invalid()  # only \* and \\ are escapes
            literal.append(arg[i + 1])
            i += 2
            continue
        if char == "*":
            if i + 1 < len(arg) and arg[i + 1] == "*":
                _invalid()  # consecutive ** is invalid
            parts.append(re.escape("".join(literal)))
            literal = []
            parts.append(".*")
            has_star = True
        else:
            literal.append(char)
        i += 1
    parts.append(re.escape("".join(literal)))
    if not has_star:
        return ("eq", "".join(literal))
    return ("fullmatch", re.compile("".join(parts), re.DOTALL).fullmatch)


def _anything_but(arg: Any) -> tuple[Predicate, StringRule]:
    """The predicate for any value, and what the rule does to a string."""
    if isinstance(arg, str):
        return (lambda v: not (isinstance(v, str) and v == arg)), ("ne", arg)
    if isinstance(arg, JsonNumber):
        text = arg.text
        return (lambda v: number_text(v) != text), ("true", None)
    if isinstance(arg, list):
        if not arg:
            _invalid()
        if all(isinstance(x, str) for x in arg):
            excluded = frozenset(arg)
            return (lambda v: not (isinstance(v, str) and v in excluded)), ("not_in", excluded)
        if all(isinstance(x, JsonNumber) for x in arg):
            texts = frozenset(x.text for x in arg)
            return (lambda v: number_text(v) not in texts), ("true", None)
        _invalid()  # mixed, or not strings/numbers
    if isinstance(arg, dict) and len(arg) == 1:
        ((op, inner_arg),) = arg.items()
        if op not in ("prefix", "suffix", "equals-ignore-case", "wildcard"):
            _invalid()
        kind, inner = _string_rule(op, inner_arg)
        negated: StringRule = ("not_" + kind, inner)
        return _string_predicate(negated), negated
    _invalid()


_LOWER_OPS = {">": operator.gt, ">=": operator.ge}
_UPPER_OPS = {"<": operator.lt, "<=": operator.le}
_SINGLE_OPS = {"=": operator.eq, **_LOWER_OPS, **_UPPER_OPS}


def _numeric_bound(arg: Any) -> Decimal:
    if not isinstance(arg, JsonNumber):
        _invalid()
    try:
        value = arg.decimal
    except InvalidOperation:
        _invalid()
    exponent = value.normalize().as_tuple().exponent
    if abs(value) > NUMERIC_LIMIT or not isinstance(exponent, int):
        _invalid()
    if exponent < NUMERIC_MAX_EXPONENT:
        _invalid()
    return value


def _numeric(arg: Any) -> Predicate:
    if not isinstance(arg, list) or len(arg) not in (2, 4):
        _invalid()
    if len(arg) == 2:
        op, bound = arg
        if not isinstance(op, str) or op not in _SINGLE_OPS:
            _invalid()
        return _bound_test(_SINGLE_OPS[op], _numeric_bound(bound))
    low_op, low_arg, high_op, high_arg = arg
    if not isinstance(low_op, str) or low_op not in _LOWER_OPS:
        _invalid()
    if not isinstance(high_op, str) or high_op not in _UPPER_OPS:
        _invalid()
    low, high = _numeric_bound(low_arg), _numeric_bound(high_arg)
    if low >= high:
        _invalid()
    above = _bound_test(_LOWER_OPS[low_op], low)
    below = _bound_test(_UPPER_OPS[high_op], high)
    return lambda v: above(v) and below(v)


def _bound_test(compare: Callable[[Any, Any], bool], bound: Decimal) -> Predicate:
    """``compare(value, bound)`` for a JSON number value; False for anything else.

    A ``float`` means the decimal its shortest repr spells (``0.1`` is 0.1). Rounding to the
    nearest double is monotonic, so unless the value equals the bound's nearest double the
    float comparison already gives the decimal answer; only a tie needs ``Decimal``. Python
    compares ``int`` with ``float`` exactly, so the same holds for integers.
    """
    as_float = float(bound)

    def test(v: Any) -> bool:
        kind = type(v)
        if kind is float or kind is int:
            if v != as_float:
                return compare(v, as_float)
            return compare(Decimal(repr(v)) if kind is float else v, bound)
        if kind is JsonNumber:
            try:
                return compare(v.decimal, bound)
            except InvalidOperation:  # NaN from a non-standard event
                return False
        return False

    return test


def _cidr(arg: Any) -> Predicate:
    if not isinstance(arg, str):
        _invalid()
    try:
        network = ipaddress.ip_network(arg, strict=False)
    except ValueError:
        _invalid()
    # inet_pton is a strict C parser (no shorthand, no leading zeros): far cheaper than
    # building an ipaddress object per record.
    family = socket.AF_INET if network.version == 4 else socket.AF_INET6
    mask = int(network.netmask)
    base = int(network.network_address)
    inet_pton = socket.inet_pton
    from_bytes = int.from_bytes

    def in_network(v: Any) -> bool:
        if type(v) is not str:
            return False
        try:
            return from_bytes(inet_pton(family, v), "big") & mask == base
        except (OSError, ValueError):  # not an address of this family; NUL in the text
            return False

    return in_network


def number_text(value: Any) -> str | None:
    """The JSON text of a number event value, or None for non-numbers."""
    if isinstance(value, JsonNumber):
        return value.text
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    return None
