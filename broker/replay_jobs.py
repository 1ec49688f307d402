"""Background replays: ``sluice dlq replay --background`` hands a large replay to the rq
worker that runs inside every ``sluice serve`` (:class:`ReplayWorker`), and ``sluice dlq
replay --status ID`` follows it.

The CLI plans and confirms as for a foreground replay, then enqueues one rq job whose id is
the replay id, on the queue ``<key prefix>-replays`` (rq's own Redis: ``rq_redis_url``, else
Sluice's). The job carries the chosen entries as ``(function, entry id)`` pairs, so the
worker replays what the operator confirmed, not what the filters match later. It plans them
again in the worker (an entry gone meanwhile counts as ``gone``) and runs them with
:func:`broker.replay_runs.execute` under the serving process's settings, which keeps the
replay's record in the history as it goes.

Shutdown: the worker stops taking jobs, and a running replay stops after its current batch.
The job then fails on purpose and rq's retry puts it back on the queue at once, so another
``serve`` (or the next one) finishes it; a replay stores nothing twice, so a re-run only does
what is left (entries replayed before count as ``gone``). A ``serve`` killed outright leaves
its job started until rq's maintenance marks it abandoned: run the replay again.
"""

from __future__ import annotations

import asyncio
import contextvars
import socket
import threading
import uuid
from dataclasses import dataclass
from typing import Any

import redis
import structlog
from rq import Queue, Retry, SimpleWorker
from rq.exceptions import NoSuchJobError, StopRequested
from rq.job import Job
from rq.serializers import JSONSerializer
from rq.timeouts import BaseDeathPenalty

from broker.replay_runs import execute, replay_session
from broker.settings import Settings

__all__ = [
    "REPLAY_STOP_MIN_S",
    "ReplayInterrupted",
    "ReplayWorker",
    "job_state",
    "queue_name",
    "run_replay",
    "submit",
]

log = structlog.get_logger("sluice.replay_jobs")

RETRIES = 5  # re-runs of a replay cut short by shutdowns before rq gives up on it
RESULT_TTL_S = 7 * 86_400  # rq keeps a finished job (and its record) this long
WORKER_TTL_S = 16  # rq's dequeue timeout is this minus 15: the loop wakes every second
REPLAY_STOP_MIN_S = 5.0  # a stopping serve gives a running replay at least this to stop


@dataclass(frozen=True)
class _WorkerContext:
    """What a job run by :class:`ReplayWorker` gets from the process running it."""

    settings: Settings
    stopping: threading.Event


# Set in the worker's own thread only: a job run there finds its process's settings.
_CONTEXT: contextvars.ContextVar[_WorkerContext] = contextvars.ContextVar("sluice_replay_worker")


class ReplayInterrupted(Exception):
    """The serving process shut down mid-replay; rq's retry queues the replay again."""


def queue_name(settings: Settings) -> str:
    return f"{settings.key_prefix}-replays"


def rq_connection(settings: Settings) -> redis.Redis:
    return redis.Redis.from_url(settings.rq_redis_url or settings.redis_url or "")


def submit(
    settings: Settings,
    replay_id: str,
    entries: list[tuple[str, str]],
    *,
    to: str | None,
    rate: float | None,
    asked: dict[str, Any],
) -> None:
    """Queue a replay of these ``(function, entry id)`` pairs for a ``serve`` worker."""
    order = {
        "replayId": replay_id,
        "entries": [list(pair) for pair in entries],
        "to": to,
        "rate": rate,
        "asked": {**asked, "background": True},
    }
    with rq_connection(settings) as connection:
        Queue(queue_name(settings), connection=connection, serializer=JSONSerializer).enqueue(
            run_replay,
            order,
            job_id=replay_id,
            job_timeout=-1,  # as long as it takes; --rate may make it long on purpose
            result_ttl=RESULT_TTL_S,
            failure_ttl=RESULT_TTL_S,
            retry=Retry(max=RETRIES),
            description=f"sluice dlq replay {replay_id} ({len(entries)} entries)",
        )


