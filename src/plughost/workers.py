"""Worker processes from the host's side: start, talk to, supervise and stop them.

A :class:`Supervisor` keeps one tenant's worker running. When the process
dies (an exception, ``os._exit``, SIGKILL, a segfault), requests in flight
fail with :class:`~plughost.errors.WorkerCrashed`, and a new process is
started from the tenant's stored deployment after a backoff that doubles
from 50 ms up to 5 s; after ``MAX_ATTEMPTS`` failed starts in a row the
worker is marked ``failed`` (health shows it) until the next deploy.

Each worker runs in a process group of its own, so stopping it also stops
whatever its code started.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, replace
from typing import Any

from . import _wire
from ._wire import RemoteError
from .errors import PlughostError, WorkerCrashed, WorkerStartFailed
from .worker import WorkerSpec

HostRequest = Callable[[str, tuple[Any, ...]], Awaitable[Any]]
Ready = tuple[dict[str, list[Any]], list[dict[str, Any]]]

_ENTRY = "import sys; from plughost.worker import main; main(int(sys.argv[1]))"
_FIRST_BACKOFF = 0.05
_MAX_BACKOFF = 5.0
_STABLE_AFTER = 10.0
MAX_ATTEMPTS = 10


class _Process:
    """One worker process and the socket to it."""

    def __init__(self, spec: WorkerSpec, on_request: HostRequest, on_exit: Callable[[], None]):
        self.spec = spec
        self._on_request = on_request
        self._on_exit = on_exit
        self._requests = _wire.Requests()
        self._ready: asyncio.Future[Ready] | None = None
        self._stopping = False
        self._lost_already = False
        self._writer: asyncio.StreamWriter | None = None
        self._reading: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.process: subprocess.Popen[bytes] | None = None
        self.started_at = time.monotonic()

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    async def start(self) -> Ready:
        timeout = self.spec.start_timeout
        loop = asyncio.get_running_loop()
        host_end, worker_end = socket.socketpair()
        with worker_end:
            self.process = await asyncio.to_thread(
                subprocess.Popen,
                [sys.executable, "-c", _ENTRY, str(worker_end.fileno())],
                pass_fds=[worker_end.fileno()],
                start_new_session=True,
            )
        reader, self._writer = await asyncio.open_connection(sock=host_end)
        self._ready = loop.create_future()
        self._reading = loop.create_task(self._read_loop(reader))
        spec = asdict(self.spec)
        try:
            await self._send(spec)
            return await asyncio.wait_for(asyncio.shield(self._ready), timeout)
        except TimeoutError:
            await self.stop(timeout=1)
            raise WorkerStartFailed(
                self.spec.tenant, "timeout", "TimeoutError", f"not ready after {timeout:.0f} s"
            ) from None
        except BaseException:
            await self.stop(timeout=5)
            raise

    async def _send(self, message: Any) -> None:
        if self._writer is None:
            raise WorkerCrashed(self.spec.tenant, self.pid)
        self._writer.write(_wire.encode(message))
        try:
            await self._writer.drain()
        except ConnectionError:
            self._lost()
            raise WorkerCrashed(self.spec.tenant, self.pid) from None

    async def _read_loop(self, reader: asyncio.StreamReader) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                message = await _wire.read(reader)
                kind, request_id = message[0], message[1]
                if kind == "ready" and self._ready is not None and not self._ready.done():
                    self._ready.set_result((message[2], message[3]))
                elif kind == "failed" and self._ready is not None and not self._ready.done():
                    _, _, failure, error_type, text = message
                    self._ready.set_exception(
                        WorkerStartFailed(self.spec.tenant, failure, error_type, text)
                    )
                elif kind == "reply":
                    self._requests.settle(message)
                else:
                    task = loop.create_task(self._answer(kind, request_id, tuple(message[2:])))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
        except (asyncio.IncompleteReadError, ConnectionError, _wire.WireError, ValueError):
            pass  # the worker exited, died, or broke the protocol: it is lost either way
        except (IndexError, TypeError, KeyError):
            pass
        self._lost()

    async def _answer(self, kind: str, request_id: int, args: tuple[Any, ...]) -> None:
        try:
            reply: list[Any] = ["reply", request_id, True, await self._on_request(kind, args)]
        except Exception as exc:
            error_type = getattr(exc, "error_type", type(exc).__name__)
            reply = ["reply", request_id, False, ["error", error_type, str(exc)]]
        try:
            await self._send(reply)
        except (TypeError, ValueError) as exc:
            failure = ["encode", type(exc).__name__, f"the answer is not JSON: {exc}"]
            with contextlib.suppress(PlughostError):
                await self._send(["reply", request_id, False, failure])
        except PlughostError:
            pass

    def _lost(self) -> None:
        """The worker exited or died: fail what waits for it, and say so once."""
        if self._lost_already:
            return
        self._lost_already = True
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        self._requests.fail_all(WorkerCrashed(self.spec.tenant, self.pid))
        for task in self._tasks:
            task.cancel()
        if self._ready is not None and not self._ready.done():
            self._ready.set_exception(
                WorkerStartFailed(
                    self.spec.tenant,
                    "exit",
                    "WorkerCrashed",
                    "the worker exited before it was ready",
                )
            )
            return
        if not self._stopping:
            self._on_exit()

    async def request(self, kind: str, *args: Any, timeout: float | None = None) -> Any:
        """Send a request and wait for its answer (up to ``timeout``, if given).

        Raises:
            WorkerCrashed: the worker is gone or died before answering.
            RemoteError: the request failed in the worker.
            TypeError: the request holds something that is not JSON.
            TimeoutError: no answer within ``timeout``.
        """
        message, future = self._requests.open(kind, *args)
        try:
            await self._send(message)
        except ValueError as exc:
            self._requests.drop(message)
            raise TypeError(f"cannot send to the worker: {exc}") from None
        except BaseException:
            self._requests.drop(message)
            raise
        return await asyncio.wait_for(future, timeout)

    def kill(self) -> None:
        """Kill the worker and everything it started (its process group)."""
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.process.pid, signal.SIGKILL)

    async def stop(self, timeout: float) -> None:
        """Ask the worker to finish and exit; then kill its process group (what it started)."""
        self._stopping = True
        if self._writer is not None:
            with contextlib.suppress(PlughostError, TimeoutError, RemoteError, TypeError):
                await self.request("stop", timeout=timeout)
        if self.process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                await asyncio.to_thread(self.process.wait, timeout)
            self.kill()  # also what the worker's code may have started
            await asyncio.to_thread(self.process.wait)
        self._lost()
        if self._reading is not None:
            self._reading.cancel()


class Supervisor:
    """Keeps one tenant's worker process running.

    Args:
        spec: what the worker runs.
        on_request: answers the worker's requests to the host (``publish``, ``rpc``).
        respec: called before a restart for the spec of the live deployment.
    """

    def __init__(
        self,
        spec: WorkerSpec,
        on_request: HostRequest,
        respec: Callable[[], Awaitable[WorkerSpec]],
    ) -> None:
        self.spec = spec
        self._on_request = on_request
        self._respec = respec
        self._process: _Process | None = None
        self._starting: _Process | None = None
        self._restarting: asyncio.Task[None] | None = None
        self._backoff = _FIRST_BACKOFF
        self._forgotten: set[str] = set()
        self.restarts = 0
        self.state = "starting"
        self.error: str | None = None
        self.ready: Ready = ({}, [])

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def running(self) -> bool:
        return self.state == "running"

    def describe(self) -> dict[str, Any]:
        found: dict[str, Any] = {"pid": self.pid, "state": self.state, "restarts": self.restarts}
        if self.error:
            found["error"] = self.error
        return found

    async def start(self) -> Ready:
        """Start the worker and wait until it has loaded everything.

        Raises:
            WorkerStartFailed: the deployment failed to load in the worker, or in time.
        """
        self.ready = await self._start_process(self.spec)
        self.state = "running"
        return self.ready

    async def _start_process(self, spec: WorkerSpec) -> Ready:
        process = _Process(spec, self._on_request, self._crashed)
        self._starting = process
        try:
            ready = await process.start()
        finally:
            self._starting = None
        self._process = process
        return ready

    def forget(self, name: str) -> None:
        """An instance was unloaded: restarts must not bring it back."""
        self._forgotten.add(name)

    async def request(self, kind: str, *args: Any, timeout: float | None = None) -> Any:
        """Send a request to the worker and return its answer.

        Raises:
            WorkerCrashed: the worker is down (or died before answering).
            RemoteError: the request failed in the worker.
            TimeoutError: no answer within ``timeout``.
        """
        if self._process is None or not self.running:
            raise WorkerCrashed(self.spec.tenant, self.pid)
        return await self._process.request(kind, *args, timeout=timeout)

    def recycle(self) -> None:
        """Kill the worker; the supervisor restarts it (used when it stops answering)."""
        if self._process is not None:
            self._process.kill()

    def keep_trying(self, error: str) -> None:
        """A start failed: record it and go on trying with backoff."""
        self.error = error
        self._crashed()

    def _crashed(self) -> None:
        if self.state == "stopped":
            return
        self.state = "restarting"
        if self._restarting is None or self._restarting.done():
            self._restarting = asyncio.get_running_loop().create_task(self._restart())

    async def _restart(self) -> None:
        if (
            self._process is not None
            and time.monotonic() - self._process.started_at > _STABLE_AFTER
        ):
            self._backoff = _FIRST_BACKOFF
        for _ in range(MAX_ATTEMPTS):
            await asyncio.sleep(self._backoff)
            self._backoff = min(self._backoff * 2, _MAX_BACKOFF)
            try:
                spec = await self._respec()
                spec = replace(
                    spec, instances=tuple(i for i in spec.instances if i[1] not in self._forgotten)
                )
                self.ready = await self._start_process(spec)
            except Exception as exc:
                self.error = f"{type(exc).__name__}: {exc}"
                continue
            self.spec = spec
            self.restarts += 1
            self.state = "running"
            self.error = None
            return
        self.state = "failed"

    async def stop(self, timeout: float = 10.0) -> None:
        """Stop the worker for good, with a restart in progress."""
        self.state = "stopped"
        if self._restarting is not None:
            self._restarting.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._restarting
        for process in (self._starting, self._process):
            if process is not None:
                await process.stop(timeout)
