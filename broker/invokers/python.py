"""The ``python:pkg.module:func`` invoker: handlers run in a pool of worker processes.

One call per IPC round trip caps a process pool near 5k calls/s, so work moves in chunks.
Each worker has its own duplex pipe. Calls wait in a FIFO; whenever a worker is idle it gets
``ceil(pending / idle workers)`` calls (at most ``chunk_max``) in one message, runs them in
order (:mod:`broker.invokers._worker`) and replies once per call. Replies are read on the
event loop with ``add_reader``: no threads on the hot path. A chunk is only sent to an idle
worker, which is blocked in ``recv``, so neither side can block the other on a full pipe.

Reply ``i`` means call ``i + 1`` has started, which is when its timeout clock starts. A call
past its timeout gets the worker SIGKILLed and a ``Sandbox.Timedout`` result; a worker that
exits gives its running call ``Runtime.ExitError``. Either way the chunk's calls that had not
started go back to the front of the FIFO and a new worker is started.

Workers come from the ``forkserver`` start method (safe with threads in the parent), with
this package's worker module preloaded so a respawn costs a fork, not an interpreter start.
Starting and reaping processes block, so they run in short-lived threads. A worker is idle
once it says it is ready; one that dies before that failed to start, and is retried with
back-off rather than in a tight loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import operator
import os
import signal
import threading
from collections import deque
from collections.abc import Callable
from multiprocessing.connection import Connection
from multiprocessing.context import ForkServerContext, SpawnContext
from multiprocessing.process import BaseProcess
from typing import Any, Literal, TypeVar, cast

import structlog

from broker import defaults
from broker.invokers import _worker
from broker.invokers.base import Invocation, error_object, timeout_result
from broker.models import InvokeResult

__all__ = ["PythonInvoker"]

log = structlog.get_logger()

CHUNK_MAX = 64  # most calls handed to a worker in one message
CHUNK_MAX_BYTES = 1 << 20  # ... and at most this much payload (beyond its first call)
CLOSE_GRACE_S = 2.0  # close() lets running chunks finish this long before killing them
REAP_TIMEOUT_S = 5.0  # wait this long for a worker to exit before SIGKILL
RESPAWN_RETRY_S = 1.0  # a worker that failed to start is retried after this long ...
RESPAWN_RETRY_MAX_S = 30.0  # ... doubling up to this

_T = TypeVar("_T")
_Item = tuple[Invocation, asyncio.Future[InvokeResult]]
_task: Callable[[Invocation], _worker.Task] = operator.attrgetter(*_worker.TASK_FIELDS)  # fast


class _Worker:
    """A worker process, the parent's end of its pipe, and the chunk it is running."""

    __slots__ = ("conn", "dead", "fd", "index", "items", "process", "ready", "timer")

    def __init__(self, process: BaseProcess, conn: Connection, ready: asyncio.Future[None]):
        self.process = process
        self.conn = conn
        self.fd = conn.fileno()
        self.ready = ready  # done when the worker has said it is ready
        self.items: list[_Item] | None = None  # None when idle
        self.index = 0  # the running item of ``items``
        self.timer: asyncio.TimerHandle | None = None  # the running item's timeout
        self.dead = False


