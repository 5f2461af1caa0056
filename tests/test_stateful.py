"""A stateful property test: random sequences of operations on a real Network, checked
against a model of what should exist after every step.

The CI budget is the default Hypothesis profile; ``pytest --hypothesis-profile soak``
runs a large one.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import tempfile
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
BOUND = 3

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

    # -- rules ---------------------------------------------------------------------

    @rule(tenant=TENANTS, marker=MARKERS)
    def deploy(self, tenant: str, marker: int) -> None:
        self.run(self.network.deploy(tenant, agent_bundle(f"m{marker}")))
        self.live[tenant] = marker

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

    @rule(tenant=TENANTS)
    def remove_tenant(self, tenant: str) -> None:
        if tenant not in self.live:
            self.expect(self.network.remove_tenant(tenant), UnknownTenantError)
            return
        self.run(self.network.remove_tenant(tenant))
        del self.live[tenant]
        self.snapshots = {k: v for k, v in self.snapshots.items() if k[0] != tenant}

    @rule(tenant=TENANTS)
    def call_live(self, tenant: str) -> None:
        call = self.network.call_agent(tenant, "Notifier", {"message": "x"})
        if tenant not in self.live:
            self.expect(call, UnknownTenantError)
        else:
            assert self.run(call) == f"m{self.live[tenant]}:x"

    @rule(tenant=TENANTS, name=SNAPSHOTS)
    def call_snapshot(self, tenant: str, name: str) -> None:
        call = self.network.call_agent(tenant, "Notifier", {"message": "s"}, snapshot=name)
        if tenant not in self.live:
            self.expect(call, UnknownTenantError)
        elif (tenant, name) not in self.snapshots:
            self.expect(call, UnknownSnapshotError)
        else:
            assert self.run(call) == f"m{self.snapshots[(tenant, name)]}:s"

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
