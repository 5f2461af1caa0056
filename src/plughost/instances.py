"""Mods and declared instances: loading, unloading, restarting, and what is running.

Mods loaded at runtime (``load_mod``, ``system.mod.load``) run in this
process; the instances a bundle declares run where their tenant runs, and
arrive here from the placement that started them. Either way, one
:class:`~plughost.mod.ModRegistry` records them, and one lock orders every
change to it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from .catalog import Catalog
from .errors import (
    InvalidNameError,
    ModAlreadyLoadedError,
    ModLoadError,
    ModNotLoadedError,
    OutsideTenantError,
    PlughostError,
)
from .events import topic_allowed
from .feed import Publish
from .mod import (
    FailedMod,
    LoadedMod,
    LocalControl,
    Mod,
    ModRegistry,
    ModRoots,
    ModUnloadReport,
    mod_key,
    stop_mod,
)
from .naming import TENANT_NAME_RULE, check_tenant_name
from .store import Store, StoredMod

MOD_ID_RULE = "1-64 characters of [A-Za-z0-9_.-], not starting with '.'"

Lookup = Callable[[str, str | None], LoadedMod]
"""Finds a mod by name, inside a tenant first: ``(name, tenant)``."""


class Instances:
    """The mods and instances of one network.

    Args:
        mods: the registry, shared with the dispatcher that routes to it.
        store: records loaded mods, so a restart loads them again.
        catalog: where a tenant's live bundle is, for a restart with fresh code.
        control: runs mods in this process.
        lookup: resolves a name as the dispatcher does.
        unload_timeout: how long an unload waits for a mod's running handlers.
        shared_topics: absolute topics every tenant's instances may subscribe to.
        tell: tells the network's feed of each load, unload and restart.
    """

    def __init__(
        self,
        mods: ModRegistry,
        store: Store,
        catalog: Catalog,
        control: LocalControl,
        lookup: Lookup,
        unload_timeout: float,
        shared_topics: frozenset[str] = frozenset(),
        tell: Publish | None = None,
    ) -> None:
        self._tell = tell or (lambda kind, tenant, message: None)
        self._mods = mods
        self._store = store
        self._catalog = catalog
        self._control = control
        self._lookup = lookup
        self.unload_timeout = unload_timeout
        self._shared_topics = shared_topics
        self.roots = ModRoots([])
        self.lock = asyncio.Lock()

    # -- mods loaded at runtime ----------------------------------------------------------

    async def load(
        self,
        mod_path: str,
        config: dict[str, Any],
        mod_id: str | None,
        tenant: str | None,
        *,
        persist: bool,
    ) -> LoadedMod:
        """Load one mod (see ``Network.load_mod``); record it when ``persist``."""
        if tenant is not None:
            check_name("tenant", tenant, TENANT_NAME_RULE)
        resolved = self.roots.resolve(mod_path)
        chosen_id = mod_id or resolved.default_id
        check_name("mod id", chosen_id, MOD_ID_RULE)
        try:
            json.dumps(config)
        except (TypeError, ValueError) as exc:
            raise ModLoadError(mod_path, "config", f"config is not JSON: {exc}") from None
        async with self.lock:
            key = mod_key(chosen_id, tenant)
            holder = self._mods.get(key)
            if holder is not None:
                raise ModAlreadyLoadedError(key, holder.mod_path)
            loaded = await self._control.start(resolved, chosen_id, config, tenant)
            try:
                self.check_topics(loaded)
            except ModLoadError:
                await stop_mod(loaded, self.unload_timeout)
                raise
            if persist:
                # Recorded once it runs: a mod whose load crashes the process is not
                # loaded again at every start.
                stored = StoredMod(key, chosen_id, mod_path, tenant, config, loaded.loaded_at)
                try:
                    await asyncio.to_thread(self._store.save_mod, stored)
                except Exception as exc:
                    await stop_mod(loaded, self.unload_timeout)
                    raise ModLoadError(mod_path, "record", str(exc), exc) from exc
            self._mods.register(loaded)
        self._tell("mod_loaded", tenant, f"mod {key} loaded from {mod_path}")
        return loaded

    async def unload(
        self, mod_path_or_id: str, *, tenant: str | None, confine_to: str | None
    ) -> ModUnloadReport:
        """Unload one mod or instance (see ``Network.unload_mod``)."""
        async with self.lock:
            found = [
                mod
                for mod in self._mods.find(mod_path_or_id, tenant or confine_to)
                if confine_to is None or mod.tenant == confine_to
            ]
            if len(found) != 1:
                reason = "is not loaded" if not found else "matches several mods: name it by key"
                raise ModNotLoadedError(
                    mod_path_or_id, self._mods.status(confine_to)["loaded"], reason
                )
            mod = found[0]
            self._mods.unregister(mod.key)
            # The record goes (fsynced) while the mod stops.
            forgotten = asyncio.ensure_future(asyncio.to_thread(self._store.delete_mod, mod.key))
            try:
                report = await stop_mod(mod, self.unload_timeout)
                self._mods.record_unload(report)
            finally:
                await forgotten
        # Not the report's text: what a global mod's shutdown raised is the admin's to read.
        self._tell("mod_unloaded", mod.tenant, f"mod {mod.key} unloaded")
        return report

    async def load_recorded(
        self, wanted: list[tuple[str, dict[str, Any], str | None, str | None]]
    ) -> None:
        """At start: the recorded mods, then ``wanted`` (from the config) not loaded yet.

        A mod that fails shows in health as failed; the others load.
        """
        recorded = await asyncio.to_thread(self._store.mods)
        todo: list[tuple[str, dict[str, Any], str | None, str | None, bool]] = [
            (m.mod_path, m.config, m.mod_id, m.tenant, False) for m in recorded
        ]
        todo += [(path, config, mod_id, tenant, True) for path, config, mod_id, tenant in wanted]
        for mod_path, config, mod_id, tenant, from_config in todo:
            if from_config and self._mods.find(mod_id or mod_path, tenant):
                continue
            try:
                await self.load(mod_path, dict(config), mod_id, tenant, persist=from_config)
            except PlughostError as exc:
                failed_id = mod_id or mod_path.rsplit(".", 1)[-1].split(":")[0]
                self._mods.record_failure(FailedMod(failed_id, mod_path, tenant, str(exc)))

    async def stop_all(self) -> None:
        """Shut every mod down, newest first; they stay recorded for the next start."""
        async with self.lock:
            for mod in reversed(self._mods.loaded()):
                self._mods.unregister(mod.key)
                await stop_mod(mod, self.unload_timeout)

    def get(self, key: str) -> Mod:
        """The instance of a loaded mod.

        Raises:
            ModNotLoadedError: no such mod.
        """
        mod = self._mods.get(key)
        if mod is None:
            raise ModNotLoadedError(key, self._mods.list_loaded())
        return mod.instance

    # -- instances a bundle declares -----------------------------------------------------

    def check_free(self, tenant: str, names: list[str]) -> None:
        """Refuse a deploy whose instance names are taken by mods loaded by hand.

        Raises:
            ModAlreadyLoadedError: naming the first such mod.
        """
        for name in names:
            holder = self._mods.get(mod_key(name, tenant))
            if holder is not None and not holder.from_bundle:
                raise ModAlreadyLoadedError(mod_key(name, tenant), holder.mod_path)

    async def swap(self, tenant: str, instances: list[LoadedMod]) -> None:
        """Make ``instances`` the tenant's bundle instances; drain and stop those replaced."""
        async with self.lock:
            replaced = [m for m in self._mods.loaded() if m.tenant == tenant and m.from_bundle]
            for mod in replaced:
                self._mods.unregister(mod.key)
            for mod in instances:
                self._mods.register(mod)
        for mod in replaced:
            await stop_mod(mod, self.unload_timeout)

    async def record(self, instances: list[LoadedMod], failures: list[FailedMod]) -> None:
        """At start: register the instances a placement brought back, and its failures."""
        for mod in instances:
            try:
                self.check_topics(mod)
            except ModLoadError as exc:
                await stop_mod(mod, self.unload_timeout)
                self._mods.record_failure(FailedMod(mod.mod_id, mod.mod_path, mod.tenant, str(exc)))
            else:
                self._mods.register(mod)
        for failed in failures:
            self._mods.record_failure(failed)

    def check_topics(self, mod: LoadedMod) -> None:
        """Refuse an instance that subscribes to a topic its tenant may not reach.

        An exposed topic is the instance's to publish, not to read: ``/status`` is
        everyone's who exposes ``status``, so a tenant reads only its own tenant's
        topics and the shared ones.

        Raises:
            ModLoadError: at the step ``subscribe``, naming the topics.
        """
        refused = sorted(
            topic
            for topic in mod.topics
            if not topic_allowed(topic, mod.tenant, (), self._shared_topics)
        )
        if refused:
            allowed = ", ".join([f"/{mod.tenant}/...", *sorted(self._shared_topics)])
            raise ModLoadError(
                mod.mod_path,
                "subscribe",
                f"{', '.join(refused)}: outside what a mod of tenant {mod.tenant!r} may "
                f"subscribe to ({allowed})",
            )

    async def drop_tenant(self, tenant: str) -> None:
        """Unload every mod and instance of a removed tenant, and forget them."""
        async with self.lock:
            gone = [mod for mod in self._mods.loaded() if mod.tenant == tenant]
            for mod in gone:
                self._mods.unregister(mod.key)
                await asyncio.to_thread(self._store.delete_mod, mod.key)
        for mod in gone:
            await stop_mod(mod, self.unload_timeout)

    def listing(self) -> list[dict[str, Any]]:
        """Every running mod instance: RPC name, tenant, name, class, where its code is from."""
        return [
            {
                "rpc_name": mod.key,
                "tenant": mod.tenant,
                "name": mod.mod_id,
                "mod_path": mod.mod_path,
                "class": mod.class_name,
                "origin": "bundle" if mod.from_bundle else "loaded",
                "placement": mod.control.placement,
                "config": mod.config,
            }
            for mod in self._mods.loaded()
        ]

    def confined(self, rpc_name: str, confine_to: str | None) -> LoadedMod:
        """The instance ``rpc_name`` names, which must be ``confine_to``'s when given.

        Raises:
            ModNotLoadedError, AmbiguousNameError: no such instance, or several.
            OutsideTenantError: it is another tenant's.
        """
        mod = self._lookup(rpc_name, confine_to)
        if confine_to is not None and mod.tenant != confine_to:
            raise OutsideTenantError(confine_to, rpc_name)
        return mod

    async def restart(self, rpc_name: str, *, reload: bool, confine_to: str | None) -> Mod:
        """Replace one instance with a fresh load of its code (see ``Network.restart``)."""
        async with self.lock:
            old = self.confined(rpc_name, confine_to)
            source = old.source
            assert source is not None
            if old.from_bundle and reload and old.tenant is not None:
                location = await asyncio.to_thread(self._catalog.locate_live, old.tenant)
                source = replace(source, source=location.folder)
            elif reload and not old.from_bundle:
                source = self.roots.resolve(old.mod_path)
            new = await old.control.restart(old, source)
            try:
                self.check_topics(new)
            except ModLoadError:
                await stop_mod(new, self.unload_timeout)
                raise
            self._mods.register(new)
        await stop_mod(old, self.unload_timeout)
        self._tell("instance_restarted", new.tenant, f"instance {rpc_name} restarted")
        return new.instance


def check_name(kind: str, name: str, rule: str) -> None:
    """Refuse a tenant name or mod id that breaks the name rule.

    Raises:
        InvalidNameError: naming what, the name and the rule.
    """
    try:
        check_tenant_name(name)
    except ValueError:
        raise InvalidNameError(kind, name, rule) from None
