"""Event invokes through ``sluice serve``'s Lambda HTTP API, from a separate load process.

Run from the repository root: ``.venv/bin/python bench/api_invoke.py``. Prints figures and
targets; asserts nothing; exits 0. About 30 s per serve configuration.

Set-up: its own redis-server (no persistence); ``sluice serve --port 0 --function
noop=python:bench.handlers:noop --worker-processes N`` as a subprocess (the API and the
dispatcher share its one event loop; the handler runs in N worker processes); the load in a
separate process sending ``POST /2015-03-31/functions/noop/invocations`` with
``X-Amz-Invocation-Type: Event`` and a ``{}`` body over HTTP/1.1 keep-alive connections, one
request in flight per connection. Latency is per request, from the moment the request was
written to the moment its whole 202 response was read; figures cover the answers received in
the measured window.

``--worker-processes`` defaults to 1: on 2 cores, 2 measured the same or slightly worse (the
serve process's event loop is the bottleneck, the no-op worker uses about 3 % of a core, and a
second worker only takes CPU from it); ``--worker-processes 1 2`` runs both, one serve each.

1. Maximum rate: every connection sends its next request as soon as the previous answer is
   in, for ``--duration`` s after ``--warmup`` s. Load generator: Debian's ``wrk`` (C, one
   thread) when it is installed, else (or with ``--client python``) the Python client below.
2. Paced: the Python client (``wrk`` cannot pace) offers ``--rate`` requests per second on a
   fixed schedule shared by all connections: request i is due at t0 + i / rate and goes out
   on the first idle connection, so a slow answer holds up the schedule only when every
   connection is busy. Reported: the achieved rate, latency from send, and the send lag
   (sent minus due) with latency from the due time, which shows any hidden queueing
   ("coordinated omission"). A schedule overrun by more than a second is cut off and its
   unsent requests counted.
3. After each phase: the time from the last answer until the function's queue is empty
   (ready, delayed, in-flight and outbox all 0, every stored event settled), and how many
   events succeeded.

The Python client uses raw asyncio streams (a pre-built request, a minimal response parser);
it reports its own CPU time so that a client-bound run shows as such. ``--profile PATH`` adds
an unmeasured max-rate phase recorded with ``py-spy record`` on the serve process and prints
where its time goes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from bench.common import cpu_seconds, percentile, terminate  # noqa: E402

PREFIX = "benchapi"
FUNCTION = "noop"
TARGET = "python:bench.handlers:noop"
PATH = f"/2015-03-31/functions/{FUNCTION}/invocations"

TARGET_RATE = 3_000.0  # offered on the paced run, which must all be accepted ...
RATE_TOLERANCE = 0.99  # ... to within timer granularity
TARGET_P99_MS = 20.0
OVERRUN_CUTOFF_S = 1.0  # the paced schedule gives up this long after its last due time
CLIENT_FLAG = "--run-load-client"  # internal: this file run as the load process


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


# -- the Python load client (its own process: ``api_invoke.py --run-load-client SPEC``) ------


def request_bytes(host: str, port: int) -> bytes:
    return (
        f"POST {PATH} HTTP/1.1\r\n"
        f"Host: {host}:{port}\r\n"
        "X-Amz-Invocation-Type: Event\r\n"
        "Content-Type: application/json\r\n"
        "Content-Length: 2\r\n"
        "\r\n{}"
    ).encode()


_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length:\s*(\d+)", re.IGNORECASE)
_CLOSE = re.compile(rb"\r\nconnection:\s*close", re.IGNORECASE)


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    """(status, server closes the connection) of one response; the body is discarded."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    match = _CONTENT_LENGTH.search(head)
    if match and int(match.group(1)):
        await reader.readexactly(int(match.group(1)))
    return status, bool(_CLOSE.search(head))


