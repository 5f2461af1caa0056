"""One worker process, as the host sees it: started with its spec, spoken to over its socket,
and ended with everything it started; why it ended, in words.

:class:`~plughost.placements.worker.Supervisor` keeps one of these running. Its hooks
(``_popen``, ``_first_frame``, ``_exit_reason``, ...) are where the other placements differ:
the ``sandbox`` placement starts the process inside bubblewrap, the ``ray`` placement has a
Ray actor on a node of the cluster start it there (``_launch``, ``_exit_status``, ...).
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
from typing import Any, Protocol

from .. import protocol
from ..errors import (
    PlughostError,
    WorkerCrashed,
    WorkerStartFailed,
)
from ..protocol import RemoteError, WorkerSpec
from .process_group import kill_session

HostRequest = Callable[[str, str, tuple[Any, ...]], Awaitable[Any]]
"""Answers a worker's request to the host: ``(tenant, kind, args)``."""
Ready = tuple[dict[str, list[Any]], list[dict[str, Any]]]

ENTRY = "import sys; from plughost.placements.worker_process import main; main(int(sys.argv[1]))"
"""The code a worker's interpreter runs (``-c``), given its socket's descriptor."""
_EXIT_GRACE = 1.0  # how long a closed worker's process may take to exit and tell why
_EXITED = "the worker exited"
# Tokens a host may have been given in its environment; tenant code in a worker must not
# find them in its own (a host that ``plughost serve`` started has dropped them already,
# a host embedded in another program may not have).
_SECRET_VARIABLES = frozenset({"PLUGHOST_ADMIN_TOKEN", "PLUGHOST_TOKEN"})


def _worker_environment() -> dict[str, str]:
    """The host's environment without its secrets (``PYTHONPATH`` and the rest stay)."""
    return {name: value for name, value in os.environ.items() if name not in _SECRET_VARIABLES}


def describe_exit(returncode: int | None) -> str:
    """Why a worker's process ended, from its exit status.

    The worker's keeper exits with the worker's status, a signal ``N`` as
    ``128 + N`` (as a shell reports it); a negative code is a signal that
    ended the process the host started itself.
    """
    if returncode is None or returncode == 0:
        return _EXITED
    number = returncode - 128 if returncode > 128 else -returncode if returncode < 0 else 0
    if number:
        try:
            name = signal.Signals(number).name
        except ValueError:
            name = f"signal {number}"
        return f"{_EXITED} (killed by {name})"
    return f"{_EXITED} with code {returncode}"


