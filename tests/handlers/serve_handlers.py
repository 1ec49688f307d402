"""Handlers for tests/test_serve_processes.py, run by the python workers of `sluice serve`.

They report what ran, where and how many at once to the Redis at ``SLUICE_TEST_REDIS_URL``
(set by the test in the serve process's environment), under keys that start with the
event's ``ns``, so every test reads only its own keys.
"""

from __future__ import annotations

import os
import time
from typing import Any

import redis

# INCR the "running now" counter and keep the highest value it has reached.
_ENTER = """
local now = redis.call('INCR', KEYS[1])
if now > tonumber(redis.call('GET', KEYS[2]) or '0') then
  redis.call('SET', KEYS[2], now)
end
return now
"""

_client: redis.Redis | None = None
_serve_pid: int | None = None


def _redis() -> redis.Redis:
    """One connection per worker process, made on first use (workers are forked later)."""
    global _client
    if _client is None:
        _client = redis.Redis.from_url(
            os.environ["SLUICE_TEST_REDIS_URL"], client_name="serve-handler"
        )
    return _client


def serve_pid() -> int:
    """The `sluice serve` process running this worker: the worker's parent is the
    multiprocessing forkserver, whose parent is the serve process."""
    global _serve_pid
    if _serve_pid is None:
        with open(f"/proc/{os.getppid()}/status") as status:
            for line in status:
                if line.startswith("PPid:"):
                    _serve_pid = int(line.split()[1])
                    break
        assert _serve_pid is not None
    return _serve_pid


def record(event: dict[str, Any], context: Any) -> None:
    """Append the request id to list ``NS:ran`` (one entry per execution), then sleep."""
    _redis().rpush(f"{event['ns']}:ran", context.aws_request_id)
    time.sleep(float(event.get("sleep_s", 0)))


def exclusive(event: dict[str, Any], context: Any) -> None:
    """Watch for overlap while sleeping ``sleep_s``:

    * ``NS:violations``: calls that found their request id already running (SET NX failed);
    * ``NS:concurrent`` / ``NS:max``: calls running now, and the most there ever were;
    * ``NS:pids``: calls run per serve process (hash pid -> count); ``NS:ran``: one entry
      per execution.
    """
    client = _redis()
    ns, request_id = event["ns"], context.aws_request_id
    running = f"{ns}:running:{request_id}"
    if not client.set(running, serve_pid(), nx=True):
        client.incr(f"{ns}:violations")
    client.eval(_ENTER, 2, f"{ns}:concurrent", f"{ns}:max")
    try:
        time.sleep(float(event.get("sleep_s", 0)))
    finally:
        client.decr(f"{ns}:concurrent")
        client.delete(running)
    client.hincrby(f"{ns}:pids", str(serve_pid()), 1)
    client.rpush(f"{ns}:ran", request_id)