async def run_client(spec: dict[str, Any]) -> dict[str, Any]:
    """Warm-up then a measured window, at ``rate`` per second (0: as fast as answered)."""
    host, port, rate = spec["host"], int(spec["port"]), float(spec["rate"])
    warmup, duration = float(spec["warmup_s"]), float(spec["duration_s"])
    request = request_bytes(host, port)
    clock = time.perf_counter
    statuses: Counter[int] = Counter()
    errors: Counter[str] = Counter()
    # answers received in the measured window: (due, sent, received, status)
    samples: list[tuple[float, float, float, int]] = []
    state = {"next": 0, "unsent": 0}
    t0 = clock() + 0.05
    start, end = t0 + warmup, t0 + warmup + duration
    wall_offset = time.time() - clock()
    marks: dict[str, Any] = {}

    def window_start() -> None:
        marks["cpu0"] = resource.getrusage(resource.RUSAGE_SELF)
        print("window", flush=True)  # the parent takes its CPU snapshot now

    async def connect() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection(host, port)  # asyncio sets TCP_NODELAY

    async def worker() -> None:
        reader, writer = await connect()
        try:
            while True:
                now = clock()
                if rate:
                    i = state["next"]
                    state["next"] += 1
                    due = t0 + i / rate
                    if due >= end:
                        return
                    if now > end + OVERRUN_CUTOFF_S:
                        state["unsent"] += int((end - due) * rate) + 1
                        state["next"] = 1 << 62
                        return
                    if due > now:
                        await asyncio.sleep(due - now)
                else:
                    due = now
                    if now >= end:
                        return
                sent = clock()
                try:
                    writer.write(request)
                    status, closing = await read_response(reader)
                except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
                    errors[type(exc).__name__] += 1
                    writer.close()
                    reader, writer = await connect()
                    continue
                received = clock()
                statuses[status] += 1
                if received >= start:
                    samples.append((due, sent, received, status))
                if closing:
                    writer.close()
                    reader, writer = await connect()
        finally:
            writer.close()

    loop = asyncio.get_running_loop()
    loop.call_at(loop.time() + (start - clock()), window_start)
    await asyncio.gather(*(worker() for _ in range(int(spec["connections"]))))
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu0 = marks.get("cpu0", cpu1)
    latency = sorted((r - s) * 1000 for _, s, r, _ in samples)
    lag = sorted((s - d) * 1000 for d, s, _, _ in samples)
    from_due = sorted((r - d) * 1000 for d, _, r, _ in samples)
    last = max((r for _, _, r, _ in samples), default=start + duration)
    accepted = sum(1 for *_, status in samples if status == 202)
    return {
        "tool": "python",
        "connections": int(spec["connections"]),
        "rate": rate,
        "measured": len(samples),
        "accepted": accepted,
        "elapsed": max(duration, last - start) if rate else last - start,
        "statuses": {str(k): v for k, v in statuses.items()},
        "errors": dict(errors),
        "unsent": state["unsent"],
        "p50": percentile(latency, 0.5),
        "p90": percentile(latency, 0.9),
        "p99": percentile(latency, 0.99),
        "max": latency[-1] if latency else float("nan"),
        "lag_p50": percentile(lag, 0.5),
        "lag_p99": percentile(lag, 0.99),
        "due_p99": percentile(from_due, 0.99),
        "stopped_at": wall_offset + max((r for _, _, r, _ in samples), default=clock()),
        "cpu": (cpu1.ru_utime + cpu1.ru_stime) - (cpu0.ru_utime + cpu0.ru_stime),
        "window": duration,
    }


def client_main(spec_json: str) -> None:
    result = asyncio.run(run_client(json.loads(spec_json)))
    print(json.dumps(result), flush=True)


# -- wrk ----------------------------------------------------------------------------------------

