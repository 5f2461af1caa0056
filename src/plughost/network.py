"""The ``Network``: tenants, deployments, snapshots and agent calls, over one data folder.

Each deployment version and each snapshot of a tenant runs in its own
namespace (``Namespace(tenant, version=7)``, ``Namespace(tenant, snapshot="jan",
digest=...)``).
A redeploy loads the new version beside the old one, commits it, and then
points new calls at it; the old version drains and is unloaded (hot swap).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import inspect
import itertools
import json
import logging
import os
import re
import secrets
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from ._wire import RemoteError
from .bundle import BundleFiles, BundleLimits, BundleSource, read_bundle
from .errors import (
    AgentError,
    AmbiguousNameError,
    DuplicateSnapshotError,
    InvalidNameError,
    ModAlreadyLoadedError,
    ModLoadError,
    ModNotLoadedError,
    NotStartedError,
    OutsideTenantError,
    PlughostError,
    RpcError,
    UnknownAgentError,
    UnknownRpcError,
    UnknownSnapshotError,
    UnknownTenantError,
    WorkerStartFailed,
)
from .events import Event, EventResponse, as_response, matches, resolve_topic
from .manifest import Manifest, Placement, read_manifest
from .metrics import Metrics
from .mod import (
    FailedMod,
    LoadedMod,
    Mod,
    ModRegistry,
    ModRoots,
    ModUnloadReport,
    ResolvedModPath,
    mod_key,
    mod_namespace,
    start_mod,
    stop_mod,
)
from .naming import TENANT_NAME_RULE, Namespace, check_tenant_name
from .runtime import LoadedNamespace, Loader, Runtime, load_namespace
from .store import Deployment, GarbageReport, Snapshot, Store, StoredMod
from .worker import WorkerSpec
from .workers import Supervisor

log = logging.getLogger("plughost")

SNAPSHOT_NAME_RULE = (
    "1-128 characters, no '/', no control characters, no lone surrogates, not '.' or '..'"
)
SNAPSHOT_NAME_PATTERN = r"^[^/\x00-\x1f\x7f-\x9f]{1,128}$"
_SNAPSHOT_NAME = re.compile(SNAPSHOT_NAME_PATTERN)
MOD_ID_RULE = "1-64 characters of [A-Za-z0-9_.-], not starting with '.'"
SYSTEM_EVENTS = (
    "system.mod.load",
    "system.mod.unload",
    "system.mod.list",
    "system.instance.restart",
    "system.instance.unload",
)


@dataclass(frozen=True)
class ModSpec:
    """A mod to load when the network starts (from a config file)."""

    mod_path: str
    config: dict[str, Any] = field(default_factory=dict)
    mod_id: str | None = None
    tenant: str | None = None


@dataclass(frozen=True)
class AgentInfo:
    """An agent as listed: its name, description and OpenAI-style tool description."""

    name: str
    description: str
    tool: dict[str, Any]


class Network:
    """One plugin network over one data folder.

    Args:
        data_dir: where deployments, snapshots and files live (``./.plughost``).
        network_id: the name health reports.
        max_loaded_namespaces: how many namespaces stay loaded; the least
            recently used idle one is unloaded past it.
        limits: size and count limits for every deployed bundle.
        keep_versions: how many past deployments of a tenant keep their files.
        agent_threads: threads that run sync agents and handlers, off the event loop.
        gc_interval: seconds between garbage passes over unreferenced files.
        mod_roots: where mods may be loaded from: dotted packages and folders
            (default: ``plughost.mods`` and the data folder's ``mods/``).
        mods: mods to load at start, besides those loaded before a restart.
        unload_timeout: seconds an unload waits for a mod's running handlers.
        worker_start_timeout: seconds a worker process may take to load its deployment.

    Use as ``async with Network(...) as network:`` or ``start()`` / ``stop()``.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str] = ".plughost",
        network_id: str = "plughost",
        *,
        max_loaded_namespaces: int = 1000,
        limits: BundleLimits | None = None,
        keep_versions: int = 5,
        agent_threads: int = 32,
        gc_interval: float = 60.0,
        mod_roots: list[str | Path] | None = None,
        mods: list[ModSpec] | None = None,
        unload_timeout: float = 10.0,
        worker_start_timeout: float = 60.0,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.network_id = network_id
        self.limits = limits or BundleLimits()
        self.gc_interval = gc_interval
        self._store = Store(self.data_dir, keep_versions=keep_versions)
        self._runtime = Runtime(max_loaded_namespaces)
        self._agent_threads = agent_threads
        self._executor: ThreadPoolExecutor | None = None
        self._write_lock = asyncio.Lock()
        self._tenant_locks: dict[str, asyncio.Lock] = {}
        self._staging: list[tuple[str, frozenset[str]]] = []  # (digest, blobs) being deployed
        self._workers: dict[str, Supervisor] = {}  # tenants placed in a worker process
        self._pinned: Counter[str] = Counter()  # bundle digests of namespaces about to load
        self._live: dict[str, Deployment] = {}
        self._live_ns: dict[str, Namespace] = {}
        self._snapshots: dict[tuple[str, str], Snapshot] = {}
        self._started_at: float | None = None
        self._gc_task: asyncio.Task[None] | None = None
        self._mod_root_names = mod_roots
        self._startup_mods = list(mods or [])
        self.unload_timeout = unload_timeout
        self.worker_start_timeout = worker_start_timeout
        self._mods = ModRegistry()
        self._mod_roots = ModRoots([])
        self._mod_lock = asyncio.Lock()
        self._mod_generations = itertools.count(1)
        self._token_tenants: dict[str, str] = {}  # sha256 of a tenant token -> tenant
        self.metrics = Metrics(self._sample_metrics)
        self._calls_ok = self.metrics.calls.labels("ok")
        self._calls_failed = self.metrics.calls.labels("error")

    # -- lifecycle -----------------------------------------------------------------

    async def start(self) -> None:
        """Open the data folder and read what it holds; namespaces load on first use.

        Raises:
            DataFolderInUseError: another process has the folder open.
        """
        if self._started_at is not None:
            return
        self._store.open()
        self._live = self._store.current_deployments()
        self._live_ns = {t: Namespace(t, version=d.version) for t, d in self._live.items()}
        self._snapshots = self._store.snapshots()
        self._token_tenants = self._store.token_hashes()
        self._executor = ThreadPoolExecutor(self._agent_threads, "plughost-agent")
        self._started_at = time.time()
        self._gc_task = asyncio.get_running_loop().create_task(self._collect_periodically())
        (self.data_dir / "mods").mkdir(exist_ok=True)
        roots = self._mod_root_names
        self._mod_roots = ModRoots(
            roots if roots is not None else ["plughost.mods", self.data_dir / "mods"]
        )
        await self._load_startup_mods()
        for tenant in sorted(self._live):
            if self._live[tenant].placement == "process":
                await self._start_deployed_worker(tenant)
            else:
                await self._start_deployed_instances(tenant)

    async def stop(self) -> None:
        """Unload every namespace and close the data folder."""
        if self._started_at is None:
            return
        if self._gc_task is not None:
            self._gc_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._gc_task
        # Stopping is not unloading: the mods stay recorded and load again at the next start.
        async with self._mod_lock:
            for mod in reversed(self._mods.loaded()):
                self._mods.unregister(mod.key)
                await stop_mod(mod, self.unload_timeout)
        for worker in list(self._workers.values()):
            await worker.stop(self.unload_timeout)
        self._workers.clear()
        await self._runtime.close()
        if self._executor is not None:
            self._executor.shutdown(wait=False)
        self._store.close()
        self._started_at = None

    async def __aenter__(self) -> Network:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()

    def _check_started(self) -> None:
        if self._started_at is None:
            raise NotStartedError("the network is not started: call start() or use 'async with'")

    # -- tenants and deployments -----------------------------------------------------

    async def deploy(
        self, tenant: str, source: BundleSource, *, placement: Placement | None = None
    ) -> Deployment:
        """Deploy ``source`` as the tenant's live code and return the deployment.

        ``source`` is a folder, a ``.zip`` / ``.tar.gz`` path, the raw bytes of
        either, or a JSON bundle. The whole bundle replaces the previous one.
        Deploying the content that is live already changes nothing and returns
        the live deployment. The new code is loaded and its agents found before
        anything is committed; calls that start after this returns run it,
        calls already running finish on the old code. ``placement``
        (default: the bundle's ``plughost.toml``, else the tenant's current
        placement, else ``"inprocess"``) set to ``"process"`` runs the live
        code in a supervised worker process.

        Raises:
            InvalidNameError: the tenant name breaks the rule.
            BundleRejectedError: the source is unreadable, unsafe or over a limit.
            BundleLoadError: a module fails to load.
            DuplicateAgentError: two agents share a name.
        """
        self._check_started()
        try:
            _check_tenant(tenant)
            bundle = await asyncio.to_thread(read_bundle, source, self.limits)
            # Shielded: once started, a deploy runs to its end even if its caller goes away.
            deployment = await asyncio.shield(self._deploy(tenant, bundle, placement))
        except Exception:
            self.metrics.deploys.labels("error").inc()
            raise
        self.metrics.deploys.labels("ok").inc()
        return deployment

    async def _deploy(
        self, tenant: str, bundle: BundleFiles, placement: Placement | None
    ) -> Deployment:
        bundle_manifest, digest = bundle.manifest, bundle.digest
        # One deploy per tenant at a time. The global write lock is taken only to
        # commit, so other tenants' writes go on while this bundle's code imports.
        async with self._tenant_lock(tenant):
            current = self._live.get(tenant)
            running = self._workers.get(tenant)
            if (
                current is not None
                and current.digest == digest
                and placement in (None, current.placement)
                and (running is None or running.running)
            ):
                return current
            version = await asyncio.to_thread(self._store.next_version, tenant)
            namespace = Namespace(tenant, version=version)

            def stage() -> tuple[Path, Manifest]:
                self._store.put_files(bundle.files, bundle_manifest)
                folder = self._store.bundle_dir(digest, bundle_manifest)
                return folder, read_manifest(folder)

            staged = (digest, frozenset(bundle_manifest.values()))
            self._staging.append(staged)
            entry: LoadedNamespace | None = None
            worker: Supervisor | None = None
            instances: list[LoadedMod] = []
            try:
                # Files are written under the write lock, so that no GC pass runs between
                # registering them as staged and writing them; the code imports outside it.
                async with self._write_lock:
                    folder, manifest = await asyncio.to_thread(stage)
                # A redeploy that names no placement keeps the tenant where it runs: a
                # tenant put in a worker is never moved into the host unasked.
                chosen = placement or manifest.placement or _placement_of(current)
                if chosen == "process":
                    worker = Supervisor(
                        self._worker_spec_for(tenant, version, folder, manifest),
                        functools.partial(self._answer_worker, tenant),
                        functools.partial(self._live_worker_spec, tenant),
                    )
                    agents_info, described = await worker.start()
                    if len(described) != len(manifest.mods):
                        raise WorkerStartFailed(
                            tenant,
                            "load",
                            "InstanceCountMismatch",
                            f"{len(manifest.mods)} instances declared, {len(described)} came up",
                        )
                    agents = sorted(agents_info)
                    instances = [self._remote_instance(tenant, worker, d) for d in described]
                else:
                    loaded = await asyncio.to_thread(load_namespace, namespace, folder)
                    entry = loaded
                    agents = sorted(loaded.agents)
                    instances = await self._start_instances(tenant, folder, manifest)
                async with self._write_lock:
                    deployment = await asyncio.to_thread(
                        self._store.record_deployment,
                        tenant,
                        version,
                        bundle_manifest,
                        agents,
                        bundle.metadata,
                        chosen,
                    )
                    if entry is not None:
                        self._runtime.add(entry)
                    self._live[tenant] = deployment
                    self._live_ns[tenant] = namespace
                    if current is not None:
                        self._runtime.retire(Namespace(tenant, version=current.version))
                    replaced_worker = self._workers.pop(tenant, None)
                    if worker is not None:
                        self._workers[tenant] = worker
            except BaseException:
                if entry is not None:
                    entry.bundle.unload(verify=False)
                for instance in instances:
                    if instance.remote_stop is None:
                        await stop_mod(instance, self.unload_timeout)
                if worker is not None:
                    await worker.stop(self.unload_timeout)
                self._staging.remove(staged)
                # Nothing of a failed deploy stays: the files it stored go at once.
                async with self._write_lock:
                    await self._collect_locked()
                raise
            self._staging.remove(staged)
            await self._swap_instances(tenant, instances)
            if replaced_worker is not None:
                await replaced_worker.stop(self.unload_timeout)
            return deployment

    def _tenant_lock(self, tenant: str) -> asyncio.Lock:
        return self._tenant_locks.setdefault(tenant, asyncio.Lock())

    def list_tenants(self) -> list[str]:
        """The tenants that have a deployment, sorted."""
        return sorted(self._live)

    def get_deployment(self, tenant: str) -> Deployment:
        """The tenant's live deployment.

        Raises:
            UnknownTenantError: no such tenant.
        """
        deployment = self._live.get(tenant)
        if deployment is None:
            raise UnknownTenantError(tenant, self.list_tenants())
        return deployment

    async def remove_tenant(self, tenant: str) -> None:
        """Remove a tenant: its deployments, snapshots and loaded namespaces; its files follow.

        Raises:
            UnknownTenantError: no such tenant.
        """
        self._check_started()
        async with self._tenant_lock(tenant), self._write_lock:
            self.get_deployment(tenant)
            await asyncio.to_thread(self._store.remove_tenant, tenant)
            del self._live[tenant]
            worker = self._workers.pop(tenant, None)
            for token_hash in [h for h, t in self._token_tenants.items() if t == tenant]:
                del self._token_tenants[token_hash]
            self._runtime.retire(self._live_ns.pop(tenant))
            for key in [key for key in self._snapshots if key[0] == tenant]:
                self._runtime.retire(_snapshot_namespace(self._snapshots.pop(key)))
            async with self._mod_lock:
                gone = [mod for mod in self._mods.loaded() if mod.tenant == tenant]
                for mod in gone:
                    self._mods.unregister(mod.key)
                    await asyncio.to_thread(self._store.delete_mod, mod.key)
            for mod in gone:
                if mod.remote_stop is None:
                    await stop_mod(mod, self.unload_timeout)
            if worker is not None:
                await worker.stop(self.unload_timeout)
            await self._collect_locked()
        # Mods that keep data per tenant (caches, artifacts) drop the tenant's now.
        await self._broadcast(Event(event_name="system.tenant.removed", payload={"tenant": tenant}))

    # -- snapshots -----------------------------------------------------------------

    async def create_snapshot(self, tenant: str, name: str) -> Snapshot:
        """Snapshot the tenant's live deployment as ``name``; it never changes afterwards.

        Raises:
            UnknownTenantError: no such tenant.
            InvalidNameError: the name breaks the rule.
            DuplicateSnapshotError: the tenant has a snapshot by that name.
        """
        self._check_started()
        _check_snapshot_name(name)
        async with self._write_lock:
            deployment = self.get_deployment(tenant)
            if (tenant, name) in self._snapshots:
                raise DuplicateSnapshotError(tenant, name)
            snapshot = await asyncio.to_thread(self._store.create_snapshot, deployment, name)
            self._snapshots[(tenant, name)] = snapshot
            return snapshot

    def list_snapshots(self, tenant: str) -> list[Snapshot]:
        """The tenant's snapshots, oldest first.

        Raises:
            UnknownTenantError: no such tenant.
        """
        self.get_deployment(tenant)
        found = [s for (t, _), s in self._snapshots.items() if t == tenant]
        return sorted(found, key=lambda s: (s.created_at, s.name))

    async def delete_snapshot(self, tenant: str, name: str) -> None:
        """Delete a snapshot; calls running in it finish first.

        Raises:
            UnknownTenantError, UnknownSnapshotError: no such tenant or snapshot.
        """
        self._check_started()
        async with self._write_lock:
            self._snapshot(tenant, name)
            await asyncio.to_thread(self._store.delete_snapshot, tenant, name)
            self._runtime.retire(_snapshot_namespace(self._snapshots.pop((tenant, name))))
            await self._collect_locked()

    def _snapshot(self, tenant: str, name: str) -> Snapshot:
        self.get_deployment(tenant)
        snapshot = self._snapshots.get((tenant, name))
        if snapshot is None:
            known = [s.name for s in self.list_snapshots(tenant)]
            raise UnknownSnapshotError(tenant, name, known)
        return snapshot

    # -- agents --------------------------------------------------------------------

    def _resolve(self, tenant: str, snapshot: str | None) -> tuple[Namespace, str, Loader]:
        if snapshot is None:
            deployment = self.get_deployment(tenant)
            namespace = self._live_ns[tenant]
            digest, version = deployment.digest, deployment.version
        else:
            found = self._snapshot(tenant, snapshot)
            namespace = _snapshot_namespace(found)
            digest, version = found.digest, found.version

        def load() -> LoadedNamespace:
            try:
                manifest = self._store.manifest(tenant, version=version, snapshot=snapshot)
                folder = self._store.bundle_dir(digest, manifest)
            except (KeyError, FileNotFoundError) as exc:
                raise _Removed(namespace) from exc
            return load_namespace(namespace, folder)

        return namespace, digest, load

    async def _acquire(self, tenant: str, snapshot: str | None) -> LoadedNamespace:
        """Lease the namespace a call resolves to, resolving again if what it named was
        removed (a deleted snapshot, a pruned version) while it loaded."""
        attempts = 0
        while True:
            namespace, digest, load = self._resolve(tenant, snapshot)
            # Pinned while it may load: a GC pass must not take its folder meanwhile.
            self._pinned[digest] += 1
            try:
                return await self._runtime.acquire(namespace, load)
            except _Removed:
                attempts += 1
                if attempts > 3:
                    raise
            finally:
                self._pinned[digest] -= 1
                if not self._pinned[digest]:
                    del self._pinned[digest]

    async def list_agents(self, tenant: str, snapshot: str | None = None) -> list[AgentInfo]:
        """The agents of the tenant's live code, or of a snapshot, by name.

        Raises:
            UnknownTenantError, UnknownSnapshotError: no such tenant or snapshot.
        """
        self._check_started()
        if snapshot is None and tenant in self._workers:
            self.get_deployment(tenant)
            agents_info = self._workers[tenant].ready[0]
            return [
                AgentInfo(name, description, tool)
                for name, (description, tool) in sorted(agents_info.items())
            ]
        entry = await self._acquire(tenant, snapshot)
        try:
            return [
                AgentInfo(
                    name,
                    str(slot.instance.metadata.get("description", "")),
                    slot.instance.to_tool(),
                )
                for name, slot in sorted(entry.agents.items())
            ]
        finally:
            self._runtime.release(entry)

    async def call_agent(
        self,
        tenant: str,
        agent: str,
        args: Mapping[str, Any] | None = None,
        *,
        snapshot: str | None = None,
    ) -> Any:
        """Run ``agent.perform(**args)`` in the tenant's live code or in a snapshot.

        Async agents run on the event loop; sync ones in the agent threads.

        Raises:
            UnknownTenantError, UnknownSnapshotError, UnknownAgentError: what
                was asked for does not exist; the message lists what does.
            AgentError: the agent raised; carries its type and message.
            TypeError: ``args`` is not a mapping.
        """
        self._check_started()
        if args is not None and not isinstance(args, Mapping):
            raise TypeError(
                f"args must be a mapping of keyword arguments, not {type(args).__name__}"
            )
        if snapshot is None and tenant in self._workers:
            return await self._call_in_worker(tenant, agent, dict(args or {}))
        started = time.perf_counter()
        entry = await self._acquire(tenant, snapshot)
        handed_over = False
        try:
            slot = entry.agents.get(agent)
            if slot is None:
                raise UnknownAgentError(tenant, agent, snapshot, sorted(entry.agents))
            try:
                if slot.is_async:
                    result = await slot.instance.perform(**(args or {}))
                else:
                    handed_over = True
                    call = functools.partial(slot.instance.perform, **(args or {}))
                    result = await self._off_loop(call, lambda: self._runtime.release(entry))
            except Exception as exc:
                self._calls_failed.inc()
                raise AgentError(tenant, agent, type(exc).__name__, str(exc)) from exc
        finally:
            if not handed_over:
                self._runtime.release(entry)
        self._calls_ok.inc()
        self.metrics.call_seconds.observe(time.perf_counter() - started)
        return result

    # -- mods ------------------------------------------------------------------------

    async def load_mod(
        self,
        mod_path: str,
        config: Mapping[str, Any] | None = None,
        *,
        mod_id: str | None = None,
        tenant: str | None = None,
    ) -> Mod:
        """Load a mod while the network runs, globally or inside ``tenant``; return its instance.

        ``mod_path`` is a dotted path or a ``.py`` file / package folder path
        under an allowed mod root, optionally ending in ``:ClassName``. The
        load is recorded, so a restart loads the mod again. Subscribers of
        ``system.mod.loaded`` hear of it once it is complete.

        Raises:
            ModPathRefusedError: the path is outside every mod root (nothing imported).
            ModAlreadyLoadedError: the mod id is taken in that scope.
            ModLoadError: a step failed; every step before it was undone.
            InvalidNameError: the mod id or tenant name breaks the rule.
        """
        self._check_started()
        try:
            loaded = await self._load_mod(
                mod_path, dict(config or {}), mod_id, tenant, persist=True
            )
        except Exception:
            self.metrics.mod_loads.labels("error").inc()
            raise
        self.metrics.mod_loads.labels("ok").inc()
        await self._notify("system.mod.loaded", loaded.mod_id, loaded.mod_path, loaded.tenant)
        return loaded.instance

    async def _load_mod(
        self,
        mod_path: str,
        config: dict[str, Any],
        mod_id: str | None,
        tenant: str | None,
        *,
        persist: bool,
    ) -> LoadedMod:
        if tenant is not None:
            _check_tenant(tenant)
        resolved = self._mod_roots.resolve(mod_path)
        chosen_id = mod_id or resolved.default_id
        _check_mod_id(chosen_id)
        try:
            json.dumps(config)
        except (TypeError, ValueError) as exc:
            raise ModLoadError(mod_path, "config", f"config is not JSON: {exc}") from None
        async with self._mod_lock:
            key = mod_key(chosen_id, tenant)
            holder = self._mods.get(key)
            if holder is not None:
                raise ModAlreadyLoadedError(key, holder.mod_path)
            namespace = mod_namespace(chosen_id, tenant, next(self._mod_generations))
            loaded = await start_mod(resolved, chosen_id, config, tenant, self, namespace=namespace)
            if persist:
                stored = StoredMod(key, chosen_id, mod_path, tenant, config, loaded.loaded_at)
                try:
                    await asyncio.to_thread(self._store.save_mod, stored)
                except Exception as exc:
                    await stop_mod(loaded, self.unload_timeout)
                    raise ModLoadError(mod_path, "record", str(exc), exc) from exc
            self._mods.register(loaded)
        return loaded

    async def unload_mod(
        self,
        mod_path_or_id: str,
        *,
        tenant: str | None = None,
        confine_to: str | None = None,
    ) -> ModUnloadReport:
        """Unload one mod, named by its id, its key (``tenant/mod_id``) or its exact ``mod_path``.

        Its handlers stop receiving events at once; calls already in them may
        finish (up to ``unload_timeout``); then ``shutdown()`` runs and its
        code is unloaded. The report says if ``shutdown()`` raised or if its
        modules are still referenced; the mod is removed in every case.
        With ``confine_to``, only that tenant's mods are candidates.

        Raises:
            ModNotLoadedError: nothing loaded matches, or several mods do.
        """
        self._check_started()
        async with self._mod_lock:
            found = [
                mod
                for mod in self._mods.find(mod_path_or_id, tenant or confine_to)
                if confine_to is None or mod.tenant == confine_to
            ]
            if len(found) != 1:
                reason = "is not loaded" if not found else "matches several mods: name it by key"
                raise ModNotLoadedError(
                    mod_path_or_id, self.mod_status(confine_to)["loaded"], reason
                )
            mod = found[0]
            self._mods.unregister(mod.key)
            try:
                await asyncio.to_thread(self._store.delete_mod, mod.key)
            finally:
                report = await stop_mod(mod, self.unload_timeout)
        self.metrics.mod_unloads.inc()
        await self._notify("system.mod.unloaded", mod.mod_id, mod.mod_path, mod.tenant)
        return report

    def mod_status(self, confine_to: str | None = None) -> dict[str, Any]:
        """The ``mods`` part of health: loaded and failed mods with their details.

        With ``confine_to`` (a tenant), only global mods and that tenant's.
        """
        details = {
            key: value
            for key, value in self._mods.details().items()
            if confine_to is None or value.get("tenant") in (None, confine_to)
        }
        loaded = [key for key in self._mods.list_loaded() if key in details]
        failed = [key for key in details if details[key]["status"] == "failed"]
        return {"loaded": loaded, "count": len(loaded), "failed": failed, "details": details}

    def get_loaded_mods(self) -> list[str]:
        """The keys of the loaded mods: ``mod_id``, or ``tenant/mod_id`` inside a tenant."""
        return self._mods.list_loaded()

    def get_mod(self, key: str) -> Mod:
        """The instance of a loaded mod.

        Raises:
            ModNotLoadedError: no such mod.
        """
        mod = self._mods.get(key)
        if mod is None:
            raise ModNotLoadedError(key, self._mods.list_loaded())
        return mod.instance

    async def _load_startup_mods(self) -> None:
        recorded = await asyncio.to_thread(self._store.mods)
        wanted: list[tuple[str, dict[str, Any], str | None, str | None, bool]]
        wanted = [(m.mod_path, m.config, m.mod_id, m.tenant, False) for m in recorded]
        wanted += [(m.mod_path, m.config, m.mod_id, m.tenant, True) for m in self._startup_mods]
        for mod_path, config, mod_id, tenant, from_config in wanted:
            if from_config and self._mods.find(mod_id or mod_path, tenant):
                continue
            try:
                await self._load_mod(mod_path, dict(config), mod_id, tenant, persist=from_config)
            except PlughostError as exc:
                failed_id = mod_id or mod_path.rsplit(".", 1)[-1].split(":")[0]
                self._mods.record_failure(FailedMod(failed_id, mod_path, tenant, str(exc)))

    # -- instances -------------------------------------------------------------------

    async def _start_instances(
        self, tenant: str, folder: Path, manifest: Manifest
    ) -> list[LoadedMod]:
        """Start every instance the manifest declares, or none: one failure stops the others."""
        started: list[LoadedMod] = []
        try:
            for spec in manifest.mods:
                holder = self._mods.get(mod_key(spec.name, tenant))
                if holder is not None and not holder.from_bundle:
                    raise ModAlreadyLoadedError(mod_key(spec.name, tenant), holder.mod_path)
                started.append(
                    await self._start_instance(
                        tenant, folder, spec.path, spec.name, dict(spec.config), tuple(spec.expose)
                    )
                )
        except BaseException:
            for mod in started:
                await stop_mod(mod, self.unload_timeout)
            raise
        return started

    async def _start_instance(
        self,
        tenant: str,
        folder: Path,
        path: str,
        name: str,
        config: dict[str, Any],
        expose: tuple[str, ...],
    ) -> LoadedMod:
        module, _, class_name = path.partition(":")
        resolved = ResolvedModPath(path, folder, class_name or None, module)
        namespace = mod_namespace(name, tenant, next(self._mod_generations))
        mod = await start_mod(
            resolved, name, config, tenant, self, namespace=namespace, expose=expose
        )
        mod.from_bundle = True
        return mod

    async def _swap_instances(self, tenant: str, instances: list[LoadedMod]) -> None:
        """Make ``instances`` the tenant's bundle instances; drain and stop those replaced."""
        async with self._mod_lock:
            replaced = [m for m in self._mods.loaded() if m.tenant == tenant and m.from_bundle]
            for mod in replaced:
                self._mods.unregister(mod.key)
            for mod in instances:
                self._mods.register(mod)
        for mod in replaced:
            await stop_mod(mod, self.unload_timeout)

    async def _start_deployed_instances(self, tenant: str) -> None:
        """At start: the instances of a live deployment, each on its own (failures are shown)."""
        deployment = self._live[tenant]

        def locate() -> tuple[Path, Manifest]:
            manifest = self._store.manifest(tenant, version=deployment.version)
            folder = self._store.bundle_dir(deployment.digest, manifest)
            return folder, read_manifest(folder)

        folder, manifest = await asyncio.to_thread(locate)
        for spec in manifest.mods:
            try:
                mod = await self._start_instance(
                    tenant, folder, spec.path, spec.name, dict(spec.config), tuple(spec.expose)
                )
            except PlughostError as exc:
                self._mods.record_failure(FailedMod(spec.name, spec.path, tenant, str(exc)))
            else:
                self._mods.register(mod)

    def instances(self) -> list[dict[str, Any]]:
        """Every running mod instance: RPC name, tenant, name, class, where its code is from."""
        return [
            {
                "rpc_name": mod.key,
                "tenant": mod.tenant,
                "name": mod.mod_id,
                "mod_path": mod.mod_path,
                "class": mod.class_name,
                "origin": "bundle" if mod.from_bundle else "loaded",
                "placement": "process" if mod.remote_stop is not None else "inprocess",
            }
            for mod in self._mods.loaded()
        ]

    def _confined_instance(self, rpc_name: str, confine_to: str | None) -> LoadedMod:
        mod = self._mod_for(rpc_name, confine_to)
        if confine_to is not None and mod.tenant != confine_to:
            raise OutsideTenantError(confine_to, rpc_name)
        return mod

    async def restart(
        self, rpc_name: str, *, reload: bool = True, confine_to: str | None = None
    ) -> Mod:
        """Replace one instance with a fresh load of its code, leaving everything else running.

        The replacement is loaded and initialized beside the running instance,
        with the same config; only then does it take the instance's RPC name
        and subscriptions, and the old one is drained and shut down. With
        ``reload`` a bundle instance loads from the tenant's live deployment
        (and a loaded mod from its file as it is now); without, from the code
        it runs. If the new code fails, the old instance keeps running.

        Raises:
            ModNotLoadedError, AmbiguousNameError: no such instance, or several.
            OutsideTenantError: with ``confine_to``, the instance is another tenant's.
            ModLoadError: the new code failed; nothing changed.
        """
        self._check_started()
        async with self._mod_lock:
            old = self._confined_instance(rpc_name, confine_to)
            if old.remote_stop is not None and old.tenant in self._workers:
                return await self._restart_in_worker(old)
            source = old.source
            assert source is not None
            if old.from_bundle and reload and old.tenant is not None:
                deployment = self.get_deployment(old.tenant)

                def locate() -> Path:
                    manifest = self._store.manifest(old.tenant or "", version=deployment.version)
                    return self._store.bundle_dir(deployment.digest, manifest)

                source = ResolvedModPath(
                    source.mod_path,
                    await asyncio.to_thread(locate),
                    source.class_name,
                    source.module,
                )
            elif reload and not old.from_bundle:
                source = self._mod_roots.resolve(old.mod_path)
            namespace = mod_namespace(old.mod_id, old.tenant, next(self._mod_generations))
            new = await start_mod(
                source,
                old.mod_id,
                old.config,
                old.tenant,
                self,
                namespace=namespace,
                expose=old.instance.expose,
            )
            new.from_bundle = old.from_bundle
            self._mods.register(new)
        await stop_mod(old, self.unload_timeout)
        return new.instance

    async def _restart_in_worker(self, old: LoadedMod) -> Mod:
        tenant = old.tenant or ""
        spec = await self._live_worker_spec(tenant)
        try:
            await self._workers[tenant].request(
                "restart", old.mod_id, spec.folder, timeout=self.worker_start_timeout
            )
        except RemoteError as exc:
            raise ModLoadError(
                old.mod_path, "restart", f"{exc.error_type}: {exc.message}"
            ) from None
        return old.instance

    async def unload(self, rpc_name: str, *, confine_to: str | None = None) -> ModUnloadReport:
        """Unload one instance by RPC name: ``robot2/mapper``, or ``shared_cache`` if global.

        Raises:
            ModNotLoadedError, AmbiguousNameError: no such instance, or several.
            OutsideTenantError: with ``confine_to``, the instance is another tenant's.
        """
        self._check_started()
        mod = self._confined_instance(rpc_name, confine_to)
        return await self.unload_mod(mod.key, confine_to=confine_to)

    # -- worker processes ------------------------------------------------------------

    def _worker_spec_for(
        self, tenant: str, version: int, folder: Path, manifest: Manifest
    ) -> WorkerSpec:
        return WorkerSpec(
            tenant,
            version,
            str(folder.resolve()),
            str(self.data_dir.resolve()),
            tuple((m.path, m.name, dict(m.config), tuple(m.expose)) for m in manifest.mods),
            self.unload_timeout,
            self.worker_start_timeout,
        )

    async def _live_worker_spec(self, tenant: str) -> WorkerSpec:
        """What a restarted worker runs: the tenant's live deployment."""
        deployment = self.get_deployment(tenant)

        def locate() -> tuple[Path, Manifest]:
            manifest = self._store.manifest(tenant, version=deployment.version)
            folder = self._store.bundle_dir(deployment.digest, manifest)
            return folder, read_manifest(folder)

        folder, manifest = await asyncio.to_thread(locate)
        return self._worker_spec_for(tenant, deployment.version, folder, manifest)

    async def _start_deployed_worker(self, tenant: str) -> None:
        """At start: the worker of a process-placed tenant (a failure shows in health)."""
        worker = Supervisor(
            await self._live_worker_spec(tenant),
            functools.partial(self._answer_worker, tenant),
            functools.partial(self._live_worker_spec, tenant),
        )
        self._workers[tenant] = worker
        try:
            _, described = await worker.start()
        except PlughostError as exc:
            worker.keep_trying(str(exc))  # health shows it; the supervisor retries
            return
        for info in described:
            self._mods.register(self._remote_instance(tenant, worker, info))

    async def _answer_worker(self, tenant: str, kind: str, args: tuple[Any, ...]) -> Any:
        """Requests a worker's mods make to the network: publishing and RPC.

        The worker runs tenant code, so what it says about scope is not taken
        on trust: it acts as its own tenant, and may reach only that tenant's
        topics and instances, global mods, and one-segment global topic names
        (the streams a manifest exposes).
        """
        if kind == "publish":
            topic, data, scope, source_id = args
            topic = str(topic)
            resolved = resolve_topic(topic, tenant if scope is not None else None)
            if resolved.count("/") > 1 and not resolved.startswith(f"/{tenant}/"):
                raise OutsideTenantError(tenant, resolved)
            source = f"{tenant}/{source_id}"
            return await self.publish(resolved, data, tenant=tenant, source_id=source)
        if kind == "rpc":
            name, method, call_args, call_kwargs, _ = args
            try:
                target = self._mod_for(str(name), tenant)
            except (ModNotLoadedError, AmbiguousNameError):
                # The tenant learns what it may see, not what other tenants run.
                raise ModNotLoadedError(str(name), self.mod_status(tenant)["loaded"]) from None
            if target.tenant not in (None, tenant):
                raise OutsideTenantError(tenant, str(name))
            return await self.rpc(target.key, str(method), *call_args, **call_kwargs)
        raise ValueError(f"unknown request {kind!r} from a worker")

    async def _call_in_worker(self, tenant: str, agent: str, args: dict[str, Any]) -> Any:
        started = time.perf_counter()
        try:
            result = await self._workers[tenant].request("call", agent, args)
        except RemoteError as exc:
            self._calls_failed.inc()
            if exc.kind == "unknown_agent":
                known = exc.message.split(",") if exc.message else []
                raise UnknownAgentError(tenant, agent, None, known) from None
            raise AgentError(tenant, agent, exc.error_type, exc.message) from None
        self._calls_ok.inc()
        self.metrics.call_seconds.observe(time.perf_counter() - started)
        return result

    def _remote_instance(self, tenant: str, worker: Supervisor, info: dict[str, Any]) -> LoadedMod:
        """The host's record of an instance that runs in ``worker``: every handler, topic
        subscription and RPC method forwards to it."""
        name = info["name"]
        stub: Mod = type(info["class"], (Mod,), {})()
        stub.mod_id, stub.config, stub.network = name, info["config"], self
        stub.tenant, stub.expose = tenant, tuple(info["expose"])
        stub.namespace = Namespace(tenant, mod=name, placement="process")

        async def on_event(event: Event) -> EventResponse:
            answer = await worker.request("event", name, event.model_dump())
            return EventResponse.model_validate(answer)

        def on_topic(topic: str) -> Callable[[Event], Awaitable[None]]:
            async def deliver(event: Event) -> None:
                await worker.request("topic", name, topic, event.model_dump())

            return deliver

        def rpc_method(method: str) -> Callable[..., Awaitable[Any]]:
            async def call(*args: Any, **kwargs: Any) -> Any:
                return await worker.request("rpc", name, method, args, kwargs)

            return call

        async def stop() -> Any:
            worker.forget(name)
            try:
                return await worker.request("unload", name, timeout=self.unload_timeout)
            except TimeoutError:
                worker.recycle()  # it does not answer: restart it without this instance
                raise

        return LoadedMod(
            mod_id=name,
            mod_path=info["mod_path"],
            tenant=tenant,
            config=info["config"],
            instance=stub,
            bundle=None,
            handlers=[(pattern, on_event) for pattern in info["handlers"]],
            topics={topic: [on_topic(topic)] for topic in info["topics"]},
            rpcs={method: rpc_method(method) for method in info["rpcs"]},
            from_bundle=True,
            remote_stop=stop,
        )

    # -- events, topics, RPC -------------------------------------------------------

    async def send_event(self, event: Event, *, confine_to: str | None = None) -> EventResponse:
        """Deliver ``event`` by its ``destination_id``, or to every matching handler.

        Never raises for what a handler or the routing did: failures come back
        as ``success=False`` with the error text, and the network keeps serving.
        With ``confine_to`` (a tenant), ``system.*`` events act on that
        tenant's mods and instances only, and list only what it may see.
        """
        self._check_started()
        try:
            response = await self._route(event, confine_to)
        except PlughostError as exc:
            response = EventResponse(success=False, message=str(exc))
        except Exception as exc:
            response = EventResponse(success=False, message=f"{type(exc).__name__}: {exc}")
        try:
            json.dumps(response.data)
        except (TypeError, ValueError) as exc:
            response = EventResponse(success=False, message=f"the answer is not JSON: {exc}")
        self.metrics.events.labels("ok" if response.success else "failed").inc()
        return response

    async def _route(self, event: Event, confine_to: str | None = None) -> EventResponse:
        destination = event.destination_id
        if not destination:
            return await self._broadcast(event)
        kind, _, target = destination.partition(":")
        if kind == "system" and target == "system":
            return await self._system_event(event, confine_to)
        if kind == "mod" and target:
            mod = self._mod_for(target, event.tenant)
            for pattern, handler in mod.handlers:
                if matches(pattern, event.event_name):
                    return as_response(await self._invoke(mod, handler, event))
            return EventResponse(
                success=False, message=f"mod {mod.key!r} has no handler for {event.event_name!r}"
            )
        if kind == "agent" and "/" in target:
            tenant, _, agent = target.partition("/")
            output = await self.call_agent(tenant, agent, event.payload)
            return EventResponse(success=True, data={"output": output})
        if kind == "topic" and target:
            topic = resolve_topic(target, event.tenant)
            delivered = await self.publish(
                target, event.payload, tenant=event.tenant, source_id=event.source_id
            )
            return EventResponse(
                success=True,
                message=f"delivered to {delivered} subscribers",
                data={"topic": topic, "delivered": delivered},
            )
        return EventResponse(
            success=False,
            message=(
                f"unknown destination_id {destination!r}: expected system:system, mod:<mod_id>, "
                "agent:<tenant>/<agent> or topic:<name>"
            ),
        )

    async def _system_event(self, event: Event, confine_to: str | None) -> EventResponse:
        payload, name = event.payload, event.event_name
        tenant = payload.get("tenant", event.tenant)
        if confine_to is not None and tenant != confine_to:
            raise OutsideTenantError(confine_to, str(tenant))
        if name == "system.mod.load":
            mod_path = payload.get("mod_path")
            if not mod_path:
                return EventResponse(success=False, message="mod_path is required")
            config = payload.get("config") or {}
            if not isinstance(config, dict):
                return EventResponse(success=False, message="config must be an object")
            mod = await self.load_mod(
                str(mod_path), config, mod_id=payload.get("mod_id"), tenant=tenant
            )
            key = mod_key(mod.mod_id, mod.tenant)
            return EventResponse(
                success=True, message=f"mod {key!r} loaded", data={"mod_id": mod.mod_id}
            )
        if name == "system.mod.unload":
            target = payload.get("mod_id") or payload.get("mod_path")
            if not target:
                return EventResponse(success=False, message="mod_path or mod_id is required")
            report = await self.unload_mod(str(target), tenant=tenant, confine_to=confine_to)
            data = {"mod_id": report.mod_id, "mod_path": report.mod_path, "leaked": report.leaked}
            if report.shutdown_error:
                data["shutdown_error"] = report.shutdown_error
            return EventResponse(success=True, message=report.message, data=data)
        if name == "system.mod.list":
            return EventResponse(
                success=True, data={"mods": self.mod_status(confine_to)["details"]}
            )
        if name in ("system.instance.restart", "system.instance.unload"):
            rpc_name = payload.get("rpc_name")
            if not rpc_name:
                return EventResponse(success=False, message="rpc_name is required")
            if name == "system.instance.unload":
                report = await self.unload(str(rpc_name), confine_to=confine_to)
                return EventResponse(
                    success=True, message=report.message, data={"rpc_name": rpc_name}
                )
            reload = bool(payload.get("reload", True))
            await self.restart(str(rpc_name), reload=reload, confine_to=confine_to)
            return EventResponse(
                success=True, message=f"{rpc_name!r} restarted", data={"rpc_name": rpc_name}
            )
        return EventResponse(
            success=False,
            message=f"unknown system event {name!r}; known: {', '.join(SYSTEM_EVENTS)}",
        )

    def _mod_for(self, target: str, tenant: str | None) -> LoadedMod:
        """The mod ``target`` names, looked up inside ``tenant`` first, then globally."""
        candidates = [target] if "/" in target else [mod_key(target, tenant), target]
        for key in candidates:
            mod = self._mods.get(key)
            if mod is not None and mod.accepting:
                return mod
        if "/" not in target:
            found = [
                mod
                for mod in self._mods.loaded()
                if mod.accepting and target in (mod.mod_id, mod.class_name)
            ]
            if len(found) == 1:
                return found[0]
            if found:
                raise AmbiguousNameError(target, sorted(mod.key for mod in found))
        raise ModNotLoadedError(target, self._mods.list_loaded())

    async def _broadcast(self, event: Event) -> EventResponse:
        """Deliver to every handler matching ``event_name``: of global mods and, for an event
        with a tenant, that tenant's mods; without a tenant, of every mod; and of loaded agents."""
        calls: list[tuple[str, Any]] = []
        for mod in self._mods.loaded():
            if not mod.accepting or (event.tenant and mod.tenant not in (None, event.tenant)):
                continue
            for pattern, handler in mod.handlers:
                if matches(pattern, event.event_name):
                    calls.append((mod.key, self._invoke(mod, handler, event)))
        held = self._runtime.hold()
        try:
            for entry in held:
                if event.tenant and entry.namespace.tenant != event.tenant:
                    continue
                for agent in entry.agents.values():
                    for pattern, handler in agent.handlers:
                        if matches(pattern, event.event_name):
                            owner = f"agent {agent.name} in {entry.namespace!r}"
                            calls.append((owner, self._run_handler(handler, event)))
            if not calls:
                return EventResponse(
                    success=False, message=f"no handler for event {event.event_name!r}"
                )
            results = await asyncio.gather(*(call for _, call in calls), return_exceptions=True)
        finally:
            for entry in held:
                self._runtime.release(entry)
        responses = {
            owner: (
                EventResponse(success=False, message=f"{type(r).__name__}: {r}")
                if isinstance(r, BaseException)
                else as_response(r)
            )
            for (owner, _), r in zip(calls, results, strict=True)
        }
        if len(responses) == 1:
            return next(iter(responses.values()))
        return EventResponse(
            success=all(r.success for r in responses.values()),
            message=f"delivered to {len(responses)} handlers",
            data={"responses": {owner: r.model_dump() for owner, r in responses.items()}},
        )

    async def _invoke(self, mod: LoadedMod, function: Any, *args: Any, **kwargs: Any) -> Any:
        """Run a handler or RPC method of ``mod``, counted so that an unload can wait for it."""
        mod.in_flight += 1
        mod.idle.clear()

        def finished() -> None:
            mod.in_flight -= 1
            if mod.in_flight == 0:
                mod.idle.set()

        if not inspect.iscoroutinefunction(function):
            return await self._off_loop(functools.partial(function, *args, **kwargs), finished)
        try:
            return await function(*args, **kwargs)
        finally:
            finished()

    async def _run_handler(self, function: Any, *args: Any, **kwargs: Any) -> Any:
        if inspect.iscoroutinefunction(function):
            return await function(*args, **kwargs)
        return await self._off_loop(functools.partial(function, *args, **kwargs), lambda: None)

    async def _off_loop(self, call: Callable[[], Any], finished: Callable[[], None]) -> Any:
        """Run ``call`` in the agent threads; ``finished`` runs when the thread returns.

        A caller cancelled meanwhile does not stop the thread, so ``finished``
        (which releases what the call uses) waits for the thread, not the caller.
        """
        future = asyncio.get_running_loop().run_in_executor(self._executor, call)

        def done(completed: asyncio.Future[Any]) -> None:
            if not completed.cancelled():
                completed.exception()  # retrieved here if the caller is gone
            finished()

        future.add_done_callback(done)
        result = await asyncio.shield(future)
        return await result if inspect.isawaitable(result) else result

    async def _notify(
        self, event_name: str, mod_id: str, mod_path: str, tenant: str | None
    ) -> None:
        event = Event(
            event_name=event_name,
            payload={"mod_id": mod_id, "mod_path": mod_path, "tenant": tenant},
        )
        await self._broadcast(event)

    async def publish(
        self,
        topic: str,
        data: Mapping[str, Any],
        *,
        tenant: str | None = None,
        source_id: str = "system",
    ) -> int:
        """Publish ``data`` to ``topic`` resolved against ``tenant``; return how many received it.

        Subscribers are mods with ``@on("topic:<name>")`` whose name resolves to
        the same topic; each gets an event ``topic.message`` with ``data`` as payload.

        Raises:
            ValueError: the topic is empty.
        """
        resolved = resolve_topic(topic, tenant)
        event = Event(
            event_name="topic.message",
            source_id=source_id,
            destination_id=f"topic:{resolved}",
            payload=dict(data),
            tenant=tenant,
        )
        calls = [
            self._invoke(mod, handler, event)
            for mod in self._mods.loaded()
            if mod.accepting
            for handler in mod.topics.get(resolved, ())
        ]
        await asyncio.gather(*calls, return_exceptions=True)
        return len(calls)

    async def rpc(
        self, name: str, method: str, *args: Any, tenant: str | None = None, **kwargs: Any
    ) -> Any:
        """Call an ``@rpc`` method of the mod named ``name`` (``mod_id`` or ``tenant/mod_id``).

        A bare ``mod_id`` is looked up inside ``tenant`` first, then globally.

        Raises:
            ModNotLoadedError: no such mod.
            UnknownRpcError: the mod has no such RPC method.
            RpcError: the method raised.
        """
        self._check_started()
        mod = self._mod_for(name, tenant)
        function = mod.rpcs.get(method)
        if function is None:
            raise UnknownRpcError(mod.key, method, sorted(mod.rpcs))
        try:
            return await self._invoke(mod, function, *args, **kwargs)
        except PlughostError:
            raise
        except Exception as exc:
            error_type = getattr(exc, "error_type", type(exc).__name__)  # remote errors name theirs
            raise RpcError(mod.key, method, error_type, str(exc)) from exc

    # -- tokens ----------------------------------------------------------------------

    async def issue_tenant_token(self, tenant: str, *, replace: bool = False) -> str | None:
        """Create a token for ``tenant`` and return it; only its hash is kept.

        Returns ``None`` when the tenant has a token already and ``replace`` is
        False, so that a token is handed out once.

        Raises:
            UnknownTenantError: no such tenant.
        """
        self._check_started()
        async with self._write_lock:
            self.get_deployment(tenant)
            token = "pht_" + secrets.token_urlsafe(32)
            token_hash = hash_token(token)
            stored = await asyncio.to_thread(
                self._store.set_token_hash, tenant, token_hash, replace=replace
            )
            if not stored:
                return None
            for old in [h for h, t in self._token_tenants.items() if t == tenant]:
                del self._token_tenants[old]
            self._token_tenants[token_hash] = tenant
            return token

    def tenant_for_token(self, token: str) -> str | None:
        """The tenant a token belongs to, or ``None``. Looks up the token's hash only."""
        return self._token_tenants.get(hash_token(token))

    # -- housekeeping ----------------------------------------------------------------

    async def collect_garbage(self) -> GarbageReport:
        """Remove stored files that no deployment, snapshot or loaded namespace uses."""
        self._check_started()
        async with self._write_lock:
            return await self._collect_locked()

    async def _collect_locked(self) -> GarbageReport:
        bundles = self._runtime.digests() | set(self._pinned)
        bundles |= {digest for digest, _ in self._staging}
        blobs = {blob for _, staged in self._staging for blob in staged}
        return await asyncio.to_thread(self._store.collect_garbage, bundles, blobs)

    async def _collect_periodically(self) -> None:
        while True:
            await asyncio.sleep(self.gc_interval)
            try:
                await self.collect_garbage()
            except Exception:
                # The next pass retries; a pass that fails must not end the loop.
                log.exception("garbage collection failed")

    async def check(self) -> list[str]:
        """Check the data folder: every deployment's and snapshot's files are present and intact.

        Returns the problems found; an empty list means all is well.
        """
        self._check_started()
        return await asyncio.to_thread(self._store.check)

    def _sample_metrics(self) -> dict[str, float]:
        return {
            "loaded_namespaces": len(self._runtime),
            "loaded_mods": len(self._mods.list_loaded()),
            "failed_mods": len(self._mods.failed()),
            "tenants": len(self._live),
            "namespace_loads": self._runtime.loads,
            "namespace_unloads": self._runtime.unloads,
            "namespace_evictions": self._runtime.evictions,
        }

    def loaded_namespaces(self) -> list[Namespace]:
        """The namespaces loaded now, least recently used first."""
        return self._runtime.loaded()

    def health(self) -> dict[str, Any]:
        """The document ``GET /api/health`` returns."""
        uptime = int(time.time() - self._started_at) if self._started_at is not None else 0
        if self._started_at is None:
            status = "stopped"
        elif self._mods.failed() or any(not w.running for w in self._workers.values()):
            status = "degraded"
        else:
            status = "healthy"
        return {
            "status": status,
            "network_id": self.network_id,
            "uptime": uptime,
            "mods": self.mod_status(),
            "tenants": {"count": len(self._live)},
            "namespaces": {"loaded": len(self._runtime), "limit": self._runtime.max_loaded},
            "workers": {tenant: worker.describe() for tenant, worker in self._workers.items()},
        }


