"""Which namespaces are loaded now, in whichever placement, and who is using them.

A namespace is started on first use (one start however many callers arrive at
once), used through leases, and unloaded in two ways:

* eviction: past ``max_loaded`` namespaces, the least recently used one
  that no call is using, and that its placement lets go, is unloaded;
* retirement: a namespace whose code was replaced (a redeploy, a deleted
  snapshot, a removed tenant) takes no new calls and is unloaded as soon as
  its last call returns, so calls in flight finish on the code they started
  with while new calls already run the new code.

The runtime knows nothing of where a namespace's code runs: a placement
hands it a :class:`Unit`, and the same leases, bound and drain apply to a
namespace in this process, in a worker process or anywhere else.
"""

from __future__ import annotations

import abc
import asyncio
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from .agent import AgentInfo
from .errors import NotStartedError
from .lifecycle import NAMESPACE_TRANSITIONS, Lifecycle, NamespaceState
from .naming import Namespace
from .storage import CallState

Handler = tuple[str, str, Callable[..., Any]]
"""An agent's event handler: ``(owner, pattern, function)``."""


class Unit(abc.ABC):
    """One namespace's code, started by a placement: what the runtime leases and drains.

    Args:
        namespace: the namespace it runs.
        digest: the bundle digest it was loaded from (the GC spares its files).
        evictable: whether the LRU bound may unload it while idle.
    """

    def __init__(self, namespace: Namespace, digest: str, *, evictable: bool = True) -> None:
        self.namespace = namespace
        self.digest = digest
        self.evictable = evictable
        self.in_flight = 0
        self.retired = False
        """Whether it takes no new calls: its lifecycle left ``live``. An attribute kept by
        the lifecycle's listener, since every call reads it twice."""
        self.lifecycle = Lifecycle(
            "namespace",
            repr(namespace),
            NamespaceState.LIVE,
            NAMESPACE_TRANSITIONS,
            listener=self._state_changed,
        )
        self.unloaded = asyncio.Event()

    def _state_changed(self, lifecycle: Lifecycle[NamespaceState], left: NamespaceState) -> None:
        self.retired = lifecycle.state is not NamespaceState.LIVE

    @abc.abstractmethod
    def agents(self) -> list[AgentInfo]:
        """The agents it offers, by name."""

    @abc.abstractmethod
    async def call(
        self,
        agent: str,
        args: Mapping[str, Any],
        release: Callable[[], None],
        state: CallState | None = None,
    ) -> Any:
        """Run one agent call, with ``state`` as its state; call ``release`` exactly once,
        when the work has really stopped.

        Raises:
            UnknownAgentError, AgentError, CallTimeoutError, WorkerCrashed.
        """

    def handlers(self) -> list[Handler]:
        """The agents' event handlers that the host can run; none by default."""
        return []

    def describe(self) -> dict[str, Any] | None:
        """What health shows of where it runs (a process's pid, state, restarts), if anything."""
        return None

    @property
    def healthy(self) -> bool:
        """False while it cannot serve (a worker restarting or failed)."""
        return True

    def memory(self) -> int | None:
        """An estimate of the bytes it holds, if one can be made."""
        return None

    async def state_sealed(self, sealed: bool) -> None:
        """Its tenant was sealed (or unsealed): code that is shown the tenant's live state
        writable by a mount, which a seal cannot take back, starts again without it (or
        with it), and this returns once it has."""
        return None

    @abc.abstractmethod
    def unload(self) -> asyncio.Task[None] | None:
        """Let the code go: at once, or by a task the runtime waits for when it closes."""


Starter = Callable[[], Awaitable[Unit]]


