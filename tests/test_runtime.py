"""The runtime on its own: single-flight loads, leases, the LRU bound, retirement, close."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from plughost import Namespace, NotStartedError
from plughost.agent import load_namespace
from plughost.agent_threads import AgentThreads
from plughost.deadlines import Deadlines
from plughost.placements.inprocess import InProcessUnit
from plughost.runtime import Runtime, Starter, Unit

from .conftest import WriteBundle, namespace_keys

AGENT = """
from plughost import Agent

class Echo(Agent):
    name = "Echo"

    def perform(self, **kwargs):
        return kwargs
"""


class Loads:
    """Loaders for real bundle folders that count their runs and can be held at a gate."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.runs: list[Namespace] = []
        self.entered = threading.Event()
        self.gate = threading.Event()
        self.gate.set()

    def of(self, namespace: Namespace) -> Starter:
        """A starter of ``namespace`` in this process, its load run in a thread."""

        def load() -> Unit:
            self.runs.append(namespace)
            self.entered.set()
            assert self.gate.wait(timeout=60)
            loaded = load_namespace(namespace, self.folder)
            return InProcessUnit(loaded, "digest", AgentThreads(1), Deadlines(), call_timeout=60)

        async def start() -> Unit:
            return await asyncio.to_thread(load)

        return start

    def hold(self) -> None:
        self.gate.clear()
        self.entered.clear()

    async def wait_entered(self) -> None:
        assert await asyncio.to_thread(self.entered.wait, 60)


@pytest.fixture
def loads(write_bundle: WriteBundle) -> Loads:
    return Loads(write_bundle({"echo_agent.py": AGENT}))


def _loaded_tenants() -> set[str]:
    """The tenants whose modules are in ``sys.modules`` now."""
    return {
        Namespace.parse_package_name(".".join(k.split(".")[:2])).tenant for k in namespace_keys()
    }


async def test_ten_concurrent_acquires_load_once(loads: Loads) -> None:
    runtime = Runtime()
    namespace = Namespace("cold")
    loads.hold()
    acquires = [
        asyncio.create_task(runtime.acquire(namespace, loads.of(namespace))) for _ in range(10)
    ]
    await loads.wait_entered()
    await asyncio.sleep(0)  # every acquire is waiting on the one load now
    loads.gate.set()
    entries = await asyncio.gather(*acquires)
    assert loads.runs == [namespace]
    assert all(entry is entries[0] for entry in entries)
    assert entries[0].in_flight == 10 and [a.name for a in entries[0].agents()] == ["Echo"]
    for entry in entries:
        runtime.release(entry)
    assert runtime.loaded() == [namespace]
    await runtime.close()
    assert runtime.loaded() == [] and namespace_keys() == set()


async def test_a_failed_load_reaches_every_waiter_and_leaves_nothing(
    write_bundle: WriteBundle,
) -> None:
    broken = Loads(write_bundle({"bad.py": "raise RuntimeError('nope')\n"}))
    runtime = Runtime()
    namespace = Namespace("broken")
    broken.hold()
    acquires = [
        asyncio.create_task(runtime.acquire(namespace, broken.of(namespace))) for _ in range(3)
    ]
    await broken.wait_entered()
    await asyncio.sleep(0)
    broken.gate.set()
    results = await asyncio.gather(*acquires, return_exceptions=True)
    assert all("nope" in str(result) for result in results)
    assert len(broken.runs) == 1 and runtime.loaded() == [] and namespace_keys() == set()
    await runtime.close()


async def test_eviction_takes_the_least_recently_used_idle_namespace_never_a_leased_one(
    loads: Loads,
) -> None:
    runtime = Runtime(max_loaded=2)
    a, b, c, d = (Namespace(name) for name in "abcd")
    leased = await runtime.acquire(a, loads.of(a))  # a stays leased throughout
    for namespace in (b, c):
        runtime.release(await runtime.acquire(namespace, loads.of(namespace)))
    # a is the least recently used, but leased: b goes instead.
    assert runtime.loaded() == [a, c]
    runtime.release(await runtime.acquire(d, loads.of(d)))
    assert runtime.loaded() == [a, d]
    assert _loaded_tenants() == {"a", "d"}
    runtime.release(leased)
    # Now idle, a is the one to go when the bound is passed again.
    runtime.release(await runtime.acquire(b, loads.of(b)))
    assert runtime.loaded() == [d, b]
    assert loads.runs == [a, b, c, d, b]
    await runtime.close()


