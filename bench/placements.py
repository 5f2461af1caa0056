"""Hot swap in every placement: 50 redeploys under 32 callers, against the same callers steady.

Baseline, measured in the same run: the same 32 callers with no redeploys,
in the same placement. The goal is no failed call anywhere; the latency
ratios say what a redeploy costs the callers.
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics
import tempfile
import time
from pathlib import Path

from plughost import Network
from plughost.manifest import Placement

from .network import five_agent_bundle
from .ray_cluster import ray_cluster
from .report import Outcome

PLACEMENTS: tuple[Placement, ...] = ("inprocess", "process", "sandbox", "ray")
CALLERS = 32
REDEPLOYS = 50
STEADY_CALLS = 200  # per caller, for the baseline


async def _call_until(
    network: Network, done: asyncio.Event, calls: int | None
) -> tuple[list[float], int]:
    """Latencies (seconds) and failures of CALLERS callers, until ``done`` or ``calls`` each."""
    latencies: list[float] = []
    failures = 0

    async def caller(index: int) -> None:
        nonlocal failures
        agent = "Agent0" if index % 2 else "Agent1"  # async and sync agents
        made = 0
        while not done.is_set() and (calls is None or made < calls):
            start = time.perf_counter()
            try:
                await network.call_agent("swap", agent, {"message": "m"})
            except Exception:
                failures += 1
            latencies.append(time.perf_counter() - start)
            made += 1
            # As a client on a network would: without any wait, 32 callers keep the GIL
            # from the thread that writes a new version's files (see RESULTS.md).
            await asyncio.sleep(0.001)

    await asyncio.gather(*(caller(i) for i in range(CALLERS)))
    return latencies, failures


async def _one(
    data: Path, placement: Placement
) -> tuple[list[float], int, list[float], int, float]:
    async with Network(data) as network:
        await network.deploy("swap", five_agent_bundle(), placement=placement)
        steady, steady_failures = await _call_until(network, asyncio.Event(), STEADY_CALLS)
        done = asyncio.Event()
        calling = asyncio.create_task(_call_until(network, done, None))
        started = time.perf_counter()
        for n in range(REDEPLOYS):
            await network.deploy("swap", five_agent_bundle(f" #{n}"))
        elapsed = time.perf_counter() - started
        done.set()
        swapping, swap_failures = await calling
    return steady, steady_failures, swapping, swap_failures, elapsed


def _p(samples: list[float], q: int) -> float:
    return statistics.quantiles(samples, n=100)[q - 1] * 1000


def hot_swap_every_placement() -> Outcome:
    figures: list[tuple[str, str]] = []
    failed = 0
    ratios = []
    for placement in PLACEMENTS:
        # A ray tenant's worker runs on a cluster of two nodes made on this machine.
        cluster = ray_cluster() if placement == "ray" else contextlib.nullcontext()
        with cluster, tempfile.TemporaryDirectory(prefix="plughost-bench-") as tmp:
            steady, steady_failed, swapping, swap_failed, elapsed = asyncio.run(
                _one(Path(tmp) / "data", placement)
            )
        failed += steady_failed + swap_failed
        figures.append(
            (
                f"{placement}, steady",
                f"p50 {_p(steady, 50):.3f} ms, p99 {_p(steady, 99):.3f} ms, "
                f"{len(steady):,} calls, {steady_failed} failed",
            )
        )
        figures.append(
            (
                f"{placement}, {REDEPLOYS} redeploys",
                f"p50 {_p(swapping, 50):.3f} ms, p99 {_p(swapping, 99):.3f} ms, "
                f"{len(swapping):,} calls, {swap_failed} failed, "
                f"{elapsed / REDEPLOYS * 1000:.0f} ms a redeploy",
            )
        )
        ratios.append(
            f"{placement} p50 {_p(swapping, 50) / _p(steady, 50):.2f}x "
            f"p99 {_p(swapping, 99) / _p(steady, 99):.2f}x"
        )
    return Outcome(
        name="hot_swap_every_placement",
        title=f"{REDEPLOYS} redeploys under {CALLERS} callers, in each placement",
        figures=figures,
        verdict=f"latency while redeploying vs steady: {'; '.join(ratios)}; {failed} failed calls",
        goal="no failed call in any placement",
        met=failed == 0,
        notes=["half the callers call an async agent, half a sync one; 1 ms between calls"],
    )


BENCHMARKS = (hot_swap_every_placement,)
