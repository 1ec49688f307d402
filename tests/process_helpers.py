"""`sluice serve` as a real subprocess, for end-to-end tests.

Each serve runs in a session (and process group) of its own, so a test can SIGKILL the whole
tree (serve, forkserver, python workers) with one ``killpg``, and teardown can always clean up
whatever is left. Output goes to files, not pipes: a chatty process can never block on a full
pipe, and the files are there to read when a test fails.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.helpers import wait_until

REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass
class ServeProcess:
    process: subprocess.Popen[bytes]
    stdout_path: Path
    stderr_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def ready_message(self) -> dict[str, Any] | None:
        """The ``{"event": "ready", ...}`` line on stdout, once it has been printed."""
        for line in self.stdout_path.read_text().splitlines():
            with contextlib.suppress(ValueError):
                message = json.loads(line)
                if isinstance(message, dict) and message.get("event") == "ready":
                    return message
        return None

    def ready_pid(self) -> int | None:
        message = self.ready_message()
        return None if message is None else int(message["pid"])

    @property
    def endpoint_url(self) -> str:
        """Where this serve's Lambda API listens."""
        message = self.ready_message()
        assert message is not None, "not ready"
        return f"http://{message['host']}:{message['port']}"

    async def wait_ready(self, timeout_s: float = 30.0) -> None:
        async def ready_or_gone() -> bool:
            return self.ready_pid() is not None or self.process.poll() is not None

        await wait_until(ready_or_gone, timeout_s, interval_s=0.05)
        if self.ready_pid() != self.pid:
            raise AssertionError(
                f"sluice serve exited with {self.process.returncode} before it was ready:\n"
                + self.stderr_tail()
            )

    def send_signal(self, sig: signal.Signals) -> None:
        """Signal the serve process only (not its workers)."""
        os.kill(self.pid, sig)

    def kill_group(self) -> None:
        """SIGKILL the serve and everything it started; safe to repeat."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)

    async def wait_exit(self, timeout_s: float) -> int:
        """The exit code, once the serve process has exited."""

        async def exited() -> bool:
            return self.process.poll() is not None

        try:
            await wait_until(exited, timeout_s, interval_s=0.05)
        except AssertionError:
            raise AssertionError(
                f"sluice serve {self.pid} still running {timeout_s} s later:\n" + self.stderr_tail()
            ) from None
        return self.process.returncode

    def stderr_tail(self, lines: int = 30) -> str:
        text = self.stderr_path.read_text(errors="replace") if self.stderr_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])


@dataclass
class ServeLauncher:
    """Starts `sluice serve` processes sharing one Redis and key prefix; ``close`` kills
    every one of them (fixture teardown)."""

    redis_url: str
    key_prefix: str
    log_dir: Path
    flags: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    started: list[ServeProcess] = field(default_factory=list)

    def environment(self) -> dict[str, str]:
        # Nothing from the caller's SLUICE_* settings may leak into the process under test.
        env = {k: v for k, v in os.environ.items() if not k.startswith("SLUICE_")}
        path = [str(REPO_ROOT), *filter(None, [env.get("PYTHONPATH")])]
        env["PYTHONPATH"] = os.pathsep.join(path)
        env["SLUICE_TEST_REDIS_URL"] = self.redis_url
        env.update(self.env)
        return env

    async def start(self, *extra_flags: str, ready_timeout_s: float = 30.0) -> ServeProcess:
        index = len(self.started)
        stdout_path = self.log_dir / f"serve-{index}.out"
        stderr_path = self.log_dir / f"serve-{index}.err"
        command = [
            sys.executable,
            "-m",
            "broker.cli",
            "serve",
            "--redis-url",
            self.redis_url,
            "--key-prefix",
            self.key_prefix,
            "--port",
            "0",  # any free port; endpoint_url tells which
            *self.flags,
            *extra_flags,
        ]
        with stdout_path.open("wb") as stdout, stderr_path.open("wb") as stderr:
            process = subprocess.Popen(
                command,
                cwd=REPO_ROOT,
                env=self.environment(),
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
                start_new_session=True,
            )
        serve = ServeProcess(process, stdout_path, stderr_path)
        self.started.append(serve)
        await serve.wait_ready(ready_timeout_s)
        return serve

    def close(self) -> None:
        for serve in self.started:
            serve.kill_group()
            with contextlib.suppress(subprocess.TimeoutExpired):
                serve.process.wait(10)
            # Shown by pytest only when the test failed: what each serve had to say.
            print(f"--- serve {serve.pid} exit {serve.process.returncode}, stderr tail:")
            print(serve.stderr_tail())
