"""``rq:QUEUE?func=pkg.module.func``: an RQ job ``func(record)`` on queue QUEUE, for
existing RQ workers. rq's keys carry no hash tags, so with Redis Cluster give rq its own
plain Redis (setting ``rq_redis_url``); by default it uses Sluice's Redis."""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import parse_qs

import redis
from rq import Queue

from broker.destination import Delivery, DestinationContext
from broker.errors import DeliveryError, PermanentDeliveryError

_CONNECTION_KEYS = ("host", "port", "db", "username", "password", "unix_socket_path")


def _sync_client(context: DestinationContext) -> redis.Redis:
    url = context.options.get("rq_redis_url")
    if url:
        return redis.Redis.from_url(str(url))
    kwargs: dict[str, Any] = context.redis.connection_pool.connection_kwargs
    return redis.Redis(**{k: v for k, v in kwargs.items() if k in _CONNECTION_KEYS})


class RqDestination:
    def __init__(self, target: str, context: DestinationContext) -> None:
        rest = target.split(":", 1)[1]
        name, _, query = rest.partition("?")
        func = parse_qs(query).get("func", [""])[0]
        if not name or "." not in func:
            raise PermanentDeliveryError(f"{target}: expected rq:QUEUE?func=pkg.module.function")
        self.target = target
        self.func = func
        self.queue = Queue(name, connection=_sync_client(context))

    def _enqueue(self, delivery: Delivery) -> None:
        argument: Any = delivery.record
        if delivery.kind == "dead_letter":
            argument = {
                "payload": delivery.payload,
                "RequestID": delivery.request_id,
                "ErrorCode": delivery.error_code,
                "ErrorMessage": delivery.error_message,
            }
        self.queue.enqueue(
            self.func,
            argument,
            description=f"sluice {delivery.kind} {delivery.request_id}",
            meta={"sluice_request_id": delivery.request_id},
        )

    async def deliver(self, delivery: Delivery) -> None:
        try:
            await asyncio.to_thread(self._enqueue, delivery)
        except redis.RedisError as exc:
            raise DeliveryError(f"{self.target}: {exc!r}") from exc

    async def close(self) -> None:
        self.queue.connection.close()