class _Process:
    """One worker process and the socket to it."""

    def __init__(
        self,
        spec: WorkerSpec,
        on_request: Callable[[str, tuple[Any, ...]], Awaitable[Any]],
        on_exit: Callable[[str], None],
    ) -> None:
        self.spec = spec
        self._on_request = on_request
        self._on_exit = on_exit
        self._requests = protocol.Requests()
        self._ready: asyncio.Future[Ready] | None = None
        self._stopping = False
        self._lost_already = False
        self._connection: protocol.Connection | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self.process: subprocess.Popen[bytes] | None = None
        self._exiting: asyncio.Task[None] | None = None
        self.started_at = time.monotonic()

    @property
    def pid(self) -> int | None:
        """The process's id while it is not reaped: after that the id may be another's."""
        if self.process is None or self.process.returncode is not None:
            return None
        return self.process.pid

    @property
    def _started_pid(self) -> int | None:
        """The id the process had, for messages."""
        return self.process.pid if self.process is not None else None

    async def start(self) -> Ready:
        timeout = self.spec.start_timeout
        loop = asyncio.get_running_loop()
        host_end, worker_end = socket.socketpair()
        with worker_end:
            try:
                await self._launch(worker_end)
            except BaseException:
                host_end.close()
                raise
        self._ready = loop.create_future()
        self._connection = await protocol.connect(
            host_end, self._on_message, self._on_closed, self._max_frame()
        )
        try:
            await self._send(self._first_frame())
            return await asyncio.wait_for(asyncio.shield(self._ready), timeout)
        except TimeoutError:
            self._ready.cancel()  # nobody waits for it any more
            await self.stop(timeout=1)
            raise WorkerStartFailed(
                self.spec.tenant, "timeout", "TimeoutError", f"not ready after {timeout:.0f} s"
            ) from None
        except BaseException:
            await self.stop(timeout=5)
            raise

    async def _launch(self, worker_end: socket.socket) -> None:
        """Start what runs the worker, on the socket ``worker_end`` (closed after this)."""
        self.process = await asyncio.to_thread(self._popen, worker_end.fileno())

    def _popen(self, descriptor: int) -> subprocess.Popen[bytes]:
        """Start the worker's process on the socket ``descriptor`` (runs in a thread)."""
        return subprocess.Popen(
            [sys.executable, "-c", ENTRY, str(descriptor)],
            pass_fds=[descriptor],
            start_new_session=True,
            env=_worker_environment(),
        )

    def _first_frame(self) -> dict[str, Any]:
        """The spec as the worker is told it."""
        return self.spec.to_message()

    def _max_frame(self) -> int:
        """The largest frame the worker may send."""
        return protocol.MAX_FRAME

    def _exit_reason(self, returncode: int | None) -> str:
        """Why the worker's process ended, as health and the failed requests say it."""
        return describe_exit(returncode)

    async def _send(self, message: Any) -> None:
        """Send one message, sized up first: a large one (an RPC argument from another
        instance, an answer) is encoded off the loop."""
        if self._connection is None:
            raise WorkerCrashed(self.spec.tenant, self._started_pid)
        try:
            await protocol.write(self._connection, message)
        except ConnectionError:
            self._lost("the connection closed")
            raise WorkerCrashed(self.spec.tenant, self._started_pid) from None

    def _on_message(self, message: list[Any]) -> None:
        kind, request_id = message[0], message[1]
        if kind == "reply":
            self._requests.settle(message)
        elif kind == "ready" and self._ready is not None and not self._ready.done():
            agents, instances = protocol.check_ready(message)
            self._ready.set_result((agents, instances))
        elif kind == "failed" and self._ready is not None and not self._ready.done():
            failure, error_type, text = protocol.check_failed(message)
            self._ready.set_exception(
                WorkerStartFailed(self.spec.tenant, failure, error_type, text)
            )
        else:
            task = asyncio.get_running_loop().create_task(
                self._answer(kind, request_id, tuple(message[2:]))
            )
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _on_closed(self, error: protocol.WireError | None) -> None:
        if error is None:
            self._exiting = asyncio.get_running_loop().create_task(self._exited())
            return
        # The worker broke the protocol: whatever it is doing, it cannot be trusted on.
        self.kill()
        self._lost(f"protocol error: {type(error).__name__}: {error}")
        self._exiting = asyncio.get_running_loop().create_task(self._reap())

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

    async def _exited(self) -> None:
        """The worker closed its end: wait a moment for its process to end, to say why."""
        self._lost(self._exit_reason(await self._exit_status(_EXIT_GRACE)))

    async def _exit_status(self, grace: float) -> int | None:
        """The worker's exit status, if its process ends within ``grace`` seconds."""
        if self.process is None or not await asyncio.to_thread(self._ended, grace):
            return None
        # Unreaped, its id is still its own: what its killed keeper left goes now.
        self.kill()
        return await asyncio.to_thread(self.process.wait)

    async def _reap(self) -> None:
        """Wait for the killed process to end, so that its id is given back."""
        if self.process is not None:
            await asyncio.to_thread(self.process.wait)

    def _ended(self, timeout: float) -> bool:
        """Wait up to ``timeout`` for the process to end, without reaping it."""
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while True:
            try:
                found = os.waitid(os.P_PID, self.process.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:  # reaped already
                return self.process.returncode is not None
            if found is not None:
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.005)

    def _lost(self, reason: str) -> None:
        """The worker exited, died or broke the protocol: fail what waits for it, once."""
        if self._lost_already:
            return
        self._lost_already = True
        self.kill()  # what the worker's code started goes with it, even if its keeper died
        if self._connection is not None:
            self._connection.close()
            self._connection = None
        self._requests.fail_all(WorkerCrashed(self.spec.tenant, self._started_pid, reason))
        for task in self._tasks:
            task.cancel()
        if self._ready is not None and not self._ready.done():
            # "the worker exited with code 3" stays as it is; other reasons are added.
            why = reason[len(_EXITED) :] if reason.startswith(_EXITED) else f" ({reason})"
            self._ready.set_exception(
                WorkerStartFailed(
                    self.spec.tenant,
                    "exit",
                    "WorkerCrashed",
                    f"the worker exited before it was ready{why}",
                )
            )
            return
        # Only a worker that became ready is restarted when it goes: one that failed to
        # start (its "failed" message came first) is the start's failure, not a crash.
        ready = self._ready
        if ready is None or ready.cancelled() or ready.exception() is not None:
            return
        if not self._stopping:
            self._on_exit(reason)

    async def request(self, kind: str, *args: Any, timeout: float | None = None) -> Any:
        """Send a request and wait for its answer (up to ``timeout``, if given: the
        supervisor's requests have their deadline kept by ``Deadlines`` instead).

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
        try:
            return await (future if timeout is None else asyncio.wait_for(future, timeout))
        except BaseException:
            self._requests.drop(message)  # cancelled or timed out: a late answer is ignored
            raise

    async def _ended_after_stop(self, timeout: float) -> None:
        """Give the worker, asked to stop, ``timeout`` seconds to exit; then end it and
        everything it started."""
        if self.process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                await asyncio.to_thread(self.process.wait, timeout)
            self.kill()  # also what the worker's code may have started
            await asyncio.to_thread(self.process.wait)

    def kill(self) -> None:
        """Kill the worker and everything it started (its session), unless it was reaped:
        its keeper killed the session then, and its id may be another process's now."""
        pid = self.pid
        if pid is not None:
            kill_session(pid)

    async def stop(self, timeout: float) -> None:
        """Ask the worker to finish and exit; then kill its process group (what it started)."""
        self._stopping = True
        if self._connection is not None:
            with contextlib.suppress(PlughostError, TimeoutError, RemoteError, TypeError):
                await self.request("stop", timeout=timeout)
        await self._ended_after_stop(timeout)
        self._lost("stopped")
        if self._exiting is not None:
            await self._exiting


class WorkerProcess(Protocol):
    """What the supervisor needs of one worker process (a test gives it a fake one)."""

    started_at: float

    @property
    def pid(self) -> int | None: ...

    async def start(self) -> Ready: ...

    async def request(self, kind: str, *args: Any) -> Any: ...

    def kill(self) -> None: ...

    async def stop(self, timeout: float) -> None: ...


ProcessFactory = Callable[
    [WorkerSpec, Callable[[str, tuple[Any, ...]], Awaitable[Any]], Callable[[str], None]],
    WorkerProcess,
]
"""Makes a worker process: ``(spec, on_request, on_exit)``; ``on_exit(reason)`` when it dies."""
