"""``sluice sqs redrive``: move messages from an SQS dead-letter queue back to a queue, as
SQS's own move task (StartMessageMoveTask) does, through boto3 against any endpoint
(``AWS_ENDPOINT_URL``). Needs no Redis and no ``serve``.

A move is ReceiveMessage (up to 10, every message and system attribute), SendMessageBatch to
the target (body, message attributes and AWSTraceHeader kept; a FIFO target also gets the
message's MessageGroupId and MessageDeduplicationId, so a resend within 5 minutes is
deduplicated), then DeleteMessageBatch on the dead-letter queue for exactly the entries the
send accepted. At least once, nothing lost: a message the target refused stays in the
dead-letter queue, hidden until the run ends and then made visible again; a message sent but
not deleted is moved again by a later run (a duplicate, reported as such).

boto3 is the ``aws`` extra, imported at the first SQS call: without it the command is
refused (exit status 2) with what to install.

Send errors: a batch refused as a whole (a bad entry, too large) is sent again one message
at a time, so that one bad message fails alone; errors that say the target cannot be used
(it does not exist, access denied, the network) stop the run. botocore's exceptions stop at
this module's edge as :class:`SqsError`.
"""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Annotated, Any

import typer

from broker.extras import AWS, MissingExtraError, require
from broker.pacing import Pacer

__all__ = [
    "Queue",
    "RedriveOutcome",
    "Refused",
    "Sqs",
    "SqsError",
    "redrive",
    "send_entry",
    "sqs_app",
]

sqs_app = typer.Typer(
    help="Amazon SQS dead-letter queues: move messages back (redrive).",
    no_args_is_help=True,
    add_completion=False,
)

_ARN = re.compile(
    r"^arn:aws[a-zA-Z-]*:sqs:(?P<region>[a-z0-9-]+):(?P<account>\d{12}):"
    r"(?P<name>[\w-]{1,75}\.fifo|[\w-]{1,80})$"  # a name has at most 80 characters
)
MAX_BATCH = 10  # ReceiveMessage, SendMessageBatch and DeleteMessageBatch take at most 10
BATCH_BYTES = 262_144  # SendMessageBatch's payload limit (before SQS's 1 MiB raise)
HOLD_S = 60  # a received message stays hidden this long: enough for its send and delete
WAIT_S = 1  # long poll: asks every SQS server, so an empty answer means empty
# Error codes after which no message can reach the target: stop instead of failing each one.
_FATAL = frozenset(
    {
        "AWS.SimpleQueueService.NonExistentQueue",
        "QueueDoesNotExist",
        "AccessDenied",
        "AccessDeniedException",
        "InvalidClientTokenId",
        "UnrecognizedClientException",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "RequestThrottled",
        "KmsAccessDenied",
        "KmsDisabled",
        "KmsNotFound",
    }
)


class SqsError(Exception):
    """An SQS call failed; ``code`` is AWS's error code (``network`` without an answer)."""

    def __init__(self, action: str, code: str, message: str) -> None:
        super().__init__(f"{action}: {code}: {message}")
        self.code = code
        self.message = message

    @property
    def fatal(self) -> bool:
        return self.code in _FATAL or self.code == "network"


class Refused(Exception):
    """The command will not do this (exit status 2); the message says why and what to do."""


@dataclass(frozen=True)
class Queue:
    """A queue named by its ARN; ``url`` once looked up."""

    arn: str
    region: str
    account: str
    name: str
    url: str = ""

    @classmethod
    def parse(cls, arn: str) -> Queue:
        match = _ARN.match(arn)
        if match is None:
            raise Refused(f"{arn!r} is not an SQS queue ARN (arn:aws:sqs:REGION:ACCOUNT:NAME)")
        return cls(arn, match["region"], match["account"], match["name"])

    @property
    def fifo(self) -> bool:
        return self.name.endswith(".fifo")


@dataclass
class RedriveOutcome:
    """What a run did. ``failed`` and ``not_deleted`` map message ids to the reason."""

    moved: int = 0
    failed: dict[str, str] = field(default_factory=dict)  # still in the dead-letter queue
    not_deleted: dict[str, str] = field(default_factory=dict)  # sent, yet still there too
    stopped: str | None = None  # why the run stopped early, if it did

    @property
    def ok(self) -> bool:
        return not (self.failed or self.not_deleted or self.stopped)


