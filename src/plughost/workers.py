"""Worker processes from the host's side: start, talk to, supervise and stop them.

A :class:`Supervisor` keeps one tenant's worker running. When the process
dies (an exception, ``os._exit``, SIGKILL, a segfault), requests in flight
fail with :class:`~plughost.errors.WorkerCrashed`, and a new process is
started from the tenant's stored deployment after a backoff that doubles
from 50 ms up to 5 s and resets once a worker has run for 10 s. Nothing
else in the host is affected.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from multiprocessing.connection import Connection
from typing import Any

from .errors import PlughostError, WorkerCrashed, WorkerStartFailed
from .worker import RemoteError, WorkerSpec

HostRequest = Callable[[str, tuple[Any, ...]], Awaitable[Any]]
Ready = tuple[dict[str, tuple[str, dict[str, Any]]], list[dict[str, Any]]]

_ENTRY = "import sys; from plughost.worker import main; main(int(sys.argv[1]))"
_FIRST_BACKOFF = 0.05
_MAX_BACKOFF = 5.0
_STABLE_AFTER = 10.0


class _Process:
    """One worker process and the pipe to it."""

    def __init__(self, spec: WorkerSpec, on_request: HostRequest, on_exit: Callable[[], None]):
        self.spec = spec
        self._on_request = on_request
        self._on_exit = on_exit
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._ids = itertools.count(1)
        self._ready: asyncio.Future[Ready] | None = None
        self._stopping = False
        self.conn: Connection | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self.started_at = time.monotonic()

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    async def start(self) -> Ready:
        loop = asyncio.get_running_loop()
        host_end, worker_end = socket.socketpair()
        with worker_end:
            self.process = await asyncio.to_thread(
                subprocess.Popen,
                [sys.executable, "-c", _ENTRY, str(worker_end.fileno())],
                pass_fds=[worker_end.fileno()],
            )
        self.conn = Connection(host_end.detach())
        self.conn.send(self.spec)
        self._ready = loop.create_future()
        loop.add_reader(self.conn.fileno(), self._readable)
        try:
            return await self._ready
        except BaseException:
            await self.stop(timeout=5)
            raise

    def _readable(self) -> None:
        assert self.conn is not None
        try:
            message = self.conn.recv()
        except (EOFError, OSError):
            self._lost()
            return
        kind, request_id = message[0], message[1]
        if kind == "ready" and self._ready is not None:
            self._ready.set_result((message[2], message[3]))
        elif kind == "failed" and self._ready is not None:
            _, _, failure, error_type, text = message
            self._ready.set_exception(
                WorkerStartFailed(self.spec.tenant, failure, error_type, text)
            )
        elif kind == "reply":
            future = self._pending.pop(request_id, None)
            if future is not None and not future.done():
                if message[2]:
                    future.set_result(message[3])
                else:
                    future.set_exception(RemoteError(*message[3]))
        else:
            asyncio.get_running_loop().create_task(self._answer(kind, request_id, message[2:]))

    async def _answer(self, kind: str, request_id: int, args: tuple[Any, ...]) -> None:
        try:
            reply: tuple[Any, ...] = ("reply", request_id, True, await self._on_request(kind, args))
        except Exception as exc:
            reply = ("reply", request_id, False, ("error", type(exc).__name__, str(exc)))
        if self.conn is not None:
            try:
                self.conn.send(reply)
            except (OSError, ValueError):
                self._lost()

    def _lost(self) -> None:
        """The pipe closed: the worker exited or died."""
        if self.conn is None:
            return
        asyncio.get_running_loop().remove_reader(self.conn.fileno())
        self.conn.close()
        self.conn = None
        crash = WorkerCrashed(self.spec.tenant, self.pid)
        for future in self._pending.values():
            if not future.done():
                future.set_exception(crash)
        self._pending.clear()
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

    async def request(self, kind: str, *args: Any) -> Any:
        if self.conn is None:
            raise WorkerCrashed(self.spec.tenant, self.pid)
        request_id = next(self._ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        try:
            self.conn.send((kind, request_id, *args))
        except (OSError, ValueError):
            self._lost()
        return await future

    async def stop(self, timeout: float) -> None:
        """Ask the worker to finish and exit; kill it if it has not after ``timeout``."""
        self._stopping = True
        if self.conn is not None:
            with contextlib.suppress(PlughostError, TimeoutError, RemoteError):
                await asyncio.wait_for(self.request("stop"), timeout)
        if self.process is not None:
            try:
                await asyncio.to_thread(self.process.wait, timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                await asyncio.to_thread(self.process.wait, 5)
        if self.conn is not None:
            self._lost()


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
        self._restarting: asyncio.Task[None] | None = None
        self._backoff = _FIRST_BACKOFF
        self.restarts = 0
        self.state = "starting"
        self.ready: Ready = ({}, [])

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def describe(self) -> dict[str, Any]:
        return {"pid": self.pid, "state": self.state, "restarts": self.restarts}

    async def start(self) -> Ready:
        """Start the worker and wait until it has loaded everything.

        Raises:
            WorkerStartFailed: the deployment failed to load in the worker.
        """
        process = _Process(self.spec, self._on_request, self._crashed)
        self.ready = await process.start()
        self._process = process
        self.state = "running"
        return self.ready

    async def request(self, kind: str, *args: Any) -> Any:
        """Send a request to the worker and return its answer.

        Raises:
            WorkerCrashed: the worker is down (or died before answering).
            RemoteError: the request failed in the worker.
        """
        if self._process is None:
            raise WorkerCrashed(self.spec.tenant, None)
        return await self._process.request(kind, *args)

    def _crashed(self) -> None:
        self.state = "crashed"
        if self._restarting is None or self._restarting.done():
            self._restarting = asyncio.get_running_loop().create_task(self._restart())

    async def _restart(self) -> None:
        if (
            self._process is not None
            and time.monotonic() - self._process.started_at > _STABLE_AFTER
        ):
            self._backoff = _FIRST_BACKOFF
        while self.state != "stopped":
            await asyncio.sleep(self._backoff)
            self._backoff = min(self._backoff * 2, _MAX_BACKOFF)
            if self.state == "stopped":
                return
            self.state = "restarting"
            try:
                self.spec = await self._respec()
                process = _Process(self.spec, self._on_request, self._crashed)
                self.ready = await process.start()
            except PlughostError:
                continue
            self._process = process
            self.restarts += 1
            self.state = "running"
            return

    async def stop(self, timeout: float = 10.0) -> None:
        """Stop the worker for good (its restarts too)."""
        self.state = "stopped"
        if self._restarting is not None:
            self._restarting.cancel()
        if self._process is not None:
            await self._process.stop(timeout)
