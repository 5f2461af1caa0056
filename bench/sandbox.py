"""What the sandbox costs against a plain worker process: start time, call overhead, memory.

Baseline, measured in the same run and interleaved: the ``process`` placement,
the same worker without the sandbox. The goals: a sandbox starts in at most
1.5x a worker's time, and a call through it costs at most 1.2x.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from plughost import Network
from plughost.manifest import Placement

from .report import Outcome

PLACEMENTS: tuple[Placement, ...] = ("process", "sandbox")
STARTS = 10  # deploys of each, interleaved
CALLS = 1000  # calls of each agent, after a warm-up
START_GOAL = 1.5
CALL_GOAL = 1.2

BUNDLE = {
    "agents": [
        {
            "filename": "echo_agent.py",
            "source": (
                "from agents.basic_agent import BasicAgent\n\n"
                "class Echo(BasicAgent):\n"
                "    name = 'Echo'\n\n"
                "    def perform(self, **kwargs):\n"
                "        return kwargs.get('message', '')\n\n"
                "class AsyncEcho(BasicAgent):\n"
                "    name = 'AsyncEcho'\n\n"
                "    async def perform(self, **kwargs):\n"
                "        return kwargs.get('message', '')\n"
            ),
        }
    ]
}


def _memory_kib(pid: int) -> int:
    """The proportional set size of ``pid`` and its descendants (shared pages split)."""
    total = 0
    pending = [pid]
    while pending:
        current = pending.pop()
        try:
            rollup = Path(f"/proc/{current}/smaps_rollup").read_text()
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except OSError:
            continue
        total += next(
            int(line.split()[1]) for line in rollup.splitlines() if line.startswith("Pss:")
        )
        pending += [int(child) for child in children]
    return total


async def _measure(data: Path) -> dict[str, dict[str, list[float]]]:
    found: dict[str, dict[str, list[float]]] = {
        p: {"start": [], "sync": [], "async": [], "memory": []} for p in PLACEMENTS
    }
    async with Network(data) as network:
        for round_ in range(STARTS):
            for placement in PLACEMENTS:
                tenant = f"{placement}-{round_}"
                started = time.perf_counter()
                await network.deploy(tenant, BUNDLE, placement=placement)  # type: ignore[arg-type]
                found[placement]["start"].append(time.perf_counter() - started)
        for placement in PLACEMENTS:
            tenant = f"{placement}-0"
            pid = network.health()["workers"][tenant]["pid"]
            found[placement]["memory"].append(_memory_kib(pid))
            for agent in ("Echo", "AsyncEcho"):
                for _ in range(100):
                    await network.call_agent(tenant, agent, {"message": "m"})
        for _ in range(CALLS):
            for placement in PLACEMENTS:
                for agent, key in (("Echo", "sync"), ("AsyncEcho", "async")):
                    started = time.perf_counter()
                    await network.call_agent(f"{placement}-0", agent, {"message": "m"})
                    found[placement][key].append(time.perf_counter() - started)
    return found


def sandbox_costs() -> Outcome:
    with tempfile.TemporaryDirectory(prefix="plughost-bench-") as tmp:
        found = asyncio.run(_measure(Path(tmp) / "data"))
    median = {p: {k: statistics.median(v) for k, v in found[p].items()} for p in PLACEMENTS}
    process, sandbox = median["process"], median["sandbox"]
    figures = []
    for placement in PLACEMENTS:
        m = median[placement]
        figures.append(
            (
                placement,
                f"start {m['start'] * 1000:.0f} ms, sync call p50 {m['sync'] * 1e6:.0f} µs, "
                f"async call p50 {m['async'] * 1e6:.0f} µs, "
                f"idle memory {m['memory'] / 1024:.1f} MiB (PSS of the worker's processes)",
            )
        )
    start_ratio = sandbox["start"] / process["start"]
    call_ratio = max(sandbox["sync"] / process["sync"], sandbox["async"] / process["async"])
    return Outcome(
        name="sandbox_costs",
        title="the sandbox against a plain worker process",
        figures=figures,
        verdict=(
            f"start {start_ratio:.2f}x, call {call_ratio:.2f}x (the worse of sync and async), "
            f"memory {sandbox['memory'] / process['memory']:.2f}x"
        ),
        goal=f"start at most {START_GOAL}x, call at most {CALL_GOAL}x a worker process",
        met=start_ratio <= START_GOAL and call_ratio <= CALL_GOAL,
        notes=[
            f"{STARTS} deploys of each, interleaved; {CALLS} calls of each agent, interleaved",
            "a start is the whole deploy: the bundle stored, the worker started and ready",
        ],
    )


BENCHMARKS = (sandbox_costs,)
