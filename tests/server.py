"""A real ``plughost serve`` process on a free port of 127.0.0.1, for tests."""

from __future__ import annotations

import gc
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from plughost.client import Client


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class ServerProcess:
    """``python -m plughost serve`` run in ``cwd``: :meth:`start` it, :meth:`stop` it."""

    def __init__(
        self,
        cwd: Path,
        *,
        admin_token: str | None = None,
        config: Path | None = None,
        data_dir: Path | None = None,
        env: dict[str, str] | None = None,
        args: list[str] | None = None,
    ) -> None:
        self.cwd = cwd
        self.args = args or []
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.admin_token = admin_token
        self.config = config
        self.data_dir = data_dir
        self.env = env or {}
        self.process: subprocess.Popen[bytes] | None = None
        self.log = cwd / f"server-{self.port}.log"

    def start(self) -> ServerProcess:
        command = [sys.executable, "-m", "plughost", "serve", "--port", str(self.port)]
        if self.config is not None:
            command += ["--config", str(self.config)]
        if self.data_dir is not None:
            command += ["--data-dir", str(self.data_dir)]
        command += self.args
        env = {k: v for k, v in os.environ.items() if not k.startswith("PLUGHOST_")}
        if self.admin_token is not None:
            env["PLUGHOST_ADMIN_TOKEN"] = self.admin_token
        env.update(self.env)
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                command, cwd=self.cwd, env=env, stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited: {self.log.read_text()}")
            try:
                if httpx.get(self.url + "/api/health", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"server did not come up: {self.log.read_text()}")

    def stop(self) -> bool:
        """SIGTERM, then wait (SIGKILL after 30 s); return whether it shut down cleanly.

        Clean means the app's shutdown completed and the process ended by the
        SIGTERM it re-raises afterwards (or exited 0).
        """
        if self.process is None:
            return True
        self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        self.process = None
        completed = "Application shutdown complete" in self.log.read_text()
        return completed and code in (0, -signal.SIGTERM)

    def longest_wait_beside(self, work: Callable[[], object]) -> float:
        """Call tenant ``quick``'s ``Notifier`` over and over, as the admin, while ``work``
        runs; the longest wait between two answers, in seconds."""
        done = threading.Event()
        waits: list[float] = []
        failed: list[BaseException] = []

        def call() -> None:
            headers = {"Authorization": f"Bearer {self.admin_token}"}
            url = f"{self.url}/api/tenants/quick/agents/Notifier/call"
            try:
                with httpx.Client(headers=headers, timeout=60) as client:
                    last = time.perf_counter()
                    while not done.is_set():
                        answer = client.post(url, json={"args": {"message": "m"}})
                        assert answer.status_code == 200, answer.text
                        now = time.perf_counter()
                        waits.append(now - last)
                        last = now
                        time.sleep(0.001)
            except BaseException as exc:  # a failed call fails the check, not only the thread
                failed.append(exc)

        # What is measured is the server: a collection in this (large, late in a run)
        # test process would pause the caller and count as a stall.
        collecting = gc.isenabled()
        gc.disable()
        caller = threading.Thread(target=call)
        caller.start()
        try:
            time.sleep(0.2)
            work()
        finally:
            done.set()
            caller.join()
            if collecting:
                gc.enable()
        if failed:
            raise failed[0]
        assert len(waits) > 10
        return max(waits)

    def client(self, token: str | None = None) -> Client:
        return Client(self.url, token if token is not None else self.admin_token)
