"""``http(s)://``: POST the record as JSON to a webhook; 5xx and 429 are retried (honouring
``Retry-After``) by the deliverer, other 4xx are permanent."""

from __future__ import annotations

import httpx

from broker.destination import Delivery, DestinationContext, redacted
from broker.errors import DeliveryError, PermanentDeliveryError


class WebhookDestination:
    def __init__(self, target: str, context: DestinationContext) -> None:
        self.url = target
        self.shown = redacted(target)  # for messages: they end up in logs and dead letters
        self.timeout_s = float(context.options.get("webhook_timeout_s", 10.0))
        self._client = httpx.AsyncClient(timeout=self.timeout_s)

    async def deliver(self, delivery: Delivery) -> None:
        headers = {
            "Content-Type": "application/json",
            "X-Sluice-Request-Id": delivery.request_id,
            "X-Sluice-Delivery-Kind": delivery.kind,
        }
        if delivery.kind == "dead_letter":
            body = delivery.payload
            headers["X-Sluice-Error-Code"] = str(delivery.error_code)
            headers["X-Sluice-Error-Message"] = delivery.error_message.encode(
                "ascii", "backslashreplace"
            ).decode()[:1024]
        else:
            body = delivery.record_text()
        try:
            response = await self._client.post(self.url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            detail = repr(exc).replace(self.url, self.shown)
            raise DeliveryError(f"POST {self.shown} failed: {detail}") from exc
        if response.status_code < 300:
            return
        message = f"POST {self.shown} answered {response.status_code}"
        if response.status_code == 429 or response.status_code >= 500:
            raise DeliveryError(
                message, retry_after_s=_seconds(response.headers.get("Retry-After"))
            )
        raise PermanentDeliveryError(message)

    async def close(self) -> None:
        await self._client.aclose()


def _seconds(value: str | None) -> float | None:
    try:
        return None if value is None else float(value)
    except ValueError:
        return None  # an HTTP date: fall back to the deliverer's own back-off
