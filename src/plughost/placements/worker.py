"""The ``process`` placement: each namespace of a tenant runs in a supervised worker process.

A worker separates crashes and imports from the host: an exception,
``os._exit``, SIGKILL or a segfault ends one worker, whose requests in
flight fail with :class:`~plughost.errors.WorkerCrashed`, and the
:class:`Supervisor` starts it again after a backoff that doubles from 50 ms
up to 5 s; after ``MAX_ATTEMPTS`` failed starts in a row the worker is
``failed`` (health shows it) until the next deploy. It does not sandbox:
the worker runs as the host's user, with the host's files and network.

Each worker runs in a process group of its own, so stopping it also stops
whatever its code started. Everything it sends is checked: a frame that
breaks the protocol (too large, not JSON, nested too deeply, of the wrong
shape) is the worker's fault, and the worker is killed and restarted.
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
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar, Protocol

from .. import protocol
from ..agent import AgentInfo
from ..deadlines import Deadlines
from ..errors import (
    AgentError,
    CallTimeoutError,
    InvalidArgumentsError,
    LimitExceededError,
    ModLoadError,
    PlughostError,
    UnknownAgentError,
    WorkerBusyError,
    WorkerCrashed,
    WorkerStartFailed,
)
from ..events import Event, EventResponse
from ..feed import Publish
from ..lifecycle import WORKER_TRANSITIONS, Lifecycle, WorkerState
from ..mod import Host, LoadedMod, Mod, ResolvedModPath
from ..naming import Namespace
from ..protocol import RemoteError, WorkerSpec
from ..runtime import Unit
from ..state import state_root
from ..storage import CallState
from .base import Launch, Placement, Started
from .process_group import kill_session

HostRequest = Callable[[str, str, tuple[Any, ...]], Awaitable[Any]]
"""Answers a worker's request to the host: ``(tenant, kind, args)``."""
Ready = tuple[dict[str, list[Any]], list[dict[str, Any]]]

ENTRY = "import sys; from plughost.placements.worker_process import main; main(int(sys.argv[1]))"
"""The code a worker's interpreter runs (``-c``), given its socket's descriptor."""
_EXIT_GRACE = 1.0  # how long a closed worker's process may take to exit and tell why
_DEADLINE_NEAR = 0.9  # of the call deadline: a cancellation after it is the deadline's
_FIRST_BACKOFF = 0.05
_MAX_BACKOFF = 5.0
_STABLE_AFTER = 10.0
MAX_ATTEMPTS = 10
_EXITED = "the worker exited"
_CONTROL_REQUESTS = frozenset({"stop", "restart", "unload"})
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
                self.process = await asyncio.to_thread(self._popen, worker_end.fileno())
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
        returncode = None
        if self.process is not None and await asyncio.to_thread(self._ended, _EXIT_GRACE):
            # Unreaped, its id is still its own: what its killed keeper left goes now.
            self.kill()
            returncode = await asyncio.to_thread(self.process.wait)
        self._lost(self._exit_reason(returncode))

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
        if self.process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                await asyncio.to_thread(self.process.wait, timeout)
            self.kill()  # also what the worker's code may have started
            await asyncio.to_thread(self.process.wait)
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


