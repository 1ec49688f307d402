"""Every Redis key Sluice uses, built in one place.

Keys carry a hash tag per function (``{fn}``) so that every multi-key script touches one
slot and works on Redis Cluster. ``P`` is the configurable prefix (default ``sluice``).

=================================  ======  ==================================================
key                                type    contents and lifetime
=================================  ======  ==================================================
``P:functions``                    set     names of known functions (index only; permanent)
``P:{fn}:function``                string  function configuration JSON (permanent)
``P:{fn}:reserved``                string  reserved concurrency; absent = unreserved
``P:{fn}:eic``                     hash    qualifier -> event-invoke config JSON
``P:{fn}:events``                  hash    request id -> event envelope JSON, while queued
``P:{fn}:ready``                   list    request ids ready to run (FIFO)
``P:{fn}:delayed``                 zset    request ids waiting for a retry, score = due ms
``P:{fn}:inflight``                zset    claimed request ids, score = lease expiry ms
``P:{fn}:leases``                  hash    request id -> lease token of the claimer
``P:{fn}:slots``                   zset    synchronous invocations running (RequestResponse,
                                           mapping batches): slot id, score = expiry ms
``P:{fn}:outbox``                  hash    request id -> finished outcome waiting for
                                           delivery (deleted once delivered or
                                           dead-lettered)
``P:{fn}:outbox:leases``           zset    outbox ids, score = delivery lease expiry ms
``P:{fn}:dead``                    zset    dead-letter entry ids, score = time ms
``P:{fn}:dead:entries``            hash    dead-letter entry id -> entry JSON (bounded by
                                           age and count)
``P:{fn}:stats``                   hash    counters (AsyncEventsReceived, ...)
``P:wake``                         pubsub  channel: a function name with new ready work
``P:{esm}:mappings``               hash    event-source-mapping UUID -> mapping JSON
                                           (``broker.mappings``; until deleted; the three
                                           ``{esm}`` keys share a tag so that a mapping and
                                           its indexes change in one transaction)
``P:{esm}:pairs``                  hash    JSON ``[EventSourceArn, FunctionArn]`` -> UUID:
                                           the one-mapping-per-pair index (same lifetime)
``P:{esm}:transitions``            zset    UUIDs in a transitional state (Creating,
                                           Updating, Deleting...), score = settle time ms
``P:{esm}:lease:UUID``             string  token of the ``serve`` process polling mapping
                                           UUID (expires unless renewed)
``P:{esm}:pollers``                zset    live poller managers: token -> expiry ms
``P:{esm}:stats:UUID``             hash    a mapping's counters (polled, filtered_out,
                                           invoked, failed, deleted ...); until deleted
``NAME``                           stream  a ``redis-stream:NAME`` destination (user's key,
                                           no prefix; capped by MAXLEN), or source (read
                                           only; never trimmed by Sluice)
``P:{esm}:lease:UUID:SHARD``       string  token of the ``serve`` process reading that shard
                                           of a Kinesis / DynamoDB mapping
``P:{esm}:checkpoint:UUID``        hash    a stream mapping's checkpoints: shard id -> the
                                           sequence number reading resumes after, a pinned
                                           start (``AT_TIMESTAMP:<ms>``, ``AFTER_TIME:<ms>``)
                                           or ``SHARD_END``; field ``@latest``: LATEST's
                                           pin (ms); kept while the mapping is disabled
``P:{esm}:windows:UUID``           hash    shard id -> the open tumbling window (JSON start,
                                           state) as of that shard's checkpoint
``P:{fn}:replay:intents``          hash    ``sluice dlq replay``: dead-letter entry id -> where
                                           its new event goes (target, request id)
``P:{fn}:replayed:ID``             string  replay done-mark of new event ID (TTL: dead-letter
                                           retention + 1 day): never stored twice
``P:{replays}:records``            hash    replay id -> the replay's record (``dlq history``)
``P:{replays}:index``              zset    replay ids by start time (last 1000 kept)
=================================  ======  ==================================================
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FunctionKeys:
    """The keys of one function; all share the function's hash tag."""

    function: str
    reserved: str
    eic: str
    events: str
    ready: str
    delayed: str
    inflight: str
    leases: str
    outbox: str
    outbox_leases: str
    dead: str
    dead_entries: str
    stats: str
    slots: str

    @property
    def queue(self) -> list[str]:
        """Keys of the queue scripts, in the order the Lua scripts expect them."""
        return [
            self.events,
            self.ready,
            self.delayed,
            self.inflight,
            self.leases,
            self.outbox,
            self.outbox_leases,
            self.dead,
            self.dead_entries,
            self.stats,
            self.reserved,
            self.slots,
        ]


@dataclass(frozen=True)
class Keys:
    """Builds keys under one prefix."""

    prefix: str = "sluice"

    @property
    def functions(self) -> str:
        return f"{self.prefix}:functions"

    @property
    def wake(self) -> str:
        return f"{self.prefix}:wake"

    def for_function(self, name: str) -> FunctionKeys:
        base = f"{self.prefix}:{{{name}}}"
        return FunctionKeys(
            function=f"{base}:function",
            reserved=f"{base}:reserved",
            eic=f"{base}:eic",
            events=f"{base}:events",
            ready=f"{base}:ready",
            delayed=f"{base}:delayed",
            inflight=f"{base}:inflight",
            leases=f"{base}:leases",
            outbox=f"{base}:outbox",
            outbox_leases=f"{base}:outbox:leases",
            dead=f"{base}:dead",
            dead_entries=f"{base}:dead:entries",
            stats=f"{base}:stats",
            slots=f"{base}:slots",
        )

    @staticmethod
    def user_stream(name: str) -> str:
        """The stream a ``redis-stream:NAME`` destination writes: NAME itself."""
        return name

    @property
    def mappings(self) -> str:
        """Hash: event-source-mapping UUID -> mapping JSON."""
        return f"{self.prefix}:{{esm}}:mappings"

    @property
    def mapping_pairs(self) -> str:
        """Hash: JSON ``[EventSourceArn, FunctionArn]`` -> UUID (duplicate detection)."""
        return f"{self.prefix}:{{esm}}:pairs"

    def mapping_lease(self, uuid: str) -> str:
        """String: the lease token of the process polling mapping ``uuid``."""
        return f"{self.prefix}:{{esm}}:lease:{uuid}"

    @property
    def poller_members(self) -> str:
        """Zset: poller managers that are alive, scored by heartbeat expiry in ms."""
        return f"{self.prefix}:{{esm}}:pollers"

    def mapping_stats(self, uuid: str) -> str:
        """Hash: a mapping's counters."""
        return f"{self.prefix}:{{esm}}:stats:{uuid}"

    @property
    def mapping_transitions(self) -> str:
        """Zset: UUIDs of mappings in a transitional state, scored by settle time in ms."""
        return f"{self.prefix}:{{esm}}:transitions"

    def mapping_checkpoint(self, uuid: str) -> str:
        """Hash: shard id -> sequence number a stream mapping resumes after."""
        return f"{self.prefix}:{{esm}}:checkpoint:{uuid}"

    def mapping_windows(self, uuid: str) -> str:
        """Hash: shard id -> the open tumbling window (JSON: start, state) at the checkpoint."""
        return f"{self.prefix}:{{esm}}:windows:{uuid}"

    def shard_lease(self, uuid: str, shard_id: str) -> str:
        """String: the lease token of the process reading shard ``shard_id`` of mapping
        ``uuid`` (Kinesis, DynamoDB Streams)."""
        return f"{self.prefix}:{{esm}}:lease:{uuid}:{shard_id}"
