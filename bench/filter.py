"""Throughput of event filtering: evaluations per second against a 10-filter FilterSet.

One evaluation = one record, shaped as Lambda delivers it, judged by the mapping's
:class:`RecordFilter` (the path a poller takes): its matchable document built, its data
decoded (JSON of an SQS body, base64 + JSON of a Kinesis ``data`` field) and tested against
ten filters. It is compared, in the same run, with a naive evaluator that decodes the same
document and re-parses and re-compiles every pattern for every evaluation. Run from the
repository root: ``python bench/filter.py``.
"""

from __future__ import annotations

import base64
import json
import os
import random
import sys
import time
from collections.abc import Callable
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from broker.filters import (
    UNDECODABLE,
    RecordFilter,
    compile_pattern,
    decode_base64_data,
    decode_data,
    match_object,
)

TARGET_PER_S = 100_000
RECORDS = 2_000
ROUNDS = 3

SQS_PATTERNS = [
    '{"body": {"kind": ["refund"], "amount": [{"numeric": [">=", 100]}]}}',
    '{"body": {"$or": [{"region": [{"prefix": "eu-"}]}, {"vip": [true]}]}}',
    '{"body": {"customer": {"tier": ["gold", "platinum"]}, "currency": ["EUR"]}}',
    '{"body": {"sku": [{"wildcard": "SKU-*-XL"}]}}',
    '{"body": {"status": [{"anything-but": ["ok", "pending", "shipped"]}]}}',
    '{"body": {"email": [{"suffix": "@example.org"}]}}',
    '{"body": {"source_ip": [{"cidr": "10.20.0.0/16"}]}}',
    '{"body": {"items": {"qty": [{"numeric": [">", 50, "<=", 100]}]}}}',
    '{"body": {"country": [{"equals-ignore-case": "nz"}], "coupon": [{"exists": false}]}}',
    '{"messageAttributes": {"priority": {"stringValue": ["urgent"]}}}',
]
KINESIS_PATTERNS = [
    '{"data": {"temp": [{"numeric": [">", 40]}]}}',
    '{"data": {"device": {"model": [{"prefix": "TX-9"}]}}}',
    '{"data": {"alarm": [true], "zone": ["north", "east"]}}',
    '{"data": {"$or": [{"battery": [{"numeric": ["<", 5]}]}, {"offline": [true]}]}}',
    '{"data": {"fw": [{"anything-but": {"prefix": "3."}}]}}',
    '{"partitionKey": [{"prefix": "vip-"}]}',
    '{"data": {"site": [{"wildcard": "plant-*-b"}]}}',
    '{"data": {"tags": ["recall"]}}',
    '{"data": {"readings": {"kind": ["pressure"], "value": [{"numeric": [">=", 9000]}]}}}',
    '{"eventName": ["aws:kinesis:record"], "data": {"error": [{"exists": true}]}}',
]


def rare(rng: random.Random, common: Any, uncommon: Any, p: float = 0.02) -> Any:
    """``uncommon`` with probability ``p``: each filter lets a few percent of records through."""
    return uncommon if rng.random() < p else common


def sqs_record(rng: random.Random, i: int) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "kind": rare(rng, rng.choice(["sale", "exchange"]), "refund", 0.1),
        "amount": rng.choice([12, 99.5, 150, 2400]),
        "region": rare(rng, rng.choice(["us-east-1", "ap-south-1"]), "eu-west-1"),
        "vip": rare(rng, False, True),
        "customer": {"id": f"c-{i}", "tier": rare(rng, rng.choice(["bronze", "silver"]), "gold")},
        "currency": rng.choice(["USD", "EUR", "GBP"]),
        "sku": f"SKU-{i % 97}-{rare(rng, rng.choice(['S', 'M', 'L']), 'XL')}",
        "status": rare(rng, rng.choice(["ok", "pending", "shipped"]), "lost"),
        "email": f"user{i}@example.{rare(rng, 'com', 'org')}",
        "source_ip": f"10.{rng.randint(0, 60)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}",
        "items": [
            {"sku": f"S{j}", "qty": rare(rng, rng.randint(1, 40), 60, 0.01)} for j in range(3)
        ],
        "country": rare(rng, rng.choice(["AU", "US"]), "NZ", 0.05),
    }
    if rng.random() < 0.5:
        fields["coupon"] = "SAVE10"
    plain = rng.random() < 0.1  # a tenth of the bodies are not JSON
    return {
        "messageId": f"059f36b4-87a3-44ab-83d2-{i:012d}",
        "receiptHandle": f"AQEBwJnKyrHigUMZj6rYigCgxlaS3SLy0a{i}",
        "body": f"plain text message {i}" if plain else json.dumps(fields),
        "attributes": {
            "ApproximateReceiveCount": "1",
            "SentTimestamp": "1545082649183",
            "SenderId": "AIDAIENQZJOLO23YVJ4VO",
            "ApproximateFirstReceiveTimestamp": "1545082649185",
        },
        "messageAttributes": {
            "priority": {"stringValue": rare(rng, "low", "urgent"), "dataType": "String"}
        },
        "md5OfBody": "e4e68fb7bd0e697a0ae8f1bb342846b3",
        "eventSource": "aws:sqs",
        "eventSourceARN": "arn:aws:sqs:us-east-1:000000000000:orders",
        "awsRegion": "us-east-1",
    }


