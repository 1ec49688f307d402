"""``arn:aws:lambda:…``: an asynchronous invoke of the target with the record as its event
(spec §5.1) — stored straight in this Sluice's queue when Sluice knows the function, else
sent with boto3 ``Invoke`` (``InvocationType=Event``) to AWS or ``AWS_ENDPOINT_URL``."""

from __future__ import annotations

from broker.destination import Delivery, DestinationContext
from broker.errors import DeliveryError, ResourceNotFoundError, TooManyRequestsError
from destinations.aws import AwsDestination


class LambdaDestination(AwsDestination):
    service = "lambda"

    def __init__(self, target: str, context: DestinationContext) -> None:
        super().__init__(target, context)
        self.local_invoke = context.local_invoke

    async def deliver(self, delivery: Delivery) -> None:
        payload = delivery.record_text()
        if self.local_invoke is not None:
            try:
                await self.local_invoke(self.target, payload)
                return
            except ResourceNotFoundError:
                pass  # not one of ours: ask the Lambda endpoint
            except TooManyRequestsError as exc:  # our queue is full for now
                raise DeliveryError(f"{self.target}: {exc.message}") from exc
        await self.call(
            lambda: self.client().invoke(
                FunctionName=self.target, InvocationType="Event", Payload=payload.encode()
            )
        )
