"""``arn:aws:events:…:event-bus/NAME``: a ``PutEvents`` entry with the record as ``Detail``
(spec §5.1): ``Source`` "lambda" (configurable), ``DetailType`` "Lambda Function Invocation
Result - Success" or "- Failure", ``Resources`` [bus ARN, qualified function ARN]."""

from __future__ import annotations

from broker.destination import Delivery, DestinationContext
from broker.errors import DeliveryError
from destinations.aws import AwsDestination


class EventBridgeDestination(AwsDestination):
    service = "events"

    def __init__(self, target: str, context: DestinationContext) -> None:
        super().__init__(target, context)
        self.source = str(context.options.get("eventbridge_source", "lambda"))

    async def deliver(self, delivery: Delivery) -> None:
        outcome = "Success" if delivery.condition == "Success" else "Failure"
        entry = {
            "Source": self.source,
            "DetailType": f"Lambda Function Invocation Result - {outcome}",
            "Resources": [self.target, delivery.record["requestContext"]["functionArn"]],
            "Detail": delivery.record_text(),
            "EventBusName": self.target,
        }
        answer = await self.call(lambda: self.client().put_events(Entries=[entry]))
        if answer.get("FailedEntryCount"):
            failed = answer["Entries"][0]
            raise DeliveryError(
                f"{self.target}: {failed.get('ErrorCode')}: {failed.get('ErrorMessage')}"
            )