class Supervisor:
    """Keeps one namespace's worker process running.

    Args:
        spec: what the worker runs.
        on_request: answers the worker's requests to the host (``publish``, ``rpc``).
        deadlines: ends requests past their deadline.
        process: makes the worker process (a real one by default).
        first_backoff, max_backoff: the wait before the first restart, doubling up to the
            second.
        max_inflight: the tenant's requests (calls, events, topics, RPC) it may have
            in flight at once, and its own requests to the host (publishing, RPC); past
            it, :class:`WorkerBusyError`, on either side.
        recycle_after_timeout: restart the worker when a request outlives its deadline
            (code that may still run is stopped the only way it can be).
    """

    def __init__(
        self,
        spec: WorkerSpec,
        on_request: Callable[[str, tuple[Any, ...]], Awaitable[Any]],
        deadlines: Deadlines,
        *,
        process: ProcessFactory = _Process,
        first_backoff: float = _FIRST_BACKOFF,
        max_backoff: float = _MAX_BACKOFF,
        max_inflight: int = 64,
        recycle_after_timeout: bool = False,
        tell: Publish | None = None,
    ) -> None:
        self.spec = spec
        self._tell = tell
        self._max_inflight = max_inflight
        self._recycle_after_timeout = recycle_after_timeout
        self._in_flight = 0
        self._asked = 0  # the worker's requests to the host, being answered
        self._on_request = on_request
        self._deadlines = deadlines
        self._make_process = process
        self._first_backoff = first_backoff
        self._max_backoff = max_backoff
        self._process: WorkerProcess | None = None
        self._starting: WorkerProcess | None = None
        self._retiring: WorkerProcess | None = None  # renewed, being stopped
        self._restarting: asyncio.Task[None] | None = None
        self._backoff = first_backoff
        self._forgotten: set[str] = set()
        self.restarts = 0
        self.lifecycle = Lifecycle(
            "worker", spec.tenant, WorkerState.STARTING, WORKER_TRANSITIONS, self._changed
        )
        self.ready: Ready = ({}, [])

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def _changed(self, lifecycle: Lifecycle[WorkerState], old: WorkerState) -> None:
        if self._tell is None:
            return
        spec, new = self.spec, lifecycle.state
        which = f"snapshot {spec.snapshot!r}" if spec.snapshot else f"v{spec.version}"
        why = f": {lifecycle.error}" if lifecycle.error else ""
        self._tell(
            f"worker_{new.value}",
            spec.tenant,
            f"worker of {which}: {old.value} -> {new.value}{why}",
        )

    @property
    def state(self) -> WorkerState:
        return self.lifecycle.state

    def describe(self) -> dict[str, Any]:
        found: dict[str, Any] = {
            "pid": self.pid,
            "state": self.state.value,
            "restarts": self.restarts,
        }
        if self.lifecycle.error:
            found["error"] = self.lifecycle.error
        return found

    async def start(self) -> Ready:
        """Start the worker and wait until it has loaded everything.

        Raises:
            WorkerStartFailed: the deployment failed to load in the worker, or in time.
        """
        self.ready = await self._start_process(self.spec)
        self.lifecycle.set(WorkerState.READY)
        return self.ready

    async def _start_process(self, spec: WorkerSpec) -> Ready:
        process = self._make_process(spec, self._answer, self._crashed)
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

    async def _answer(self, kind: str, args: tuple[Any, ...]) -> Any:
        # A worker's flood of publishes or RPC calls would otherwise queue without bound
        # in the host, ahead of other tenants' work.
        if self._asked >= self._max_inflight:
            raise WorkerBusyError(self.spec.tenant, self._max_inflight)
        self._asked += 1
        try:
            return await self._on_request(kind, args)
        finally:
            self._asked -= 1

    async def request(self, kind: str, *args: Any, timeout: float | None = None) -> Any:
        """Send a request to the worker and return its answer.

        Raises:
            WorkerCrashed: the worker is down (or died before answering).
            RemoteError: the request failed in the worker.
            TimeoutError: no answer within ``timeout`` (default: the call deadline).
        """
        deadline = self.spec.call_timeout if timeout is None else timeout
        try:
            return await self._deadlines.run(self.request_in_deadline(kind, *args), deadline)
        except TimeoutError:
            if self._recycle_after_timeout:
                self.renew("a request outlived its deadline")
            raise

    async def request_in_deadline(self, kind: str, *args: Any) -> Any:
        """Send a request whose deadline the caller keeps already, and return its answer:
        one deadline a request, not one here as well.

        Raises:
            WorkerCrashed, RemoteError: as :meth:`request`.
        """
        if self._process is None or self.state is not WorkerState.READY:
            raise WorkerCrashed(self.spec.tenant, self.pid, self.lifecycle.error)
        work = kind not in _CONTROL_REQUESTS
        if work and self._in_flight >= self._max_inflight:
            raise WorkerBusyError(self.spec.tenant, self._max_inflight)
        # Control requests pass the cap: a busy worker must still be stoppable.
        self._in_flight += work
        started = time.monotonic()
        try:
            return await self._process.request(kind, *args)
        except RemoteError as exc:
            if exc.kind == "limit":
                # What the code left behind (processes, memory, files) cannot be trusted on.
                self.renew(f"its {exc.error_type} limit was reached")
            raise
        except asyncio.CancelledError:
            # An RPC's deadline is its caller's, which cancels this from outside: one that
            # comes at the call deadline is taken for it (the caller began a moment sooner).
            late = time.monotonic() - started >= self.spec.call_timeout * _DEADLINE_NEAR
            if work and late and self._recycle_after_timeout:
                self.renew("a request outlived its deadline")
            raise
        finally:
            self._in_flight -= work

    def recycle(self) -> None:
        """Kill the worker; the supervisor restarts it (used when it stops answering)."""
        if self._process is not None:
            self._process.kill()

    def renew(self, reason: str) -> None:
        """Replace a worker that still answers but cannot be trusted on: a new process is
        started beside it and takes over once ready, then the old one is killed. Requests
        made meanwhile go to the old one; those it has not answered when it is killed
        fail with :class:`WorkerCrashed`. If the new one fails to start, the old one is
        killed and restarted as after a crash."""
        busy = self._restarting is not None and not self._restarting.done()
        if self.state is not WorkerState.READY or busy:
            return
        self._restarting = asyncio.get_running_loop().create_task(self._renew(reason))

    async def renewed(self, reason: str) -> None:
        """:meth:`renew`, and wait until the new process has taken over (or failed to)."""
        self.renew(reason)
        if self._restarting is not None:
            await asyncio.shield(self._restarting)

    async def _renew(self, reason: str) -> None:
        old, forgotten = self._process, set(self._forgotten)
        try:
            self.ready = await self._start_process(self._without_forgotten())
        except Exception as exc:
            self._restarting = None
            if old is not None:
                old.kill()
            self._crashed(f"{reason}; its replacement failed: {type(exc).__name__}: {exc}")
            return
        self._retiring = old
        self.spec = self._without_forgotten()
        self.restarts += 1
        self.lifecycle.set(WorkerState.READY, f"renewed: {reason}")
        if self._tell is not None:
            self._tell("worker_renewed", self.spec.tenant, f"worker renewed: {reason}")
        if old is not None:
            await old.stop(timeout=0)  # if stop() cancels this meanwhile, it stops old itself
        self._retiring = None
        for name in self._forgotten - forgotten:  # unloaded while the new one started
            with contextlib.suppress(PlughostError, RemoteError, TimeoutError):
                await self.request("unload", name, timeout=self.spec.unload_timeout)

    def _without_forgotten(self) -> WorkerSpec:
        return replace(
            self.spec,
            instances=tuple(i for i in self.spec.instances if i[1] not in self._forgotten),
        )

    def keep_trying(self, error: str) -> None:
        """A start failed: record it and go on trying with backoff."""
        self._crashed(error)

    async def restarted(self) -> bool:
        """Wait until a restart under way ends; whether the worker is ready then."""
        if self._restarting is not None:
            await asyncio.wait([self._restarting])  # stopped meanwhile: it was cancelled
        return self.state is WorkerState.READY

    def _crashed(self, reason: str) -> None:
        if self.state in (WorkerState.STOPPED, WorkerState.FAILED):
            return
        self.lifecycle.set(WorkerState.RESTARTING, reason)
        if self._restarting is None or self._restarting.done():
            self._restarting = asyncio.get_running_loop().create_task(self._restart())

    async def _restart(self) -> None:
        if (
            self._process is not None
            and time.monotonic() - self._process.started_at > _STABLE_AFTER
        ):
            self._backoff = self._first_backoff
        spec = self._without_forgotten()
        for _ in range(MAX_ATTEMPTS):
            await asyncio.sleep(self._backoff)
            self._backoff = min(self._backoff * 2, self._max_backoff)
            try:
                self.ready = await self._start_process(spec)
            except Exception as exc:
                self.lifecycle.set(WorkerState.RESTARTING, f"{type(exc).__name__}: {exc}")
                continue
            self.spec = spec
            self.restarts += 1
            self.lifecycle.set(WorkerState.READY)
            return
        self.lifecycle.set(WorkerState.FAILED, self.lifecycle.error)

    async def stop(self, timeout: float = 10.0) -> None:
        """Stop the worker for good, with a restart in progress."""
        if self.state is not WorkerState.STOPPED:
            self.lifecycle.set(WorkerState.STOPPED)
        if self._restarting is not None:
            self._restarting.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._restarting
        for process in (self._starting, self._retiring, self._process):
            if process is not None:
                await process.stop(timeout)