class PythonInvoker:
    """Runs ``python:`` targets in ``processes`` worker processes (0: one per CPU)."""

    def __init__(
        self,
        processes: int = defaults.WORKER_PROCESSES,
        *,
        start_method: Literal["forkserver", "spawn"] = "forkserver",
        chunk_max: int = CHUNK_MAX,
        close_grace_s: float = CLOSE_GRACE_S,
    ) -> None:
        self._size = processes or os.cpu_count() or 1
        self._ctx = cast(
            "ForkServerContext | SpawnContext", multiprocessing.get_context(start_method)
        )
        self._chunk_max = chunk_max
        self._close_grace_s = close_grace_s
        self._loop: asyncio.AbstractEventLoop | None = None
        self._workers: set[_Worker] = set()  # alive and ours: idle or busy
        self._idle: list[_Worker] = []
        self._pending: deque[_Item] = deque()
        self._dispatch_handle: asyncio.Handle | None = None
        self._tasks: set[asyncio.Task[None]] = set()  # replacing dead workers
        self._exiting: list[_Worker] = []  # told to stop by close(), still to be reaped
        self._closing = False
        self._drained: asyncio.Future[None] | None = None
        self._spawned = 0

    @property
    def pending(self) -> int:
        """Calls waiting for a worker."""
        return len(self._pending)

    @property
    def busy(self) -> int:
        """Workers running a chunk."""
        return sum(worker.items is not None for worker in self._workers)

    async def start(self) -> None:
        if self._loop is not None:
            return
        self._loop = asyncio.get_running_loop()
        if self._ctx.get_start_method() == "forkserver":
            # only takes effect if the forkserver is not running yet; harmless otherwise
            self._ctx.set_forkserver_preload([_worker.__name__])
        spawned = await asyncio.gather(
            *(self._spawn() for _ in range(self._size)), return_exceptions=True
        )
        failed = [exc for exc in spawned if isinstance(exc, BaseException)]
        if failed:
            await self.close()
            raise failed[0]

    async def invoke(self, invocation: Invocation) -> InvokeResult:
        loop = self._loop
        if loop is None:
            raise RuntimeError("PythonInvoker.invoke() before start()")
        if self._closing:
            return _closed_result()
        future: asyncio.Future[InvokeResult] = loop.create_future()
        self._pending.append((invocation, future))
        # dispatch once per loop iteration, so calls made together travel together
        if self._dispatch_handle is None and self._idle:
            self._dispatch_handle = loop.call_soon(self._dispatch)
        return await future

    async def close(self) -> None:
        """Fail queued calls, let running chunks finish for a short grace, stop every worker."""
        if self._closing:
            return
        self._closing = True
        loop = self._loop
        if loop is None:
            return
        if self._dispatch_handle is not None:
            self._dispatch_handle.cancel()
            self._dispatch_handle = None
        _fail_closed(self._pending)
        self._pending.clear()
        for worker in list(self._idle):
            self._retire(worker)
        if self._workers:
            self._drained = loop.create_future()
            await asyncio.wait({self._drained}, timeout=self._close_grace_s)
        for worker in list(self._workers):  # still busy (or starting) after the grace
            rest = worker.items[worker.index :] if worker.items else []
            worker.process.kill()
            self._bury(worker, [])
            _fail_closed(rest)
            if not worker.ready.done():
                worker.ready.set_exception(RuntimeError("invoker closed"))
            self._exiting.append(worker)
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        exiting, self._exiting = self._exiting, []
        if exiting:
            await self._in_thread(lambda: [_reap(w.process) for w in exiting])

    # -- dispatching -------------------------------------------------------------------------

    def _schedule_dispatch(self) -> None:
        if self._dispatch_handle is None and self._pending and self._idle and self._loop:
            self._dispatch_handle = self._loop.call_soon(self._dispatch)

    def _dispatch(self) -> None:
        self._dispatch_handle = None
        pending, idle = self._pending, self._idle
        while pending and idle:
            size = min(self._chunk_max, -(-len(pending) // len(idle)))
            items: list[_Item] = []
            wire: list[_worker.Task] = []
            payload_bytes = 0
            while pending and len(items) < size and payload_bytes <= CHUNK_MAX_BYTES:
                item = pending.popleft()
                if item[1].done():  # the caller gave up (cancelled) before it ran
                    continue
                items.append(item)
                wire.append(_task(item[0]))
                payload_bytes += len(item[0].payload)
            if not items:
                return
            worker = idle.pop()
            try:
                worker.conn.send(wire)
            except OSError:  # it died while idle; the reply reader sees the EOF too
                pending.extendleft(reversed(items))
                self._lost(worker)
                continue
            worker.items = items
            worker.index = 0
            worker.timer = self._call_later(items[0][0].timeout_s, worker)

    def _call_later(self, delay_s: float, worker: _Worker) -> asyncio.TimerHandle:
        assert self._loop is not None
        return self._loop.call_later(delay_s, self._on_timeout, worker)

    # -- replies -----------------------------------------------------------------------------

    def _on_readable(self, worker: _Worker) -> None:
        """Take every reply waiting on ``worker``'s pipe; EOF means the worker died."""
        conn = worker.conn
        freed = False  # finished its chunk, or has just started
        try:
            while conn.poll():
                reply = conn.recv()
                if worker.items is not None:
                    self._complete(worker, reply)
                    freed = worker.items is None
                elif not worker.ready.done():
                    worker.ready.set_result(None)
                    freed = True
                else:
                    raise EOFError("message from an idle worker")  # treat it as dead
        except (EOFError, OSError):
            self._lost(worker)
            return
        if freed:
            if self._closing:
                self._retire(worker)
            else:
                self._idle.append(worker)
                if self._pending:
                    self._dispatch()

    def _complete(self, worker: _Worker, reply: Any) -> None:
        items = worker.items
        assert items is not None
        inv, future = items[worker.index]
        if worker.timer is not None:
            worker.timer.cancel()
        if not future.done():
            future.set_result(_reply_result(inv, reply))
        worker.index += 1
        if worker.index < len(items):
            worker.timer = self._call_later(items[worker.index][0].timeout_s, worker)
        else:
            worker.items = None
            worker.timer = None

    def _on_timeout(self, worker: _Worker) -> None:
        worker.timer = None
        items, index = worker.items, worker.index
        if worker.dead or items is None:
            return
        self._on_readable(worker)  # a reply may be waiting: it finished in time
        if worker.dead or worker.items is not items or worker.index != index:
            return
        inv, future = items[index]
        log.warning("invoke_timed_out", request_id=inv.request_id, pid=worker.process.pid)
        worker.process.kill()
        self._bury(worker, items[index + 1 :])
        if not future.done():
            future.set_result(timeout_result(inv))
        self._replace(worker, None)

    def _lost(self, worker: _Worker) -> None:
        """``worker`` exited on its own: its running call failed, the rest run elsewhere."""
        if worker.dead:
            return
        items, index = worker.items, worker.index
        running = items[index] if items else None
        log.warning("python_worker_exited", pid=worker.process.pid, running=running is not None)
        self._bury(worker, items[index + 1 :] if items else [])
        self._replace(worker, running)

    # -- worker lifecycle --------------------------------------------------------------------

    def _bury(self, worker: _Worker, unstarted: list[_Item]) -> None:
        """Forget a worker that is gone or going; requeue (or fail) its unstarted calls."""
        worker.dead = True
        if self._loop is not None:
            self._loop.remove_reader(worker.fd)
        if worker.timer is not None:
            worker.timer.cancel()
            worker.timer = None
        worker.items = None
        worker.conn.close()
        self._workers.discard(worker)
        if worker in self._idle:
            self._idle.remove(worker)
        if self._closing:
            _fail_closed(unstarted)
            if not self._workers and self._drained is not None and not self._drained.done():
                self._drained.set_result(None)
        else:
            self._pending.extendleft(reversed(unstarted))
            self._schedule_dispatch()

    def _retire(self, worker: _Worker) -> None:
        """Ask an idle worker to exit (during close)."""
        with contextlib.suppress(OSError):  # already gone
            worker.conn.send(None)
        self._bury(worker, [])
        self._exiting.append(worker)

    def _replace(self, worker: _Worker, running: _Item | None) -> None:
        assert self._loop is not None
        task = self._loop.create_task(self._reap_and_respawn(worker, running))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _reap_and_respawn(self, worker: _Worker, running: _Item | None) -> None:
        exitcode = await self._in_thread(lambda: _reap(worker.process))
        if not worker.ready.done():  # it never started: its _spawn() raises and is retried
            reason = _exit_reason(exitcode)
            worker.ready.set_exception(RuntimeError(f"python worker failed to start: {reason}"))
            return
        if running is not None and not running[1].done():
            running[1].set_result(_exit_result(running[0], exitcode))
        delay_s = RESPAWN_RETRY_S
        while not self._closing:
            try:
                await self._spawn()
                return
            except Exception as exc:
                if self._closing:
                    return
                log.error("python_worker_start_failed", error=str(exc), retry_in_s=delay_s)
                await asyncio.sleep(delay_s)
                delay_s = min(delay_s * 2, RESPAWN_RETRY_MAX_S)

    async def _spawn(self) -> None:
        """Start a worker and wait until it is ready; raise if it dies first."""
        self._spawned += 1
        name = f"sluice-python-{self._spawned}"
        process, conn = await self._in_thread(lambda: self._start_process(name))
        if self._closing:  # close() began while it started: EOF tells it to exit
            conn.close()
            await self._in_thread(lambda: _reap(process))
            return
        assert self._loop is not None
        worker = _Worker(process, conn, self._loop.create_future())
        self._workers.add(worker)
        self._loop.add_reader(worker.fd, self._on_readable, worker)
        await asyncio.shield(worker.ready)  # _on_readable makes it idle

    def _start_process(self, name: str) -> tuple[BaseProcess, Connection]:
        ours, theirs = self._ctx.Pipe(duplex=True)
        try:
            process = self._ctx.Process(target=_worker.main, args=(theirs,), name=name, daemon=True)
            process.start()
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()  # the child has its copy; EOF on ours must mean the child is gone
        return process, ours

    async def _in_thread(self, fn: Callable[[], _T]) -> _T:
        """Run a blocking ``fn`` in a thread of its own, which has ended when this returns."""
        assert self._loop is not None
        loop = self._loop
        future: asyncio.Future[_T] = loop.create_future()

        def run() -> None:
            result: Any = None
            error: BaseException | None = None
            try:
                result = fn()
            except BaseException as exc:
                error = exc
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting
                loop.call_soon_threadsafe(_settle, future, result, error)

        thread = threading.Thread(target=run, name="sluice-python-invoker", daemon=True)
        thread.start()
        result = await future
        thread.join()  # it has only to return
        return result


def _settle(future: asyncio.Future[Any], result: Any, exc: BaseException | None) -> None:
    if future.done():
        return
    if exc is not None:
        future.set_exception(exc)
    else:
        future.set_result(result)


def _reap(process: BaseProcess) -> int | None:
    """Wait for ``process`` to exit (SIGKILL it if it will not) and return its exit code."""
    process.join(REAP_TIMEOUT_S)
    if process.exitcode is None:
        process.kill()
        process.join()
    exitcode = process.exitcode
    process.close()
    return exitcode


def _reply_result(inv: Invocation, reply: Any) -> InvokeResult:
    if reply[0] == _worker.OK:
        if len(reply[1]) > defaults.SYNC_RESPONSE_LIMIT_BYTES // 4 and (
            len(reply[1].encode()) > defaults.SYNC_RESPONSE_LIMIT_BYTES
        ):
            return _function_error(
                inv,
                "Function.ResponseSizeTooLarge",
                "Response payload size exceeded maximum allowed payload size "
                f"({defaults.SYNC_RESPONSE_LIMIT_BYTES} bytes).",
            )
        return InvokeResult(
            outcome="success", payload=reply[1], executed_version=inv.function_version
        )
    _, error_type, message, stack = reply
    return _function_error(inv, error_type, message, stack)


def _function_error(
    inv: Invocation, error_type: str, message: str, stack: list[str] | None = None
) -> InvokeResult:
    return InvokeResult(
        outcome="function_error",
        function_error="Unhandled",
        payload=error_object(inv.request_id, error_type, message, stack),
        executed_version=inv.function_version,
    )


def _exit_reason(exitcode: int | None) -> str:
    """How Lambda (Go) words an exit: ``exit status 3``, ``signal: killed``."""
    if exitcode is None:
        return "exit status unknown"
    if exitcode < 0:
        return f"signal: {(signal.strsignal(-exitcode) or str(-exitcode)).lower()}"
    return f"exit status {exitcode}"


def _exit_result(inv: Invocation, exitcode: int | None) -> InvokeResult:
    """Lambda's result for a runtime that exited while running ``inv``."""
    reason = _exit_reason(exitcode)
    message = f"RequestId: {inv.request_id} Error: Runtime exited with error: {reason}"
    return _function_error(inv, "Runtime.ExitError", message)


def _closed_result() -> InvokeResult:
    return InvokeResult(outcome="system_error", status_code=500, error_message="invoker closed")


def _fail_closed(items: deque[_Item] | list[_Item]) -> None:
    for _, future in items:
        if not future.done():
            future.set_result(_closed_result())