WRK_SCRIPT = """
wrk.method = "POST"
wrk.body = "{}"
wrk.headers["X-Amz-Invocation-Type"] = "Event"
wrk.headers["Content-Type"] = "application/json"
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) accepted = 0; other = 0 end
function response(status, headers, body)
  if status == 202 then accepted = accepted + 1 else other = other + 1 end
end
function done(summary, latency, requests)
  local a, o = 0, 0
  for _, t in ipairs(threads) do a = a + t:get("accepted"); o = o + t:get("other") end
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests": %d, "duration_us": %d, "accepted": %d, "other": %d, ' ..
    '"connect": %d, "read": %d, "write": %d, "timeout": %d, ' ..
    '"p50": %d, "p90": %d, "p99": %d, "max": %d}\\n',
    summary.requests, summary.duration, a, o, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
"""


def run_wrk(
    wrk: str, script: Path, url: str, connections: int, seconds: float
) -> tuple[dict[str, Any], float]:
    """One wrk run: its summary, and its CPU seconds."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    command = [wrk, "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s"]
    command += ["--timeout", "10s", "-s", str(script), url]
    out = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        check=False,
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    for line in out.stdout.splitlines():
        if line.startswith("WRKJSON "):
            return json.loads(line[len("WRKJSON ") :]), cpu
    raise RuntimeError(f"wrk gave no summary (exit {out.returncode}): {out.stderr[-500:]}")


# -- CPU accounting (Linux /proc) -------------------------------------------------------------


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    found, stack = [], [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


@dataclass
class CpuProbe:
    serve_pid: int
    redis_pid: int

    def snapshot(self) -> tuple[float, dict[str, float]]:
        return time.monotonic(), {
            "serve": cpu_seconds(self.serve_pid),
            "workers": sum(cpu_seconds(p) for p in descendants(self.serve_pid)),
            "redis": cpu_seconds(self.redis_pid),
        }

    @staticmethod
    def share(
        before: tuple[float, dict[str, float]], after: tuple[float, dict[str, float]]
    ) -> dict[str, float]:
        """Percent of one core per process group between two snapshots."""
        wall = max(1e-9, after[0] - before[0])
        return {k: 100 * (after[1][k] - before[1][k]) / wall for k in after[1]}


# -- serve, Redis ---------------------------------------------------------------------------


@dataclass
class Serve:
    process: subprocess.Popen[bytes]
    stdout: Path
    stderr: Path
    host: str = ""
    port: int = 0

    def wait_ready(self, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for line in self.stdout.read_text().splitlines():
                with contextlib.suppress(ValueError):
                    message = json.loads(line)
                    if isinstance(message, dict) and message.get("event") == "ready":
                        self.host, self.port = message["host"], int(message["port"])
                        return
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError(f"sluice serve did not become ready:\n{self.stderr_tail()}")

    def stderr_tail(self, lines: int = 20) -> str:
        text = self.stderr.read_text(errors="replace") if self.stderr.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        """SIGTERM (drain), then SIGKILL whatever of its process group is left."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(10)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(5)