def kinesis_record(rng: random.Random, i: int) -> dict[str, Any]:
    data = {
        "device": {"id": f"d-{i}", "model": rare(rng, rng.choice(["TX-100", "RX-2"]), "TX-900")},
        "temp": round(rng.uniform(-10, 42), 2),
        "alarm": rare(rng, False, True, 0.1),
        "zone": rng.choice(["north", "south", "east", "west"]),
        "battery": rng.randint(3, 100),
        "offline": rare(rng, False, True),
        "fw": rare(rng, rng.choice(["3.0.4", "3.1.1"]), "2.1.0"),
        "site": f"plant-{i % 7}-{rare(rng, 'a', 'b')}",
        "tags": rng.sample(["ok", "audit", "new", "eol"], 2) + rare(rng, [], ["recall"]),
        "readings": [
            {"kind": rng.choice(["pressure", "flow"]), "value": rng.randint(0, 9_050)}
            for _ in range(3)
        ],
    }
    if rng.random() < 0.02:
        data["error"] = "sensor timeout"
    return {
        "kinesis": {
            "kinesisSchemaVersion": "1.0",
            "partitionKey": rare(rng, "std-", "vip-") + str(i % 13),
            "sequenceNumber": f"4959033379874969123456789012345678901234567890{i:012d}",
            "data": base64.b64encode(json.dumps(data).encode()).decode(),
            "approximateArrivalTimestamp": 1545084650.987,
        },
        "eventSource": "aws:kinesis",
        "eventVersion": "1.0",
        "eventID": f"shardId-000000000006:{i}",
        "eventName": "aws:kinesis:record",
        "invokeIdentityArn": "arn:aws:iam::000000000000:role/lambda-role",
        "awsRegion": "us-east-1",
        "eventSourceARN": "arn:aws:kinesis:us-east-1:000000000000:stream/telemetry",
    }


_ATTACHED = ("eventSource", "eventSourceARN", "awsRegion")


def sqs_document(record: dict[str, Any]) -> dict[str, Any]:
    """What the naive evaluator matches. Every body pattern here is an object, which a
    plain-text body fails outright (§10.4)."""
    document = {k: v for k, v in record.items() if k not in _ATTACHED}
    body = decode_data(record["body"])
    document["body"] = UNDECODABLE if isinstance(body, str) else body
    return document


def kinesis_document(record: dict[str, Any]) -> dict[str, Any]:
    document = {**record["kinesis"]}
    for key in ("eventID", "eventName", "eventVersion"):
        document[key] = record[key]
    document["data"] = decode_base64_data(document["data"])
    return document


def naive_matches(patterns: list[str], document: dict[str, Any]) -> bool:
    return any(match_object(compile_pattern(pattern), document) for pattern in patterns)


def rate(evaluate: Callable[[dict[str, Any]], bool], records: list[dict[str, Any]]) -> float:
    best = 0.0
    for _ in range(ROUNDS):
        start = time.perf_counter()
        for record in records:
            evaluate(record)
        best = max(best, len(records) / (time.perf_counter() - start))
    return best


def run(
    name: str,
    patterns: list[str],
    records: list[dict[str, Any]],
    to_document: Callable[[dict[str, Any]], dict[str, Any]],
) -> bool:
    filters = RecordFilter(patterns, name, max_filters=10)
    passed = sum(filters.keep(r) for r in records)
    for record in records:  # the naive evaluator must agree before it is timed
        assert filters.keep(record) is naive_matches(patterns, to_document(record))
    compiled = rate(filters.keep, records)
    naive = rate(lambda r: naive_matches(patterns, to_document(r)), records)
    verdict = "PASS" if compiled >= TARGET_PER_S else "MISS"
    print(f"{name}: {passed}/{len(records)} records pass the 10 filters")
    print(f"  compiled: {compiled:,.0f} evaluations/s")
    print(f"  naive:    {naive:,.0f} evaluations/s")
    print(f"  ratio: {compiled / naive:.1f}")
    print(f"  {verdict} (target {TARGET_PER_S:,} evaluations/s on one core)")
    return compiled >= TARGET_PER_S


def main() -> None:
    rng = random.Random(7)
    sqs = [sqs_record(rng, i) for i in range(RECORDS)]
    kinesis = [kinesis_record(rng, i) for i in range(RECORDS)]
    ok = run("sqs", SQS_PATTERNS, sqs, sqs_document)
    ok = run("kinesis", KINESIS_PATTERNS, kinesis, kinesis_document) and ok
    print("overall:", "PASS" if ok else "MISS")


if __name__ == "__main__":
    main()
