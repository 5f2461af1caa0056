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
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar

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
from .worker_spawn import ProcessFactory, Ready, WorkerProcess, _Process

HostRequest = Callable[[str, str, tuple[Any, ...]], Awaitable[Any]]
"""Answers a worker's request to the host: ``(tenant, kind, args)``."""
_DEADLINE_NEAR = 0.9  # of the call deadline: a cancellation after it is the deadline's
_FIRST_BACKOFF = 0.05
_MAX_BACKOFF = 5.0
_STABLE_AFTER = 10.0
MAX_ATTEMPTS = 10
_CONTROL_REQUESTS = frozenset({"stop", "restart", "unload"})


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

    @property
    def process(self) -> WorkerProcess | None:
        """The worker process that answers now, if one does."""
        return self._process

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

    def _unit(self, launch: Launch, supervisor: Supervisor) -> WorkerUnit:
        """The unit of ``launch``, whose worker ``supervisor`` keeps."""
        return WorkerUnit(launch, supervisor, self.name, mounts_state=self.mounts_state)

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
        return Started(self._unit(launch, supervisor), [control.stub(i) for i in described])

    async def resume(self, launch: Launch) -> Started:
        supervisor = self._supervisor(launch)
        unit = self._unit(launch, supervisor)
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
