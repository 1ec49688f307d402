"""Event filtering (spec §10): compile patterns once, then match records against them."""

from broker.filters.compile import (
    INVALID_PATTERN,
    JsonNumber,
    ObjectMatcher,
    compile_pattern,
    load_json,
)
from broker.filters.match import (
    DEFAULT_MAX_FILTERS,
    HARD_MAX_FILTERS,
    UNDECODABLE,
    FilterSet,
    decode_base64_data,
    decode_data,
    load_event,
    load_event_fast,
    match_object,
)
from broker.filters.sources import RecordFilter

__all__ = [
    "DEFAULT_MAX_FILTERS",
    "HARD_MAX_FILTERS",
    "INVALID_PATTERN",
    "UNDECODABLE",
    "FilterSet",
    "JsonNumber",
    "ObjectMatcher",
    "RecordFilter",
    "compile_pattern",
    "decode_base64_data",
    "decode_data",
    "load_event",
    "load_event_fast",
    "load_json",
    "match_object",
]