class Runtime:
    """The loaded namespaces of one network.

    Args:
        max_loaded: how many namespaces may stay loaded; beyond it, idle ones
            are evicted, least recently used first.
    """

    def __init__(self, max_loaded: int = 1000) -> None:
        if max_loaded < 1:
            raise ValueError("max_loaded must be at least 1")
        self.max_loaded = max_loaded
        self._entries: OrderedDict[Namespace, Unit] = OrderedDict()
        self._loading: dict[Namespace, asyncio.Task[Unit]] = {}
        self._waiting: Counter[Namespace] = Counter()
        self._retire_when_loaded: set[Namespace] = set()
        self._stopping: set[asyncio.Task[None]] = set()
        self._closed = False
        self.loads = 0
        self.load_failures = 0
        self.unloads = 0
        self.evictions = 0

    def __len__(self) -> int:
        return len(self._entries)

    def loaded(self) -> list[Namespace]:
        """The namespaces loaded now, least recently used first."""
        return list(self._entries)

    def states(self, tenant: str | None = None) -> dict[str, int]:
        """How many namespaces (of ``tenant``, if given) are in each lifecycle state now."""
        counts = Counter(
            unit.lifecycle.state.value
            for unit in self._entries.values()
            if tenant in (None, unit.namespace.tenant)
        )
        counts[NamespaceState.LOADING.value] += sum(
            tenant in (None, namespace.tenant) for namespace in self._loading
        )
        return {state.value: counts[state.value] for state in NamespaceState if counts[state.value]}

    def get(self, namespace: Namespace) -> Unit | None:
        """The loaded namespace, if it is loaded and not retired."""
        unit = self._entries.get(namespace)
        return unit if unit is not None and not unit.retired else None

    async def acquire(self, namespace: Namespace, start: Starter) -> Unit:
        """Lease ``namespace``, starting it with ``start`` if needed.

        Every successful acquire must be paired with :meth:`release`.

        Raises:
            Exception: whatever ``start`` raised; every waiter of that start gets it.
        """
        while True:
            unit = self._entries.get(namespace)
            if unit is not None:
                if not unit.retired:
                    unit.in_flight += 1
                    self._entries.move_to_end(namespace)
                    return unit
                # Same key, older code still draining: its replacement waits for it.
                await unit.unloaded.wait()
                continue
            task = self._loading.get(namespace) or self._start(namespace, start)
            self._waiting[namespace] += 1
            try:
                unit = await asyncio.shield(task)
            finally:
                self._waiting[namespace] -= 1
                if not self._waiting[namespace]:
                    del self._waiting[namespace]
            if self._entries.get(namespace) is unit:
                # Retired while it loaded, it still serves the calls that were waiting for it.
                unit.in_flight += 1
                self._entries.move_to_end(namespace)
                return unit

    def lease_loaded(self, namespace: Namespace) -> Unit | None:
        """Lease ``namespace`` if it is loaded and takes calls (the warm path); else ``None``."""
        unit = self._entries.get(namespace)
        if unit is None or unit.retired:
            return None
        unit.in_flight += 1
        self._entries.move_to_end(namespace)
        return unit

    def lease(self, unit: Unit) -> None:
        """Take one more lease on a unit already held (kept loaded until released)."""
        unit.in_flight += 1

    def hold(self) -> list[Unit]:
        """Lease every loaded namespace that takes calls; release each with :meth:`release`."""
        held = [unit for unit in self._entries.values() if not unit.retired]
        for unit in held:
            unit.in_flight += 1
        return held

    def release(self, unit: Unit) -> None:
        """End one lease; unload a retired namespace once its last lease ends."""
        unit.in_flight -= 1
        if unit.in_flight == 0:
            if unit.retired:
                self._unload(unit)
            elif len(self._entries) > self.max_loaded:
                self._evict()

    def add(self, unit: Unit) -> None:
        """Register a namespace started elsewhere (a deploy starts before it commits)."""
        self._entries[unit.namespace] = unit
        self._evict()

    def retire(self, namespace: Namespace) -> None:
        """Take no new calls into ``namespace``; unload it when its last call returns."""
        unit = self._entries.get(namespace)
        if unit is None:
            if namespace in self._loading:
                self._retire_when_loaded.add(namespace)
            return
        if not unit.retired:
            unit.lifecycle.set(NamespaceState.DRAINING)
        if unit.in_flight == 0:
            self._unload(unit)

    def describe(self, tenant: str | None = None) -> list[dict[str, Any]]:
        """The loaded namespaces (of ``tenant``, or all), least recently used first: each
        one's namespace, state, calls in flight and memory estimate."""
        return [
            {
                "namespace": repr(unit.namespace),
                "tenant": unit.namespace.tenant,
                "snapshot": unit.namespace.snapshot,
                "version": unit.namespace.version,
                "state": unit.lifecycle.state.value,
                "in_flight": unit.in_flight,
                "memory_bytes": unit.memory(),
                "placement": (unit.describe() or {}).get("placement", "inprocess"),
            }
            for unit in self._entries.values()
            if tenant in (None, unit.namespace.tenant)
        ]

    def units(self) -> list[Unit]:
        """Every loaded unit, retired ones still draining included."""
        return list(self._entries.values())

    def digests(self) -> set[str]:
        """The bundle digests of every namespace still loaded (retired ones included)."""
        return {unit.digest for unit in self._entries.values()}

    async def close(self, timeout: float = 30.0) -> None:
        """Wait (up to ``timeout``) for starts in progress, then unload every namespace.

        A start that finishes later is unloaded as soon as it does.
        """
        self._closed = True
        if self._loading:
            await asyncio.wait(list(self._loading.values()), timeout=timeout)
        for unit in list(self._entries.values()):
            self._unload(unit)
        if self._stopping:
            await asyncio.wait(list(self._stopping), timeout=timeout)

    def _start(self, namespace: Namespace, start: Starter) -> asyncio.Task[Unit]:
        async def run() -> Unit:
            try:
                unit = await start()
            except BaseException:
                self.load_failures += 1
                raise
            finally:
                del self._loading[namespace]
            self.loads += 1
            if self._closed:
                self._unload(unit)
                raise NotStartedError("the network stopped while this namespace was loading")
            self._entries[namespace] = unit
            if namespace in self._retire_when_loaded:
                self._retire_when_loaded.discard(namespace)
                unit.lifecycle.set(NamespaceState.DRAINING)
                if not self._waiting.get(namespace):
                    self._unload(unit)
                return unit
            self._evict(keep=namespace)
            return unit

        task = asyncio.get_running_loop().create_task(run())
        # The start's error reaches its callers; this keeps asyncio from also logging it.
        task.add_done_callback(lambda t: t.cancelled() or t.exception())
        self._loading[namespace] = task
        return task

    def _evict(self, keep: Namespace | None = None) -> None:
        excess = len(self._entries) - self.max_loaded
        if excess <= 0:  # the usual case: no copy of every entry for each load
            return
        for namespace, unit in list(self._entries.items()):
            if excess <= 0:
                return
            if unit.in_flight == 0 and unit.evictable and namespace != keep:
                self._unload(unit)
                self.evictions += 1
                excess -= 1

    def _unload(self, unit: Unit) -> None:
        if unit.lifecycle.state is NamespaceState.UNLOADED:
            return
        if self._entries.get(unit.namespace) is unit:
            del self._entries[unit.namespace]
        unit.lifecycle.set(NamespaceState.UNLOADED)
        stopping = unit.unload()
        if stopping is not None:
            self._stopping.add(stopping)
            stopping.add_done_callback(self._stopping.discard)
        self.unloads += 1
        unit.unloaded.set()