async def test_over_the_bound_while_every_namespace_is_leased_evicts_once_one_is_free(
    loads: Loads,
) -> None:
    runtime = Runtime(max_loaded=1)
    a, b = Namespace("a"), Namespace("b")
    first = await runtime.acquire(a, loads.of(a))
    second = await runtime.acquire(b, loads.of(b))
    assert runtime.loaded() == [a, b]  # over the bound: nothing idle to evict
    held = runtime.hold()
    assert {entry.namespace for entry in held} == {a, b}
    runtime.release(first)
    runtime.release(second)
    assert runtime.loaded() == [a, b]  # still held
    for entry in held:
        runtime.release(entry)
    assert len(runtime.loaded()) == 1
    await runtime.close()


async def test_a_retired_namespace_unloads_after_its_last_release(loads: Loads) -> None:
    runtime = Runtime()
    old = Namespace("t", version=1)
    first = await runtime.acquire(old, loads.of(old))
    second = await runtime.acquire(old, loads.of(old))
    runtime.retire(old)
    assert runtime.loaded() == [old] and not first.unloaded.is_set()
    runtime.release(first)
    assert runtime.loaded() == [old] and namespace_keys() != set()
    runtime.release(second)
    assert runtime.loaded() == [] and first.unloaded.is_set()
    assert namespace_keys() == set()
    # An idle namespace retires at once, and the same key loads afresh afterwards.
    runtime.release(await runtime.acquire(old, loads.of(old)))
    runtime.retire(old)
    assert runtime.loaded() == [] and namespace_keys() == set()
    assert loads.runs == [old, old]
    await runtime.close()


async def test_a_namespace_retired_while_it_loads_serves_its_waiters_then_unloads(
    loads: Loads,
) -> None:
    runtime = Runtime()
    namespace = Namespace("t", version=1)
    loads.hold()
    waiting = [
        asyncio.create_task(runtime.acquire(namespace, loads.of(namespace))) for _ in range(2)
    ]
    await loads.wait_entered()
    runtime.retire(namespace)
    loads.gate.set()
    entries = await asyncio.gather(*waiting)
    assert entries[0] is entries[1] and entries[0].retired
    assert runtime.loaded() == [namespace]
    runtime.release(entries[0])
    runtime.release(entries[1])
    assert runtime.loaded() == [] and namespace_keys() == set()
    await runtime.close()


async def test_add_registers_a_namespace_loaded_elsewhere(loads: Loads) -> None:
    runtime = Runtime()
    namespace = Namespace("deployed", version=1)
    loaded = await asyncio.to_thread(load_namespace, namespace, loads.folder)
    entry = InProcessUnit(loaded, "digest", AgentThreads(1), Deadlines(), call_timeout=60)
    runtime.add(entry)
    assert runtime.loaded() == [namespace]
    assert await runtime.acquire(namespace, loads.of(namespace)) is entry
    assert loads.runs == []
    runtime.release(entry)
    await runtime.close()


async def test_close_unloads_everything_and_refuses_later_loads(loads: Loads) -> None:
    runtime = Runtime()
    a, b = Namespace("a"), Namespace("b")
    runtime.release(await runtime.acquire(a, loads.of(a)))
    await runtime.acquire(b, loads.of(b))  # a lease still open: close unloads it anyway
    await runtime.close()
    assert runtime.loaded() == [] and namespace_keys() == set()
    with pytest.raises(NotStartedError):
        await runtime.acquire(a, loads.of(a))
    assert namespace_keys() == set()
