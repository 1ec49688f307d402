"""``sluice filter test``: try filter patterns on records before putting them on a mapping.

Patterns are validated as CreateEventSourceMapping validates them, then each JSON Lines
record from stdin is judged by :class:`~broker.filters.RecordFilter`, exactly as a poller
judges it. Output is for people (``KEEP``/``DROP`` lines) or scripts (``--json``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from enum import StrEnum
from typing import IO, Annotated, Any

import typer

from broker.errors import ApiError
from broker.filters import DEFAULT_MAX_FILTERS, HARD_MAX_FILTERS, RecordFilter, load_event
from broker.mappings.model import MappingRequest, SourceKind
from broker.mappings.validate import check_filters

filter_app = typer.Typer(
    help="Event filter patterns (AWS Lambda's FilterCriteria).",
    no_args_is_help=True,
    add_completion=False,
)

ID_CHARS = 60  # a record without an id is shown by the start of its line


class Source(StrEnum):
    SQS = "sqs"
    KINESIS = "kinesis"
    DYNAMODB = "dynamodb"
    AMQP = "amqp"  # the same as rabbitmq: Sluice's amqp:// sources deliver RabbitMQ records
    RABBITMQ = "rabbitmq"
    REDIS_STREAM = "redis-stream"

    @property
    def kind(self) -> SourceKind:
        return SourceKind.RABBITMQ if self is Source.AMQP else SourceKind(self.value)


# Where each source's records carry an id worth showing, in order of preference.
_ID_PATHS = (
    ("messageId",),  # SQS
    ("eventID",),  # Kinesis, DynamoDB, redis-stream
    ("kinesis", "sequenceNumber"),
    ("redisStream", "sequenceNumber"),
    ("dynamodb", "SequenceNumber"),
    ("basicProperties", "messageId"),  # RabbitMQ, when the publisher set one
)


def record_id(record: dict[str, Any], line: str) -> str:
    """The record's messageId, eventID or sequence number, else the start of its line."""
    for path in _ID_PATHS:
        value: Any = record
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        if isinstance(value, str) and value:
            return value
    return line[:ID_CHARS]


def check_patterns(patterns: list[str], kind: SourceKind, max_filters: int) -> None:
    """Validate as CreateEventSourceMapping does: each pattern (§10.3, with the stream data
    key rule) and the number of filters. Raises the API's error."""
    request = MappingRequest.model_validate(
        {
            "FunctionName": "sluice-filter-test",  # required by the shape, never looked up
            "FilterCriteria": {"Filters": [{"Pattern": pattern} for pattern in patterns]},
        }
    )
    check_filters(request, kind, max_filters)


def read_records(lines: Iterable[bytes]) -> Iterable[tuple[int, str, Any, str | None]]:
    """``(line number, text, record, error)`` for each non-blank line."""
    for number, raw in enumerate(lines, start=1):
        try:
            text = raw.decode().strip()
        except UnicodeDecodeError:
            yield number, "", None, "not UTF-8"
            continue
        if not text:
            continue
        try:
            record = load_event(text)
        except (ValueError, RecursionError) as exc:  # too deeply nested counts as not JSON
            yield number, text, None, f"not JSON ({exc})"
            continue
        if not isinstance(record, dict):
            yield number, text, None, f"not a JSON object but {_json_type(record)}"
            continue
        yield number, text, record, None


_JSON_TYPES = {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}


def _json_type(value: Any) -> str:
    return _JSON_TYPES.get(type(value), "a number")


# One line per paragraph: typer's rich help keeps a docstring's line breaks.
TEST_HELP = "\n\n".join(
    [
        "Judge records read from stdin (JSON Lines) against filter patterns, as an event"
        " source mapping would: a record passes when it matches at least one pattern.",
        "Each line is one record exactly as Lambda delivers it for --source: an SQS record"
        " with its body as a string, a Kinesis record with base64 data, a DynamoDB Streams"
        " record, a RabbitMQ message (basicProperties, redelivered, base64 data) or a"
        " redis-stream record. To try bare SQS bodies, wrap each in a record first:"
        " jq -c '{body: tojson}' for JSON bodies (one per line), jq -R -c '{body: .}' for"
        " lines of plain text.",
        "Prints KEEP or DROP, the line number and the record's id (messageId, eventID or"
        " sequence number) per record, then 'kept N, dropped M of T'. Exit status: 0; 1 when"
        " a line is not a JSON object (reported on stderr; the other lines are still judged);"
        " 2 when a pattern is invalid (AWS's error text, as CreateEventSourceMapping says it).",
    ]
)


@filter_app.command("test", help=TEST_HELP)
def filter_test(
    pattern: Annotated[
        list[str],
        typer.Option(
            "--pattern", metavar="JSON", help="a filter pattern; repeat for more filters (ORed)"
        ),
    ],
    source: Annotated[
        Source, typer.Option(help="the event source the records come from")
    ] = Source.SQS,
    max_filters: Annotated[
        int,
        typer.Option(min=1, max=HARD_MAX_FILTERS, help="the mapping's filter quota"),
    ] = DEFAULT_MAX_FILTERS,
    json_output: Annotated[
        bool, typer.Option("--json", help="one JSON object per record, then a summary")
    ] = False,
) -> None:
    """Judge stdin's records against the patterns (help: ``TEST_HELP``)."""
    try:
        check_patterns(pattern, source.kind, max_filters)
    except ApiError as exc:
        typer.echo(f"{exc.code}: {exc.message}", err=True)
        raise typer.Exit(2) from exc
    record_filter = RecordFilter(pattern, source.kind, max_filters=max_filters)
    errors = _judge(record_filter, typer.get_binary_stream("stdin"), json_output)
    kept, dropped = record_filter.kept, record_filter.filtered_out
    if json_output:
        summary = {"kept": kept, "dropped": dropped, "total": kept + dropped, "errors": errors}
        typer.echo(json.dumps(summary))
    else:
        tail = f", {errors} error{'s' if errors != 1 else ''}" if errors else ""
        typer.echo(f"kept {kept}, dropped {dropped} of {kept + dropped}{tail}")
    raise typer.Exit(1 if errors else 0)


def _judge(record_filter: RecordFilter, stream: IO[bytes], json_output: bool) -> int:
    """Print a verdict per record; the number of lines that were not records."""
    errors = 0
    for number, text, record, error in read_records(stream):
        if error is not None:
            errors += 1
            typer.echo(f"ERROR line {number}: {error}", err=True)
            continue
        keep = record_filter.keep(record)
        ident = record_id(record, text)
        if json_output:
            typer.echo(json.dumps({"line": number, "keep": keep, "id": ident}))
        else:
            typer.echo(f"{'KEEP' if keep else 'DROP'}  line {number}  {ident}")
    return errors
