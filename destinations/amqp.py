"""``amqp://user:pass@host:port/vhost?exchange=X&routing_key=Y``: publish the record (as a
DLQ: the original event, with the §6 fields as headers) through kombu with publisher
confirms, so a delivery counts only once the broker has taken it."""

from __future__ import annotations

import asyncio
import threading
from typing import Any
from urllib.parse import parse_qs, urlsplit, urlunsplit

from kombu.connection import Connection

from broker.destination import Delivery, DestinationContext
from broker.errors import DeliveryError


class AmqpDestination:
    def __init__(self, target: str, context: DestinationContext) -> None:
        parts = urlsplit(target)
        query = parse_qs(parts.query)
        self.target = parts._replace(netloc=parts.hostname or "").geturl()  # no password
        self.url = urlunsplit(parts._replace(query=""))
        self.exchange = query.get("exchange", [""])[0]
        self.routing_key = query.get("routing_key", [""])[0]
        self._connection: Any = None
        self._lock = threading.Lock()  # kombu connections are not thread-safe

    def _publish(self, delivery: Delivery) -> None:
        if delivery.kind == "dead_letter":
            body = delivery.payload
            headers = {
                "RequestID": delivery.request_id,
                "ErrorCode": delivery.error_code,
                "ErrorMessage": delivery.error_message,
            }
        else:
            body = delivery.record_text()
            headers = {"X-Sluice-Request-Id": delivery.request_id}
        with self._lock:
            if self._connection is None:
                self._connection = Connection(  # type: ignore[no-untyped-call]
                    self.url, transport_options={"confirm_publish": True}, connect_timeout=5
                )
            try:
                producer = self._connection.Producer()
                producer.publish(
                    body,
                    exchange=self.exchange,
                    routing_key=self.routing_key,
                    content_type="application/json",
                    content_encoding="utf-8",
                    headers=headers,
                    delivery_mode=2,  # persistent
                    retry=False,  # the deliverer retries
                )
            except Exception:
                self._connection.release()  # start afresh next time
                self._connection = None
                raise

    async def deliver(self, delivery: Delivery) -> None:
        try:
            await asyncio.to_thread(self._publish, delivery)
        except Exception as exc:  # kombu/amqp raise many types; all mean "not delivered"
            raise DeliveryError(f"{self.target}: {exc!r}") from exc

    async def close(self) -> None:
        if self._connection is not None:
            await asyncio.to_thread(self._connection.release)
            self._connection = None