class _Removed(Exception):
    """What a call resolved to was removed before its namespace loaded."""


def _placement_of(deployment: Deployment | None) -> Placement:
    return (
        "process" if deployment is not None and deployment.placement == "process" else "inprocess"
    )


def _snapshot_namespace(snapshot: Snapshot) -> Namespace:
    # The digest keeps a re-created snapshot of the same name apart from the one it replaces.
    return Namespace(snapshot.tenant, snapshot=snapshot.name, digest=snapshot.digest[:16])


def hash_token(token: str) -> str:
    """The stored form of a token: its sha256, hex."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def _check_tenant(tenant: str) -> None:
    try:
        check_tenant_name(tenant)
    except ValueError:
        raise InvalidNameError("tenant", tenant, TENANT_NAME_RULE) from None


def _check_mod_id(mod_id: str) -> None:
    try:
        check_tenant_name(mod_id)
    except ValueError:
        raise InvalidNameError("mod id", mod_id, MOD_ID_RULE) from None


def _check_snapshot_name(name: str) -> None:
    valid = (
        isinstance(name, str) and bool(_SNAPSHOT_NAME.fullmatch(name)) and name not in (".", "..")
    )
    try:
        name.encode("utf-8")  # a lone surrogate matches the pattern but cannot be stored
    except (UnicodeEncodeError, AttributeError):
        valid = False
    if not valid:
        raise InvalidNameError("snapshot", str(name), SNAPSHOT_NAME_RULE)