def job_state(settings: Settings, replay_id: str) -> dict[str, Any] | None:
    """rq's view of a background replay: status, worker, last error; None if unknown."""
    with rq_connection(settings) as connection:
        try:
            job = Job.fetch(replay_id, connection=connection, serializer=JSONSerializer)
        except NoSuchJobError:
            return None
        status = job.get_status(refresh=False)
        # The newest failure's last line (a retried job's newest result has no trace).
        traces = [r.exc_string for r in job.results() if r.exc_string]
        error = traces[0].strip().splitlines()[-1] if traces else None
        return {
            "status": str(status.value if status is not None else "unknown"),
            "worker": job.worker_name,
            "enqueuedAt": job.enqueued_at.isoformat() if job.enqueued_at else None,
            "retriesLeft": job.retries_left,
            "error": error,
        }


def run_replay(order: dict[str, Any]) -> dict[str, Any]:
    """The rq job: replay the order's entries in this worker's process; the final record."""
    try:
        context = _CONTEXT.get()
    except LookupError:
        raise RuntimeError("a Sluice replay job runs in sluice serve's replay worker") from None
    record = asyncio.run(_replay(context, order))
    if record["status"] == "interrupted":
        raise ReplayInterrupted(f"replay {order['replayId']} interrupted by shutdown")
    if record["status"] == "failed":
        raise RuntimeError(f"replay {order['replayId']} failed: {record.get('error')}")
    return record


async def _replay(context: _WorkerContext, order: dict[str, Any]) -> dict[str, Any]:
    async with replay_session(context.settings) as (replayer, query):
        chosen = []
        for function, entry_id in order["entries"]:
            chosen += await query.get(entry_id, [function])
        steps = await replayer.plan([(m.function, m.entry) for m in chosen], order["to"])
        gone = len(order["entries"]) - len(chosen)
        log.info("background_replay_started", replay_id=order["replayId"], entries=len(steps))
        record = await execute(
            replayer,
            steps,
            replay_id=order["replayId"],
            asked=order["asked"],
            rate=order["rate"],
            should_stop=context.stopping.is_set,
            gone_before=gone,
        )
        log.info("background_replay_ended", replay_id=order["replayId"], status=record["status"])
        return record


class ReplayWorker:
    """An rq worker in a thread of ``sluice serve``: runs background replays one at a time
    in this process (no fork), with this process's settings."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._worker: _Worker | None = None

    def start(self) -> None:
        connection = rq_connection(self.settings)
        self._worker = _Worker(
            [Queue(queue_name(self.settings), connection=connection, serializer=JSONSerializer)],
            name=f"sluice-{socket.gethostname()}-{uuid.uuid4().hex[:8]}",
            connection=connection,
            serializer=JSONSerializer,
            worker_ttl=WORKER_TTL_S,
        )
        context = _WorkerContext(self.settings, self._stopping)
        self._thread = threading.Thread(
            target=self._run,
            args=(self._worker, context),
            name="sluice-replay-worker",
            daemon=True,  # a replay still in its batch at exit is safe to cut: no double store
        )
        self._thread.start()

    @staticmethod
    def _run(worker: _Worker, context: _WorkerContext) -> None:
        _CONTEXT.set(context)
        try:
            worker.work(logging_level="WARNING")
        finally:
            worker.connection.close()

    def stop(self, timeout_s: float = 30.0) -> None:
        """Take no more jobs; a running replay stops after its batch. Waits up to
        ``timeout_s`` for the thread."""
        self._stopping.set()
        if self._worker is not None:
            self._worker.stop_soon()
        if self._thread is not None:
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                log.warning("replay_worker_still_running", timeout_s=timeout_s)


class _NoTimeout(BaseDeathPenalty):
    """Replays have no time limit (``job_timeout=-1``): no SIGALRM, which only the main
    thread may use."""

    def setup_death_penalty(self) -> None:
        pass

    def cancel_death_penalty(self) -> None:
        pass


class _Worker(SimpleWorker):
    """rq's in-process worker, driven by :class:`ReplayWorker` instead of signals (signal
    handlers can only be set in the main thread, which belongs to ``serve``'s loop)."""

    death_penalty_class = _NoTimeout

    def _install_signal_handlers(self) -> None:
        pass

    def stop_soon(self) -> None:
        self._stop_requested = True

    def dequeue_job_and_maintain_ttl(
        self, timeout: int | None, max_idle_time: int | None = None
    ) -> tuple[Job, Queue] | None:
        """rq's wait for a job, cut into one-second waits so that a stop is seen at once
        (rq's own keeps waiting until a job comes)."""
        while not self._stop_requested:
            found = super().dequeue_job_and_maintain_ttl(timeout, max_idle_time=1)
            if found is not None:
                return found
        raise StopRequested