class WorkerUnit(Unit):
    """A namespace running in a worker process.

    The tenant's live namespace is not evicted: its worker also runs the
    tenant's declared instances.
    """

    def __init__(
        self, launch: Launch, supervisor: Supervisor, placement: str, *, mounts_state: bool
    ) -> None:
        super().__init__(launch.namespace, launch.digest, evictable=not launch.live)
        self.supervisor = supervisor
        self.placement = placement
        self._mounts_state = mounts_state

    def agents(self) -> list[AgentInfo]:
        return [
            AgentInfo(name, description, tool)
            for name, (description, tool) in sorted(self.supervisor.ready[0].items())
        ]

    async def call(
        self,
        agent: str,
        args: Mapping[str, Any],
        release: Callable[[], None],
        state: CallState | None = None,
    ) -> Any:
        tenant = self.namespace.tenant
        wire = None if state is None else state.to_wire()
        try:
            return await self.supervisor.request("call", agent, dict(args), wire)
        except TimeoutError:
            raise CallTimeoutError(tenant, agent, self.supervisor.spec.call_timeout) from None
        except RemoteError as exc:
            if exc.kind == "unknown_agent":
                known = exc.message.split(",") if exc.message else []
                raise UnknownAgentError(tenant, agent, self.namespace.snapshot, known) from None
            if exc.kind == "invalid_arguments":  # the worker names the agent it found
                raise InvalidArgumentsError(tenant, exc.error_type, exc.message) from None
            if exc.kind == "limit":  # the worker names the limit
                value = dict(self.supervisor.spec.limits).get(exc.error_type)
                raise LimitExceededError(tenant, exc.error_type, value, exc.message) from None
            raise AgentError(tenant, agent, exc.error_type, exc.message) from None
        finally:
            release()

    def describe(self) -> dict[str, Any]:
        return {"placement": self.placement, **self.supervisor.describe()}

    @property
    def healthy(self) -> bool:
        return self.supervisor.state is WorkerState.READY

    async def state_sealed(self, sealed: bool) -> None:
        if self._mounts_state and self.namespace.snapshot is None:
            await self.supervisor.renewed(
                "its tenant was sealed" if sealed else "its tenant was unsealed"
            )

    def memory(self) -> int | None:
        # The worker's resident memory (its keeper and sandbox launcher are not counted).
        pid = self.supervisor.pid
        if pid is None:
            return None
        try:
            with open(f"/proc/{pid}/statm") as statm:
                return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, IndexError):
            return None

    def unload(self) -> asyncio.Task[None]:
        return asyncio.get_running_loop().create_task(
            self.supervisor.stop(self.supervisor.spec.unload_timeout)
        )


