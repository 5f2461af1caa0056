"""Tenants: the deploy pipeline and hot swap, snapshots, removal, calls and garbage.

A redeploy starts the new version beside the old one, in the tenant's
placement, commits it, and then points new calls at it; the old version
serves its calls in flight to the end and only then stops (hot swap). The
same holds in every placement, because nothing here knows which one it
talks to: it hands a :class:`~plughost.placements.base.Launch` to a
placement and leases the :class:`~plughost.runtime.Unit` it gets back.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import re
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import Any

from .agent import AgentInfo
from .bundle import BundleFiles, BundleLimits, BundleSource, read_bundle
from .call_stats import CallStats
from .catalog import Catalog, GoneError, Location
from .environments import Environment, Environments, Progress
from .errors import (
    DependencyError,
    DuplicateSnapshotError,
    InstanceConfigError,
    InvalidNameError,
    TenantSealedError,
    UnknownTenantError,
)
from .feed import Feed
from .instances import Instances, check_name
from .manifest import MANIFEST, dependencies_in
from .manifest import Placement as PlacementName
from .metrics import Metrics
from .mod import LoadedMod, stop_mod
from .naming import TENANT_NAME_RULE, Namespace
from .placements.base import Launch, Placement, Started
from .runtime import Runtime, Starter, Unit
from .state import TenantStates
from .store import Deployment, GarbageReport, Sealing, Snapshot, Store
from .tokens import Tokens

log = logging.getLogger("plughost")

_PROGRESS_LINES = 500  # of an install's output kept for a deploy's progress

SNAPSHOT_NAME_RULE = (
    "1-128 characters, no '/', no control characters, no lone surrogates, not '.' or '..'"
)
SNAPSHOT_NAME_PATTERN = r"^[^/\x00-\x1f\x7f-\x9f]{1,128}$"
_SNAPSHOT_NAME = re.compile(SNAPSHOT_NAME_PATTERN)


class Tenants:
    """The tenants of one network: their code, where it runs, and calls into it.

    Args:
        store: the data folder.
        catalog: what is live.
        runtime: the loaded namespaces and their leases.
        placements: every placement available here, by name.
        instances: where a deploy's declared instances go.
        tokens: forgets a removed tenant's token.
        metrics: counts deploys and calls.
        limits: bounds every bundle.
        environments: where tenants' own libraries are installed.
        states: the tenants' state, and their seals.
        feed: told of each deploy, swap, snapshot, seal and removal; forgets a removed
            tenant.
    """

    def __init__(
        self,
        store: Store,
        catalog: Catalog,
        runtime: Runtime,
        placements: Mapping[str, Placement],
        instances: Instances,
        tokens: Tokens,
        metrics: Metrics,
        limits: BundleLimits,
        environments: Environments,
        states: TenantStates,
        feed: Feed,
    ) -> None:
        self._tell = feed.publish
        self._tell_admin = feed.publish_for_admin
        self._forget = feed.forget
        self._store = store
        self._states = states
        self._environments = environments
        # The libraries of each tenant's live code, and the requirement lists a deploy
        # or a start under way uses: garbage collection keeps them.
        self._libraries: dict[str, Environment] = {}
        self._asking: Counter[tuple[str, ...]] = Counter()
        self.progress: dict[str, deque[str]] = {}
        """What each tenant's deploy under way (or its last one) said of its dependencies."""
        self._catalog = catalog
        self._runtime = runtime
        self._placements = placements
        self._instances = instances
        self._tokens = tokens
        self._metrics = metrics
        self.limits = limits
        self.write_lock = asyncio.Lock()
        self._tenant_locks: dict[str, asyncio.Lock] = {}
        self._staging: list[tuple[str, frozenset[str]]] = []  # (digest, blobs) being deployed
        self._coming: set[asyncio.Task[None]] = set()  # units not up at the start, awaited
        self._pinned: Counter[str] = Counter()  # bundle digests of namespaces about to load
        self.stats = CallStats()
        """Each tenant's recent calls, for the operator page's charts."""

    def placement_of(self, tenant: str) -> Placement:
        """The placement the tenant's code runs in."""
        return self._placements[self._catalog.deployment(tenant).placement]

    # -- starting ---------------------------------------------------------------------

    async def resume(self) -> None:
        """At start: bring back every tenant's instances and workers (failures show)."""
        for tenant in self._catalog.tenants():
            location = await asyncio.to_thread(self._catalog.locate_live, tenant)
            config = self._catalog.deployment(tenant).instance_config
            try:
                environment = await self._environment(tenant, location)
            except DependencyError:
                # Shown in health: its code fails to import what it needs.
                log.exception("tenant %s: its dependencies are not installed", tenant)
                environment = None
            launch = _launch(location, live=True, config=config, environment=environment)
            started = await self.placement_of(tenant).resume(launch)
            if environment is not None:
                self._libraries[tenant] = started.environment or environment
            if started.unit is not None:
                self._runtime.add(started.unit)
            await self._instances.record(started.instances, started.failures)
            if started.coming is not None:
                task = asyncio.get_running_loop().create_task(
                    self._record_when_up(started.unit, started.coming)
                )
                self._coming.add(task)
                task.add_done_callback(self._coming.discard)

    async def _record_when_up(self, unit: Unit | None, coming: Awaitable[list[LoadedMod]]) -> None:
        """Register the instances of a unit that came up after the network started, if it
        still is what runs (a redeploy meanwhile brought its own, and stops this unit)."""
        instances = await coming
        if unit is not None and self._runtime.get(unit.namespace) is unit:
            await self._instances.record(instances, [])

    async def close(self) -> None:
        """Stop waiting for units that had not come up at the start."""
        for task in list(self._coming):
            task.cancel()
        await asyncio.gather(*self._coming, return_exceptions=True)

    # -- deploying --------------------------------------------------------------------

    async def deploy(
        self,
        tenant: str,
        source: BundleSource,
        placement: PlacementName | None,
        *,
        existing: bool = False,
        config: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> Deployment:
        """Deploy ``source`` as the tenant's live code (see ``Network.deploy``).

        With ``existing``, only a tenant that still exists when the deploy takes its
        lock is deployed to: a tenant removed meanwhile is not brought back.
        """
        try:
            check_name("tenant", tenant, TENANT_NAME_RULE)
            overrides = _checked_config(tenant, config)
            bundle = await asyncio.to_thread(read_bundle, source, self.limits, self._store.scratch)
            # Shielded: once started, a deploy runs to its end even if its caller goes away.
            deployment = await asyncio.shield(
                self._deploy(tenant, bundle, placement, existing, overrides)
            )
        except Exception:
            self._metrics.deploys.labels("error").inc()
            raise
        self._metrics.deploys.labels("ok").inc()
        return deployment

    async def _deploy(
        self,
        tenant: str,
        bundle: BundleFiles,
        placement: PlacementName | None,
        existing: bool,
        config: dict[str, dict[str, Any]] | None,
    ) -> Deployment:
        files, digest = bundle.manifest, bundle.digest
        # One deploy per tenant at a time. The global write lock is taken only to
        # commit, so other tenants' writes go on while this bundle's code imports.
        async with self._tenant_lock(tenant):
            current = self._catalog.find(tenant)
            if existing and current is None:
                raise UnknownTenantError(tenant, [])
            # Checked under the tenant's lock, which a seal takes too: no deploy lands after it.
            if tenant in self._states.seals:
                raise TenantSealedError(tenant, "a redeploy")
            if (
                current is not None
                and current.digest == digest
                and placement in (None, current.placement)
                and config in (None, current.instance_config)
                and self._live_unit_healthy(tenant)
            ):
                return current
            # A redeploy that gives no config keeps the instances' config as it was.
            if config is None:
                config = current.instance_config if current is not None else {}
            if current is None:
                # A new tenant of a removed one's name starts with no data, even if a
                # write for the old one outlived its removal.
                await asyncio.to_thread(self._store.remove_data_of_removed, tenant)
            version = await asyncio.to_thread(self._store.next_version, tenant)
            namespace = Namespace(tenant, version=version)

            def stage() -> Location:
                self._store.put_files(bundle.files, files)
                return self._catalog.stage(namespace, version, digest, files)

            staged = (digest, frozenset(files.values()))
            self._staging.append(staged)
            started: Started | None = None
            old: Unit | None = None
            try:
                # Files are written under the write lock, so that no GC pass runs between
                # registering them as staged and writing them; the code imports outside it.
                async with self.write_lock:
                    location = await asyncio.to_thread(stage)
                declared = [m.name for m in location.manifest.mods]
                self._instances.check_free(tenant, declared)
                unknown = sorted(set(config) - set(declared))
                if unknown:
                    raise InstanceConfigError(
                        tenant, f"no declared instance {', '.join(map(repr, unknown))}", declared
                    )
                # A redeploy that names no placement keeps the tenant where it runs: a
                # tenant put in a worker is never moved into the host unasked.
                chosen = (
                    placement
                    or location.manifest.placement
                    or (current.placement if current is not None else "inprocess")
                )
                lines = self.progress[tenant] = deque(maxlen=_PROGRESS_LINES)
                with self._using(location):
                    environment = await self._environment(tenant, location, lines.append)
                    launch = _launch(location, live=True, config=config, environment=environment)
                    started = await self._placements[chosen].start(launch)
                for mod in started.instances:
                    self._instances.check_topics(mod)
                unit = _unit_of(started)
                agents = sorted(info.name for info in unit.agents())
                async with self.write_lock:
                    deployment = await asyncio.to_thread(
                        self._store.record_deployment,
                        tenant,
                        version,
                        files,
                        agents,
                        bundle.metadata,
                        chosen,
                        config,
                    )
                    self._runtime.add(unit)
                    if environment is not None:
                        self._libraries[tenant] = started.environment or environment
                    else:
                        self._libraries.pop(tenant, None)
                    replaced = self._catalog.set_live(deployment, unit.namespace)
                    if replaced is not None:
                        old = self._runtime.get(replaced)
                        if old is not None:
                            # Held until its instances are swapped out: their calls drain first.
                            self._runtime.lease(old)
                        self._runtime.retire(replaced)
            except BaseException:
                if current is None:
                    self.progress.pop(tenant, None)  # no tenant to ask about it
                if started is not None:
                    await _discard(started, self._instances.unload_timeout)
                self._staging.remove(staged)
                # Nothing of a failed deploy stays: the files it stored go at once.
                async with self.write_lock:
                    await self._collect_locked()
                raise
            self._staging.remove(staged)
            try:
                await self._instances.swap(tenant, started.instances)
            finally:
                if old is not None:
                    self._runtime.release(old)
            what = "deployed" if current is None else f"swapped in for v{current.version}"
            self._tell("deploy", tenant, f"v{version} {what} ({chosen}, {len(agents)} agents)")
            return deployment

    async def _environment(
        self, tenant: str, location: Location, progress: Progress | None = None
    ) -> Environment | None:
        """The installed libraries of the code at ``location``: none if it asks for none.

        Raises:
            DependencyError: they could not be installed.
        """
        asked = location.manifest.dependencies
        if not asked:
            return None
        return await self._environments.ensure(tenant, asked, progress=progress)

    @contextlib.contextmanager
    def _using(self, location: Location) -> Iterator[None]:
        """While the code at ``location`` starts: garbage collection keeps its libraries."""
        asked = tuple(location.manifest.dependencies)
        self._asking[asked] += 1
        try:
            yield
        finally:
            self._asking[asked] -= 1
            if not self._asking[asked]:
                del self._asking[asked]

    def libraries_of(self, tenant: str) -> Environment | None:
        """The installed libraries of the tenant's live code, if it asks for any."""
        return self._libraries.get(tenant)

    def _live_unit_healthy(self, tenant: str) -> bool:
        unit = self._runtime.get(self._catalog.live_namespace(tenant))
        return unit is None or unit.healthy

    def _tenant_lock(self, tenant: str) -> asyncio.Lock:
        return self._tenant_locks.setdefault(tenant, asyncio.Lock())

    async def remove(self, tenant: str) -> None:
        """Remove a tenant: its deployments, snapshots, token, instances and namespaces."""
        async with self._tenant_lock(tenant), self.write_lock:
            self._catalog.deployment(tenant)
            if tenant in self._states.seals:
                raise TenantSealedError(tenant, "its removal")
            await asyncio.to_thread(self._store.remove_tenant, tenant)
            self._states.forget(tenant)
            self._tokens.forget(tenant)
            await self._instances.drop_tenant(tenant)
            for namespace in self._catalog.drop_tenant(tenant):
                self._runtime.retire(namespace)
            self._libraries.pop(tenant, None)
            self.progress.pop(tenant, None)
            self.stats.forget(tenant)
            await self._collect_locked()
        self._forget(tenant)
        self._tell_admin("removal", None, f"tenant {tenant} removed")

    # -- snapshots ----------------------------------------------------------------------

    async def create_snapshot(self, tenant: str, name: str) -> Snapshot:
        """Snapshot the tenant's live deployment and its state as ``name``."""
        _check_snapshot_name(name)
        self._catalog.deployment(tenant)
        # The tenant's writing calls end first, and its state is read while none runs.
        async with self._states.held(tenant), self.write_lock:
            deployment = self._catalog.deployment(tenant)
            if self._catalog.has_snapshot(tenant, name):
                raise DuplicateSnapshotError(tenant, name)
            sealing = self._states.seals.get(tenant)
            if sealing is not None:
                state = sealing.state
            else:
                state = await asyncio.to_thread(self._states.capture, tenant)
            snapshot = await asyncio.to_thread(self._store.create_snapshot, deployment, name, state)
            self._catalog.add_snapshot(snapshot)
        self._tell("snapshot", tenant, f"snapshot {name!r} taken of v{deployment.version}")
        return snapshot

    async def delete_snapshot(self, tenant: str, name: str) -> None:
        """Delete a snapshot; calls running in it finish first."""
        async with self.write_lock:
            self._catalog.snapshot(tenant, name)
            if tenant in self._states.seals:
                raise TenantSealedError(tenant, f"deleting snapshot {name!r}")
            await asyncio.to_thread(self._store.delete_snapshot, tenant, name)
            self._runtime.retire(self._catalog.drop_snapshot(tenant, name))
            await self._collect_locked()
        self._tell("snapshot_deleted", tenant, f"snapshot {name!r} deleted")

    # -- seals --------------------------------------------------------------------------

    async def seal(self, tenant: str, sealed_by: str, trigger: str, actor: str) -> Sealing:
        """Seal the tenant (see ``Network.seal_tenant``); a sealed one stays as it was."""
        async with self._tenant_lock(tenant):
            deployment = self._catalog.deployment(tenant)
            sealing = self._states.seals.get(tenant)
            if sealing is not None:
                return sealing
            async with self._states.held(tenant), self.write_lock:
                state = await asyncio.to_thread(self._states.capture, tenant)
                sealing = Sealing(
                    tenant, time.time(), sealed_by, trigger, deployment.version, state, actor
                )
                # Marked first: a crash before the record leaves a mark the next start drops.
                await asyncio.to_thread(self._states.mark_sealed, tenant, True)
                await asyncio.to_thread(self._store.record_seal, sealing)
                self._states.seals[tenant] = sealing
            await self._sealed_units(tenant, True)
        said = f"sealed by {sealed_by} ({actor}: {trigger}) at v{sealing.version}"
        self._tell("seal", tenant, said)
        return sealing

    async def _sealed_units(self, tenant: str, sealed: bool) -> None:
        unit = self._runtime.get(self._catalog.live_namespace(tenant))
        if unit is not None:
            await unit.state_sealed(sealed)

    async def unseal(self, tenant: str) -> None:
        """Unseal the tenant: its live state is again what it was when it was sealed."""
        async with self._tenant_lock(tenant):
            self._catalog.deployment(tenant)
            sealing = self._states.seals.get(tenant)
            if sealing is None:
                return
            async with self._states.held(tenant), self.write_lock:
                # Restored first: if it fails, the tenant stays sealed, its state kept.
                await self._states.restore(tenant, sealing.state)
                await asyncio.to_thread(self._store.delete_seal, tenant)
                del self._states.seals[tenant]
                await asyncio.to_thread(self._states.mark_sealed, tenant, False)
            await self._sealed_units(tenant, False)
        self._tell("unseal", tenant, "unsealed")

    # -- calls --------------------------------------------------------------------------

    async def _acquire(self, tenant: str, snapshot: str | None) -> Unit:
        """Lease the namespace a call resolves to, resolving again if what it named was
        removed (a deleted snapshot, a pruned version) while it loaded."""
        attempts = 0
        while True:
            namespace, digest, version = self._catalog.target(tenant, snapshot)
            warm = self._runtime.lease_loaded(namespace)
            if warm is not None:
                return warm
            start = self._starter(tenant, snapshot, namespace, digest, version)
            # Pinned while it may load: a GC pass must not take its folder meanwhile.
            self._pinned[digest] += 1
            try:
                return await self._runtime.acquire(namespace, start)
            except GoneError:
                attempts += 1
                if attempts > 3:
                    raise
            finally:
                self._pinned[digest] -= 1
                if not self._pinned[digest]:
                    del self._pinned[digest]

    def _starter(
        self, tenant: str, snapshot: str | None, namespace: Namespace, digest: str, version: int
    ) -> Starter:
        """How to start a namespace a call needs, in the tenant's placement."""
        placement = self.placement_of(tenant)

        async def start() -> Unit:
            location = await asyncio.to_thread(
                self._catalog.locate, tenant, namespace, digest, version, snapshot
            )
            with self._using(location):
                environment = await self._environment(tenant, location)
                launch = _launch(location, live=False, environment=environment)
                return _unit_of(await placement.start(launch))

        return start

    async def list_agents(self, tenant: str, snapshot: str | None) -> list[AgentInfo]:
        """The agents of the tenant's live code, or of a snapshot, by name."""
        unit = await self._acquire(tenant, snapshot)
        try:
            return unit.agents()
        finally:
            self._runtime.release(unit)

    async def call_agent(
        self,
        tenant: str,
        agent: str,
        args: Mapping[str, Any],
        snapshot: str | None,
        user: str | None = None,
    ) -> Any:
        """Run one agent call in the tenant's live code or a snapshot, with the state of
        the tenant or of ``user``."""
        started = time.perf_counter()
        try:
            # First: a name that is no tenant's (or snapshot's) gets no state folder. Most
            # calls find their namespace loaded and their state made, and need not await.
            catalog = self._catalog
            target = (
                catalog.live_namespace(tenant)
                if snapshot is None
                else catalog.target(tenant, snapshot)[0]
            )
            unit = self._runtime.lease_loaded(target) or await self._acquire(tenant, snapshot)
            try:
                lease = self._states.begin_warm(tenant, user) if snapshot is None else None
                if lease is None:
                    snapshot_state = (
                        None if snapshot is None else self._catalog.snapshot(tenant, snapshot).state
                    )
                    lease = await self._states.begin(tenant, user, snapshot, snapshot_state)
            except BaseException:
                self._runtime.release(unit)
                raise
            try:
                # The unit releases once its work has stopped, which may be after the call.
                release = functools.partial(_release_both, self._runtime, unit, lease.keep())
                result = await unit.call(agent, args, release, lease.state)
            except BaseException as exc:
                await self._states.end(lease, exc)
                raise
            if lease.view is not None:  # a live call's hold went with its release
                await self._states.end(lease, None)
        except Exception:
            self._metrics.calls.error()
            if tenant in self._catalog:  # a name that is no tenant's gets no series
                self.stats.record(tenant, time.perf_counter() - started, False)
            raise
        elapsed = time.perf_counter() - started
        self._metrics.calls.ok(elapsed)
        self.stats.record(tenant, elapsed, True)
        return result

    # -- garbage ------------------------------------------------------------------------

    async def collect_garbage(self) -> GarbageReport:
        """Remove stored files that no deployment, snapshot or loaded namespace uses."""
        async with self.write_lock:
            return await self._collect_locked()

    async def _collect_locked(self) -> GarbageReport:
        bundles = self._runtime.digests() | set(self._pinned)
        bundles |= {digest for digest, _ in self._staging}
        blobs = {blob for _, staged in self._staging for blob in staged}
        report = await asyncio.to_thread(self._store.collect_garbage, bundles, blobs)
        asked = [list(each) for each in self._asking]
        asked += [list(environment.asked) for environment in self._libraries.values()]

        def collect_environments() -> None:
            for digest in self._store.digests() | bundles:
                asked.append(dependencies_in(self._store.bundle_file(digest, MANIFEST)))
            self._environments.collect_garbage([each for each in asked if each])

        await asyncio.to_thread(collect_environments)
        return report

    async def collect_periodically(self, interval: float) -> None:
        """Collect garbage every ``interval`` seconds, until cancelled."""
        while True:
            await asyncio.sleep(interval)
            try:
                await self.collect_garbage()
            except Exception:
                # The next pass retries; a pass that fails must not end the loop.
                log.exception("garbage collection failed")


def _release_both(runtime: Runtime, unit: Unit, state: Callable[[], None]) -> None:
    runtime.release(unit)
    state()


def _launch(
    location: Location,
    *,
    live: bool,
    config: Mapping[str, dict[str, Any]] | None = None,
    environment: Environment | None = None,
) -> Launch:
    """What a placement starts; ``config`` is laid over each declared instance's own."""
    given = config or {}
    instances = tuple(
        spec.model_copy(update={"config": {**spec.config, **given[spec.name]}})
        if spec.name in given
        else spec
        for spec in location.manifest.mods
    )
    return Launch(
        location.tenant,
        location.namespace,
        location.version,
        location.digest,
        location.folder,
        instances if live else (),
        live,
        environment,
    )


def _checked_config(
    tenant: str, config: Mapping[str, Mapping[str, Any]] | None
) -> dict[str, dict[str, Any]] | None:
    """``config`` as stored: an object of JSON objects, by instance name.

    Raises:
        InstanceConfigError: it is not of that shape.
    """
    if config is None:
        return None
    if not isinstance(config, Mapping) or not all(
        isinstance(name, str) and isinstance(values, Mapping) for name, values in config.items()
    ):
        raise InstanceConfigError(tenant, "expected an object of objects, by instance name", [])
    checked = {name: dict(values) for name, values in config.items()}
    try:
        json.dumps(checked)
    except (TypeError, ValueError) as exc:
        raise InstanceConfigError(tenant, f"not JSON: {exc}", []) from None
    return checked


def _unit_of(started: Started) -> Unit:
    if started.unit is None:
        raise RuntimeError("a placement's start() must return the unit it started")
    return started.unit


async def _discard(started: Started, timeout: float) -> None:
    """Stop what a failed deploy started; the runtime never held it."""
    for mod in started.instances:
        await stop_mod(mod, timeout)
    if started.unit is not None:
        stopping = started.unit.unload()
        if stopping is not None:
            await stopping


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