def start_serve(redis_url: str, workers: int, concurrency: int, log_dir: Path) -> Serve:
    sluice = Path(sys.executable).with_name("sluice")
    command = [str(sluice)] if sluice.exists() else [sys.executable, "-m", "broker.cli"]
    command += ["serve", "--redis-url", redis_url, "--key-prefix", PREFIX, "--port", "0"]
    command += ["--function", f"{FUNCTION}={TARGET}", "--worker-processes", str(workers)]
    command += ["--concurrency", str(concurrency)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLUICE_")}
    env["PYTHONPATH"] = os.pathsep.join([ROOT, *filter(None, [env.get("PYTHONPATH")])])
    stdout, stderr = log_dir / f"serve-{workers}.out", log_dir / f"serve-{workers}.err"
    with stdout.open("wb") as out, stderr.open("wb") as err:
        process = subprocess.Popen(
            command,
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            start_new_session=True,  # one killpg takes serve, forkserver and workers
        )
    serve = Serve(process, stdout, stderr)
    try:
        serve.wait_ready()
    except BaseException:
        serve.stop()
        raise
    return serve


class Queue:
    """The function's queue state, read straight from Redis (see broker/keys.py)."""

    def __init__(self, url: str) -> None:
        import redis

        from broker.keys import Keys

        self.client = redis.Redis.from_url(url)
        self.keys = Keys(PREFIX).for_function(FUNCTION)

    def stats(self) -> dict[str, int]:
        raw = self.client.hgetall(self.keys.stats)
        return {k.decode(): int(v) for k, v in raw.items()}

    def depth(self) -> int:
        pipe = self.client.pipeline(transaction=False)
        pipe.llen(self.keys.ready)
        pipe.zcard(self.keys.delayed)
        pipe.zcard(self.keys.inflight)
        pipe.hlen(self.keys.outbox)
        return sum(int(n) for n in pipe.execute())

    @staticmethod
    def settled(stats: dict[str, int]) -> int:
        """Events finished for good: succeeded, or dropped (retries exhausted, too old)."""
        return stats.get("Succeeded", 0) + stats.get("AsyncEventsDropped", 0)

    def wait_drained(self, stopped_at: float, timeout_s: float) -> dict[str, Any]:
        """Poll until nothing is queued and every stored event has succeeded or was dropped."""
        deadline = time.time() + timeout_s
        while True:
            stats = self.stats()
            drained = self.depth() == 0 and self.settled(stats) >= stats.get(
                "AsyncEventsReceived", 0
            )
            now = time.time()
            if drained or now > deadline:
                return {"drained": drained, "drain_s": max(0.0, now - stopped_at), **stats}
            time.sleep(0.005)

    def close(self) -> None:
        self.client.close()


# -- phases ------------------------------------------------------------------------------------


def python_load(serve: Serve, probe: CpuProbe, spec: dict[str, Any]) -> dict[str, Any]:
    """Run the Python client in its own process; CPU of the others over its window."""
    spec = {**spec, "host": serve.host, "port": serve.port}
    process = subprocess.Popen(
        [sys.executable, os.path.abspath(__file__), CLIENT_FLAG, json.dumps(spec)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        before = probe.snapshot()
        if line.strip() != "window":
            raise RuntimeError(
                f"load client: {line!r} {process.stderr.read() if process.stderr else ''}"
            )
        line = process.stdout.readline()
        after = probe.snapshot()
        process.wait(30)
        if not line.strip():
            raise RuntimeError(
                f"load client died: {process.stderr.read() if process.stderr else ''}"
            )
        result: dict[str, Any] = json.loads(line)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    result["share"] = CpuProbe.share(before, after)
    result["share"]["client"] = 100 * result["cpu"] / result["window"]
    return result


def wrk_load(
    serve: Serve, probe: CpuProbe, wrk: str, script: Path, args: argparse.Namespace
) -> dict[str, Any]:
    url = f"http://{serve.host}:{serve.port}{PATH}"
    warm, _ = run_wrk(wrk, script, url, args.connections, args.warmup)
    before = probe.snapshot()
    out, cpu = run_wrk(wrk, script, url, args.connections, args.duration)
    after = probe.snapshot()
    stopped_at = time.time()
    seconds = out["duration_us"] / 1e6
    share = CpuProbe.share(before, after)
    share["client"] = 100 * cpu / max(1e-9, after[0] - before[0])
    statuses = Counter({"202": warm["accepted"] + out["accepted"]})
    if warm["other"] + out["other"]:
        statuses["non-202"] = warm["other"] + out["other"]
    errors = {k: warm[k] + out[k] for k in ("connect", "read", "write", "timeout")}
    return {
        "tool": "wrk",
        "connections": args.connections,
        "measured": out["requests"],
        "accepted": out["accepted"],
        "elapsed": seconds,
        "statuses": dict(statuses),
        "errors": {k: v for k, v in errors.items() if v},
        "unsent": 0,
        "p50": out["p50"] / 1000,
        "p90": out["p90"] / 1000,
        "p99": out["p99"] / 1000,
        "max": out["max"] / 1000,
        "stopped_at": stopped_at,
        "share": share,
    }


def non_202(result: dict[str, Any]) -> int:
    bad = sum(v for k, v in result["statuses"].items() if k != "202")
    return bad + sum(result["errors"].values())


def show_share(share: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.0f}%" for k, v in share.items())


_DISPATCH = re.compile(r"broker/(dispatcher|invokers/|delivery|outcomes|records|decide)")
_LAYERS = (  # the innermost frame that matches decides, for samples outside broker/ code
    (re.compile(r"starlette/|fastapi/|anyio/"), "FastAPI / Starlette / anyio request machinery"),
    (re.compile(r"uvicorn/|h11/"), "uvicorn + h11 (HTTP/1.1 parsing and writing)"),
    (re.compile(r"redis/"), "redis-py, other (pub/sub wake listener, clock)"),
    (re.compile(r"selector_events|selectors\.py"), "socket reads/writes and polling"),
)


def layer(frames: list[str]) -> str:
    """Which part of the serve process one sample belongs to."""
    stack = ";".join(frames)
    if "invoke_async_many (broker/core.py" in stack:
        return "Broker.invoke_async (validate, envelope, enqueue script)"
    if _DISPATCH.search(stack):
        return "dispatcher (claim, python invoker IPC, settle)"
    for frame in reversed(frames):
        for pattern, name in _LAYERS:
            if pattern.search(frame):
                return name
    return "event loop, other"


def summarize_profile(raw: Path, top: int = 12) -> list[str]:
    """Shares of py-spy's raw (collapsed-stack) samples: by layer, by broker/ function
    (inclusive), and the hottest leaf functions."""
    layers: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [re.sub(r":\d+\)$", ")", f) for f in stack.split(";")]
        frames = [re.sub(r"\(/\S*?/(site-packages|python3\.\d+)/", "(", f) for f in frames]
        layers[layer(frames)] += n
        for frame in set(frames):
            if "(broker/" in frame and "broker/cli.py" not in frame:
                inclusive[frame] += n
        own[frames[-1]] += n

    def pct(n: int) -> str:
        return f"{100 * n / max(1, total):5.1f}%"

    lines = [f"  {total} samples (busy time); by layer:"]
    lines += [f"    {pct(n)}  {name}" for name, n in layers.most_common()]
    lines.append("  broker/ functions, inclusive:")
    lines += [f"    {pct(n)}  {f}" for f, n in inclusive.most_common(top)]
    lines.append("  hottest leaf functions (self):")
    lines += [f"    {pct(n)}  {f}" for f, n in own.most_common(top)]
    return lines


def profile_phase(
    serve: Serve, probe: CpuProbe, args: argparse.Namespace, wrk: str | None, script: Path
) -> int:
    """An unmeasured max-rate phase under ``py-spy record``; returns the 202s it got."""
    py_spy = Path(sys.executable).with_name("py-spy")
    if not py_spy.exists():
        print("profile: py-spy is not installed in this venv; skipped")
        return 0
    raw = Path(args.profile)
    seconds = max(2, round(args.duration) - 1)
    command = [str(py_spy), "record", "-p", str(serve.process.pid), "-d", str(seconds)]
    command += ["-r", "100", "-f", "raw", "-o", str(raw)]
    recorder = subprocess.Popen(
        command,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        if wrk:
            load = wrk_load(serve, probe, wrk, script, args)
        else:
            load = python_load(serve, probe, client_spec(args, 0.0))
        _, err = recorder.communicate(timeout=seconds + 30)
    finally:
        if recorder.poll() is None:
            recorder.kill()
            recorder.wait()
    if not raw.exists():
        print(f"profile: py-spy wrote nothing ({err.strip()[-300:]})")
    else:
        print(f"profile of the serve process under max-rate load ({seconds} s, 100 Hz), {raw}:")
        for line in summarize_profile(raw):
            print(line)
    return int(load["statuses"].get("202", 0))


def client_spec(args: argparse.Namespace, rate: float) -> dict[str, Any]:
    return {
        "rate": rate,
        "connections": args.connections,
        "warmup_s": args.warmup,
        "duration_s": args.duration,
    }


def run_config(workers: int, args: argparse.Namespace, log_dir: Path) -> dict[str, Any]:
    from tests.servers import start_redis

    wrk = shutil.which("wrk") if args.client in ("auto", "wrk") else None
    if args.client == "wrk" and not wrk:
        print("wrk is not installed: falling back to the Python client")
    script = log_dir / "event.lua"
    script.write_text(WRK_SCRIPT)
    redis_server = start_redis()
    serve: Serve | None = None
    queue: Queue | None = None
    try:
        serve = start_serve(redis_server.url, workers, args.concurrency, log_dir)
        queue = Queue(redis_server.url)
        probe = CpuProbe(serve.process.pid, redis_server.process.pid)
        print(
            f"\n== sluice serve --worker-processes {workers} --concurrency {args.concurrency} "
            f"(pid {serve.process.pid}, port {serve.port}); redis-server on port "
            f"{redis_server.port} (no persistence); {os.cpu_count()} CPUs"
        )
        results: dict[str, Any] = {"workers": workers}

        # 1. maximum rate
        if wrk:
            top = wrk_load(serve, probe, wrk, script, args)
        else:
            top = python_load(serve, probe, client_spec(args, 0.0))
        drain = queue.wait_drained(top["stopped_at"], args.drain_timeout)
        rate = top["accepted"] / top["elapsed"]
        print(
            f"load (max rate): {top['tool']}, {top['connections']} keep-alive connections, "
            f"{args.warmup:g} s warm-up + {args.duration:g} s measured"
        )
        print(f"accepted: {rate:.0f} events/s (max rate)")
        print(
            f"  latency p50 {top['p50']:.2f} ms p90 {top['p90']:.2f} ms p99 {top['p99']:.2f} ms "
            f"max {top['max']:.2f} ms; responses {top['statuses']}, errors {top['errors'] or 0}"
        )
        print(f"  CPU (% of one core): {show_share(top['share'])}")
        print(
            f"  drain: {'queue empty' if drain['drained'] else 'NOT drained'} "
            f"{drain['drain_s'] * 1000:.0f} ms after the last answer; Succeeded "
            f"{drain.get('Succeeded', 0)} of {drain.get('AsyncEventsReceived', 0)} stored"
        )
        results["max"] = {**top, "achieved": rate, "drain": drain}

        # 2. paced
        paced = python_load(serve, probe, client_spec(args, args.rate))
        drain2 = queue.wait_drained(paced["stopped_at"], args.drain_timeout)
        achieved = paced["accepted"] / paced["elapsed"]
        print(
            f"load (paced): python, {paced['connections']} keep-alive connections, "
            f"{args.rate:g}/s offered on one schedule, {args.warmup:g} s warm-up + "
            f"{args.duration:g} s measured"
        )
        print(
            f"paced {args.rate:g}/s: achieved {achieved:.0f}/s p50 {paced['p50']:.2f} ms "
            f"p99 {paced['p99']:.2f} ms"
        )
        print(
            f"  p90 {paced['p90']:.2f} ms max {paced['max']:.2f} ms; send lag p50 "
            f"{paced['lag_p50']:.2f} ms p99 {paced['lag_p99']:.2f} ms; from due time p99 "
            f"{paced['due_p99']:.2f} ms; unsent {paced['unsent']}; responses "
            f"{paced['statuses']}, errors {paced['errors'] or 0}"
        )
        print(f"  CPU (% of one core): {show_share(paced['share'])}")
        print(
            f"  drain: {'queue empty' if drain2['drained'] else 'NOT drained'} "
            f"{drain2['drain_s'] * 1000:.0f} ms after the last answer; Succeeded "
            f"{drain2.get('Succeeded', 0)} of {drain2.get('AsyncEventsReceived', 0)} stored"
        )
        results["paced"] = {**paced, "achieved": achieved, "drain": drain2}

        if args.profile:
            profiled = profile_phase(serve, probe, args, wrk, script)
            queue.wait_drained(time.time(), args.drain_timeout)
        else:
            profiled = 0

        stats = queue.stats()
        answered = profiled + sum(int(r["statuses"].get("202", 0)) for r in (top, paced))
        stored = stats.get("AsyncEventsReceived", 0)
        note = (
            f" (wrk does not count the up to {args.connections} answers in flight when each of "
            "its runs stops)"
            if top["tool"] == "wrk" and answered != stored
            else ""
        )
        print(
            f"  totals: {answered} answers 202 counted by the load clients, {stored} stored{note}"
        )
        print(f"  Redis stats: {json.dumps(stats, sort_keys=True)}")
        results["stats"] = stats
        return results
    finally:
        if queue is not None:
            queue.close()
        if serve is not None:
            serve.stop()
        redis_server.stop()


def print_targets(results: dict[str, Any], args: argparse.Namespace) -> None:
    paced, top = results["paced"], results["max"]
    bad = non_202(paced) + non_202(top)
    drained = paced["drain"]["drained"] and top["drain"]["drained"]
    stats = results["stats"]
    rows = [
        (
            f">= {TARGET_RATE:,.0f}/s accepted (paced)",
            f"{paced['achieved']:.1f}/s",
            paced["achieved"] >= RATE_TOLERANCE * args.rate and args.rate >= TARGET_RATE,
        ),
        (
            f"p99 < {TARGET_P99_MS:g} ms (paced)",
            f"{paced['p99']:.2f} ms",
            paced["p99"] < TARGET_P99_MS,
        ),
        ("non-202 responses = 0", str(bad), bad == 0),
        (
            "dispatcher drained",
            f"{stats.get('Succeeded', 0)}/{stats.get('AsyncEventsReceived', 0)} ok",
            drained and stats.get("Succeeded", 0) == stats.get("AsyncEventsReceived", -1),
        ),
    ]
    print(
        f"targets (--worker-processes {results['workers']}; max rate {top['achieved']:.0f}/s; "
        "the paced rate passes at "
        f">= {RATE_TOLERANCE:.0%} of the {args.rate:,.0f}/s offered, for timer granularity):"
    )
    for name, figure, ok in rows:
        print(f"  {name:<28} {figure:>16}  {verdict(ok)}")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--worker-processes",
        type=int,
        nargs="+",
        default=[1],
        help="serve's python: worker processes; several values run one serve each",
    )
    parser.add_argument("--concurrency", type=int, default=64, help="serve --concurrency")
    parser.add_argument("--connections", type=int, default=32, help="keep-alive connections")
    parser.add_argument("--rate", type=float, default=TARGET_RATE, help="paced requests/s")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds, per phase")
    parser.add_argument("--duration", type=float, default=5.0, help="measured seconds")
    parser.add_argument("--client", choices=("auto", "wrk", "python"), default="auto")
    parser.add_argument("--drain-timeout", type=float, default=30.0, help="seconds")
    parser.add_argument("--profile", metavar="PATH", help="py-spy raw profile of serve")
    return parser.parse_args()


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == CLIENT_FLAG:
        client_main(sys.argv[2])
        return
    args = parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    signal.signal(signal.SIGTERM, terminate)
    wrk = shutil.which("wrk")
    print(
        f"max-rate load generator: "
        f"{'wrk (' + wrk + ')' if wrk and args.client != 'python' else 'python asyncio client'}"
        f"{'' if wrk or args.client == 'python' else ' (wrk not installed)'}; "
        "paced load generator: python asyncio client"
    )
    all_results = []
    with tempfile.TemporaryDirectory(prefix="sluice-bench-api-") as tmp:
        for workers in args.worker_processes:
            try:
                all_results.append(run_config(workers, args, Path(tmp)))
            except Exception as exc:  # a failed configuration is reported, not raised
                print(f"--worker-processes {workers}: FAILED: {exc!r}")
    for results in all_results:
        print_targets(results, args)


if __name__ == "__main__":
    main()
