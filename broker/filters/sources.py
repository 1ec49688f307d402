"""What a filter sees of a record, per event source (spec §10.4), and which records pass.

A poller hands :class:`RecordFilter` each record exactly as Lambda delivers it to the
function; the filter builds the record's matchable document (the record's own fields, never
``eventSource``, ``eventSourceARN`` or ``awsRegion``, which are attached after filtering),
decodes the source's data field when some pattern looks at it, and asks a
:class:`~broker.filters.match.FilterSet`. The record itself is never changed: a record that
passes is delivered as it came (Kinesis ``data`` still base64, SQS ``body`` still a string,
§10.5).

=============  ===========  ==========================================================
source         data key     matchable document
=============  ===========  ==========================================================
sqs            ``body``     the record (text, or JSON when an object/array)
kinesis        ``data``     the ``kinesis`` object's fields + eventID/Name/Version
dynamodb       ``dynamodb`` eventID, eventName, eventVersion, dynamodb, userIdentity
rabbitmq       ``data``     basicProperties, redelivered, data (base64 → UTF-8 text/JSON)
redis-stream   ``data``     the ``redisStream`` object's fields + eventID/Name/Version
=============  ===========  ==========================================================

Text or JSON (SQS and RabbitMQ). A data pattern that is an object wants JSON; a rules array
wants text. Each reference to the data key (top level, or in a top-level ``$or`` branch) is
classified once, when the filter is built, and one variant of every pattern is compiled per
form the data can take (JSON, text, undecodable). On a mismatch SQS drops (the reference is
renamed to a key whose document value is ``UNDECODABLE``, so it fails every rule), while
RabbitMQ ignores the data rules (the reference is removed; a pattern left empty matches
everything). Each record's data is decoded once and picks its variant.

Redis Streams record shape (a Sluice source, Kinesis-like; one stream entry)::

    {
        "eventSource": "sluice:redis-stream",
        "eventSourceARN": "redis-stream:NAME",
        "eventID": "NAME:1700000000000-0",
        "eventName": "sluice:redis-stream:record",
        "eventVersion": "1.0",
        "redisStream": {
            "streamName": "NAME",
            "entryId": "1700000000000-0",
            "sequenceNumber": "1700000000000-0",
            "approximateArrivalTimestamp": 1700000000.0,
            "fields": {"other": "entry fields, as strings"},
            "data": "<base64 of the entry's data field>"
        }
    }

Filters see the ``redisStream`` fields at the top level plus ``eventID``, ``eventName`` and
``eventVersion``; ``data`` is base64-decoded and JSON-parsed as for Kinesis.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from broker.filters.compile import JsonNumber, load_json
from broker.filters.match import (
    DEFAULT_MAX_FILTERS,
    UNDECODABLE,
    FilterSet,
    Loads,
    decode_base64_data,
    decode_data,
)

if TYPE_CHECKING:
    from broker.mappings.model import SourceKind

__all__ = ["RecordFilter"]

Record = Mapping[str, Any]
R = TypeVar("R", bound=Record)
Document = dict[str, Any]

# Attached by Lambda after filtering: never matchable (§10.4, EventBridge Pipes semantics).
_ATTACHED = frozenset({"eventSource", "eventSourceARN", "awsRegion"})
_STREAM_ENVELOPE = ("eventID", "eventName", "eventVersion")  # stream record keys filters see
_JSON, _TEXT, _NONE = 0, 1, 2  # the forms a decoded text-or-JSON data field takes
_OR = "$or"


def _decode_text(data: Any, loads: Loads) -> Any:
    """SQS ``body``: parsed JSON when it is an object or array, else the text itself."""
    return decode_data(data, loads) if isinstance(data, str) else UNDECODABLE


def _decode_base64_text(data: Any, loads: Loads) -> Any:
    """RabbitMQ ``data``: base64, UTF-8, then JSON (object or array) or the plain text."""
    if not isinstance(data, str):
        return UNDECODABLE
    try:
        text = base64.b64decode(data, validate=True).decode()
    except (binascii.Error, ValueError):  # bad base64, non-ASCII input, not UTF-8
        return UNDECODABLE
    return decode_data(text, loads)


def _decode_base64_json(data: Any, loads: Loads) -> Any:
    """Kinesis / Redis Streams ``data``: base64 then JSON; anything else is undecodable."""
    return decode_base64_data(data, loads) if isinstance(data, str) else UNDECODABLE


@dataclass(frozen=True, slots=True)
class _Source:
    data_key: str
    # What decodes the data field (None: it is already JSON, as DynamoDB's is).
    decode: Callable[[Any, Loads], Any] | None
    # SQS and RabbitMQ data is text or JSON: on a kind mismatch, "drop" fails the rules that
    # look at it, "ignore" evaluates the pattern without them. None: data is JSON only.
    mismatch: Literal["drop", "ignore"] | None = None
    lift: str | None = None  # a sub-object whose fields are the document's top level
    allowed: frozenset[str] | None = None  # the top-level keys kept (None: all but _ATTACHED)


_SOURCES: Mapping[str, _Source] = {
    "sqs": _Source("body", _decode_text, mismatch="drop"),
    "kinesis": _Source("data", _decode_base64_json, lift="kinesis"),
    "dynamodb": _Source(
        "dynamodb",
        None,
        allowed=frozenset({*_STREAM_ENVELOPE, "dynamodb", "userIdentity"}),
    ),
    "rabbitmq": _Source(
        "data",
        _decode_base64_text,
        mismatch="ignore",
        allowed=frozenset({"basicProperties", "redelivered", "data"}),
    ),
    "redis-stream": _Source("data", _decode_base64_json, lift="redisStream"),
}


class RecordFilter:
    """A mapping's filters applied to records of one source: ``keep(record)`` says whether a
    record goes to the function; ``kept`` and ``filtered_out`` count the answers (the latter
    is ``FilteredOutEventCount``). No patterns: every record passes, nothing is decoded.

    Patterns are validated and compiled here, once (``InvalidParameterValueError`` for an
    invalid one or more than ``max_filters``); ``source`` is a ``SourceKind`` or its value.
    """

    __slots__ = (
        "_data_key",
        "_decode",
        "_document",
        "_fail_key",
        "_filters",
        "_loads",
        "filtered_out",
        "kept",
        "patterns",
        "source",
    )

    def __init__(
        self,
        patterns: Sequence[str],
        source: SourceKind | str,
        *,
        max_filters: int = DEFAULT_MAX_FILTERS,
    ) -> None:
        name = str(source)  # SourceKind is a StrEnum: its str() is its value
        spec = _SOURCES.get(name)
        if spec is None:
            raise ValueError(f"unknown event source {name!r}; expected one of {sorted(_SOURCES)}")
        self.source = name
        self.patterns = tuple(patterns)
        self.kept = 0
        self.filtered_out = 0
        self._data_key = spec.data_key
        self._fail_key: str | None = None
        # Validates every pattern and the quota; also the answer whenever data is not decoded.
        plain = FilterSet(self.patterns, max_filters=max_filters)
        parsed: list[dict[str, Any]] = [load_json(pattern) for pattern in self.patterns]
        keys: set[str] = set().union(*(_top_keys(pattern) for pattern in parsed))
        reads_data = spec.data_key in keys and spec.decode is not None
        self._decode = spec.decode if reads_data else None
        self._loads = plain.loads  # exact number text only when a literal number rule reads it
        self._document = _document_builder(spec, keys, copy=reads_data)
        self._filters: tuple[FilterSet, ...] = (plain,)
        if reads_data and spec.mismatch is not None:
            self._filters = self._variants(parsed, spec, keys, max_filters)

    def _variants(
        self, parsed: list[dict[str, Any]], spec: _Source, keys: set[str], max_filters: int
    ) -> tuple[FilterSet, ...]:
        """One compiled filter set per data form (JSON, text, undecodable): in each, the data
        references of the other kinds are failed (SQS) or removed (RabbitMQ)."""
        key = spec.data_key
        # ``forms[_JSON]``, ``forms[_TEXT]``, ``forms[_NONE]``: the data-pattern kinds that
        # do not fit data of that form (dict: an object, list: a rules array).
        if spec.mismatch == "drop":
            # A key no pattern names; its document value is UNDECODABLE. Four characters,
            # like "body", so a rewritten pattern is never longer than the original.
            self._fail_key = fail = next(k for k in _fail_key_candidates() if k not in keys)
            forms = [(list,), (dict,), ()]  # undecodable data already fails every rule
        else:
            fail = None
            forms = [(list,), (dict,), (dict, list)]
        variants = []
        for kinds in forms:
            texts = [
                _dump(rewritten) if (rewritten := _rewrite(p, key, kinds, fail)) != p else text
                for p, text in zip(parsed, self.patterns, strict=True)
            ]
            variants.append(FilterSet(texts, max_filters=max_filters))
        return tuple(variants)

    @property
    def empty(self) -> bool:
        """No filters: every record passes."""
        return not self.patterns

    def keep(self, record: Record) -> bool:
        """Does ``record`` (one record as Lambda delivers it) pass at least one filter?"""
        if not self.patterns:
            self.kept += 1
            return True
        document = self._document(record)
        filters = self._filters[0]
        decode = self._decode
        if decode is not None:
            value = decode(document.get(self._data_key), self._loads)
            document[self._data_key] = value
            if len(self._filters) > 1:
                form = _NONE if value is UNDECODABLE else _TEXT if type(value) is str else _JSON
                filters = self._filters[form]
                if self._fail_key is not None:
                    document[self._fail_key] = UNDECODABLE
        if filters.matches(document):
            self.kept += 1
            return True
        self.filtered_out += 1
        return False

    def split(self, records: Iterable[R]) -> tuple[list[R], list[R]]:
        """``(kept, dropped)``, each in the order given."""
        kept: list[R] = []
        dropped: list[R] = []
        for record in records:
            (kept if self.keep(record) else dropped).append(record)
        return kept, dropped


def _document_builder(spec: _Source, keys: set[str], *, copy: bool) -> Callable[[Record], Any]:
    """The function making a record's matchable document. It returns the record itself only
    when no pattern names a key the document leaves out and the data is not decoded (the
    decoded value goes into a new dict, never into the caller's record)."""
    if spec.lift is not None:
        return _lifted(spec.lift)
    if spec.allowed is not None:
        allowed = spec.allowed
        if copy or keys - allowed:
            return lambda record: {k: record[k] for k in allowed if k in record}
    elif copy or keys & _ATTACHED:
        return lambda record: {k: v for k, v in record.items() if k not in _ATTACHED}
    return lambda record: record


def _lifted(sub_key: str) -> Callable[[Record], Document]:
    """Stream records: the ``sub_key`` object's fields at the top level, plus the envelope."""

    def build(record: Record) -> Document:
        sub = record.get(sub_key)
        document: Document = dict(sub) if isinstance(sub, dict) else {}
        for key in _STREAM_ENVELOPE:
            if key in record:
                document[key] = record[key]
        return document

    return build


def _top_keys(pattern: dict[str, Any]) -> set[str]:
    """The document keys a pattern looks up at the top level, ``$or`` branches included."""
    keys: set[str] = set()
    for key, value in pattern.items():
        if key == _OR:
            for branch in value:
                keys |= _top_keys(branch)
        else:
            keys.add(key)
    return keys


def _rewrite(
    pattern: dict[str, Any], key: str, kinds: tuple[type, ...], rename: str | None
) -> dict[str, Any]:
    """``pattern`` with each top-level ``key`` whose pattern is one of ``kinds`` (``dict``:
    an object, ``list``: a rules array) renamed to ``rename``, or removed when that is None.
    ``$or`` branches are at the same level and rewritten too; a branch left empty always
    holds, so its whole group goes."""
    out: dict[str, Any] = {}
    for name, value in pattern.items():
        if name == key and isinstance(value, kinds):
            if rename is not None:
                out[rename] = value
            continue
        if name == _OR:
            branches = [_rewrite(branch, key, kinds, rename) for branch in value]
            if not all(branches):
                continue
            value = branches
        out[name] = value
    return out


def _fail_key_candidates() -> Iterable[str]:
    # 4,096 names; ten patterns of 4,096 characters cannot name them all as top-level keys.
    return (f"\x7f{n:03x}" for n in range(16**3))


def _dump(value: Any) -> str:
    """JSON text of a pattern read by ``load_json``: numbers keep their token text, and
    the text is never longer than the pattern it was read from (compact, minimal escapes)."""
    if isinstance(value, dict):
        return "{" + ",".join(f"{_dump(k)}:{_dump(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list):
        return "[" + ",".join(_dump(item) for item in value) + "]"
    if isinstance(value, JsonNumber):
        return value.text
    return json.dumps(value, ensure_ascii=False)
