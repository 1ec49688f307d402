"""An emulator embedding Sluice: its own function runtime and its own destination kind.

    python examples/embed_emulator.py [REDIS_URL]

Redis comes from the argument or ``SLUICE_REDIS_URL``; with neither, Sluice's embedded
in-process Redis. The program

* runs its functions itself: ``emu:NAME`` targets call the Python callables below
  (``callable_invoker``), added to Sluice's built-in ``python:``, ``http(s)://``, ``lambda:``;
* receives outcomes itself: ``emu:NAME`` destinations put invocation records into its inbox
  (``EmuDestination``), added to Sluice's built-in SQS, SNS, webhook, Redis stream...;
* configures Sluice with AWS's shapes: an event-invoke config (OnSuccess and OnFailure to
  the inbox) and an event source mapping from a Redis stream, through ``Broker``;
* invokes asynchronously and through the mapping, waits for the records, and stops, leaving
  no task, thread or Redis connection behind.

``sync_main`` does the same with ``SyncBroker``, for a program that is not asyncio.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import sys
import time
from typing import Any

import structlog

from broker import Broker, Delivery, DestinationContext, Settings, SyncBroker, callable_invoker

Inbox = dict[str, list[dict[str, Any]]]  # destination NAME -> the records it received


# -- the emulator's functions: plain (run in a thread) or async (run on the loop) ------------
def greet(event: dict[str, Any], context: Any) -> dict[str, str]:
    if event.get("fail"):
        raise ValueError(f"{event['name']} asked to fail")
    return {"greeting": f"hello {event['name']}", "requestId": context.aws_request_id}


async def ingest(event: dict[str, Any], context: Any) -> None:
    """A batch of ``redis-stream:`` records; an order asking to fail fails the batch."""
    for record in event["Records"]:
        order = json.loads(base64.b64decode(record["redisStream"]["data"]))
        if order.get("fail"):
            raise RuntimeError(f"order {order['id']} asked to fail")


FUNCTIONS = callable_invoker({"greet": greet, "ingest": ingest})  # emu:greet, emu:ingest


# -- the emulator's destination: emu:NAME -----------------------------------------------------
class EmuDestination:
    """Delivers invocation records to ``inbox[NAME]`` (a real emulator would put them on its
    own queue or topic); raising ``DeliveryError`` would make Sluice retry."""

    def __init__(self, inbox: Inbox, target: str) -> None:
        self.records = inbox.setdefault(target.removeprefix("emu:"), [])

    async def deliver(self, delivery: Delivery) -> None:
        self.records.append(delivery.record)

    async def close(self) -> None:
        return None


def settings(redis_url: str | None) -> Settings:
    return Settings(
        redis_url=redis_url,
        check_event_sources=False,  # an emulator's sources are its own, not AWS's
        poller_refresh_s=0.2,  # mapping changes apply within this (default 1 s)
        stream_read_block_s=0.2,  # XREAD BLOCK: how soon a stop is noticed (default 1 s)
    )


EVENT_INVOKE_CONFIG = {
    "MaximumRetryAttempts": 0,
    "DestinationConfig": {
        "OnSuccess": {"Destination": "emu:succeeded"},
        "OnFailure": {"Destination": "emu:failed"},
    },
}
MAPPING = {
    "FunctionName": "ingest",
    "EventSourceArn": "redis-stream:orders",  # the Redis stream named "orders"
    "StartingPosition": "TRIM_HORIZON",
    "MaximumRetryAttempts": 0,
    "DestinationConfig": {"OnFailure": {"Destination": "emu:failed"}},
}


async def main(redis_url: str | None = None) -> Inbox:
    """Configure, invoke, wait for 1 success and 2 failure records, stop; the inbox."""
    inbox: Inbox = {}

    def emu_destination(target: str, context: DestinationContext) -> EmuDestination:
        return EmuDestination(inbox, target)

    broker = Broker.from_settings(  # it opens the Redis client, and closes it on stop
        settings(redis_url),
        extra_invokers={"emu": FUNCTIONS},
        extra_destinations={"emu": emu_destination},
    )
    async with broker:
        await broker.put_function("greet", "emu:greet")
        await broker.put_event_invoke_config("greet", EVENT_INVOKE_CONFIG)
        await broker.put_function("ingest", "emu:ingest")
        mapping = await broker.create_event_source_mapping(MAPPING)

        await broker.invoke_async("greet", {"name": "world"})  # -> emu:succeeded
        await broker.invoke_async("greet", {"name": "nobody", "fail": True})  # -> emu:failed
        await broker.redis.xadd("orders", {"data": json.dumps({"id": 7, "fail": True})})

        async with asyncio.timeout(30):
            while len(inbox.get("succeeded", [])) < 1 or len(inbox.get("failed", [])) < 2:
                await asyncio.sleep(0.05)
        await broker.delete_event_source_mapping(mapping["UUID"])
    return inbox


def sync_main(redis_url: str | None = None) -> Inbox:
    """The same emulator without asyncio: ``SyncBroker`` runs Sluice on a thread of its own."""
    inbox: Inbox = {}
    with SyncBroker(
        settings(redis_url),
        extra_invokers={"emu": FUNCTIONS},
        extra_destinations={"emu": lambda target, _: EmuDestination(inbox, target)},
    ) as sluice:
        sluice.put_function("greet", "emu:greet")
        sluice.put_event_invoke_config("greet", EVENT_INVOKE_CONFIG)
        print(sluice.invoke("greet", {"name": "now"}).payload)  # RequestResponse
        sluice.invoke_async("greet", {"name": "later"})
        deadline = time.monotonic() + 30
        while not inbox.get("succeeded") and time.monotonic() < deadline:
            time.sleep(0.05)
    return inbox


def show(inbox: Inbox) -> None:
    for name, records in sorted(inbox.items()):
        for record in records:
            context = record["requestContext"]
            print(f"emu:{name}", context["condition"], json.dumps(record.get("responsePayload")))


if __name__ == "__main__":  # guarded: python: targets start worker processes (forkserver)
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    url = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("SLUICE_REDIS_URL")
    show(asyncio.run(main(url)))
    show(sync_main(url))