class RemoteControl:
    """Instances that run in a worker: shut down and restarted there.

    ``placement`` names the placement the worker belongs to.
    """

    def __init__(self, supervisor: Supervisor, host: Host, placement: str) -> None:
        self._supervisor = supervisor
        self._host = host
        self.placement = placement
        self._replaced: set[int] = set()

    async def shutdown(self, mod: LoadedMod) -> str | None:
        if id(mod) in self._replaced:
            self._replaced.discard(id(mod))
            return None  # the worker swapped it out when it restarted it
        self._supervisor.forget(mod.mod_id)
        try:
            await self._supervisor.request(
                "unload", mod.mod_id, timeout=self._supervisor.spec.unload_timeout
            )
        except TimeoutError:
            self._supervisor.recycle()  # it does not answer: restart it without this instance
            return "TimeoutError: the worker did not unload the instance in time"
        except (PlughostError, RemoteError) as exc:
            return f"{getattr(exc, 'error_type', type(exc).__name__)}: {exc}"
        return None

    async def restart(self, mod: LoadedMod, source: ResolvedModPath) -> LoadedMod:
        # The worker runs one deployment: ``source`` is in its own folder, where it looks.
        try:
            described = await self._supervisor.request(
                "restart", mod.mod_id, timeout=self._supervisor.spec.start_timeout
            )
        except RemoteError as exc:
            raise ModLoadError(
                mod.mod_path, "restart", f"{exc.error_type}: {exc.message}"
            ) from None
        self._replaced.add(id(mod))
        return self.stub(protocol.check_instance(described))

    def stub(self, info: dict[str, Any]) -> LoadedMod:
        """The host's record of an instance in the worker: every handler, topic
        subscription and RPC method forwards to it."""
        supervisor, tenant, name = self._supervisor, self._supervisor.spec.tenant, info["name"]
        instance: Mod = type(info["class"], (Mod,), {})()
        instance.mod_id, instance.config, instance.network = name, info["config"], self._host
        # What the manifest declares, not what the worker says: exposing widens its reach.
        declared = {entry[1]: entry[3] for entry in supervisor.spec.instances}
        instance.tenant, instance.expose = tenant, tuple(declared.get(name, ()))
        instance.namespace = Namespace(tenant, mod=name, placement=self.placement)

        async def on_event(event: Event) -> EventResponse:
            answer = await supervisor.request("event", name, event.model_dump())
            return EventResponse.model_validate(answer)

        def on_topic(topic: str) -> Callable[[Event], Awaitable[None]]:
            async def deliver(event: Event) -> None:
                await supervisor.request("topic", name, topic, event.model_dump())

            return deliver

        def rpc_method(method: str) -> Callable[..., Awaitable[Any]]:
            async def call(*args: Any, **kwargs: Any) -> Any:
                # Dispatcher.rpc, the only caller of RPC methods, keeps their call deadline.
                return await supervisor.request_in_deadline("rpc", name, method, args, kwargs)

            return call

        return LoadedMod(
            mod_id=name,
            mod_path=info["mod_path"],
            tenant=tenant,
            config=info["config"],
            instance=instance,
            bundle=None,
            handlers=[(pattern, on_event) for pattern in info["handlers"]],
            topics={topic: [on_topic(topic)] for topic in info["topics"]},
            rpcs={method: rpc_method(method) for method in info["rpcs"]},
            control=self,
            source=ResolvedModPath(info["mod_path"], Path(supervisor.spec.folder), None),
            from_bundle=True,
        )