# -- the pure part: what is sent --------------------------------------------------------------


_ATTRIBUTE_KEYS = ("DataType", "StringValue", "BinaryValue", "StringListValues", "BinaryListValues")


def send_entry(message: dict[str, Any], entry_id: str, fifo_target: bool) -> dict[str, Any]:
    """The SendMessageBatch entry that re-sends a received ``message``."""
    entry: dict[str, Any] = {"Id": entry_id, "MessageBody": message.get("Body", "")}
    attributes = {
        name: {key: value[key] for key in _ATTRIBUTE_KEYS if value.get(key)}
        for name, value in message.get("MessageAttributes", {}).items()
    }
    if attributes:
        entry["MessageAttributes"] = attributes
    system = message.get("Attributes", {})
    if "AWSTraceHeader" in system:
        trace = {"DataType": "String", "StringValue": system["AWSTraceHeader"]}
        entry["MessageSystemAttributes"] = {"AWSTraceHeader": trace}
    if fifo_target:
        for key in ("MessageGroupId", "MessageDeduplicationId"):
            if key in system:
                entry[key] = system[key]
    return entry


def entry_bytes(entry: dict[str, Any]) -> int:
    """An entry's size as SQS counts it: body plus each attribute's name, type and value."""
    size = len(entry["MessageBody"].encode())
    for name, value in entry.get("MessageAttributes", {}).items():
        size += len(name.encode()) + len(value["DataType"].encode())
        data = value.get("StringValue") or value.get("BinaryValue") or ""
        size += len(data.encode() if isinstance(data, str) else data)
    return size


def size_chunks(entries: list[dict[str, Any]], limit: int = BATCH_BYTES) -> Iterator[list[Any]]:
    """``entries`` in order, in chunks under ``limit`` bytes (a larger entry goes alone)."""
    chunk: list[dict[str, Any]] = []
    size = 0
    for entry in entries:
        need = entry_bytes(entry)
        if chunk and size + need > limit:
            yield chunk
            chunk, size = [], 0
        chunk.append(entry)
        size += need
    if chunk:
        yield chunk


# -- the SQS side ------------------------------------------------------------------------------


def _boto3_client(region: str) -> Any:
    """An SQS client for ``region``; :class:`Refused` when boto3 is not installed."""
    try:
        boto3 = require(*AWS, "Amazon SQS access")
    except MissingExtraError as exc:
        raise Refused(str(exc)) from exc
    from botocore.config import Config

    config = Config(connect_timeout=5, read_timeout=30, retries={"max_attempts": 3})
    return boto3.session.Session().client("sqs", region_name=region, config=config)


