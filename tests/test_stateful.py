"""A stateful property test: random sequences of operations on a real Network, checked
against a model of what should exist after every step.

The model includes the loaded namespaces in least-recently-used order, so every
eviction the bound of ``BOUND`` causes is checked, not only the count.

The CI budget is the default Hypothesis profile; ``pytest --hypothesis-profile soak``
runs a large one.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import tempfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from plughost import (
    DuplicateSnapshotError,
    Event,
    ModAlreadyLoadedError,
    ModNotLoadedError,
    Namespace,
    Network,
    UnknownSnapshotError,
    UnknownTenantError,
)
from plughost.naming import ROOT_PACKAGE

from .conftest import agent_bundle

TENANTS = st.sampled_from(["a", "b", "c", "d"])
SNAPSHOTS = st.sampled_from(["jan", "feb"])
MODS = st.sampled_from(["m1", "m2"])
MARKERS = st.integers(min_value=0, max_value=5)
BOUND = 2

COUNTER_MOD = """
from plughost import Mod, on


class CounterMod(Mod):
    def initialize(self):
        self.count = 0

    @on("counter.*")
    async def count_event(self, event):
        self.count += 1
        return {"count": self.count, "mod": self.mod_id}
"""


class NetworkMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.folder = Path(tempfile.mkdtemp(prefix="plughost-stateful-"))
        self.loop = asyncio.new_event_loop()
        self.live: dict[str, int] = {}
        self.snapshots: dict[tuple[str, str], int] = {}
        self.mods: set[str] = set()
        # (tenant, snapshot name or None for the live code), least recently used first.
        self.lru: OrderedDict[tuple[str, str | None], None] = OrderedDict()
        self.network = self._open()
        (self.network.data_dir / "mods" / "counter.py").write_text(COUNTER_MOD)

    def _open(self) -> Network:
        network = Network(self.folder / "data", max_loaded_namespaces=BOUND, gc_interval=3600)
        self.run(network.start())
        return network

    def run(self, coroutine: Any) -> Any:
        return self.loop.run_until_complete(coroutine)

    def expect(self, coroutine: Any, error: type[Exception] | None) -> Any:
        if error is None:
            return self.run(coroutine)
        try:
            self.run(coroutine)
        except error:
            return None
        raise AssertionError(f"expected {error.__name__}")

    def _used(self, key: tuple[str, str | None]) -> None:
        """A call ran in ``key``: loaded if needed, then most recently used."""
        if key in self.lru:
            self.lru.move_to_end(key)
            return
        self.lru[key] = None
        self._evict(keep=key)

    def _evict(self, keep: tuple[str, str | None] | None = None) -> None:
        for key in [k for k in self.lru if k != keep][: max(0, len(self.lru) - BOUND)]:
            del self.lru[key]

    def _forget(self, tenant: str, snapshot: str | None = None, *, all_of_it: bool = False) -> None:
        for key in [k for k in self.lru if k[0] == tenant and (all_of_it or k[1] == snapshot)]:
            del self.lru[key]

    def _call_live(self, tenant: str) -> None:
        assert self.run(self.network.call_agent(tenant, "Notifier", {"message": "x"})) == (
            f"m{self.live[tenant]}:x"
        )
        self._used((tenant, None))

    def _call_snapshot(self, tenant: str, name: str) -> None:
        call = self.network.call_agent(tenant, "Notifier", {"message": "s"}, snapshot=name)
        assert self.run(call) == f"m{self.snapshots[(tenant, name)]}:s"
        self._used((tenant, name))

    # -- rules ---------------------------------------------------------------------

    @rule(tenant=TENANTS, marker=MARKERS)
    def deploy(self, tenant: str, marker: int) -> None:
        self.run(self.network.deploy(tenant, agent_bundle(f"m{marker}")))
        if self.live.get(tenant) == marker:
            return  # the same content: nothing is loaded or replaced
        self.live[tenant] = marker
        # The new version is loaded and counted before the old one is retired.
        self.lru[(tenant, "<new>")] = None
        self._evict()
        self._forget(tenant)
        del self.lru[(tenant, "<new>")]
        self.lru[(tenant, None)] = None

    @rule(tenant=TENANTS, name=SNAPSHOTS)
    def create_snapshot(self, tenant: str, name: str) -> None:
        if tenant not in self.live:
            self.expect(self.network.create_snapshot(tenant, name), UnknownTenantError)
        elif (tenant, name) in self.snapshots:
            self.expect(self.network.create_snapshot(tenant, name), DuplicateSnapshotError)
        else:
            self.run(self.network.create_snapshot(tenant, name))
            self.snapshots[(tenant, name)] = self.live[tenant]

    @rule(tenant=TENANTS, name=SNAPSHOTS)
    def delete_snapshot(self, tenant: str, name: str) -> None:
        if tenant not in self.live:
            self.expect(self.network.delete_snapshot(tenant, name), UnknownTenantError)
        elif (tenant, name) not in self.snapshots:
            self.expect(self.network.delete_snapshot(tenant, name), UnknownSnapshotError)
        else:
            self.run(self.network.delete_snapshot(tenant, name))
            del self.snapshots[(tenant, name)]
            self._forget(tenant, name)

    @rule(tenant=TENANTS)
    def remove_tenant(self, tenant: str) -> None:
        if tenant not in self.live:
            self.expect(self.network.remove_tenant(tenant), UnknownTenantError)
            return
        self.run(self.network.remove_tenant(tenant))
        del self.live[tenant]
        self.snapshots = {k: v for k, v in self.snapshots.items() if k[0] != tenant}
        self._forget(tenant, all_of_it=True)

    @rule(tenant=TENANTS)
    def call_live(self, tenant: str) -> None:
        if tenant not in self.live:
            call = self.network.call_agent(tenant, "Notifier", {"message": "x"})
            self.expect(call, UnknownTenantError)
        else:
            self._call_live(tenant)

    @rule(tenant=TENANTS, name=SNAPSHOTS)
    def call_snapshot(self, tenant: str, name: str) -> None:
        if (tenant, name) in self.snapshots:
            self._call_snapshot(tenant, name)
            return
        call = self.network.call_agent(tenant, "Notifier", {"message": "s"}, snapshot=name)
        self.expect(call, UnknownTenantError if tenant not in self.live else UnknownSnapshotError)

    @precondition(lambda self: len(self.live) + len(self.snapshots) > BOUND)
    @rule(data=st.data())
    def evict(self, data: st.DataObject) -> None:
        """Call more namespaces than the bound holds: the least recently used go."""
        targets = [(t, None) for t in self.live] + list(self.snapshots)
        order = data.draw(st.permutations(targets))
        for tenant, name in order:
            if name is None:
                self._call_live(tenant)
            else:
                self._call_snapshot(tenant, name)
        assert list(self.lru) == order[-BOUND:]

    @rule(mod=MODS)
    def load_mod(self, mod: str) -> None:
        load = self.network.load_mod("counter", mod_id=mod)
        if mod in self.mods:
            self.expect(load, ModAlreadyLoadedError)
        else:
            self.run(load)
            self.mods.add(mod)

    @rule(mod=MODS)
    def unload_mod(self, mod: str) -> None:
        unload = self.network.unload_mod(mod)
        if mod not in self.mods:
            self.expect(unload, ModNotLoadedError)
        else:
            # The garbage-collection check is test_mods' job: Hypothesis keeps
            # references of its own between steps. sys.modules is checked below.
            self.run(unload)
            self.mods.discard(mod)

    @rule(mod=MODS)
    def send_event(self, mod: str) -> None:
        event = Event(event_name="counter.tick", destination_id=f"mod:{mod}")
        response = self.run(self.network.send_event(event))
        assert response.success == (mod in self.mods), response

    @precondition(lambda self: bool(self.live))
    @rule()
    def restart_network(self) -> None:
        self.run(self.network.stop())
        self.network = self._open()
        self.lru.clear()
        assert self.network.loaded_namespaces() == []

    # -- what must hold after every step ---------------------------------------------

    @invariant()
    def store_registry_and_health_agree(self) -> None:
        assert self.network.list_tenants() == sorted(self.live)
        for tenant in self.live:
            names = {s.name for s in self.network.list_snapshots(tenant)}
            assert names == {n for t, n in self.snapshots if t == tenant}
        health = self.network.health()
        assert sorted(health["mods"]["loaded"]) == sorted(self.mods)
        assert sorted(self.network.get_loaded_mods()) == sorted(self.mods)
        assert health["tenants"]["count"] == len(self.live)
        assert health["status"] == "healthy"

    @invariant()
    def the_loaded_namespaces_follow_the_lru_model(self) -> None:
        loaded = []
        for namespace in self.network.loaded_namespaces():
            if namespace.snapshot is None:
                assert namespace.version == str(
                    self.network.get_deployment(namespace.tenant).version
                )
            loaded.append((namespace.tenant, namespace.snapshot))
        assert loaded == list(self.lru)

    @invariant()
    def sys_modules_holds_exactly_the_loaded_namespaces(self) -> None:
        loaded = self.network.loaded_namespaces()
        assert len(loaded) <= BOUND
        packages = {
            Namespace.parse_package_name(".".join(key.split(".")[:2]))
            for key in sys.modules
            if key.startswith(ROOT_PACKAGE + ".")
        }
        mod_namespaces = {ns for ns in packages if "mod" in ns.dimensions}
        assert packages - mod_namespaces == set(loaded)
        assert sorted(ns.dimensions["mod"] for ns in mod_namespaces) == sorted(self.mods)

    @invariant()
    def the_data_folder_is_consistent(self) -> None:
        assert self.run(self.network.check()) == []

    def teardown(self) -> None:
        self.run(self.network.stop())
        self.loop.close()
        shutil.rmtree(self.folder, ignore_errors=True)


TestNetworkStateMachine = NetworkMachine.TestCase
