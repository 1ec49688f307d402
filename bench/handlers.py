"""No-op handlers shared by the Sluice and rq benchmarks.

Sluice calls ``handler(event, context)`` in its ``python:`` worker processes; rq calls the
same function with the arguments it was enqueued with (``noop({}, None)``).
"""

from __future__ import annotations

import time
from typing import Any


def noop(event: Any = None, context: Any = None) -> dict[str, bool]:
    """Does nothing; returns a tiny dict."""
    return {"ok": True}


def stamp(event: Any = None, context: Any = None) -> dict[str, float]:
    """Returns the wall-clock time at which the handler started."""
    return {"t": time.time()}
