"""Tumbling windows of a stream shard (spec §9.2): the open window and its state, and what
a window's invocation carries besides ``Records``."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from broker.records import iso_s

__all__ = ["STATE_LIMIT_BYTES", "Window"]

STATE_LIMIT_BYTES = 1024 * 1024  # a window's state per shard; past it the window ends early


@dataclass
class Window:
    """A shard's open tumbling window: its start (None: none open) and the state the last
    invocation returned."""

    size_s: int
    start: float | None = None
    state: dict[str, Any] = field(default_factory=dict)

    def dumps(self) -> str:
        return json.dumps({"start": self.start, "state": self.state})

    @classmethod
    def loads(cls, raw: bytes | str | None, size_s: int) -> Window:
        if raw is None:
            return cls(size_s)
        saved = json.loads(raw)
        return cls(size_s, saved.get("start"), saved.get("state") or {})

    @property
    def end(self) -> float | None:
        return None if self.start is None else self.start + self.size_s

    def fields(self, shard_id: str, stream_arn: str, final: bool, early: bool) -> dict[str, Any]:
        """What a window's invocation carries besides ``Records`` (spec §9.2)."""
        start = self.start or 0.0
        return {
            "window": {"start": iso_s(start), "end": iso_s(start + self.size_s)},
            "state": self.state,
            "shardId": shard_id,
            "eventSourceARN": stream_arn,
            "isFinalInvokeForWindow": final,
            "isWindowTerminatedEarly": early,
        }
