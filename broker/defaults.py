"""Every default of Sluice in one place, one line of meaning each (AWS figures per the spec)."""

from __future__ import annotations

REGION = "us-east-1"  # AWS region used in ARNs
ACCOUNT_ID = "000000000000"  # account id used in ARNs
API_HOST = "127.0.0.1"  # where `sluice serve` listens
API_PORT = 9070  # port of the Lambda-compatible API
KEY_PREFIX = "sluice"  # prefix of every Redis key

RETRY_BASE_DELAY_S = 60.0  # function-error retry n waits base * n (AWS: 60 s, 120 s)
THROTTLE_BASE_DELAY_S = 1.0  # throttles/system errors back off base * 2^k ...
THROTTLE_MAX_DELAY_S = 300.0  # ... capped at five minutes
THROTTLE_JITTER = 0.1  # +/- 10 % jitter on throttle back-off

MAXIMUM_RETRY_ATTEMPTS = 2  # event-invoke config default (range 0-2)
MAXIMUM_EVENT_AGE_S = 21_600  # event-invoke config default (range 60-21600)

FUNCTION_TIMEOUT_S = 3  # Lambda's default function timeout
FUNCTION_MEMORY_MB = 128  # Lambda's default memory size
VISIBILITY_GRACE_S = 30.0  # in-flight lease = function timeout + this, extended while running

ASYNC_PAYLOAD_LIMIT_BYTES = 1_048_576  # Event invoke limit since Oct 2025 (262144 before)
SYNC_PAYLOAD_LIMIT_BYTES = 6_291_456  # RequestResponse request limit
SYNC_RESPONSE_LIMIT_BYTES = 6_291_556  # RequestResponse response limit

CONCURRENCY = 64  # invocations one process runs (or holds queued) at once
WORKER_PROCESSES = 0  # python: invoker processes; 0 means one per CPU
CLAIM_BATCH = 256  # most events one claim takes from one function
POLL_INTERVAL_S = 0.2  # idle re-check of delayed retries and other processes' work
MAX_QUEUE_DEPTH = 100_000  # admission cap of queued events per function
MAXMEMORY_ADMISSION_RATIO = 0.9  # refuse new events above this share of Redis maxmemory

DELIVERY_RETRIES = 3  # attempts of one destination delivery before it is dead-lettered
DELIVERY_LEASE_S = 60.0  # an outbox entry unacknowledged this long is reclaimed
DEAD_LETTER_MAX_AGE_S = 14 * 86_400  # dead-letter store keeps entries this long ...
DEAD_LETTER_MAX_COUNT = 100_000  # ... and at most this many per function
DRAIN_TIMEOUT_S = 30.0  # SIGTERM: the whole drain of `serve` (API, replays, pollers, events)
# After the drain budget, the fixed waits of stopping what did not finish, at worst: a
# background replay 5 s, pollers 10 s (a hung refresh, then lease release), the dispatcher
# 10 s (killing calls, cancelling deliveries), background tasks 5 s. A container's stop
# timeout should cover drain_timeout_s + this.
SHUTDOWN_CLEANUP_S = 30.0
REDIS_STREAM_MAXLEN = 100_000  # approximate MAXLEN of redis-stream destinations
