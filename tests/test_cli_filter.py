"""``sluice filter test``: patterns validated as the API does, one verdict per JSON Lines record."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from broker.cli import app
from tests.lambda_records import b64, dynamodb, kinesis, rabbitmq, redis_stream, sqs

INVALID = "InvalidParameterValueException: Invalid filter pattern definition.\n"
WORKED = [
    '{"body": {"kind": ["refund"], "amount": [{"numeric": [">=", 100]}]}}',
    '{"body": {"$or": [{"region": [{"prefix": "eu-"}]}, {"vip": [true]}]}}',
]
WORKED_BODIES = [
    '{"kind":"refund","amount":250}',
    '{"kind":"refund","amount":"250"}',
    '{"kind":"sale","region":"eu-west-1"}',
    '{"kind":"sale","vip":true}',
    "refund 250",
]


def run(patterns: list[str], lines: list[str] | str | bytes, *options: str) -> Result:
    args = ["filter", "test", *(arg for p in patterns for arg in ("--pattern", p)), *options]
    stdin = lines if isinstance(lines, str | bytes) else "".join(f"{line}\n" for line in lines)
    return CliRunner().invoke(app, args, input=stdin)


def jsonl(*records: dict[str, Any]) -> list[str]:
    return [json.dumps(record) for record in records]


def worked_records() -> list[str]:
    return jsonl(*(sqs(body, messageId=f"m-{n}") for n, body in enumerate(WORKED_BODIES, 1)))


def test_worked_example_prints_a_verdict_per_record_and_a_summary() -> None:
    result = run(WORKED, worked_records())
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        "KEEP  line 1  m-1",
        "DROP  line 2  m-2",
        "KEEP  line 3  m-3",
        "KEEP  line 4  m-4",
        "DROP  line 5  m-5",
        "kept 3, dropped 2 of 5",
    ]
    assert result.stderr == ""


def test_json_output_has_one_object_per_record_and_a_summary() -> None:
    result = run(WORKED, worked_records(), "--json")
    assert result.exit_code == 0
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert lines[:2] == [
        {"line": 1, "keep": True, "id": "m-1"},
        {"line": 2, "keep": False, "id": "m-2"},
    ]
    assert [line["keep"] for line in lines[:5]] == [True, False, True, True, False]
    assert lines[5] == {"kept": 3, "dropped": 2, "total": 5, "errors": 0}


@pytest.mark.parametrize(
    "pattern",
    ['{"body": "refund"}', "not json", '["body"]', '{"body": []}', '{"a": [{"prefix": 1}]}'],
)
def test_invalid_pattern_prints_aws_error_and_exits_2(pattern: str) -> None:
    result = run([WORKED[0], pattern], worked_records())
    assert result.exit_code == 2
    assert result.stderr == INVALID
    assert result.stdout == ""  # nothing judged


def test_stream_sources_need_an_object_for_their_data_key() -> None:
    rules_on_data = '{"data": [{"prefix": "x"}]}'
    for source in ("kinesis", "redis-stream"):
        assert run([rules_on_data], [], "--source", source).stderr == INVALID
    assert run(['{"dynamodb": ["x"]}'], [], "--source", "dynamodb").stderr == INVALID
    for source in ("sqs", "rabbitmq"):  # text data: a rules array is fine
        assert run([rules_on_data], [], "--source", source).exit_code == 0


def test_filter_quota_and_pattern_length_are_the_apis() -> None:
    six = ['{"a": ["x"]}'] * 6
    too_many = run(six, [])
    assert too_many.exit_code == 2
    assert too_many.stderr == (
        "InvalidParameterValueException: Number of filters exceeds the limit of 5\n"
    )
    assert run(six, [], "--max-filters", "6").exit_code == 0
    assert run(six, [], "--max-filters", "11").exit_code == 2  # the quota stops at 10
    long = run(['{"a": ["' + "x" * 4096 + '"]}'], [])
    assert long.exit_code == 2
    assert long.stderr.startswith("ValidationException: 1 validation error detected")


def test_lines_that_are_not_records_are_reported_and_the_rest_judged() -> None:
    lines = [json.dumps(sqs("refund 250", messageId="a")), "{broken", "[1, 2]", '"text"']
    lines.append(json.dumps(sqs('{"kind":"sale","vip":true}', messageId="b")))
    result = run(WORKED, lines)
    assert result.exit_code == 1
    assert result.stdout.splitlines() == [
        "DROP  line 1  a",
        "KEEP  line 5  b",
        "kept 1, dropped 1 of 2, 3 errors",
    ]
    errors = result.stderr.splitlines()
    assert errors[0].startswith("ERROR line 2: not JSON (")
    assert errors[1:] == [
        "ERROR line 3: not a JSON object but an array",
        "ERROR line 4: not a JSON object but a string",
    ]


def test_json_summary_counts_errors_and_a_non_utf8_line_is_one() -> None:
    stdin = b"\xff\xfe\n" + json.dumps(sqs("x")).encode() + b"\n"
    result = run(['{"body": ["x"]}'], stdin, "--json")
    assert result.exit_code == 1
    assert result.stderr == "ERROR line 1: not UTF-8\n"
    assert json.loads(result.stdout.splitlines()[-1]) == {
        "kept": 1,
        "dropped": 0,
        "total": 1,
        "errors": 1,
    }


def test_blank_lines_are_skipped_but_keep_their_line_numbers() -> None:
    record = json.dumps(sqs("x", messageId="m"))
    result = run(['{"body": ["x"]}'], f"\n{record}\n   \n\n{record}\n")
    assert result.exit_code == 0
    assert result.stdout.splitlines() == [
        "KEEP  line 2  m",
        "KEEP  line 5  m",
        "kept 2, dropped 0 of 2",
    ]


def test_empty_input_is_a_clean_run() -> None:
    result = run(['{"body": ["x"]}'], "")
    assert (result.exit_code, result.stdout) == (0, "kept 0, dropped 0 of 0\n")


@pytest.mark.parametrize(
    ("source", "pattern", "record", "verdict", "ident"),
    [
        (
            "kinesis",
            '{"data": {"kind": ["order"]}}',
            kinesis(b64('{"kind": "order"}')),
            "KEEP",
            "shardId-000000000006:49590338271490256608559692538361571095921575989136588898",
        ),
        (
            "dynamodb",
            '{"eventName": ["MODIFY"]}',
            dynamodb(),
            "DROP",
            "c4ca4238a0b923820dcc509a6f75849b",
        ),
        ("rabbitmq", '{"data": ["ping"]}', rabbitmq(b64("ping"), message_id="q-7"), "KEEP", "q-7"),
        ("amqp", '{"data": {"a": ["b"]}}', rabbitmq(b64("ping"), message_id="q-8"), "KEEP", "q-8"),
        (
            "redis-stream",
            '{"data": {"kind": ["order"]}}',
            redis_stream(b64('{"kind": "refund"}')),
            "DROP",
            "orders:1700000000000-0",
        ),
    ],
)
def test_each_source_judges_its_own_record_shape(
    source: str, pattern: str, record: dict[str, Any], verdict: str, ident: str
) -> None:
    result = run([pattern], jsonl(record), "--source", source)
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0] == f"{verdict}  line 1  {ident}"


def test_amqp_is_rabbitmq() -> None:
    lines = jsonl(rabbitmq(b64("hi")), rabbitmq(b64('{"a": 1}'), redelivered=True))
    patterns = ['{"data": {"a": [1]}, "redelivered": [true]}']
    assert (
        run(patterns, lines, "--source", "amqp").stdout
        == run(patterns, lines, "--source", "rabbitmq").stdout
    )


def test_record_without_an_id_is_shown_by_the_start_of_its_line() -> None:
    line = json.dumps({"body": "x" * 100})
    result = run(['{"body": ["y"]}'], [line])
    assert result.stdout.splitlines()[0] == f"DROP  line 1  {line[:60]}"


def test_dynamodb_record_without_event_id_is_shown_by_its_sequence_number() -> None:
    record = {"dynamodb": {"SequenceNumber": "4421584500000000017450439091"}}
    result = run(['{"eventName": ["INSERT"]}'], jsonl(record), "--source", "dynamodb")
    assert result.stdout.splitlines()[0] == "DROP  line 1  4421584500000000017450439091"


def test_installed_entry_point_runs_the_command(tmp_path: Path) -> None:
    sluice = Path(sys.executable).with_name("sluice")
    assert sluice.exists(), "the package is not installed in this environment"
    events = tmp_path / "events.jsonl"
    events.write_text("\n".join(worked_records()) + "\n{broken\n")
    with events.open("rb") as stdin:
        done = subprocess.run(
            [str(sluice), "filter", "test", "--pattern", WORKED[0], "--pattern", WORKED[1]],
            stdin=stdin,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert done.returncode == 1
    assert done.stdout.splitlines()[-1] == "kept 3, dropped 2 of 5, 1 error"
    assert done.stderr.startswith("ERROR line 6: not JSON")