class Worker(Placement):
    """Runs each namespace in a supervised worker process.

    Args:
        host: what instances in the worker see of the network (via their stubs).
        on_request: answers workers' requests (publishing, RPC) as their tenant.
        deadlines: ends requests past their deadline.
        data_dir: the data folder, as workers' mods see it.
        unload_timeout, start_timeout, call_timeout: the deadlines of unloading
            an instance, of starting a worker, and of one request.
        max_inflight: the requests one worker may have in flight.
        shared_topics: the absolute topics every tenant may use, besides its own.
    """

    name = "process"

    def __init__(
        self,
        host: Host,
        on_request: HostRequest,
        deadlines: Deadlines,
        *,
        data_dir: Path,
        unload_timeout: float,
        start_timeout: float,
        call_timeout: float,
        max_inflight: int,
        shared_topics: frozenset[str],
        tell: Publish | None = None,
    ) -> None:
        self._host = host
        self._tell = tell
        self._shared_topics = tuple(sorted(shared_topics))
        self._max_inflight = max_inflight
        self._on_request = on_request
        self._deadlines = deadlines
        self._data_dir = data_dir
        self._unload_timeout = unload_timeout
        self._start_timeout = start_timeout
        self._call_timeout = call_timeout

    recycle_after_timeout: ClassVar[bool] = False
    """Whether a request past its deadline restarts the worker (see :class:`Supervisor`)."""
    mounts_state: ClassVar[bool] = False
    """Whether the worker is shown its tenant's live state by a mount, which it can write
    while the mount stands: a seal renews it (see :meth:`WorkerUnit.state_sealed`)."""

    def _spec(self, launch: Launch) -> WorkerSpec:
        """What the worker of ``launch`` runs."""
        return WorkerSpec(
            launch.tenant,
            launch.version,
            str(launch.folder.resolve()),
            str(self._data_dir.resolve()),
            tuple((m.path, m.name, dict(m.config), tuple(m.expose)) for m in launch.instances),
            self._unload_timeout,
            self._start_timeout,
            self._call_timeout,
            snapshot=launch.namespace.snapshot,
            shared_topics=self._shared_topics,
            libraries=str(launch.environment.folder) if launch.environment else None,
            state=str(state_root(self._data_dir, launch.tenant).resolve()),
        )

    def _process(self, launch: Launch, spec: WorkerSpec) -> ProcessFactory:
        """What makes the worker processes of ``launch``, which run ``spec``."""
        return _Process

    def _supervisor(self, launch: Launch) -> Supervisor:
        async def answer(kind: str, args: tuple[Any, ...]) -> Any:
            return await self._on_request(launch.tenant, kind, args)

        spec = self._spec(launch)
        return Supervisor(
            spec,
            answer,
            self._deadlines,
            process=self._process(launch, spec),
            max_inflight=self._max_inflight,
            recycle_after_timeout=self.recycle_after_timeout,
            tell=self._tell,
        )

    async def start(self, launch: Launch) -> Started:
        supervisor = self._supervisor(launch)
        _, described = await supervisor.start()
        if len(described) != len(launch.instances):
            await supervisor.stop(self._unload_timeout)
            raise WorkerStartFailed(
                launch.tenant,
                "load",
                "InstanceCountMismatch",
                f"{len(launch.instances)} instances declared, {len(described)} came up",
            )
        control = RemoteControl(supervisor, self._host, self.name)
        return Started(
            WorkerUnit(launch, supervisor, self.name, mounts_state=self.mounts_state),
            [control.stub(i) for i in described],
        )

    async def resume(self, launch: Launch) -> Started:
        supervisor = self._supervisor(launch)
        unit = WorkerUnit(launch, supervisor, self.name, mounts_state=self.mounts_state)
        control = RemoteControl(supervisor, self._host, self.name)
        try:
            _, described = await supervisor.start()
        except PlughostError as exc:
            supervisor.keep_trying(str(exc))  # health shows it; the supervisor retries

            async def coming() -> list[LoadedMod]:
                if not await supervisor.restarted():
                    return []
                return [control.stub(i) for i in supervisor.ready[1]]

            return Started(unit, [], coming=coming())
        return Started(unit, [control.stub(i) for i in described])
