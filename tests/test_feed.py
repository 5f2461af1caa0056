"""The network's feed (what just happened, as each caller may see it) and each tenant's recent
call series, through the public ``Network`` API."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

import pytest

from plughost import Network, UnknownTenantError
from plughost.feed import Entry

from .conftest import agent_bundle


async def next_entries(follower: AsyncGenerator[Entry, None], count: int) -> list[Entry]:
    return [await asyncio.wait_for(anext(follower), 10) for _ in range(count)]


async def test_each_caller_sees_its_own_tenant_and_the_global_mods(network: Network) -> None:
    await network.deploy("alice", agent_bundle("a"))
    await network.deploy("bob", agent_bundle("b"))
    await network.deploy("alice", agent_bundle("a2"))
    await network.load_mod("plughost.mods.shared_cache")
    await network.create_snapshot("bob", "jan")
    network.feed.publish_for_admin("refused", None, "GET /api/tenants: 401 unauthorized")

    every = [(e.kind, e.tenant) for e in network.feed.recent(None)]
    assert every == [
        ("deploy", "alice"),
        ("deploy", "bob"),
        ("deploy", "alice"),
        ("mod_loaded", None),
        ("snapshot", "bob"),
        ("refused", None),
    ]
    alice = network.feed.recent("alice")
    assert [(e.kind, e.tenant) for e in alice] == [
        ("deploy", "alice"),
        ("deploy", "alice"),
        ("mod_loaded", None),
    ]
    assert "swapped in for v1" in alice[1].message
    assert all("bob" not in e.message for e in alice)
    # A follower replays what it missed, then gets what comes, as it may see it.
    follower = network.feed.follow("bob", after=alice[0].id)
    replayed = await next_entries(follower, 3)
    assert [(e.kind, e.tenant) for e in replayed] == [
        ("deploy", "bob"),
        ("mod_loaded", None),
        ("snapshot", "bob"),
    ]
    await network.deploy("alice", agent_bundle("a3"))  # not bob's to see
    await network.unload_mod("shared_cache")
    (unloaded,) = await next_entries(follower, 1)
    assert (unloaded.kind, unloaded.tenant) == ("mod_unloaded", None)
    await follower.aclose()


async def test_a_workers_crash_and_restart_reach_the_feed(network: Network) -> None:
    crash = (
        "import os\nfrom agents.basic_agent import BasicAgent\n"
        "class Crash(BasicAgent):\n    name = 'Crash'\n"
        "    def perform(self, **kwargs):\n        os._exit(3)\n"
    )
    await network.deploy(
        "crashy", {"agents": [{"filename": "crash_agent.py", "source": crash}]}, placement="process"
    )
    follower = network.feed.follow("crashy", after=network.feed.recent(None)[-1].id)
    with pytest.raises(Exception, match="worker"):
        await network.call_agent("crashy", "Crash", {})
    crashed, restarted = await next_entries(follower, 2)
    assert crashed.kind == "worker_restarting" and "ready -> restarting" in crashed.message
    assert "code 3" in crashed.message
    assert restarted.kind == "worker_ready" and "restarting -> ready" in restarted.message
    await follower.aclose()


async def test_a_tenants_call_series_counts_its_calls_errors_and_latency(
    network: Network,
) -> None:
    await network.deploy("alice", agent_bundle("a"))
    await network.deploy("bob", agent_bundle("b"))
    for _ in range(30):
        await network.call_agent("alice", "Notifier", {"message": "m"})
    for _ in range(3):
        with pytest.raises(Exception):  # noqa: B017 (the arguments break the schema)
            await network.call_agent("alice", "Notifier", {"message": 1})
    with pytest.raises(UnknownTenantError):
        await network.call_agent("nobody", "Notifier", {})
    series = network.call_series("alice", window=60, step=5)
    assert len(series["at"]) == 12
    assert sum(series["calls_per_s"]) * 5 == 33
    assert sum(series["errors_per_s"]) * 5 == 3
    p50 = [value for value in series["p50_ms"] if value is not None]
    p99 = [value for value in series["p99_ms"] if value is not None]
    assert p50 and p99 and all(0 < a <= b < 1000 for a, b in zip(p50, p99, strict=True))
    assert sum(network.call_series("bob", 60, 5)["calls_per_s"]) == 0
    with pytest.raises(UnknownTenantError):
        network.call_series("nobody")
    await network.remove_tenant("alice")
    await network.deploy("alice", agent_bundle("again"))
    assert sum(network.call_series("alice", 60, 5)["calls_per_s"]) == 0


async def test_namespaces_are_listed_least_recently_used_first(network: Network) -> None:
    for tenant in ("alice", "bob"):
        await network.deploy(tenant, agent_bundle(tenant))
        await network.call_agent(tenant, "Notifier", {"message": "m"})
    await network.call_agent("alice", "Notifier", {"message": "m"})
    listed = network.namespaces()
    assert [each["tenant"] for each in listed] == ["bob", "alice"]
    assert all(each["state"] == "live" and each["in_flight"] == 0 for each in listed)
    assert all(each["memory_bytes"] > 0 for each in listed)
    assert [each["tenant"] for each in network.namespaces("alice")] == ["alice"]


async def test_a_removed_tenant_and_a_replaced_token_take_their_entries_and_followers(
    network: Network,
) -> None:
    await network.deploy("alice", agent_bundle("a"))
    await network.create_snapshot("alice", "jan")
    follower = network.feed.follow("alice")
    assert len(await next_entries(follower, 2)) == 2
    await network.issue_tenant_token("alice", replace=True)
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(anext(follower), 10)  # the old token's stream ends
    assert network.feed.recent("alice") == []
    await network.remove_tenant("alice")
    await network.deploy("alice", agent_bundle("new owner"))
    assert [e.kind for e in network.feed.recent("alice")] == ["deploy"]
    removal = [e for e in network.feed.recent(None) if e.kind == "removal"]
    assert [e.message for e in removal] == ["tenant alice removed"]


async def test_a_flood_of_refusals_pushes_out_no_other_entry(network: Network) -> None:
    await network.deploy("alice", agent_bundle("a"))
    for _ in range(5000):
        network.feed.publish_for_admin("refused", None, "GET /api/tenants: 401 unauthorized")
    assert [e.kind for e in network.feed.recent("alice")] == ["deploy"]
    kinds = [e.kind for e in network.feed.recent(None)]
    assert kinds[0] == "deploy" and kinds.count("refused") == 200
