"""RecordFilter: what each source's filters see of a record (spec §10.4), §10.5 and §10.6.

Records are shaped like AWS's sample events for each source; tables give the patterns, the
record and whether it is kept.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

import broker.filters.sources as sources
from broker.errors import InvalidParameterValueError, ValidationError
from broker.filters import RecordFilter
from broker.mappings import SourceKind
from tests.lambda_records import TTL_DELETE, b64, dynamodb, kinesis, rabbitmq, redis_stream, sqs

ORDER = '{"kind": "order", "total": 120, "items": [{"sku": "A", "qty": 2}]}'
RMQ_SAMPLE = "eyJ0aW1lb3V0IjowLCJkYXRhIjoiQ1pybWYwR3c4T3Y0YnFMUXhENEUifQ=="  # AWS's sample
NOT_UTF8 = b64(b"\xff\xfe{}")

# name -> (pattern or patterns, record, kept), one table per source. Each covers its rows of
# §10.4's data-format table (text or JSON data against a rules array or an object, data that
# cannot be decoded, no data-key pattern) and which metadata the source's document holds.
Table = dict[str, tuple[str | tuple[str, ...], dict[str, Any], bool]]

SQS: Table = {
    "text body, rules array, match": ('{"body": ["Test message."]}', sqs("Test message."), True),
    "text body, rules array, no match": (
        '{"body": [{"prefix": "Hello"}]}',
        sqs("Test message."),
        False,
    ),
    "text body, object pattern: dropped": (
        '{"body": {"kind": ["order"]}}',
        sqs("kind order"),
        False,
    ),
    "text body, object of exists:false: dropped": (
        '{"body": {"kind": [{"exists": false}]}}',
        sqs("plain"),
        False,
    ),
    "JSON body, object pattern, match": (
        '{"body": {"kind": ["order"], "total": [{"numeric": [">", 100]}]}}',
        sqs(ORDER),
        True,
    ),
    "JSON body, object pattern, no match": ('{"body": {"kind": ["refund"]}}', sqs(ORDER), False),
    "JSON body, nested array of objects": (
        '{"body": {"items": {"sku": ["A"], "qty": [2]}}}',
        sqs(ORDER),
        True,
    ),
    "JSON body, array-consistent miss": (
        '{"body": {"items": {"sku": ["A"], "qty": [3]}}}',
        sqs(ORDER),
        False,
    ),
    "JSON array body, object pattern": (
        '{"body": {"kind": ["order"]}}',
        sqs('[{"kind": "order"}]'),
        True,
    ),
    "JSON body, rules array: dropped": ('{"body": [{"prefix": "{"}]}', sqs(ORDER), False),
    "JSON array body, rules array: dropped": ('{"body": ["a"]}', sqs('["a", "b"]'), False),
    "JSON body, rules exists:true: dropped": ('{"body": [{"exists": true}]}', sqs(ORDER), False),
    "broken JSON is text": ('{"body": [{"prefix": "{"}]}', sqs('{"kind": '), True),
    "JSON scalar body is text": ('{"body": ["123"]}', sqs("123"), True),
    "empty body matches empty string": ('{"body": [""]}', sqs(""), True),
    "metadata only": ('{"messageId": [{"prefix": "059f"}]}', sqs("{not json"), True),
    "nested attributes": ('{"attributes": {"ApproximateReceiveCount": ["1"]}}', sqs("x"), True),
    "metadata and body ANDed": (
        '{"attributes": {"SenderId": ["nobody"]}, "body": {"kind": ["order"]}}',
        sqs(ORDER),
        False,
    ),
    "eventSource not matchable": ('{"eventSource": ["aws:sqs"]}', sqs("x"), False),
    "eventSourceARN absent": ('{"eventSourceARN": [{"exists": false}]}', sqs("x"), True),
    "awsRegion not matchable with body": (
        '{"awsRegion": ["us-east-2"], "body": ["x"]}',
        sqs("x"),
        False,
    ),
    "$or body object or metadata": (
        '{"$or": [{"body": {"kind": ["refund"]}}, {"messageId": [{"suffix": "0a7d"}]}]}',
        sqs("plain"),
        True,
    ),
    "$or of text and JSON kinds, JSON side": (
        '{"$or": [{"body": {"kind": ["order"]}}, {"body": ["ping"]}]}',
        sqs(ORDER),
        True,
    ),
    "$or of text and JSON kinds, text side": (
        '{"$or": [{"body": {"kind": ["order"]}}, {"body": ["ping"]}]}',
        sqs("ping"),
        True,
    ),
    "$or of text and JSON kinds, JSON array": (
        '{"$or": [{"body": {"kind": ["order"]}}, {"body": ["ping"]}]}',
        sqs('["ping"]'),
        False,
    ),
    "second filter passes": (
        ('{"body": {"kind": ["refund"]}}', '{"body": [{"suffix": "message."}]}'),
        sqs("Test message."),
        True,
    ),
}

KINESIS: Table = {
    "JSON data, object, match": ('{"data": {"kind": ["order"]}}', kinesis(b64(ORDER)), True),
    "JSON data, object, no match": (
        '{"data": {"total": [{"numeric": ["<", 100]}]}}',
        kinesis(b64(ORDER)),
        False,
    ),
    "not JSON after base64: dropped": (
        '{"data": {"kind": ["order"]}}',
        kinesis(b64("Hello, this is a test.")),
        False,
    ),
    "not JSON, exists:false: dropped": (
        '{"data": {"kind": [{"exists": false}]}}',
        kinesis("SGVsbG8sIHRoaXMgaXMgYSB0ZXN0Lg=="),
        False,
    ),
    "bad base64: dropped": ('{"data": {"kind": ["order"]}}', kinesis("!!not base64!!"), False),
    "metadata only, data not JSON": ('{"partitionKey": ["1"]}', kinesis(b64("plain")), True),
    "eventName matchable": (
        '{"eventName": ["aws:kinesis:record"], "eventVersion": ["1.0"]}',
        kinesis(b64("x")),
        True,
    ),
    "eventID matchable": (
        '{"eventID": [{"prefix": "shardId-000000000006:"}]}',
        kinesis(b64("x")),
        True,
    ),
    "schema version and arrival time": (
        '{"kinesisSchemaVersion": ["1.0"],'
        ' "approximateArrivalTimestamp": [{"numeric": [">", 1545084650]}]}',
        kinesis(b64("x")),
        True,
    ),
    "eventSource not matchable": ('{"eventSource": ["aws:kinesis"]}', kinesis(b64("x")), False),
    "invokeIdentityArn not matchable": (
        '{"invokeIdentityArn": [{"exists": true}]}',
        kinesis(b64("x")),
        False,
    ),
    "kinesis key itself absent": ('{"kinesis": [{"exists": false}]}', kinesis(b64("x")), True),
    "$or data branch": (
        '{"$or": [{"data": {"kind": ["order"]}}, {"partitionKey": ["9"]}]}',
        kinesis(b64(ORDER)),
        True,
    ),
    "$or metadata branch, data not JSON": (
        '{"$or": [{"data": {"kind": ["order"]}}, {"partitionKey": ["9"]}]}',
        kinesis(b64("plain"), "9"),
        True,
    ),
    "$or neither branch": (
        '{"$or": [{"data": {"kind": ["order"]}}, {"partitionKey": ["9"]}]}',
        kinesis(b64("plain")),
        False,
    ),
}

DYNAMODB: Table = {
    "eventName": ('{"eventName": ["INSERT"]}', dynamodb(), True),
    "eventName other": ('{"eventName": ["REMOVE"]}', dynamodb(), False),
    "typed string attribute": (
        '{"dynamodb": {"NewImage": {"Message": {"S": ["New item!"]}}}}',
        dynamodb(),
        True,
    ),
    "N attribute is a string": ('{"dynamodb": {"Keys": {"Id": {"N": ["101"]}}}}', dynamodb(), True),
    "N attribute never numeric": (
        '{"dynamodb": {"Keys": {"Id": {"N": [{"numeric": ["=", 101]}]}}}}',
        dynamodb(),
        False,
    ),
    "ApproximateCreationDateTime is a number": (
        '{"dynamodb": {"ApproximateCreationDateTime": [{"numeric": [">=", 1428537600]}]}}',
        dynamodb(),
        True,
    ),
    "userIdentity of a TTL delete": (
        '{"userIdentity": {"type": ["Service"], "principalId": ["dynamodb.amazonaws.com"]}}',
        dynamodb("REMOVE", userIdentity=TTL_DELETE),
        True,
    ),
    "no userIdentity": ('{"userIdentity": {"type": ["Service"]}}', dynamodb("REMOVE"), False),
    "awsRegion not matchable": ('{"awsRegion": ["us-east-1"]}', dynamodb(), False),
    "eventSourceARN absent": (
        '{"eventSourceARN": [{"exists": false}], "eventName": ["INSERT"]}',
        dynamodb(),
        True,
    ),
}

RABBITMQ: Table = {
    "AWS sample, JSON object": ('{"data": {"timeout": [0]}}', rabbitmq(RMQ_SAMPLE), True),
    "JSON, object, no match": (
        '{"data": {"timeout": [{"numeric": [">", 0]}]}}',
        rabbitmq(RMQ_SAMPLE),
        False,
    ),
    "text, rules array, match": (
        '{"data": [{"prefix": "hello"}]}',
        rabbitmq(b64("hello world")),
        True,
    ),
    "text, rules array, no match": ('{"data": ["bye"]}', rabbitmq(b64("hello world")), False),
    "text vs object: data rules ignored": (
        '{"data": {"kind": ["x"]}, "redelivered": [false]}',
        rabbitmq(b64("hello")),
        True,
    ),
    "text vs object: metadata still decides": (
        '{"data": {"kind": ["x"]}, "redelivered": [true]}',
        rabbitmq(b64("hello")),
        False,
    ),
    "text vs object, data only: matches all": (
        '{"data": {"kind": ["x"]}}',
        rabbitmq(b64("hello")),
        True,
    ),
    "JSON vs rules array: ignored": (
        '{"data": ["nope"], "basicProperties": {"contentType": ["text/plain"]}}',
        rabbitmq(RMQ_SAMPLE),
        True,
    ),
    "not UTF-8: ignored": (
        '{"data": {"a": ["b"]}, "redelivered": [true]}',
        rabbitmq(NOT_UTF8, redelivered=True),
        True,
    ),
    "bad base64: ignored": (
        '{"data": ["x"], "redelivered": [true]}',
        rabbitmq("%%%", redelivered=False),
        False,
    ),
    "basicProperties": (
        '{"basicProperties": {"deliveryMode": [1], "userId": [{"prefix": "AIDA"}]}}',
        rabbitmq(RMQ_SAMPLE),
        True,
    ),
    "$or: mismatched branch ignored": (
        '{"$or": [{"data": {"a": ["x"]}}, {"redelivered": [true]}]}',
        rabbitmq(b64("text")),
        True,
    ),
    "$or: matched kind evaluated": (
        '{"$or": [{"data": {"a": ["x"]}}, {"redelivered": [true]}]}',
        rabbitmq(b64('{"a": "y"}')),
        False,
    ),
}

REDIS_STREAM: Table = {
    "JSON data, object": ('{"data": {"kind": ["order"]}}', redis_stream(b64(ORDER)), True),
    "not JSON: dropped": (
        '{"data": {"kind": [{"exists": false}]}}',
        redis_stream(b64("plain")),
        False,
    ),
    "fields": ('{"fields": {"tenant": ["acme"]}}', redis_stream(b64("x"), tenant="acme"), True),
    "stream, entry and event names": (
        '{"streamName": ["orders"], "entryId": [{"prefix": "1700"}],'
        ' "eventName": ["sluice:redis-stream:record"]}',
        redis_stream(b64("x")),
        True,
    ),
    "arrival time": (
        '{"approximateArrivalTimestamp": [{"numeric": ["=", 1700000000]}]}',
        redis_stream(b64("x")),
        True,
    ),
    "eventSource not matchable": (
        '{"eventSource": ["sluice:redis-stream"]}',
        redis_stream(b64("x")),
        False,
    ),
}

TABLES = {
    "sqs": SQS,
    "kinesis": KINESIS,
    "dynamodb": DYNAMODB,
    "rabbitmq": RABBITMQ,
    "redis-stream": REDIS_STREAM,
}
CASES = [
    pytest.param(source, patterns, record, kept, id=f"{source}: {name}")
    for source, table in TABLES.items()
    for name, (patterns, record, kept) in table.items()
]


@pytest.mark.parametrize(("source", "patterns", "record", "kept"), CASES)
def test_record_is_kept_per_source_document_rules(
    source: str, patterns: str | tuple[str, ...], record: dict[str, Any], kept: bool
) -> None:
    texts = [patterns] if isinstance(patterns, str) else list(patterns)
    record_filter = RecordFilter(texts, source, max_filters=10)
    assert record_filter.keep(record) is kept


WORKED = [
    '{"body": {"kind": ["refund"], "amount": [{"numeric": [">=", 100]}]}}',
    '{"body": {"$or": [{"region": [{"prefix": "eu-"}]}, {"vip": [true]}]}}',
]


@pytest.mark.parametrize(
    ("body", "kept"),
    [
        ('{"kind":"refund","amount":250}', True),
        ('{"kind":"refund","amount":"250"}', False),
        ('{"kind":"sale","region":"eu-west-1"}', True),
        ('{"kind":"sale","vip":true}', True),
        ("refund 250", False),
    ],
)
def test_worked_example_of_spec_10_6(body: str, kept: bool) -> None:
    assert RecordFilter(WORKED, SourceKind.SQS).keep(sqs(body)) is kept


def test_enum_and_string_sources_are_the_same() -> None:
    for kind in SourceKind:
        assert RecordFilter([], kind).source == RecordFilter([], kind.value).source == kind.value


def test_unknown_source_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown event source 'kafka'"):
        RecordFilter([], "kafka")


def test_invalid_pattern_and_quota_are_refused_when_built() -> None:
    with pytest.raises(InvalidParameterValueError, match=r"Invalid filter pattern definition\."):
        RecordFilter(['{"body": "x"}'], "sqs")
    with pytest.raises(InvalidParameterValueError, match="exceeds the limit of 5"):
        RecordFilter(['{"a": ["x"]}'] * 6, "sqs")
    with pytest.raises(ValidationError):
        RecordFilter(['{"a": ["' + "x" * 4096 + '"]}'], "sqs")
    assert len(RecordFilter(['{"a": ["x"]}'] * 10, "sqs", max_filters=10).patterns) == 10


def test_counters_and_split_keep_order() -> None:
    record_filter = RecordFilter(['{"body": {"n": [{"numeric": [">", 2]}]}}'], "sqs")
    records = [sqs(json.dumps({"n": n}), messageId=f"m{n}") for n in [5, 1, 3, 2, 4]]
    kept, dropped = record_filter.split(records)
    assert [r["messageId"] for r in kept] == ["m5", "m3", "m4"]
    assert [r["messageId"] for r in dropped] == ["m1", "m2"]
    assert kept[0] is records[0]  # the records themselves, not copies
    assert (record_filter.kept, record_filter.filtered_out) == (3, 2)
    record_filter.keep(records[1])
    assert (record_filter.kept, record_filter.filtered_out) == (3, 3)


def test_no_filters_pass_everything_without_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(_data: Any) -> Any:
        raise AssertionError("decoded without a filter")

    monkeypatch.setattr(sources, "decode_data", refuse)
    monkeypatch.setattr(sources, "decode_base64_data", refuse)
    for kind in SourceKind:
        record_filter = RecordFilter([], kind)
        assert record_filter.empty
        assert record_filter.keep({"body": "{}", "kinesis": {"data": "e30="}, "data": "e30="})
        assert record_filter.split([{}, {"x": 1}]) == ([{}, {"x": 1}], [])
        assert (record_filter.kept, record_filter.filtered_out) == (3, 0)
    assert not RecordFilter(['{"a": ["b"]}'], "sqs").empty


def test_metadata_only_filters_never_decode_data(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(_data: Any) -> Any:
        raise AssertionError("data decoded for a metadata-only filter")

    monkeypatch.setattr(sources, "decode_data", refuse)
    monkeypatch.setattr(sources, "decode_base64_data", refuse)
    assert RecordFilter(['{"messageId": [{"exists": true}]}'], "sqs").keep(sqs('{"a": 1}'))
    assert RecordFilter(['{"partitionKey": ["1"]}'], "kinesis").keep(kinesis(b64("{}")))
    assert RecordFilter(['{"redelivered": [false]}'], "rabbitmq").keep(rabbitmq(RMQ_SAMPLE))
    assert RecordFilter(['{"entryId": [{"exists": true}]}'], "redis-stream").keep(
        redis_stream(b64("{}"))
    )


@pytest.mark.parametrize(
    ("source", "record", "decoder"),
    [
        ("sqs", sqs(ORDER), "decode_data"),
        ("rabbitmq", rabbitmq(b64(ORDER)), "decode_data"),
        ("kinesis", kinesis(b64(ORDER)), "decode_base64_data"),
        ("redis-stream", redis_stream(b64(ORDER)), "decode_base64_data"),
    ],
)
def test_data_is_decoded_once_per_record_for_all_filters(
    monkeypatch: pytest.MonkeyPatch, source: str, record: dict[str, Any], decoder: str
) -> None:
    key = "body" if source == "sqs" else "data"
    calls: list[Any] = []
    real = getattr(sources, decoder)
    monkeypatch.setattr(sources, decoder, lambda *args: calls.append(args[0]) or real(*args))
    patterns = [
        json.dumps({key: {"kind": [f"k{n}"]}}) for n in range(4)
    ]  # none matches: every filter is evaluated
    patterns.append(json.dumps({"$or": [{key: {"total": [1]}}, {key: {"kind": ["x"]}}]}))
    record_filter = RecordFilter(patterns, source)
    assert not record_filter.keep(record)
    assert len(calls) == 1


def test_records_are_never_parsed_or_compiled_per_record(monkeypatch: pytest.MonkeyPatch) -> None:
    patterns = ['{"body": {"kind": ["order"]}}', '{"$or": [{"body": ["x"]}, {"md5OfBody": ["y"]}]}']
    record_filter = RecordFilter(patterns, "sqs")

    def refuse(*_args: Any, **_kwargs: Any) -> Any:
        raise AssertionError("pattern work per record")

    monkeypatch.setattr(sources, "load_json", refuse)
    monkeypatch.setattr(sources, "FilterSet", refuse)
    assert record_filter.split([sqs(ORDER), sqs("x"), sqs("y")]) == (
        [sqs(ORDER), sqs("x")],
        [sqs("y")],
    )


@pytest.mark.parametrize(
    ("source", "record", "patterns"),
    [
        ("sqs", sqs(ORDER), ['{"body": {"kind": ["order"]}}', '{"eventSource": ["x"]}']),
        ("sqs", sqs("text"), ['{"$or": [{"body": ["text"]}, {"body": {"a": ["b"]}}]}']),
        ("kinesis", kinesis(b64(ORDER)), ['{"data": {"kind": ["order"]}}']),
        ("dynamodb", dynamodb(), ['{"dynamodb": {"Keys": {"Id": {"N": ["101"]}}}}']),
        ("rabbitmq", rabbitmq(b64("hello")), ['{"data": {"a": ["b"]}, "redelivered": [false]}']),
        ("redis-stream", redis_stream(b64(ORDER), a="b"), ['{"data": {"kind": ["order"]}}']),
    ],
)
def test_input_record_is_not_mutated(
    source: str, record: dict[str, Any], patterns: list[str]
) -> None:
    before = copy.deepcopy(record)
    assert RecordFilter(patterns, source).keep(record)
    assert record == before


def test_sqs_mixed_kinds_keep_number_token_text() -> None:
    """Patterns rewritten for the text/JSON variants keep their numbers' JSON text."""
    record_filter = RecordFilter(['{"$or": [{"body": {"n": [300.0]}}, {"body": ["x"]}]}'], "sqs")
    assert record_filter.keep(sqs('{"n": 300.0}'))
    assert not record_filter.keep(sqs('{"n": 300}'))
    assert record_filter.keep(sqs("x"))


def test_longest_pattern_with_mixed_kinds_still_compiles() -> None:
    head, tail = '{"$or":[{"body":{"k":["v"]}},{"body":["', '"]}]}'
    pattern = head + "é" * (4096 - len(head) - len(tail)) + tail
    assert len(pattern) == 4096
    record_filter = RecordFilter([pattern], "sqs")
    assert record_filter.keep(sqs('{"k": "v"}'))
    assert not record_filter.keep(sqs("é"))


def test_sqs_record_without_a_string_body_fails_body_rules() -> None:
    record_filter = RecordFilter(['{"body": [{"exists": false}]}', '{"body": {"a": [1]}}'], "sqs")
    assert not record_filter.keep({"messageId": "m"})
    assert not record_filter.keep({"messageId": "m", "body": {"a": 1}})
