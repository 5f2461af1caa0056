"""Which namespaces are loaded now, and who is using them.

A namespace is loaded on first use (one load however many callers arrive at
once), used through leases, and unloaded in two ways:

* eviction: past ``max_loaded`` namespaces, the least recently used one
  that no call is using is unloaded;
* retirement: a namespace whose code was replaced (a redeploy, a deleted
  snapshot, a removed tenant) takes no new calls and is unloaded as soon as
  its last call returns, so calls in flight finish on the code they started
  with while new calls already run the new code.

Everything here runs on the network's event loop; only the load itself runs
in a worker thread, so bundle code executing at import does not stall it.
"""

from __future__ import annotations

import asyncio
import inspect
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .agent import Agent, find_agents
from .errors import NotStartedError, PlughostError
from .events import handlers_of, is_topic_pattern
from .loader import LoadedBundle, load_bundle, load_error
from .naming import Namespace


@dataclass(frozen=True)
class AgentInstance:
    """An agent of a loaded namespace, instantiated once and reused by every call.

    ``handlers`` are its ``@on`` event handlers, as ``(pattern, bound method)``.
    """

    name: str
    instance: Agent
    is_async: bool
    handlers: list[tuple[str, Callable[..., Any]]]


@dataclass(eq=False)
class LoadedNamespace:
    """A loaded namespace: its bundle, its agents, and the calls using it now."""

    namespace: Namespace
    bundle: LoadedBundle
    agents: dict[str, AgentInstance]
    in_flight: int = 0
    retired: bool = False
    unloaded: asyncio.Event = field(default_factory=asyncio.Event)


def load_namespace(namespace: Namespace, folder: Path) -> LoadedNamespace:
    """Load the bundle in ``folder`` into ``namespace`` and instantiate its agents.

    Raises:
        BundleRejectedError, BundleLoadError: as :func:`plughost.loader.load_bundle`.
        DuplicateAgentError: two agents share a name (the namespace is unloaded again).
        BundleLoadError: also when an agent's constructor or class attributes fail.
    """
    bundle = load_bundle(namespace, folder)
    try:
        agents: dict[str, AgentInstance] = {}
        for name, cls in find_agents(bundle.modules).items():
            instance = cls()
            agents[name] = AgentInstance(
                name,
                instance,
                inspect.iscoroutinefunction(instance.perform),
                [h for h in handlers_of(instance) if not is_topic_pattern(h[0])],
            )
    except PlughostError:
        bundle.unload(verify=False)
        raise
    except Exception as exc:  # an agent's constructor or class attributes
        bundle.unload(verify=False)
        raise load_error(namespace, folder.resolve(), exc) from exc
    return LoadedNamespace(namespace, bundle, agents)


Loader = Callable[[], LoadedNamespace]


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
        self._entries: OrderedDict[Namespace, LoadedNamespace] = OrderedDict()
        self._loading: dict[Namespace, asyncio.Task[LoadedNamespace]] = {}
        self._waiting: Counter[Namespace] = Counter()
        self._retire_when_loaded: set[Namespace] = set()
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

    def get(self, namespace: Namespace) -> LoadedNamespace | None:
        """The loaded namespace, if it is loaded and not retired."""
        entry = self._entries.get(namespace)
        return entry if entry is not None and not entry.retired else None

    async def acquire(self, namespace: Namespace, load: Loader) -> LoadedNamespace:
        """Lease ``namespace``, loading it with ``load`` (in a thread) if needed.

        Every successful acquire must be paired with :meth:`release`.

        Raises:
            Exception: whatever ``load`` raised; every waiter of that load gets it.
        """
        while True:
            entry = self._entries.get(namespace)
            if entry is not None:
                if not entry.retired:
                    entry.in_flight += 1
                    self._entries.move_to_end(namespace)
                    return entry
                # Same key, older code still draining: its replacement waits for it.
                await entry.unloaded.wait()
                continue
            task = self._loading.get(namespace) or self._start_load(namespace, load)
            self._waiting[namespace] += 1
            try:
                entry = await asyncio.shield(task)
            finally:
                self._waiting[namespace] -= 1
                if not self._waiting[namespace]:
                    del self._waiting[namespace]
            if self._entries.get(namespace) is entry:
                # Retired while it loaded, it still serves the calls that were waiting for it.
                entry.in_flight += 1
                self._entries.move_to_end(namespace)
                return entry

    def hold(self) -> list[LoadedNamespace]:
        """Lease every loaded namespace that takes calls; release each with :meth:`release`."""
        held = [entry for entry in self._entries.values() if not entry.retired]
        for entry in held:
            entry.in_flight += 1
        return held

    def release(self, entry: LoadedNamespace) -> None:
        """End one lease; unload a retired namespace once its last lease ends."""
        entry.in_flight -= 1
        if entry.in_flight == 0:
            if entry.retired:
                self._unload(entry)
            elif len(self._entries) > self.max_loaded:
                self._evict()

    def add(self, entry: LoadedNamespace) -> None:
        """Register a namespace loaded elsewhere (a deploy loads before it commits)."""
        self._entries[entry.namespace] = entry
        self._evict()

    def retire(self, namespace: Namespace) -> None:
        """Take no new calls into ``namespace``; unload it when its last call returns."""
        entry = self._entries.get(namespace)
        if entry is None:
            if namespace in self._loading:
                self._retire_when_loaded.add(namespace)
            return
        entry.retired = True
        if entry.in_flight == 0:
            self._unload(entry)

    def digests(self) -> set[str]:
        """The bundle digests of every namespace still loaded (retired ones included)."""
        return {entry.bundle.digest for entry in self._entries.values()}

    async def close(self, timeout: float = 30.0) -> None:
        """Wait (up to ``timeout``) for loads in progress, then unload every namespace.

        A load that finishes later is unloaded as soon as it does.
        """
        self._closed = True
        if self._loading:
            await asyncio.wait(list(self._loading.values()), timeout=timeout)
        for entry in list(self._entries.values()):
            self._unload(entry)

    def _start_load(self, namespace: Namespace, load: Loader) -> asyncio.Task[LoadedNamespace]:
        async def run() -> LoadedNamespace:
            try:
                entry = await asyncio.to_thread(load)
            except BaseException:
                self.load_failures += 1
                raise
            finally:
                del self._loading[namespace]
            self.loads += 1
            if self._closed:
                entry.bundle.unload(verify=False)
                raise NotStartedError("the network stopped while this namespace was loading")
            self._entries[namespace] = entry
            if namespace in self._retire_when_loaded:
                self._retire_when_loaded.discard(namespace)
                entry.retired = True
                if not self._waiting.get(namespace):
                    self._unload(entry)
                return entry
            self._evict(keep=namespace)
            return entry

        task = asyncio.get_running_loop().create_task(run())
        # The load's error reaches its callers; this keeps asyncio from also logging it.
        task.add_done_callback(lambda t: t.cancelled() or t.exception())
        self._loading[namespace] = task
        return task

    def _evict(self, keep: Namespace | None = None) -> None:
        excess = len(self._entries) - self.max_loaded
        for namespace, entry in list(self._entries.items()):
            if excess <= 0:
                return
            if entry.in_flight == 0 and namespace != keep:
                self._unload(entry)
                self.evictions += 1
                excess -= 1

    def _unload(self, entry: LoadedNamespace) -> None:
        if self._entries.get(entry.namespace) is entry:
            del self._entries[entry.namespace]
        entry.agents.clear()
        entry.bundle.unload(verify=False)
        self.unloads += 1
        entry.unloaded.set()
