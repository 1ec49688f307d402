"""Re-reading a failed stream batch by its sequence range: the seam between the dead-letter
replay (core) and the stream sources (the ``pollers`` package, resolved by
:func:`broker.wiring.default_stream_rereader`).

A ``stream_batch_failed`` entry names its range in ``entry["source"]``: ``eventSourceArn``,
``mappingUuid``, ``shardId``, ``startSequenceNumber`` and ``endSequenceNumber``. While the
stream still keeps the whole range, a replay sends what a re-read gives (the records as the
poller delivers them, through the mapping's current filters); otherwise it falls back to
the event stored with the entry.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

__all__ = ["Reread", "StreamRereader"]


@dataclass(frozen=True)
class Reread:
    """What a re-read found. ``records`` None: the stream no longer keeps the range, or it
    could not be read; ``reason`` says why (shown in the dry-run plan). An empty list: the
    range was read but the mapping's current filters keep none of it (``reason`` says so)."""

    records: list[dict[str, Any]] | None
    reason: str = ""


class StreamRereader(Protocol):
    """Reads a failed batch's range again. Never raises for a source's failure: an
    unreadable range is a :class:`Reread` with ``records`` None and a reason."""

    async def reread(self, source: Mapping[str, Any]) -> Reread:
        """The records of ``source`` (an entry's ``source``), start and end inclusive."""
        ...

    async def close(self) -> None:
        """Release the clients opened for re-reads."""
        ...
