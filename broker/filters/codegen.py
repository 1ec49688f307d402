"""Generate one Python function per filter set, so a record is matched by straight-line code.

:mod:`broker.filters.match` walks the matcher tree of each pattern for every record: fine
for correctness, but each node costs attribute reads and calls. Here the compiled tree of
every pattern of a mapping is turned, once, into the source of a single function::

    def match(doc):
        while True:                      # filter 1 (a ``break`` means "not this one")
            n1 = doc.get(K0, MISSING)
            if type(n1) is dict:
                v = n1.get(K1, MISSING)
                if type(v) is str:
                    if not (v in C2): break
                elif not L3(v): break
            elif not O4(n1): break
            return True
        while True:                      # filter 2 ...
        return False

Strings, the commonest leaf values, are tested inline from each rule's data
(:data:`~broker.filters.compile.StringRule`); every other value goes to the leaf's own
predicate, and a node that is not an object (an array, a scalar, a missing key) to the
tree walk, so the two evaluators agree by construction and the tests check that they do.

Only names are emitted into the source: every key, literal and predicate is a constant
passed in by reference, never pattern text, so no pattern can inject code.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from broker.filters.compile import LeafMatcher, ObjectMatcher, StringRule

__all__ = ["generate_matcher"]

Matcher = Callable[[dict[str, Any]], bool]

# How each string rule reads inline; ``{v}`` is the value, ``{c}`` the rule's constant.
_STRING_EXPRESSIONS = {
    "in": "{v} in {c}",
    "not_in": "{v} not in {c}",
    "eq": "{v} == {c}",
    "ne": "{v} != {c}",
    "startswith": "{v}.startswith({c})",
    "endswith": "{v}.endswith({c})",
    "casefold_eq": "{v}.casefold() == {c}",
    "fullmatch": "{c}({v}) is not None",
    "call": "{c}({v})",
}
_MAX_INLINE_INDENT = 20


class _Source:
    """Accumulates generated functions and the constants they refer to."""

    def __init__(self, leaf_test: Callable[[LeafMatcher], Callable[[Any], bool]]) -> None:
        self.functions: list[list[str]] = []
        self.constants: dict[str, Any] = {}
        self._lines: list[str] = []
        self._counter = 0
        self._dict_functions: dict[int, str] = {}  # id(matcher) -> name; matchers outlive us
        self._leaf_test = leaf_test

    def constant(self, value: Any) -> str:
        name = f"C{len(self.constants)}"
        self.constants[name] = value
        return name

    def variable(self) -> str:
        self._counter += 1
        return f"n{self._counter}"

    def emit(self, indent: int, line: str) -> None:
        self._lines.append("    " * indent + line)

    def function(self, name: str, body: Callable[[], None]) -> None:
        """Generate ``def name(...)`` with ``body`` emitting its lines (nesting allowed)."""
        outer, self._lines = self._lines, []
        body()
        self.functions.append(self._lines)
        self._lines = outer

    def dict_function(self, matcher: ObjectMatcher) -> str:
        """A generated ``D<n>(node)``: does the dict ``node`` match ``matcher``? (Once each.)"""
        name = self._dict_functions.get(id(matcher))
        if name is not None:
            return name
        self._counter += 1
        name = self._dict_functions[id(matcher)] = f"D{self._counter}"

        def body() -> None:
            self.emit(0, f"def {name}(node):")
            self.block(matcher, "node", 1, "return False")
            self.emit(1, "return True")

        self.function(name, body)
        return name

    def block(self, matcher: ObjectMatcher, node: str, indent: int, fail: str) -> None:
        """Statements that run ``fail`` unless the dict ``node`` matches ``matcher``."""
        for key, leaf in matcher.leaves:
            self.leaf(leaf, f"{node}.get({self.constant(key)}, MISSING)", indent, fail)
        for key, sub in matcher.objects:
            child = self.variable()
            self.emit(indent, f"{child} = {node}.get({self.constant(key)}, MISSING)")
            if indent >= _MAX_INLINE_INDENT:  # Python's parser limits nesting: a new function
                self.emit(indent, f"if not OBJECT({self.dict_function(sub)}, {child}):")
                self.emit(indent + 1, fail)
                continue
            self.emit(indent, f"if type({child}) is dict:")
            self.block(sub, child, indent + 1, fail)
            # An array (array-consistent matching), scalar or missing node.
            self.emit(indent, f"elif not OBJECT({self.dict_function(sub)}, {child}):")
            self.emit(indent + 1, fail)
        for branches in matcher.or_groups:
            tests = " or ".join(f"{self.dict_function(branch)}({node})" for branch in branches)
            self.emit(indent, f"if not ({tests}):")
            self.emit(indent + 1, fail)

    def leaf(self, leaf: LeafMatcher, fetch: str, indent: int, fail: str) -> None:
        value = self.variable()
        slow = self.constant(self._leaf_test(leaf))
        self.emit(indent, f"{value} = {fetch}")
        inline = self.string_test(leaf, value)
        if inline == "True":
            self.emit(indent, f"if type({value}) is not str and not {slow}({value}):")
            self.emit(indent + 1, fail)
        elif inline == "False":
            self.emit(indent, f"if not {slow}({value}):")
            self.emit(indent + 1, fail)
        else:
            self.emit(indent, f"if type({value}) is str:")
            self.emit(indent + 1, f"if not ({inline}):")
            self.emit(indent + 2, fail)
            self.emit(indent, f"elif not {slow}({value}):")
            self.emit(indent + 1, fail)

    def string_test(self, leaf: LeafMatcher, value: str) -> str:
        """An expression true when the string ``value`` satisfies one of the leaf's rules."""
        if leaf.exists_true:
            return "True"
        parts: list[str] = []
        for kind, arg in leaf.string_rules:
            if kind == "true":
                return "True"
            parts.append(self.string_expression((kind, arg), value))
        return " or ".join(parts) if parts else "False"

    def string_expression(self, rule: StringRule, value: str) -> str:
        kind, arg = rule
        negated = kind.startswith("not_") and kind != "not_in"
        template = _STRING_EXPRESSIONS[kind[4:] if negated else kind]
        expression = template.format(v=value, c=self.constant(arg))
        return f"not ({expression})" if negated else expression


def generate_matcher(
    matchers: Sequence[ObjectMatcher],
    *,
    leaf_test: Callable[[LeafMatcher], Callable[[Any], bool]],
    object_node: Callable[[Callable[[dict[str, Any]], bool], Any], bool],
    missing: object,
) -> Matcher:
    """One function: does a dict document match any of ``matchers``?

    ``leaf_test(leaf)`` must return the leaf's test for any value (strings included), and
    ``object_node(dict_test, value)`` apply a generated dict test to a node that is not a
    dict (an array, a scalar, missing); absent keys read as ``missing``.
    """
    source = _Source(leaf_test)

    def body() -> None:
        source.emit(0, "def match(doc):")
        for matcher in matchers:
            source.emit(1, "while True:")
            source.block(matcher, "doc", 2, "break")
            source.emit(2, "return True")
        source.emit(1, "return False")

    source.function("match", body)
    namespace: dict[str, Any] = {"MISSING": missing, "OBJECT": object_node, **source.constants}
    text = "\n".join(line for function in source.functions for line in function)
    code = compile(text, "<sluice filter set>", "exec")
    exec(code, namespace)  # our own source: pattern data enters only as constants
    generated: Matcher = namespace["match"]
    return generated
