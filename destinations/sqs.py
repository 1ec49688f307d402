"""``arn:aws:sqs:…``: the record as the message body; as a DLQ, the original event with the
``RequestID``/``ErrorCode``/``ErrorMessage`` attributes (spec §5.1, §6). FIFO queues are
accepted at config time and every delivery to them fails, as on AWS."""

from __future__ import annotations

from broker.destination import Delivery, DestinationContext
from broker.errors import PermanentDeliveryError
from destinations.aws import AwsDestination, dead_letter_attributes


class SqsDestination(AwsDestination):
    service = "sqs"

    def __init__(self, target: str, context: DestinationContext) -> None:
        super().__init__(target, context)
        self.queue_name = target.split(":")[5]
        self._url: str | None = None

    async def deliver(self, delivery: Delivery) -> None:
        if self.queue_name.endswith(".fifo"):
            raise PermanentDeliveryError(
                f"{self.target}: FIFO queues are not supported as destinations"
            )
        if self._url is None:
            self._url = (
                await self.call(
                    lambda: self.client().get_queue_url(
                        QueueName=self.queue_name, QueueOwnerAWSAccountId=self.account_id
                    )
                )
            )["QueueUrl"]
        url = self._url
        if delivery.kind == "dead_letter":
            attributes = dead_letter_attributes(
                delivery.request_id, delivery.error_code, delivery.error_message
            )
            await self.call(
                lambda: self.client().send_message(
                    QueueUrl=url, MessageBody=delivery.payload, MessageAttributes=attributes
                )
            )
        else:
            body = delivery.record_text()
            await self.call(lambda: self.client().send_message(QueueUrl=url, MessageBody=body))
