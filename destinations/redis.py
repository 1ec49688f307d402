"""``redis-stream:NAME``: XADD each record to stream NAME on Sluice's Redis."""

from __future__ import annotations

from collections.abc import Sequence

from redis.exceptions import RedisError

from broker import defaults
from broker.destination import Delivery, DestinationContext
from broker.errors import DeliveryError
from broker.keys import Keys


class RedisStreamDestination:
    """Entries carry ``record`` (the invocation record JSON), ``requestId`` and ``condition``;
    dead-letter deliveries carry the original ``payload`` and error fields instead."""

    def __init__(self, target: str, context: DestinationContext) -> None:
        self.stream = Keys.user_stream(target.split(":", 1)[1])
        self.redis = context.redis
        self.maxlen = int(context.options.get("redis_stream_maxlen", defaults.REDIS_STREAM_MAXLEN))

    @staticmethod
    def fields(delivery: Delivery) -> dict[str, str]:
        if delivery.kind == "dead_letter":
            return {
                "payload": delivery.payload,
                "RequestID": delivery.request_id,
                "ErrorCode": str(delivery.error_code),
                "ErrorMessage": delivery.error_message,
            }
        return {
            "record": delivery.record_text(),
            "requestId": delivery.request_id,
            "condition": delivery.condition,
        }

    async def deliver(self, delivery: Delivery) -> None:
        (error,) = await self.deliver_many([delivery])
        if error is not None:
            raise error

    async def deliver_many(self, deliveries: Sequence[Delivery]) -> list[BaseException | None]:
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for delivery in deliveries:
                    pipe.xadd(
                        self.stream,
                        self.fields(delivery),  # type: ignore[arg-type]
                        maxlen=self.maxlen,
                        approximate=True,
                    )
                await pipe.execute()
        except RedisError as exc:
            error = DeliveryError(f"XADD to {self.stream} failed: {exc}")
            return [error for _ in deliveries]
        return [None for _ in deliveries]

    async def close(self) -> None:
        return None