class Sqs:
    """The SQS calls a redrive makes, one boto3 client per region (``make_client``)."""

    def __init__(self, make_client: Callable[[str], Any] = _boto3_client) -> None:
        self._make_client = make_client
        self._clients: dict[str, Any] = {}

    def _call(self, region: str, action: str, **params: Any) -> Any:
        client = self._clients.get(region)
        if client is None:
            client = self._clients[region] = self._make_client(region)
        from botocore.exceptions import BotoCoreError, ClientError  # there with the client

        try:
            return getattr(client, action)(**params)
        except ClientError as exc:
            error = exc.response.get("Error", {})
            raise SqsError(action, error.get("Code", "?"), error.get("Message", "")) from exc
        except BotoCoreError as exc:
            raise SqsError(action, "network", str(exc)) from exc

    def resolve(self, queue: Queue) -> Queue:
        """``queue`` with its URL; :class:`Refused` when it does not exist."""
        try:
            answer = self._call(
                queue.region,
                "get_queue_url",
                QueueName=queue.name,
                QueueOwnerAWSAccountId=queue.account,
            )
        except SqsError as exc:
            if exc.code in ("AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist"):
                raise Refused(f"{queue.arn}: no such queue") from exc
            raise
        return Queue(queue.arn, queue.region, queue.account, queue.name, answer["QueueUrl"])

    def sources(self, dlq: Queue) -> list[Queue]:
        """The queues whose RedrivePolicy sends to ``dlq`` (ListDeadLetterSourceQueues)."""
        urls: list[str] = []
        params: dict[str, Any] = {"QueueUrl": dlq.url, "MaxResults": 1000}
        while True:
            answer = self._call(dlq.region, "list_dead_letter_source_queues", **params)
            urls += answer.get("queueUrls", [])
            if not answer.get("NextToken"):
                break
            params["NextToken"] = answer["NextToken"]
        queues = []
        for url in urls:
            attributes = self._call(
                dlq.region, "get_queue_attributes", QueueUrl=url, AttributeNames=["QueueArn"]
            )
            queues.append(Queue.parse(attributes["Attributes"]["QueueArn"]))
        return [self.resolve(queue) for queue in queues]

    def depth(self, queue: Queue) -> tuple[int, int]:
        """(ApproximateNumberOfMessages, ApproximateNumberOfMessagesNotVisible)."""
        names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
        answer = self._call(
            queue.region, "get_queue_attributes", QueueUrl=queue.url, AttributeNames=names
        )
        return int(answer["Attributes"].get(names[0], 0)), int(
            answer["Attributes"].get(names[1], 0)
        )

    def receive(self, queue: Queue, count: int, hold_s: int) -> list[dict[str, Any]]:
        answer = self._call(
            queue.region,
            "receive_message",
            QueueUrl=queue.url,
            MaxNumberOfMessages=count,
            WaitTimeSeconds=WAIT_S,
            VisibilityTimeout=hold_s,
            MessageAttributeNames=["All"],
            MessageSystemAttributeNames=["All"],
        )
        messages: list[dict[str, Any]] = answer.get("Messages", [])
        return messages

    def send(
        self, queue: Queue, messages: list[dict[str, Any]]
    ) -> tuple[list[dict[str, Any]], dict[str, str], SqsError | None]:
        """Send ``messages`` to ``queue``: (accepted, refused message id -> reason, the error
        that stopped the sending, if one did; the messages after it were not sent)."""
        entries = [send_entry(m, str(i), queue.fifo) for i, m in enumerate(messages)]
        accepted: list[dict[str, Any]] = []
        refused: dict[str, str] = {}
        pending = list(size_chunks(entries))
        while pending:
            chunk = pending.pop(0)
            try:
                answer = self._call(
                    queue.region, "send_message_batch", QueueUrl=queue.url, Entries=chunk
                )
            except SqsError as exc:
                if exc.fatal:
                    return accepted, refused, exc
                if len(chunk) > 1:  # one bad entry fails the batch: find it
                    pending[:0] = [[entry] for entry in chunk]
                    continue
                refused[messages[int(chunk[0]["Id"])]["MessageId"]] = f"{exc.code}: {exc.message}"
                continue
            accepted += [messages[int(ok["Id"])] for ok in answer.get("Successful", [])]
            for failure in answer.get("Failed", []):
                reason = f"{failure.get('Code')}: {failure.get('Message', '')}"
                refused[messages[int(failure["Id"])]["MessageId"]] = reason
        return accepted, refused, None

    def delete(self, queue: Queue, messages: list[dict[str, Any]]) -> dict[str, str]:
        """Delete ``messages``; return those not deleted (message id -> reason)."""
        if not messages:
            return {}
        entries = [
            {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(messages)
        ]
        try:
            answer = self._call(
                queue.region, "delete_message_batch", QueueUrl=queue.url, Entries=entries
            )
        except SqsError as exc:
            return {m["MessageId"]: str(exc) for m in messages}
        return {
            messages[int(f["Id"])]["MessageId"]: f"{f.get('Code')}: {f.get('Message', '')}"
            for f in answer.get("Failed", [])
        }

    def unhide(self, queue: Queue, receipt_handles: list[str]) -> None:
        """Make received messages visible again at once (best effort: they reappear anyway
        when their hold ends)."""
        for start in range(0, len(receipt_handles), MAX_BATCH):
            entries = [
                {"Id": str(i), "ReceiptHandle": handle, "VisibilityTimeout": 0}
                for i, handle in enumerate(receipt_handles[start : start + MAX_BATCH])
            ]
            with contextlib.suppress(SqsError):  # they come back by themselves within HOLD_S
                self._call(
                    queue.region,
                    "change_message_visibility_batch",
                    QueueUrl=queue.url,
                    Entries=entries,
                )


def redrive(
    sqs: Sqs,
    dlq: Queue,
    target: Queue,
    *,
    max_messages: int | None = None,
    pacer: Pacer | None = None,
    progress: Callable[[RedriveOutcome], None] | None = None,
) -> RedriveOutcome:
    """Move messages from ``dlq`` to ``target`` until ``dlq`` looks empty, ``max_messages``
    have been handled (moved or failed) or the target cannot be used."""
    outcome = RedriveOutcome()
    refused_handles: dict[str, str] = {}  # message id -> receipt handle, hidden till the end
    handled = 0
    try:
        while max_messages is None or handled < max_messages:
            want = min(MAX_BATCH, pacer.batch_size if pacer else MAX_BATCH)
            if max_messages is not None:
                want = min(want, max_messages - handled)
            at = pacer.book(want) if pacer else 0.0
            hold_s = HOLD_S + (math.ceil(pacer.delay_s(at)) if pacer else 0)
            try:
                messages = sqs.receive(dlq, want, hold_s)
            except SqsError as exc:
                outcome.stopped = str(exc)
                break
            if pacer:
                pacer.release(want - len(messages))
                if messages:
                    pacer.wait(at)
            if not messages:
                break
            handled += len(messages)
            accepted, refused, stop = sqs.send(target, messages)
            for message in accepted:
                outcome.failed.pop(message["MessageId"], None)  # refused earlier in this run
                refused_handles.pop(message["MessageId"], None)
            outcome.failed.update(refused)
            by_id = {m["MessageId"]: m for m in messages}
            refused_handles.update({mid: by_id[mid]["ReceiptHandle"] for mid in refused})
            not_deleted = sqs.delete(dlq, accepted)
            outcome.not_deleted.update(not_deleted)
            outcome.moved += len(accepted) - len(not_deleted)
            if stop is not None:
                outcome.stopped = str(stop)
                done = {m["MessageId"] for m in accepted} | set(refused)
                unsent = [m["ReceiptHandle"] for m in messages if m["MessageId"] not in done]
                sqs.unhide(dlq, unsent)
                break
            if progress:
                progress(outcome)
    finally:
        sqs.unhide(dlq, list(refused_handles.values()))
    return outcome


# -- the command -------------------------------------------------------------------------------

REDRIVE_HELP = "\n\n".join(
    [
        "Move messages from an SQS dead-letter queue back to their source queue, as SQS's"
        " move task does: receive, send to the target (body, message attributes, FIFO group"
        " and deduplication ids kept), delete from the dead-letter queue only what the target"
        " accepted.",
        "Without --to the target is the one queue whose RedrivePolicy names this dead-letter"
        " queue; with none or several, name it with --to. AWS_ENDPOINT_URL and the usual AWS"
        " variables choose the endpoint and credentials; the region comes from the ARN.",
        "--dry-run shows the queues, the approximate count and up to 10 messages (peeked,"
        " left visible) and changes nothing. --rate N moves at most N messages a second;"
        " --max N stops after N messages.",
        "Exit status: 0 all moved; 1 some stayed behind (reported), the prompt was declined or"
        " SQS failed; 2 refused (bad ARN, no such queue, no single source queue).",
    ]
)


def _positive_rate(value: float | None) -> float | None:
    if value is not None and not 0 < value < math.inf:
        raise typer.BadParameter("must be a positive number of messages a second")
    return value


@sqs_app.command("redrive", help=REDRIVE_HELP)
def redrive_command(
    source_dlq_arn: Annotated[
        str, typer.Argument(metavar="SOURCE_DLQ_ARN", help="the dead-letter queue's ARN")
    ],
    to: Annotated[
        str | None, typer.Option("--to", metavar="QUEUE_ARN", help="move here instead")
    ] = None,
    rate: Annotated[
        float | None,
        typer.Option(metavar="N", help="at most N messages a second", callback=_positive_rate),
    ] = None,
    max_messages: Annotated[
        int | None, typer.Option("--max", metavar="N", min=1, help="stop after N messages")
    ] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="show, change nothing")] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="do not ask")] = False,
) -> None:
    """Redrive an SQS dead-letter queue (help: ``REDRIVE_HELP``)."""
    sqs = Sqs()
    try:
        dlq, target = _queues(sqs, source_dlq_arn, to)
        visible, hidden = sqs.depth(dlq)
        route = f"{dlq.name} -> {target.name} ({target.arn})"
        if dry_run:
            _preview(sqs, dlq, target, visible, hidden, max_messages)
            return
        count = f"~{visible}" if max_messages is None else f"up to {max_messages} of ~{visible}"
        prompt = f"Move {count} message(s) from {dlq.name} to {target.name}?"
        if not yes and not typer.confirm(prompt, default=False):
            typer.echo("Not moved; nothing changed.", err=True)
            raise typer.Exit(1)
        pacer = Pacer(rate) if rate is not None else None
        outcome = redrive(sqs, dlq, target, max_messages=max_messages, pacer=pacer)
    except Refused as exc:
        typer.echo(f"sluice sqs: {exc}", err=True)
        raise typer.Exit(2) from exc
    except SqsError as exc:
        typer.echo(f"sluice sqs: {exc}", err=True)
        raise typer.Exit(1) from exc
    for message_id, reason in outcome.failed.items():
        typer.echo(f"failed {message_id}: {reason} (still in {dlq.name})", err=True)
    for message_id, reason in outcome.not_deleted.items():
        typer.echo(
            f"not deleted {message_id}: {reason} (sent; a later redrive sends it again)", err=True
        )
    if outcome.stopped:
        typer.echo(f"stopped: {outcome.stopped}", err=True)
    try:
        remaining = str(sum(sqs.depth(dlq)))  # visible and in flight
    except SqsError:
        remaining = "?"
    typer.echo(
        f"{route}: moved {outcome.moved}, failed {len(outcome.failed)}, "
        f"not deleted {len(outcome.not_deleted)}, remaining ~{remaining} in {dlq.name}"
    )
    if not outcome.ok:
        raise typer.Exit(1)


