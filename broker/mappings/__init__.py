"""Event source mappings: the configuration API (spec §7), its validation and its store.

:class:`MappingService` is what the HTTP routes and the pollers use; ``model`` holds the
request shapes, the stored model and the per-source field tables; ``validate`` the rules.
"""

from __future__ import annotations

from broker.mappings.model import (
    NO_POLLER_RESULT,
    SOURCE_TYPES,
    EventSourceMapping,
    MappingConfig,
    SourceKind,
    State,
)
from broker.mappings.service import (
    FunctionExists,
    MappingService,
    ResourceInUseError,
    SourceCheck,
    function_checker,
)
from broker.mappings.validate import validate_filter_pattern

__all__ = [
    "NO_POLLER_RESULT",
    "SOURCE_TYPES",
    "EventSourceMapping",
    "FunctionExists",
    "MappingConfig",
    "MappingService",
    "ResourceInUseError",
    "SourceCheck",
    "SourceKind",
    "State",
    "function_checker",
    "validate_filter_pattern",
]
