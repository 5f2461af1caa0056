"""The ``Network``: the facade over tenants, mods, events and placements of one data folder.

It wires the layers below it together and holds the rules that decide
what a caller may reach (``confine_to``): every method that acts for a
tenant takes it, and the HTTP API passes the caller's tenant. The work
itself is done one layer down: ``tenants`` (deploy, hot swap, snapshots,
calls, GC), ``instances`` (mods and declared instances), ``dispatch``
(events, topics, RPC), ``catalog`` (what is live), ``tokens``, and
``placements`` (where code runs).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from .agent import AgentInfo
from .agent_threads import AgentThreads
from .bundle import BundleLimits, BundleSource
from .catalog import Catalog
from .deadlines import Deadlines
from .dispatch import Dispatcher
from .environments import Environments
from .errors import NotStartedError, OutsideTenantError
from .events import Event, EventResponse, check_shared_topics, confine_event, resolve_topic
from .feed import Feed
from .instances import Instances
from .loader import code_cache
from .manifest import Placement, SandboxLimits
from .metrics import Metrics
from .mod import (
    FreedChecks,
    LocalControl,
    Mod,
    ModRegistry,
    ModRoots,
    ModUnloadReport,
)
from .naming import Namespace
from .placements.base import Placement as PlacementImpl
from .placements.inprocess import InProcess
from .placements.ray_cluster import Ray
from .placements.sandbox import Sandbox
from .placements.worker import Worker
from .runtime import Runtime
from .state import TenantStates
from .storage import install_call_environ
from .store import Deployment, GarbageReport, Sealing, Snapshot, Store
from .system_events import SystemEvents
from .tenants import Tenants
from .tokens import Tokens


@dataclass(frozen=True)
class ModSpec:
    """A mod to load when the network starts (from a config file)."""

    mod_path: str
    config: dict[str, Any] = field(default_factory=dict)
    mod_id: str | None = None
    tenant: str | None = None


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
        call_timeout: seconds one agent call (or one request to a worker) may take.
        worker_max_inflight: requests one worker may have in flight (calls, events,
            RPC); past it a request fails at once with ``WorkerBusyError`` (HTTP 429).
        shared_topics: absolute topics (``/clock``) every tenant's mods and events may
            use besides their own tenant's; a tenant reaches no other topic.
        sandbox_limits: the limits of every tenant's sandbox (``sandbox`` placement).
        sandbox_tenant_limits: a tenant's own sandbox limits: those each sets replace
            ``sandbox_limits``'.
        install_timeout: seconds the install of a bundle's dependencies may take.
        ray_address: the Ray cluster of the ``ray`` placement; unset, this process's
            connection to Ray, or a local instance started at the first ray start.
        ray_resources: the custom resources of the cluster's nodes a tenant's ``[ray]``
            table may ask for (none by default: one tenant could take another's).

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
        call_timeout: float = 60.0,
        shared_topics: list[str] | None = None,
        worker_max_inflight: int = 64,
        sandbox_limits: SandboxLimits | None = None,
        sandbox_tenant_limits: Mapping[str, SandboxLimits] | None = None,
        install_timeout: float = 300.0,
        ray_address: str | None = None,
        ray_resources: list[str] | None = None,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.network_id = network_id
        self.limits = limits or BundleLimits()
        self.gc_interval = gc_interval
        self.unload_timeout = unload_timeout
        self.worker_start_timeout = worker_start_timeout
        self.call_timeout = call_timeout
        self._mod_root_names = mod_roots
        self._startup_mods = list(mods or [])
        self._started_at: float | None = None
        self._gc_task: asyncio.Task[None] | None = None
        self.metrics = Metrics(self._sample_metrics)

        self._store = Store(self.data_dir, keep_versions=keep_versions)
        self._environments = Environments(self.data_dir / "envs", install_timeout=install_timeout)
        self._catalog = Catalog(self._store)
        self._states = TenantStates(self.data_dir, self._store)
        self.feed = Feed()
        """What just happened: deploys, swaps, mods, workers, refused requests."""
        self._tokens = Tokens(self._store)
        self._runtime = Runtime(max_loaded_namespaces)
        self._threads = AgentThreads(agent_threads)
        self._deadlines = Deadlines()
        self._mods = ModRegistry()
        self._freed_checks = FreedChecks(self._notify_unloaded)
        self._dispatch = Dispatcher(
            self._mods,
            self._runtime,
            self._threads,
            self.data_dir,
            self.metrics,
            system=SystemEvents(self).answer,
            call_agent=self.call_agent,
            deadlines=self._deadlines,
            call_timeout=call_timeout,
            shared_topics=frozenset(check_shared_topics(shared_topics or [])),
        )
        control = LocalControl(self._dispatch)
        self._instances = Instances(
            self._mods,
            self._store,
            self._catalog,
            control,
            self._dispatch.mod_for,
            unload_timeout,
            self._dispatch.shared_topics,
            self.feed.publish,
        )
        workers: dict[str, Any] = {
            "data_dir": self.data_dir,
            "unload_timeout": unload_timeout,
            "start_timeout": worker_start_timeout,
            "call_timeout": call_timeout,
            "max_inflight": worker_max_inflight,
            "shared_topics": self._dispatch.shared_topics,
            "tell": self.feed.publish,
        }
        placements: list[PlacementImpl] = [
            InProcess(
                control,
                self._threads,
                self._deadlines,
                unload_timeout=unload_timeout,
                call_timeout=call_timeout,
            ),
            Worker(self._dispatch, self._dispatch.answer_worker, self._deadlines, **workers),
            Sandbox(
                self._dispatch,
                self._dispatch.answer_worker,
                self._deadlines,
                limits=sandbox_limits or SandboxLimits(),
                tenant_limits=sandbox_tenant_limits or {},
                **workers,
            ),
            Ray(
                self._dispatch,
                self._dispatch.answer_worker,
                self._deadlines,
                ray_address=ray_address,
                ray_resources=frozenset(ray_resources or ()),
                **workers,
            ),
        ]
        self._placements = {placement.name: placement for placement in placements}
        self._tenants = Tenants(
            self._store,
            self._catalog,
            self._runtime,
            self._placements,
            self._instances,
            self._tokens,
            self.metrics,
            self.limits,
            self._environments,
            self._states,
            self.feed,
        )

    # -- lifecycle -----------------------------------------------------------------

    async def start(self) -> None:
        """Open the data folder and read what it holds; namespaces load on first use.

        Raises:
            DataFolderInUseError: another process has the folder open.
        """
        if self._started_at is not None:
            return
        self._store.open()
        await asyncio.to_thread(self._environments.open)
        self._catalog.load()
        self._tokens.load()
        await asyncio.to_thread(self._states.load)
        install_call_environ()
        # A namespace's first load in a new process reads compiled code, not source.
        await asyncio.to_thread(code_cache.keep_on_disk, self._store.compiled)
        for placement in self._placements.values():
            await asyncio.to_thread(placement.check)
        self._threads.start()
        self._started_at = time.time()
        self._gc_task = asyncio.get_running_loop().create_task(
            self._tenants.collect_periodically(self.gc_interval)
        )
        (self.data_dir / "mods").mkdir(exist_ok=True)
        roots = self._mod_root_names
        self._instances.roots = ModRoots(
            roots if roots is not None else ["plughost.mods", self.data_dir / "mods"]
        )
        await self._instances.load_recorded(
            [(m.mod_path, m.config, m.mod_id, m.tenant) for m in self._startup_mods]
        )
        await self._tenants.resume()

    async def stop(self) -> None:
        """Shut every mod down, stop every namespace and close the data folder."""
        if self._started_at is None:
            return
        if self._gc_task is not None:
            self._gc_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._gc_task
        await self._environments.close()
        await self._tenants.close()
        # Stopping is not unloading: the mods stay recorded and load again at the next start.
        await self._instances.stop_all()
        await self._freed_checks.drain()
        await self._runtime.close()
        for placement in self._placements.values():
            await placement.close()
        await self._deadlines.stop()
        self._threads.stop()
        if code_cache.folder == self._store.compiled:
            code_cache.keep_on_disk(None)
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
        self,
        tenant: str,
        source: BundleSource,
        *,
        placement: Placement | None = None,
        config: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> Deployment:
        """Deploy ``source`` as the tenant's live code and return the deployment.

        ``source`` is a folder, a ``.zip`` / ``.tar.gz`` path, the raw bytes of
        either, or a JSON bundle. The whole bundle replaces the previous one.
        Deploying the content that is live already changes nothing and returns
        the live deployment. The new code is started, in its placement, and its
        agents found before anything is committed; calls that start after this
        returns run it, calls already running finish on the old code, which
        stops after its last one. ``placement`` (default: the bundle's
        ``plughost.toml``, else the tenant's current placement, else
        ``"inprocess"``) set to ``"process"`` runs the code in a supervised
        worker process. ``config`` (``{"sensor": {"sensitivity": 2.0}}``) is laid
        over the config ``plughost.toml`` gives each declared instance, by
        name; it is stored with the deployment and kept by restarts, and a
        redeploy without it keeps the tenant's current one.

        Raises:
            InvalidNameError: the tenant name breaks the rule.
            BundleRejectedError: the source is unreadable, unsafe or over a limit.
            BundleLoadError: a module fails to load.
            DuplicateAgentError: two agents share a name.
            WorkerStartFailed: the code failed to start in its worker.
            InstanceConfigError: ``config`` names an instance the bundle does not
                declare, or is not an object of objects.
        """
        self._check_started()
        return await self._tenants.deploy(tenant, source, placement, config=config)

    async def deploy_confined(
        self,
        tenant: str,
        source: BundleSource,
        *,
        placement: Placement | None = None,
        config: Mapping[str, Mapping[str, Any]] | None = None,
        confine_to: str | None = None,
    ) -> tuple[Deployment, str | None]:
        """Deploy for a caller: only the admin (``confine_to=None``) creates a tenant, and a
        tenant's first deploy returns its token, once; a tenant deploys only its own.

        Raises:
            OutsideTenantError: a tenant deploys to another, or to a new one.
            UnknownTenantError: a tenant deploys to itself, but was removed meanwhile.
            And whatever :meth:`deploy` raises.
        """
        self._check_started()
        new_tenant = tenant not in self._catalog
        if confine_to is not None and (confine_to != tenant or new_tenant):
            raise OutsideTenantError(confine_to, tenant)
        # A tenant removed while its own upload was on the way is not brought back by it.
        existing = confine_to is not None
        deployment = await self._tenants.deploy(
            tenant, source, placement, existing=existing, config=config
        )
        token = await self.issue_tenant_token(tenant) if new_tenant else None
        return deployment, token

    def upload_folder(self) -> tempfile.TemporaryDirectory[str]:
        """A new, empty folder for an upload on its way to :meth:`deploy`.

        It is in the data folder, so one that a crash leaves behind is removed
        at the next start; clean it up (or use it as a context manager) when done.
        """
        self._check_started()
        return self._store.temporary_folder("upload")

    def list_tenants(self) -> list[str]:
        """The tenants that have a deployment, sorted."""
        return self._catalog.tenants()

    def dependencies_of(self, tenant: str) -> dict[str, list[str]] | None:
        """What the tenant's live code asked for (``dependencies`` in its ``plughost.toml``),
        what was installed for it (``name==version``), and what of that runs from the
        host's own copy in process; ``None`` if it asks for nothing.

        Raises:
            UnknownTenantError: no such tenant.
        """
        self._catalog.deployment(tenant)
        environment = self._tenants.libraries_of(tenant)
        if environment is None:
            return None
        return {
            "asked": list(environment.asked),
            "installed": list(environment.pins),
            "shared_with_host": sorted(environment.shared),
        }

    def deploy_progress(self, tenant: str) -> list[str]:
        """What the tenant's deploy under way, or its last one, said while it installed
        its dependencies (the installer's lines).

        Raises:
            UnknownTenantError: no such tenant (a first deploy under way is one).
        """
        lines = self._tenants.progress.get(tenant)
        if lines is None:
            self._catalog.deployment(tenant)
            return []
        return list(lines)

    def get_deployment(self, tenant: str) -> Deployment:
        """The tenant's live deployment.

        Raises:
            UnknownTenantError: no such tenant.
        """
        return self._catalog.deployment(tenant)

    async def remove_tenant(self, tenant: str) -> None:
        """Remove a tenant: its deployments, snapshots, instances and namespaces; its files follow.

        Raises:
            UnknownTenantError: no such tenant.
        """
        self._check_started()
        await self._tenants.remove(tenant)
        # What still runs for the tenant (an event in a global mod) ends before its data goes.
        await self._dispatch.drained(tenant, self.unload_timeout)
        # Mods that keep data per tenant in memory drop the tenant's now. Only global mods
        # hear of it: the tenant's own are gone, and other tenants' may not know.
        await self._dispatch.broadcast(
            Event(event_name="system.tenant.removed", payload={"tenant": tenant}, tenant=tenant)
        )
        await asyncio.to_thread(self._store.remove_tenant_data, tenant)

    # -- snapshots -----------------------------------------------------------------

    async def create_snapshot(self, tenant: str, name: str) -> Snapshot:
        """Snapshot the tenant's live deployment as ``name``; it never changes afterwards.

        Raises:
            UnknownTenantError: no such tenant.
            InvalidNameError: the name breaks the rule.
            DuplicateSnapshotError: the tenant has a snapshot by that name.
        """
        self._check_started()
        return await self._tenants.create_snapshot(tenant, name)

    def list_snapshots(self, tenant: str) -> list[Snapshot]:
        """The tenant's snapshots, oldest first.

        Raises:
            UnknownTenantError: no such tenant.
        """
        self._catalog.deployment(tenant)
        return self._catalog.snapshots(tenant)

    async def delete_snapshot(self, tenant: str, name: str) -> None:
        """Delete a snapshot; calls running in it finish first.

        Raises:
            UnknownTenantError, UnknownSnapshotError: no such tenant or snapshot.
        """
        self._check_started()
        await self._tenants.delete_snapshot(tenant, name)

    # -- agents --------------------------------------------------------------------

    async def list_agents(self, tenant: str, snapshot: str | None = None) -> list[AgentInfo]:
        """The agents of the tenant's live code, or of a snapshot, by name.

        Raises:
            UnknownTenantError, UnknownSnapshotError: no such tenant or snapshot.
        """
        self._check_started()
        return await self._tenants.list_agents(tenant, snapshot)

    async def call_agent(
        self,
        tenant: str,
        agent: str,
        args: Mapping[str, Any] | None = None,
        *,
        snapshot: str | None = None,
        user: str | None = None,
    ) -> Any:
        """Run ``agent.perform(**args)`` in the tenant's live code or in a snapshot.

        Async agents run on the event loop; sync ones in the agent threads; in
        a worker placement, in the worker. Every call has a deadline
        (``call_timeout``). The call runs with the state of the tenant, or of
        ``user`` (a user id of the tenant's): ``self.storage`` and
        ``BRAINSTEM_MEMORY_PATH`` (see :mod:`plughost.storage`); a snapshot's
        state, or a sealed tenant's, is read-only.

        Raises:
            UnknownTenantError, UnknownSnapshotError, UnknownAgentError: what
                was asked for does not exist; the message lists what does.
            InvalidArgumentsError: ``args`` do not fit the agent's ``parameters``
                schema (an object schema that lists ``properties`` refuses other
                names); the agent did not run.
            AgentError: the agent raised; carries its type and message.
            CallTimeoutError: the call took longer than ``call_timeout``.
            WorkerCrashed: the worker running it died.
            ReadOnlyStateError: the call changed a read-only state; the change is gone.
            InvalidNameError: ``user`` breaks the naming rule.
            TypeError: ``args`` is not a mapping.
        """
        self._check_started()
        # A dict first: an ABC's isinstance is slow next to a warm call.
        if args is not None and type(args) is not dict and not isinstance(args, Mapping):
            raise TypeError(
                f"args must be a mapping of keyword arguments, not {type(args).__name__}"
            )
        return await self._tenants.call_agent(tenant, agent, args or {}, snapshot, user)

    # -- seals -----------------------------------------------------------------------

    async def seal_tenant(
        self,
        tenant: str,
        *,
        sealed_by: str = "admin",
        trigger: str = "manual",
        actor: str | None = None,
    ) -> Sealing:
        """Seal a tenant, durably (idempotent): a redeploy, its removal and a snapshot's
        deletion raise ``TenantSealedError``; its calls read the state it had when sealed
        (a write raises ``ReadOnlyStateError``); calls and new snapshots go on.

        ``sealed_by`` is who asks (the admin, or the tenant), ``actor`` who they say seals it.

        Raises:
            UnknownTenantError: no such tenant.
            StateTooLargeError: its state is past what a seal captures.
        """
        self._check_started()
        return await self._tenants.seal(tenant, sealed_by, trigger, actor or sealed_by)

    async def unseal_tenant(self, tenant: str) -> None:
        """Unseal a tenant (the admin's act); its live state is the one it was sealed with."""
        self._check_started()
        await self._tenants.unseal(tenant)

    def sealing_of(self, tenant: str) -> Sealing | None:
        """The tenant's seal, or ``None``; raises ``UnknownTenantError`` for no tenant."""
        self._catalog.deployment(tenant)
        return self._states.seals.get(tenant)

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
            loaded = await self._instances.load(
                mod_path, dict(config or {}), mod_id, tenant, persist=True
            )
        except Exception:
            self.metrics.mod_loads.labels("error").inc()
            raise
        self.metrics.mod_loads.labels("ok").inc()
        await self._dispatch.notify(
            "system.mod.loaded", loaded.mod_id, loaded.mod_path, loaded.tenant
        )
        return loaded.instance

    async def unload_mod(
        self,
        mod_path_or_id: str,
        *,
        tenant: str | None = None,
        confine_to: str | None = None,
        verify: bool = False,
    ) -> ModUnloadReport:
        """Unload one mod, named by its id, its key (``tenant/mod_id``) or its exact ``mod_path``.

        Its handlers stop receiving events at once; calls already in them may
        finish (up to ``unload_timeout``); then ``shutdown()`` runs and its
        code is unloaded: out of the registry, the handlers and ``sys.modules``,
        so nothing of the network reaches it. The mod is removed in every case.
        With ``confine_to``, only that tenant's mods are candidates.

        The proof that its code was freed (weak references, and a garbage
        collection when needed) runs right after this returns, off the
        caller's path; its result fills in the same report (``verified``,
        ``leaked``), which health and ``GET /api/mods`` show under
        ``unloaded``, and goes out in a ``system.mod.unloaded`` event. With
        ``verify``, the proof runs before this returns.

        Raises:
            ModNotLoadedError: nothing loaded matches, or several mods do.
        """
        self._check_started()
        report = await self._instances.unload(mod_path_or_id, tenant=tenant, confine_to=confine_to)
        self.metrics.mod_unloads.inc()
        if verify:
            await asyncio.to_thread(report.check_freed)
            await self._notify_unloaded(report)
        else:
            self._freed_checks.submit(report)
        return report

    async def _notify_unloaded(self, report: ModUnloadReport) -> None:
        await self._dispatch.notify(
            "system.mod.unloaded",
            report.mod_id,
            report.mod_path,
            report.tenant,
            verified=report.verified,
            leaked=report.leaked,
        )

    def mod_status(self, confine_to: str | None = None) -> dict[str, Any]:
        """The ``mods`` part of health: loaded and failed mods with their details.

        With ``confine_to`` (a tenant), only global mods and that tenant's.
        """
        return self._mods.status(confine_to)

    def get_loaded_mods(self) -> list[str]:
        """The keys of the loaded mods: ``mod_id``, or ``tenant/mod_id`` inside a tenant."""
        return self._mods.list_loaded()

    def get_mod(self, key: str) -> Mod:
        """The instance of a loaded mod.

        Raises:
            ModNotLoadedError: no such mod.
        """
        return self._instances.get(key)

    # -- instances -------------------------------------------------------------------

    def instances(self) -> list[dict[str, Any]]:
        """Every running mod instance: RPC name, tenant, name, class, where its code is from."""
        return self._instances.listing()

    async def restart(
        self, rpc_name: str, *, reload: bool = True, confine_to: str | None = None
    ) -> Mod:
        """Replace one instance with a fresh load of its code, leaving everything else running.

        The replacement is loaded and initialized beside the running instance,
        where it runs, with the same config; only then does it take the
        instance's RPC name and subscriptions, and the old one is drained and
        shut down. With ``reload`` a bundle instance loads from the tenant's
        live deployment (and a loaded mod from its file as it is now);
        without, from the code it runs. If the new code fails, the old
        instance keeps running.

        Raises:
            ModNotLoadedError, AmbiguousNameError: no such instance, or several.
            OutsideTenantError: with ``confine_to``, the instance is another tenant's.
            ModLoadError: the new code failed; nothing changed.
        """
        self._check_started()
        return await self._instances.restart(rpc_name, reload=reload, confine_to=confine_to)

    async def unload(self, rpc_name: str, *, confine_to: str | None = None) -> ModUnloadReport:
        """Unload one instance by RPC name: ``robot2/mapper``, or ``shared_cache`` if global.

        Raises:
            ModNotLoadedError, AmbiguousNameError: no such instance, or several.
            OutsideTenantError: with ``confine_to``, the instance is another tenant's.
        """
        self._check_started()
        mod = self._instances.confined(rpc_name, confine_to)
        return await self.unload_mod(mod.key, confine_to=confine_to)

    # -- events, topics, RPC -------------------------------------------------------

    async def send_event(self, event: Event, *, confine_to: str | None = None) -> EventResponse:
        """Deliver ``event`` by its ``destination_id``, or to every matching handler.

        Never raises for what a handler or the routing did: failures come back
        as ``success=False`` with the error text, and the network keeps serving.
        With ``confine_to`` (a tenant), the event acts as that tenant: it may
        reach that tenant's agents, mods, instances and topics and global
        mods, ``system.*`` events act on its mods and instances only, and list
        only what it may see.

        Raises:
            OutsideTenantError: with ``confine_to``, the event names another tenant.
        """
        self._check_started()
        if confine_to is not None:
            event = confine_event(event, confine_to, self._dispatch.shared_topics)
        return await self._dispatch.send(event, confine_to)

    async def publish(
        self,
        topic: str,
        data: Mapping[str, Any],
        *,
        tenant: str | None = None,
        source_id: str = "system",
    ) -> int:
        """Publish ``data`` to ``topic`` resolved against ``tenant``; return how many received it.

        This is the network's own publishing, which reaches any topic; a mod's
        ``self.publish`` reaches only what its tenant may.

        Raises:
            ValueError: the topic is empty.
        """
        resolved = resolve_topic(topic, tenant)
        return await self._dispatch.deliver(resolved, data, tenant=tenant, source_id=source_id)

    async def rpc(
        self, name: str, method: str, *args: Any, tenant: str | None = None, **kwargs: Any
    ) -> Any:
        """Call an ``@rpc`` method of the mod named ``name`` (``mod_id`` or ``tenant/mod_id``).

        A bare ``mod_id`` is looked up inside ``tenant`` first, then globally.

        Raises:
            ModNotLoadedError: no such mod.
            UnknownRpcError: the mod has no such RPC method.
            RpcError: the method raised.
            CallTimeoutError: it did not return within ``call_timeout``.
        """
        self._check_started()
        return await self._dispatch.rpc(name, method, *args, tenant=tenant, **kwargs)

    # -- tokens ----------------------------------------------------------------------

    async def issue_tenant_token(self, tenant: str, *, replace: bool = False) -> str | None:
        """Create a token for ``tenant`` and return it; only its hash is kept.

        Returns ``None`` when the tenant has a token already and ``replace`` is
        False, so that a token is handed out once.

        Raises:
            UnknownTenantError: no such tenant.
        """
        self._check_started()
        async with self._tenants.write_lock:
            self._catalog.deployment(tenant)
            token = await self._tokens.issue(tenant, replace=replace)
        if replace:
            self.feed.forget(tenant)  # what the old token followed, it follows no more
        return token

    def tenant_for_token(self, token: str) -> str | None:
        """The tenant a token belongs to, or ``None``. Looks up the token's hash only."""
        return self._tokens.tenant_for(token)

    # -- housekeeping ----------------------------------------------------------------

    async def collect_garbage(self) -> GarbageReport:
        """Remove stored files that no deployment, snapshot or loaded namespace uses."""
        self._check_started()
        return await self._tenants.collect_garbage()

    async def check(self) -> list[str]:
        """Check the data folder: every deployment's and snapshot's files are present and intact,
        and so are the bundle folders their code loads from.

        Returns the problems found; an empty list means all is well. A bundle
        folder that differs is rebuilt from the stored files at its next load.
        """
        self._check_started()
        return await asyncio.to_thread(self._store.check)

    def _sample_metrics(self) -> dict[str, float]:
        return {
            "loaded_namespaces": len(self._runtime),
            "loaded_mods": len(self._mods.list_loaded()),
            "failed_mods": len(self._mods.failed()),
            "tenants": len(self._catalog),
            "namespace_loads": self._runtime.loads,
            "namespace_unloads": self._runtime.unloads,
            "namespace_evictions": self._runtime.evictions,
        }

    def loaded_namespaces(self) -> list[Namespace]:
        """The namespaces loaded now, least recently used first."""
        return self._runtime.loaded()

    def namespaces(self, confine_to: str | None = None) -> list[dict[str, Any]]:
        """The loaded namespaces the caller may see, least recently used first: each one's
        namespace, tenant, snapshot, version, state, placement, calls in flight and memory
        estimate in bytes (in process: its modules, shallow; in a worker: the worker's)."""
        return self._runtime.describe(confine_to)

    def call_series(self, tenant: str, window: int = 300, step: int = 5) -> dict[str, Any]:
        """The tenant's calls over the last ``window`` seconds, in steps of ``step``: calls
        and errors a second, and the p50 and p99 latency in ms (see ``plughost.call_stats``).

        Raises:
            UnknownTenantError: no such tenant.
        """
        self._catalog.deployment(tenant)
        return self._tenants.stats.series(tenant, window, step)

    def health(self, confine_to: str | None = None, *, counts_only: bool = False) -> dict[str, Any]:
        """The document ``GET /api/health`` returns, as the caller may see it.

        The admin (the default) sees everything; with ``confine_to``, a tenant sees
        its own tenant and the global mods only, counts and status included; with
        ``counts_only``, an anonymous caller gets the same fields with the global
        mods only, no worker, and the whole network's counts under ``counts``.
        """
        uptime = int(time.time() - self._started_at) if self._started_at is not None else 0
        units = [
            unit for unit in self._runtime.units() if confine_to in (None, unit.namespace.tenant)
        ]
        live = {
            unit
            for unit in units
            if unit.namespace.tenant in self._catalog
            and unit.namespace == self._catalog.live_namespace(unit.namespace.tenant)
        }
        workers = {
            unit.namespace.tenant: described
            for unit in live
            if (described := unit.describe()) is not None
        }
        mods = self._mods.status(confine_to)
        if self._started_at is None:
            status = "stopped"
        elif mods["failed"] or any(not unit.healthy for unit in live):
            status = "degraded"
        else:
            status = "healthy"
        tenants = len(self._catalog) if confine_to is None else int(confine_to in self._catalog)
        seals = [] if counts_only else sorted(self._states.seals)
        sealed = [tenant for tenant in seals if confine_to in (None, tenant)]
        counts: dict[str, Any] = {}
        if counts_only:
            mods_in_all, failed = mods["count"], len(mods["failed"])
            counts = {
                "counts": {"mods": mods_in_all, "failed_mods": failed, "workers": len(workers)}
            }
            mods, workers = self._mods.status(global_only=True), {}
        return {
            "status": status,
            "network_id": self.network_id,
            "uptime": uptime,
            "mods": mods,
            "tenants": {"count": tenants, "sealed": sealed},
            "namespaces": {
                "loaded": len(units),
                "limit": self._runtime.max_loaded,
                "states": self._runtime.states(confine_to),
            },
            "workers": dict(sorted(workers.items())),
            "dependencies": {
                tenant: list(environment.pins)
                for tenant in sorted(self._catalog.tenants())
                if (confine_to in (None, tenant) and not counts_only)
                and (environment := self._tenants.libraries_of(tenant)) is not None
            },
            "placements": {
                name: placement.availability for name, placement in sorted(self._placements.items())
            },
            **counts,
        }
