"""The ``Network``: tenants, deployments, snapshots and agent calls, over one data folder.

Each deployment version and each snapshot of a tenant runs in its own
namespace (``Namespace(tenant, version=7)``, ``Namespace(tenant, snapshot="jan")``).
A redeploy loads the new version beside the old one, commits it, and then
points new calls at it; the old version drains and is unloaded (hot swap).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import os
import time
import unicodedata
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from .bundle import BundleFiles, BundleLimits, BundleSource, read_bundle
from .errors import (
    AgentError,
    DuplicateSnapshotError,
    InvalidNameError,
    NotStartedError,
    UnknownAgentError,
    UnknownSnapshotError,
    UnknownTenantError,
)
from .naming import TENANT_NAME_RULE, Namespace, check_tenant_name
from .runtime import LoadedNamespace, Loader, Runtime, load_namespace
from .store import Deployment, GarbageReport, Snapshot, Store

SNAPSHOT_NAME_RULE = "1-128 characters, no '/' and no control characters"


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
        agent_threads: threads that run sync agents, off the event loop.
        gc_interval: seconds between garbage passes over unreferenced files.

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
        self._live: dict[str, Deployment] = {}
        self._live_ns: dict[str, Namespace] = {}
        self._snapshots: dict[tuple[str, str], Snapshot] = {}
        self._started_at: float | None = None
        self._gc_task: asyncio.Task[None] | None = None

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
        self._executor = ThreadPoolExecutor(self._agent_threads, "plughost-agent")
        self._started_at = time.time()
        self._gc_task = asyncio.get_running_loop().create_task(self._collect_periodically())

    async def stop(self) -> None:
        """Unload every namespace and close the data folder."""
        if self._started_at is None:
            return
        if self._gc_task is not None:
            self._gc_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._gc_task
        self._runtime.close()
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

    async def deploy(self, tenant: str, source: BundleSource) -> Deployment:
        """Deploy ``source`` as the tenant's live code and return the deployment.

        ``source`` is a folder, a ``.zip`` / ``.tar.gz`` path, the raw bytes of
        either, or a JSON bundle. The whole bundle replaces the previous one.
        Deploying the content that is live already changes nothing and returns
        the live deployment. The new code is loaded and its agents found before
        anything is committed; calls that start after this returns run it,
        calls already running finish on the old code.

        Raises:
            InvalidNameError: the tenant name breaks the rule.
            BundleRejectedError: the source is unreadable, unsafe or over a limit.
            BundleLoadError: a module fails to load.
            DuplicateAgentError: two agents share a name.
        """
        self._check_started()
        _check_tenant(tenant)
        bundle = await asyncio.to_thread(read_bundle, source, self.limits)
        # Shielded: once started, a deploy runs to its end even if its caller goes away.
        return await asyncio.shield(self._deploy(tenant, bundle))

    async def _deploy(self, tenant: str, bundle: BundleFiles) -> Deployment:
        bundle_manifest, digest = bundle.manifest, bundle.digest
        async with self._write_lock:
            current = self._live.get(tenant)
            if current is not None and current.digest == digest:
                return current
            version = self._store.next_version(tenant)
            namespace = Namespace(tenant, version=version)

            def stage_and_load() -> LoadedNamespace:
                self._store.put_files(bundle.files, bundle_manifest)
                return load_namespace(namespace, self._store.bundle_dir(digest, bundle_manifest))

            entry = await asyncio.to_thread(stage_and_load)
            try:
                deployment = await asyncio.to_thread(
                    self._store.record_deployment,
                    tenant,
                    version,
                    bundle_manifest,
                    sorted(entry.agents),
                    bundle.metadata,
                )
            except BaseException:
                entry.bundle.unload(verify=False)
                raise
            self._runtime.add(entry)
            self._live[tenant] = deployment
            self._live_ns[tenant] = namespace
            if current is not None:
                self._runtime.retire(Namespace(tenant, version=current.version))
            return deployment

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
        async with self._write_lock:
            self.get_deployment(tenant)
            await asyncio.to_thread(self._store.remove_tenant, tenant)
            del self._live[tenant]
            self._runtime.retire(self._live_ns.pop(tenant))
            for key in [key for key in self._snapshots if key[0] == tenant]:
                del self._snapshots[key]
                self._runtime.retire(Namespace(tenant, snapshot=key[1]))
            await self._collect_locked()

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
            del self._snapshots[(tenant, name)]
            self._runtime.retire(Namespace(tenant, snapshot=name))
            await self._collect_locked()

    def _snapshot(self, tenant: str, name: str) -> Snapshot:
        self.get_deployment(tenant)
        snapshot = self._snapshots.get((tenant, name))
        if snapshot is None:
            known = [s.name for s in self.list_snapshots(tenant)]
            raise UnknownSnapshotError(tenant, name, known)
        return snapshot

    # -- agents --------------------------------------------------------------------

    def _resolve(self, tenant: str, snapshot: str | None) -> tuple[Namespace, Loader]:
        if snapshot is None:
            deployment = self.get_deployment(tenant)
            namespace = self._live_ns[tenant]
            digest, version = deployment.digest, deployment.version
        else:
            found = self._snapshot(tenant, snapshot)
            namespace = Namespace(tenant, snapshot=snapshot)
            digest, version = found.digest, found.version

        def load() -> LoadedNamespace:
            manifest = self._store.manifest(tenant, version=version, snapshot=snapshot)
            return load_namespace(namespace, self._store.bundle_dir(digest, manifest))

        return namespace, load

    async def list_agents(self, tenant: str, snapshot: str | None = None) -> list[AgentInfo]:
        """The agents of the tenant's live code, or of a snapshot, by name.

        Raises:
            UnknownTenantError, UnknownSnapshotError: no such tenant or snapshot.
        """
        self._check_started()
        entry = await self._runtime.acquire(*self._resolve(tenant, snapshot))
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
        entry = await self._runtime.acquire(*self._resolve(tenant, snapshot))
        try:
            slot = entry.agents.get(agent)
            if slot is None:
                raise UnknownAgentError(tenant, agent, snapshot, sorted(entry.agents))
            try:
                if slot.is_async:
                    result = await slot.instance.perform(**(args or {}))
                else:
                    call = functools.partial(slot.instance.perform, **(args or {}))
                    result = await asyncio.get_running_loop().run_in_executor(self._executor, call)
                    if inspect.isawaitable(result):
                        result = await result
            except Exception as exc:
                raise AgentError(tenant, agent, type(exc).__name__, str(exc)) from exc
        finally:
            self._runtime.release(entry)
        return result

    # -- housekeeping ----------------------------------------------------------------

    async def collect_garbage(self) -> GarbageReport:
        """Remove stored files that no deployment, snapshot or loaded namespace uses."""
        self._check_started()
        async with self._write_lock:
            return await self._collect_locked()

    async def _collect_locked(self) -> GarbageReport:
        return await asyncio.to_thread(self._store.collect_garbage, self._runtime.digests())

    async def _collect_periodically(self) -> None:
        while True:
            await asyncio.sleep(self.gc_interval)
            await self.collect_garbage()

    async def check(self) -> list[str]:
        """Check the data folder: every deployment's and snapshot's files are present and intact.

        Returns the problems found; an empty list means all is well.
        """
        self._check_started()
        return await asyncio.to_thread(self._store.check)

    def loaded_namespaces(self) -> list[Namespace]:
        """The namespaces loaded now, least recently used first."""
        return self._runtime.loaded()

    def health(self) -> dict[str, Any]:
        """The document ``GET /api/health`` returns."""
        uptime = int(time.time() - self._started_at) if self._started_at is not None else 0
        return {
            "status": "healthy" if self._started_at is not None else "stopped",
            "network_id": self.network_id,
            "uptime": uptime,
            "mods": {"loaded": [], "count": 0, "details": {}},
            "tenants": {"count": len(self._live)},
            "namespaces": {"loaded": len(self._runtime), "limit": self._runtime.max_loaded},
        }


def _check_tenant(tenant: str) -> None:
    try:
        check_tenant_name(tenant)
    except ValueError:
        raise InvalidNameError("tenant", tenant, TENANT_NAME_RULE) from None


def _check_snapshot_name(name: str) -> None:
    if (
        not isinstance(name, str)
        or not 1 <= len(name) <= 128
        or "/" in name
        or any(unicodedata.category(c).startswith("C") for c in name)
    ):
        raise InvalidNameError("snapshot", str(name), SNAPSHOT_NAME_RULE)
