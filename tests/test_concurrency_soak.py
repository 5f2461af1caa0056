"""Sixteen tasks doing random operations on one Network at once, then the consistency checks.

Every operation either succeeds or raises one of the documented error types;
afterwards the store, the registry, health and sys.modules agree.

``PLUGHOST_SOAK_OPERATIONS`` (operations per task, 60 by default) and
``PLUGHOST_SOAK_SEED`` (0 by default) size and vary a longer run.
"""

from __future__ import annotations

import asyncio
import os
import random
import sys
from pathlib import Path

from plughost import (
    AgentError,
    DuplicateSnapshotError,
    Event,
    ModAlreadyLoadedError,
    ModNotLoadedError,
    Network,
    UnknownAgentError,
    UnknownSnapshotError,
    UnknownTenantError,
)
from plughost.naming import ROOT_PACKAGE

from .conftest import agent_bundle
from .test_stateful import COUNTER_MOD

DOCUMENTED = (
    AgentError,
    DuplicateSnapshotError,
    ModAlreadyLoadedError,
    ModNotLoadedError,
    UnknownAgentError,
    UnknownSnapshotError,
    UnknownTenantError,
)
TASKS = 16
OPERATIONS_PER_TASK = int(os.environ.get("PLUGHOST_SOAK_OPERATIONS", "60"))
SEED = int(os.environ.get("PLUGHOST_SOAK_SEED", "0"))


async def _operate(network: Network, rng: random.Random, counts: dict[str, int]) -> None:
    for _ in range(OPERATIONS_PER_TASK):
        tenant = rng.choice(["a", "b", "c", "d", "e"])
        snapshot = rng.choice(["jan", "feb"])
        mod = rng.choice(["m1", "m2", "m3"])
        operation = rng.choice(
            [
                "deploy",
                "deploy",
                "call",
                "call",
                "call",
                "snapshot",
                "call_snapshot",
                "delete_snapshot",
                "remove",
                "load_mod",
                "unload_mod",
                "event",
            ]
        )
        try:
            if operation == "deploy":
                await network.deploy(tenant, agent_bundle(f"{tenant}{rng.randint(0, 3)}"))
            elif operation == "call":
                answer = await network.call_agent(tenant, "Notifier", {"message": "x"})
                assert answer.startswith(tenant) and answer.endswith(":x"), answer
            elif operation == "snapshot":
                await network.create_snapshot(tenant, snapshot)
            elif operation == "call_snapshot":
                answer = await network.call_agent(
                    tenant, "Notifier", {"message": "s"}, snapshot=snapshot
                )
                assert answer.startswith(tenant), answer
            elif operation == "delete_snapshot":
                await network.delete_snapshot(tenant, snapshot)
            elif operation == "remove":
                await network.remove_tenant(tenant)
            elif operation == "load_mod":
                await network.load_mod("counter", mod_id=mod)
            elif operation == "unload_mod":
                await network.unload_mod(mod)
            else:
                response = await network.send_event(
                    Event(event_name="counter.tick", destination_id=f"mod:{mod}")
                )
                assert response.success or "is not loaded" in response.message, response
            counts[operation] = counts.get(operation, 0) + 1
        except DOCUMENTED:
            counts["documented errors"] = counts.get("documented errors", 0) + 1


async def test_sixteen_tasks_of_random_operations_leave_a_consistent_network(
    tmp_path: Path,
) -> None:
    data = tmp_path / "data"
    counts: dict[str, int] = {}
    async with Network(data, max_loaded_namespaces=4) as network:
        (network.data_dir / "mods" / "counter.py").write_text(COUNTER_MOD)
        await asyncio.gather(
            *(
                _operate(network, random.Random(SEED * TASKS + task), counts)
                for task in range(TASKS)
            )
        )
        assert sum(counts.values()) == TASKS * OPERATIONS_PER_TASK
        assert counts.get("call", 0) > 50 and counts.get("deploy", 0) > 50
        assert await network.check() == []
        health = network.health()
        assert health["status"] == "healthy"
        assert sorted(health["mods"]["loaded"]) == sorted(network.get_loaded_mods())
        assert len(network.loaded_namespaces()) <= 4
        tenants = network.list_tenants()
        for tenant in tenants:
            assert (await network.call_agent(tenant, "Notifier", {"message": "x"})).startswith(
                tenant
            )
        loaded_packages = {ns.package_name for ns in network.loaded_namespaces()}
        in_sys_modules = {
            ".".join(key.split(".")[:2])
            for key in sys.modules
            if key.startswith(ROOT_PACKAGE + ".") and "__mod__" not in key
        }
        assert in_sys_modules == loaded_packages
        mods = sorted(network.get_loaded_mods())
    async with Network(data) as reopened:
        assert reopened.list_tenants() == tenants
        assert sorted(reopened.get_loaded_mods()) == mods
        assert await reopened.check() == []