def _queues(sqs: Sqs, dlq_arn: str, to: str | None) -> tuple[Queue, Queue]:
    """The dead-letter queue and the target, resolved; :class:`Refused` when unusable."""
    dlq = sqs.resolve(Queue.parse(dlq_arn))
    if to is not None:
        target = sqs.resolve(Queue.parse(to))
    else:
        sources = sqs.sources(dlq)
        if len(sources) != 1:
            found = ", ".join(q.arn for q in sources) or "none"
            raise Refused(
                f"{dlq.name} is the dead-letter queue of {len(sources)} queues ({found}):"
                " name the target with --to QUEUE_ARN"
            )
        target = sources[0]
    if target.arn == dlq.arn:
        raise Refused(f"--to is {dlq.name} itself: messages would go round in a circle")
    if target.fifo and not dlq.fifo:
        raise Refused(
            f"{target.name} is FIFO and {dlq.name} is not: its messages have no MessageGroupId"
        )
    return dlq, target


def _preview(
    sqs: Sqs, dlq: Queue, target: Queue, visible: int, hidden: int, max_messages: int | None
) -> None:
    """What a redrive would do, from the counts and up to 10 messages peeked (received with
    a zero hold, so they stay visible; SQS counts the peek in ApproximateReceiveCount)."""
    would = visible if max_messages is None else min(visible, max_messages)
    typer.echo(f"{dlq.arn} -> {target.arn}")
    typer.echo(f"would move ~{would} message(s) ({visible} visible, {hidden} in flight)")
    for message in sqs.receive(dlq, min(MAX_BATCH, max_messages or MAX_BATCH), 0):
        names = ",".join(sorted(message.get("MessageAttributes", {}))) or "-"
        group = message.get("Attributes", {}).get("MessageGroupId")
        size = len(message.get("Body", "").encode())
        line = f"  {message['MessageId']}  {size} bytes  attributes: {names}"
        typer.echo(line + (f"  group: {group}" if group else ""))
    typer.echo("dry run: nothing sent, nothing deleted")
