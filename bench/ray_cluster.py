"""What the ``ray`` placement costs, on a Ray cluster of two nodes made on this machine.

Baselines, measured in the same run and interleaved: the ``process`` placement (the
same worker, on a socket pair to the host) and a bare Ray actor whose method answers
at once, called from the same event loop. The goals: a call through a ray tenant
costs at most 2x a bare actor call (it is that round trip plus the worker's socket),
and a ray tenant starts in at most 3x a process tenant's time (a Ray worker process
is started for its actor). Then 100 ray tenants on the two nodes: how they spread,
the memory each node gives them, and calls per second across all of them.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import statistics
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from plughost import Network
from plughost.manifest import Placement

from .report import Outcome
from .sandbox import BUNDLE, _memory_kib

STARTS = 5  # deploys of each placement, interleaved
CALLS = 300  # calls of each, interleaved, after a warm-up
TENANTS = 100
CLIENTS = 16  # concurrent callers in the calls-per-second run
SECONDS = 5.0
CALL_GOAL = 2.0
START_GOAL = 3.0
OBJECT_STORE = 100 << 20


class _Echo:
    async def echo(self, message: str) -> str:
        return message


@contextlib.contextmanager
def ray_cluster() -> Iterator[None]:
    """A Ray cluster of two nodes of 1 CPU each on this machine, this process connected."""
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 1, "object_store_memory": OBJECT_STORE},
        connect=False,
    )
    try:
        cluster.add_node(num_cpus=1, object_store_memory=OBJECT_STORE)
        ray.init(address=cluster.address, log_to_driver=False)
        cluster.wait_for_nodes()
        yield
    finally:
        ray.shutdown()
        cluster.shutdown()


def _parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


async def _costs(data: Path) -> dict[str, list[float]]:
    import ray

    found: dict[str, list[float]] = collections.defaultdict(list)
    echo = ray.remote(_Echo)
    async with Network(data) as network:
        for round_ in range(STARTS):
            for placement in ("process", "ray"):
                started = time.perf_counter()
                await network.deploy(f"{placement}-{round_}", BUNDLE, placement=placement)
                found[f"{placement} start"].append(time.perf_counter() - started)
            started = time.perf_counter()
            actor = echo.options(scheduling_strategy="SPREAD").remote()  # type: ignore[attr-defined]
            await actor.echo.remote("m")
            found["bare actor start"].append(time.perf_counter() - started)
            ray.kill(actor)
        bare = echo.remote()  # type: ignore[attr-defined]
        calls: dict[str, Any] = {
            "process call": lambda: network.call_agent("process-0", "AsyncEcho", {"message": "m"}),
            "ray call": lambda: network.call_agent("ray-0", "AsyncEcho", {"message": "m"}),
            "bare actor call": lambda: bare.echo.remote("m"),
        }
        for call in calls.values():
            for _ in range(50):
                await call()
        for _ in range(CALLS):
            for name, call in calls.items():
                started = time.perf_counter()
                await call()
                found[name].append(time.perf_counter() - started)
        ray.kill(bare)
    return found


def ray_costs() -> Outcome:
    with ray_cluster(), tempfile.TemporaryDirectory(prefix="plughost-bench-") as tmp:
        found = asyncio.run(_costs(Path(tmp) / "data"))
    median = {name: statistics.median(samples) for name, samples in found.items()}
    call_ratio = median["ray call"] / median["bare actor call"]
    start_ratio = median["ray start"] / median["process start"]
    figures = [
        (name, f"median {value * 1000:.2f} ms (n={len(found[name])})")
        for name, value in median.items()
    ]
    figures.append(
        ("ray call / process call", f"{median['ray call'] / median['process call']:.1f}x")
    )
    return Outcome(
        name="ray_costs",
        title="a ray tenant against a process tenant and a bare Ray actor",
        figures=figures,
        verdict=(
            f"call {median['ray call'] * 1000:.2f} ms = {call_ratio:.2f}x a bare actor call "
            f"({median['bare actor call'] * 1000:.2f} ms); start "
            f"{median['ray start'] * 1000:.0f} ms = {start_ratio:.2f}x a process tenant's"
        ),
        goal=f"call at most {CALL_GOAL}x a bare actor call, start at most {START_GOAL}x",
        met=call_ratio <= CALL_GOAL and start_ratio <= START_GOAL,
        notes=[
            "2 nodes of 1 CPU each (ray.cluster_utils.Cluster) on this machine",
            f"{STARTS} deploys of each, {CALLS} calls of each, interleaved; async agents",
            "a start is the whole deploy: the bundle stored, shipped, the worker ready",
        ],
    )


async def _scale(data: Path) -> dict[str, Any]:
    found: dict[str, Any] = {}
    async with Network(data, worker_start_timeout=120) as network:
        started = time.perf_counter()
        tenants = [f"t{i:03d}" for i in range(TENANTS)]
        placement: Placement = "ray"
        for tenant in tenants:
            await network.deploy(tenant, BUNDLE, placement=placement)
        found["deploy"] = time.perf_counter() - started
        workers = network.health()["workers"]
        nodes = collections.Counter(workers[t]["node"] for t in tenants)
        memory: dict[str, int] = collections.defaultdict(int)
        for tenant in tenants:
            actor_process = _parent(workers[tenant]["pid"])
            memory[workers[tenant]["node"]] += _memory_kib(actor_process)
        found["nodes"] = nodes
        found["memory"] = memory
        done = 0
        stop = time.perf_counter() + SECONDS

        async def client(offset: int) -> None:
            nonlocal done
            turn = offset
            while time.perf_counter() < stop:
                await network.call_agent(tenants[turn % TENANTS], "AsyncEcho", {"message": "m"})
                turn += CLIENTS
                done += 1

        started = time.perf_counter()
        await asyncio.gather(*(client(i) for i in range(CLIENTS)))
        found["calls_per_second"] = done / (time.perf_counter() - started)
    return found


def ray_scale() -> Outcome:
    with ray_cluster(), tempfile.TemporaryDirectory(prefix="plughost-bench-") as tmp:
        found = asyncio.run(_scale(Path(tmp) / "data"))
    nodes: collections.Counter[str] = found["nodes"]
    memory: dict[str, int] = found["memory"]
    figures = [
        (
            f"node {node[:8]}",
            f"{count} tenants, {memory[node] / 1024:.0f} MiB PSS in all, "
            f"{memory[node] / 1024 / count:.1f} MiB each (actor and worker)",
        )
        for node, count in sorted(nodes.items())
    ]
    figures.append(("deploys", f"{found['deploy']:.1f} s for {TENANTS}, one after another"))
    figures.append(("calls", f"{found['calls_per_second']:.0f} calls/s, {CLIENTS} callers"))
    each = sum(memory.values()) / 1024 / TENANTS
    return Outcome(
        name="ray_scale",
        title=f"{TENANTS} ray tenants on a cluster of 2 nodes",
        figures=figures,
        verdict=(
            f"{len(nodes)} nodes used ({', '.join(str(c) for c in sorted(nodes.values()))}); "
            f"{each:.1f} MiB a tenant; {found['calls_per_second']:.0f} calls/s"
        ),
        goal="tenants on every node",
        met=len(nodes) == 2,
        notes=[f"{CLIENTS} callers, each calling the tenants in turn for {SECONDS:.0f} s"],
    )


BENCHMARKS = (ray_costs, ray_scale)
