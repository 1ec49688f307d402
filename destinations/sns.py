"""``arn:aws:sns:…``: the record as the message (over SNS's 256 KB the request and response
payloads are dropped and the send tried once more, spec §5.1); as a DLQ, the original
event with the three §6 attributes. FIFO topics fail every delivery, as on AWS."""

from __future__ import annotations

import json

from broker.destination import Delivery
from broker.errors import PermanentDeliveryError
from destinations.aws import AwsDestination, dead_letter_attributes

SNS_MESSAGE_LIMIT_BYTES = 262_144


class SnsDestination(AwsDestination):
    service = "sns"

    async def deliver(self, delivery: Delivery) -> None:
        if self.target.endswith(".fifo"):
            raise PermanentDeliveryError(
                f"{self.target}: FIFO topics are not supported as destinations"
            )
        if delivery.kind == "dead_letter":
            attributes = dead_letter_attributes(
                delivery.request_id, delivery.error_code, delivery.error_message
            )
            await self.call(
                lambda: self.client().publish(
                    TopicArn=self.target, Message=delivery.payload, MessageAttributes=attributes
                )
            )
            return
        message = delivery.record_text()
        if len(message.encode()) > SNS_MESSAGE_LIMIT_BYTES:
            trimmed = {
                k: v
                for k, v in delivery.record.items()
                if k not in ("requestPayload", "responsePayload")
            }
            message = json.dumps(trimmed)
            if len(message.encode()) > SNS_MESSAGE_LIMIT_BYTES:
                raise PermanentDeliveryError(
                    f"{self.target}: the record is over SNS's 256 KB limit even without payloads"
                )
        await self.call(lambda: self.client().publish(TopicArn=self.target, Message=message))
