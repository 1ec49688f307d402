"""A FilterSet's generated matcher answers exactly as the tree walk does, and the fast
event decoder it picks answers as the exact one."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.filters import (
    UNDECODABLE,
    FilterSet,
    compile_pattern,
    load_event,
    load_event_fast,
    match_object,
)

KEYS = st.sampled_from(["a", "b", "c"])

LEAF_RULES = st.sampled_from(
    [
        "x",
        "",
        300,
        True,
        None,
        {"prefix": "a"},
        {"suffix": "z"},
        {"equals-ignore-case": "AZ"},
        {"wildcard": "a*z"},
        {"wildcard": "x"},
        {"anything-but": "x"},
        {"anything-but": ["x", "az"]},
        {"anything-but": 300},
        {"anything-but": {"prefix": "a"}},
        {"anything-but": {"wildcard": "a*"}},
        {"numeric": [">", 0, "<=", 300]},
        {"numeric": ["=", 0.5]},
        {"exists": True},
        {"exists": False},
        {"cidr": "10.0.0.0/8"},
    ]
)


def patterns(depth: int) -> st.SearchStrategy[dict[str, Any]]:
    """Pattern objects with leaves, nested objects and ``$or`` groups."""
    leaf = st.lists(LEAF_RULES, min_size=1, max_size=3)
    if depth == 0:
        return st.dictionaries(KEYS, leaf, min_size=1, max_size=2)
    inner = patterns(depth - 1)
    node = st.dictionaries(KEYS, st.one_of(leaf, inner), min_size=1, max_size=3)
    with_or = st.tuples(node, st.lists(inner, min_size=2, max_size=3)).map(
        lambda pair: {**pair[0], "$or": pair[1]}
    )
    return st.one_of(node, with_or)


SCALARS = st.sampled_from(
    ["x", "", "az", "AZ", "abcz", "10.1.2.3", 300, 300.0, 0.5, -1, True, None]
)


def documents(depth: int) -> st.SearchStrategy[Any]:
    """Event nodes: scalars, arrays of scalars or objects, nested objects."""
    if depth == 0:
        return st.one_of(SCALARS, st.lists(SCALARS, max_size=3))
    inner = documents(depth - 1)
    obj = st.dictionaries(KEYS, inner, max_size=3)
    return st.one_of(SCALARS, obj, st.lists(st.one_of(obj, SCALARS, inner), max_size=3))


@settings(max_examples=400, deadline=None)
@given(
    pattern_list=st.lists(patterns(2), min_size=1, max_size=4),
    events=st.lists(st.dictionaries(KEYS, documents(3), max_size=3), min_size=1, max_size=4),
)
def test_generated_matcher_agrees_with_the_tree_walk(
    pattern_list: list[dict[str, Any]], events: list[dict[str, Any]]
) -> None:
    texts = [json.dumps(pattern) for pattern in pattern_list]
    filters = FilterSet(texts, max_filters=10)
    walks = [compile_pattern(text) for text in texts]
    for event in events:
        expected = any(match_object(walk, event) for walk in walks)
        assert filters.matches(event) is expected, (texts, event)


def test_an_undecodable_node_fails_every_rule_in_generated_code() -> None:
    filters = FilterSet(['{"data": {"a": [{"exists": false}]}}', '{"data": [{"exists": false}]}'])
    assert not filters.matches({"data": UNDECODABLE})
    assert filters.matches({"other": 1})


def test_keys_and_values_are_data_never_code() -> None:
    key = "\"); import os; os._exit(3)  # '''"
    value = "'''; raise SystemExit  # \\"
    pattern = json.dumps({key: {key: [value, {"prefix": value}]}})
    filters = FilterSet([pattern])
    assert filters.matches({key: {key: value}})
    assert filters.matches({key: {key: value + "tail"}})
    assert not filters.matches({key: {key: "other"}})


def test_deep_patterns_split_into_functions_and_still_match() -> None:
    for depth in (19, 20, 21, 45, 99):
        pattern: dict[str, Any] = {"k": ["v"]}
        event: dict[str, Any] = {"k": "v"}
        for _ in range(depth):
            pattern, event = {"n": pattern}, {"n": [event]}  # arrays all the way down
        filters = FilterSet([json.dumps(pattern)])
        assert filters.matches(event)
        assert not filters.matches(json.loads(json.dumps(event).replace('"v"', '"w"')))


LEAF_CASES = [
    # (leaf rules, event value, expected) for values the generated code hands to leaf tests
    ([{"exists": False}], ["x"], False),
    ([{"exists": False}], [], True),
    ([{"exists": False}], [{"b": 1}], True),
    ([{"exists": False}], [[]], True),
    ([{"exists": False}], [["x"]], False),
    ([{"exists": True}], ["x"], True),
    ([{"exists": True}], [], False),
    ([{"exists": True}], [{"b": 1}], False),
    ([{"exists": True}], [[{"b": 1}], 3], True),
    (["x"], [{"b": 1}, "x"], True),
    (["x"], [["y", ["x"]]], True),
    (["x"], [["y"]], False),
    ([300], [300, "x"], True),
    ([{"numeric": [">", 0]}], [-1, 5], True),
    ([{"anything-but": "x"}], ["x", "x"], False),
    ([{"anything-but": "x"}], ["x", "y"], True),
    ([None], [None], True),
    ([True], [1], False),
]


def test_leaf_values_of_every_shape_answer_as_the_spec_says() -> None:
    for rules, value, expected in LEAF_CASES:
        pattern = json.dumps({"k": rules})
        event = {"k": value}
        assert match_object(compile_pattern(pattern), event) is expected, (rules, value)
        assert FilterSet([pattern]).matches(event) is expected, (rules, value)


# --- the decoder a filter set asks for


def test_exact_number_text_is_kept_only_when_a_literal_number_rule_reads_it() -> None:
    exact = [
        '{"a": [300]}',
        '{"a": [{"anything-but": 3.5}]}',
        '{"a": {"b": [{"anything-but": [1, 2]}]}}',
        '{"$or": [{"a": ["x"]}, {"b": [0.5]}]}',
    ]
    fast = ['{"a": ["300"]}', '{"a": [{"numeric": [">", 3.5]}]}', '{"a": [{"anything-but": "1"}]}']
    for pattern in exact:
        assert FilterSet([pattern]).loads is load_event, pattern
    for pattern in fast:
        assert FilterSet([pattern]).loads is load_event_fast, pattern


NUMBER_TEXTS = st.one_of(
    st.integers(min_value=-(10**20), max_value=10**20).map(str),
    st.decimals(min_value=-(10**10), max_value=10**10, places=7, allow_nan=False).map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.sampled_from(["1e400", "-0", "0.1", "5e9", "4999999999.999999", "1E2", "-0.0"]),
)


@settings(max_examples=300, deadline=None)
@given(
    number=NUMBER_TEXTS,
    op=st.sampled_from(["=", ">", ">=", "<", "<="]),
    bound=st.sampled_from(["0", "0.1", "-7.25", "5000000000", "4999999999.999999", "300"]),
)
def test_numeric_rules_answer_alike_on_either_decoder(number: str, op: str, bound: str) -> None:
    filters = FilterSet([f'{{"a": [{{"numeric": ["{op}", {bound}]}}]}}'])
    assert filters.loads is load_event_fast
    text = f'{{"a": {number}}}'
    assert filters.matches(load_event_fast(text)) is filters.matches(load_event(text)), text


def test_non_json_constants_are_undecodable() -> None:
    for text in ('{"a": NaN}', '{"a": Infinity}', '{"a": -Infinity}'):
        for loads in (load_event, load_event_fast):
            with pytest.raises(ValueError):
                loads(text)


OBJECT_CASES = [
    # (event value under "n", expected) for the pattern {"n": {"k": ["v"]}}
    ({"k": "v"}, True),
    ([{"k": "w"}, {"k": "v"}], True),
    ([[{"k": "v"}]], True),
    ([[{"k": "w"}], [[{"k": "v"}]]], True),
    ([[{"k": "w"}]], False),
    ([[]], False),
    (["v", {"k": "w"}], False),
    ([], False),
    ("v", False),
]


def test_object_nodes_of_every_shape_answer_as_the_spec_says() -> None:
    pattern = '{"n": {"k": ["v"]}}'
    absent = '{"n": {"k": [{"exists": false}]}}'
    for value, expected in OBJECT_CASES:
        event = {"n": value}
        assert match_object(compile_pattern(pattern), event) is expected, value
        assert FilterSet([pattern]).matches(event) is expected, value
        walk = match_object(compile_pattern(absent), event)
        assert FilterSet([absent]).matches(event) is walk, value
