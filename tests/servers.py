"""Real servers for tests: redis-server on a free loopback port, and a small HTTP server
that follows the Lambda Invoke contract (the *function* under test is test code)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import redis


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def require_binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        import pytest  # only where a test asks (the bench shares these helpers)

        if os.environ.get("CI"):
            pytest.fail(f"{name} is not installed; .ci/run installs it")
        pytest.skip(f"{name} is not installed")
    return path


@dataclass
class RedisServer:
    port: int
    directory: str
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        terminate(self.process)
        shutil.rmtree(self.directory, ignore_errors=True)


def terminate(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL if it is still there 10 s later; waits for the exit."""
    process.terminate()
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def start_redis(*extra: str) -> RedisServer:
    binary = require_binary("redis-server")
    directory = tempfile.mkdtemp(prefix="sluice-redis-")
    port = free_port()
    process = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
            "--dir",
            directory,
            *extra,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    client = redis.Redis(port=port)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            if time.monotonic() > deadline or process.poll() is not None:
                process.kill()
                raise RuntimeError("redis-server did not start") from None
            time.sleep(0.02)
    client.close()
    return RedisServer(port, directory, process)


Answer = tuple[int, dict[str, str], bytes]  # a function's reply: status, headers, body
Responder = Callable[[dict[str, Any], dict[str, str]], Answer]


def ok(body: Any = None) -> Answer:
    """A successful invocation returning ``body``."""
    return 200, {}, json.dumps(body).encode()


def function_error() -> Answer:
    """An unhandled error, as the Lambda Invoke contract reports it."""
    error = {"errorMessage": "boom", "errorType": "RuntimeError"}
    return 200, {"X-Amz-Function-Error": "Unhandled"}, json.dumps(error).encode()


@dataclass
class LambdaHttpFunction:
    """A function behind the Lambda Invoke HTTP contract. ``responder(event, headers)``
    returns (status, headers, body); every call is recorded in ``calls``."""

    responder: Responder
    calls: list[tuple[float, dict[str, Any], dict[str, str]]] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}/2015-03-31/functions/function/invocations"

    @property
    def server_url(self) -> str:
        """The server's root URL (for webhook destinations)."""
        assert self.server is not None
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}/hook"

    def start(self) -> LambdaHttpFunction:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                event = json.loads(self.rfile.read(length) or b"null")
                headers = {k.lower(): v for k, v in self.headers.items()}
                owner.calls.append((time.time(), event, headers))
                status, out_headers, body = owner.responder(event, headers)
                self.send_response(status)
                for key, value in out_headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


@dataclass
class RabbitServer:
    node: str
    port: int
    directory: str
    process: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}//"

    def stop(self) -> None:
        subprocess.run(
            ["rabbitmqctl", "-n", self.node, "stop"], capture_output=True, timeout=60, check=False
        )
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, 9)
            self.process.wait()
        shutil.rmtree(self.directory, ignore_errors=True)


def start_rabbitmq() -> RabbitServer:
    """A private RabbitMQ node on loopback (ENV-NOTES recipe); about 5 s to start."""
    require_binary("rabbitmq-server")
    directory = tempfile.mkdtemp(prefix="sluice-rabbit-")
    os.chmod(directory, 0o777)  # the start script drops to the rabbitmq user
    node = f"sluice{free_port()}@localhost"
    port = free_port()
    env = {
        **os.environ,
        "RABBITMQ_NODENAME": node,
        "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
        "RABBITMQ_NODE_PORT": str(port),
        "RABBITMQ_DIST_PORT": str(free_port()),
        "ERL_EPMD_ADDRESS": "127.0.0.1",
        "RABBITMQ_MNESIA_BASE": directory,
        "RABBITMQ_LOG_BASE": directory,
    }
    process = subprocess.Popen(
        ["rabbitmq-server"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 90
    while (
        subprocess.run(
            ["rabbitmqctl", "-n", node, "status"], capture_output=True, timeout=60, check=False
        ).returncode
        != 0
    ):
        if time.monotonic() > deadline:
            raise RuntimeError("rabbitmq-server did not start")
        time.sleep(0.5)
    return RabbitServer(node, port, directory, process)
