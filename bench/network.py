"""Network benchmarks: warm call overhead, the sync hop, namespace density, call latency during
hot swaps.

Baselines, measured in the same run:
* warm calls: ``perform()`` called directly on the same agent instance;
* the sync hop: the hand-off it replaced, ``run_in_executor`` on a ``ThreadPoolExecutor``
  of the same size, shielded, with a done callback, in a copy of the caller's context;
* density: the resident memory of one Python process that holds one tenant's
  bundle, i.e. what one-process-per-tenant would cost;
* hot swap: the same callers with no redeploys.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import gc
import inspect
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from plughost import Network
from plughost.agent_threads import AgentThreads
from plughost.placements.inprocess import InProcessUnit

from .memory import rss_kb
from .report import Outcome

WARM_CALLS = 20_000
WARM_ROUNDS = 7
WARM_GOAL_US = 5.0
DENSITY_TENANTS = 10_000
DENSITY_GOAL_KB = 100.0
HOP_CALLS = 5_000
HOP_ROUNDS = 9
HOP_THREADS = 32  # the network's default agent threads
HOP_GOAL = 0.5
SWAP_SECONDS = 3.0
SWAP_CALLERS = 8
SWAP_EVERY = 0.02


def five_agent_bundle(marker: str = "") -> dict[str, Any]:
    """A JSON bundle of five agent files (one async) and a shared helper module."""
    files = []
    for n in range(5):
        keyword = "async def" if n == 0 else "def"
        files.append(
            {
                "filename": f"agent_{n}.py",
                "source": textwrap.dedent(
                    f"""\
                    from agents.basic_agent import BasicAgent
                    from helpers import render

                    class Agent{n}(BasicAgent):
                        name = "Agent{n}"
                        metadata = {{
                            "name": "Agent{n}",
                            "description": "Agent number {n}{marker}",
                            "parameters": {{
                                "type": "object",
                                "properties": {{"message": {{"type": "string"}}}},
                            }},
                        }}

                        {keyword} perform(self, **kwargs):
                            return render({n}, kwargs.get("message", ""))
                    """
                ),
            }
        )
    helpers = "def render(n, message):\n    return f'{n}:{message}'\n"
    files.append({"filename": "helpers.py", "source": helpers})
    return {"agents": files}


async def _warm_calls(network: Network) -> Outcome:
    await network.deploy("warm", five_agent_bundle())
    # One call loads the namespace; after it, every call is warm.
    await network.call_agent("warm", "Agent0", {"message": "m"})
    # The very instances calls use.
    unit = network._runtime.get(network._catalog.live_namespace("warm"))
    assert isinstance(unit, InProcessUnit)
    async_agent = unit.loaded.agents["Agent0"].instance
    sync_agent = unit.loaded.agents["Agent1"].instance
    args = {"message": "m"}

    async def direct_async() -> None:
        for _ in range(WARM_CALLS):
            await async_agent.perform(**args)

    async def via_network_async() -> None:
        for _ in range(WARM_CALLS):
            await network.call_agent("warm", "Agent0", args)

    async def direct_sync() -> None:
        for _ in range(WARM_CALLS):
            sync_agent.perform(**args)

    async def via_network_sync() -> None:
        for _ in range(WARM_CALLS // 10):
            await network.call_agent("warm", "Agent1", args)

    async def per_call_us(run: Any, calls: int) -> float:
        start = time.perf_counter_ns()
        await run()
        return (time.perf_counter_ns() - start) / calls / 1000

    samples: dict[str, list[float]] = {k: [] for k in ("da", "na", "ds", "ns")}
    for _ in range(WARM_ROUNDS):
        samples["da"].append(await per_call_us(direct_async, WARM_CALLS))
        samples["na"].append(await per_call_us(via_network_async, WARM_CALLS))
        samples["ds"].append(await per_call_us(direct_sync, WARM_CALLS))
        samples["ns"].append(await per_call_us(via_network_sync, WARM_CALLS // 10))
    med = {k: statistics.median(v) for k, v in samples.items()}
    added_async = med["na"] - med["da"]
    added_sync = med["ns"] - med["ds"]
    return Outcome(
        name="warm_call",
        title="call_agent on a loaded namespace vs perform() on the same instance",
        figures=[
            ("async agent, direct await", f"{med['da']:.2f} us/call"),
            ("async agent, call_agent", f"{med['na']:.2f} us/call"),
            ("sync agent, direct call", f"{med['ds']:.2f} us/call"),
            ("sync agent, call_agent", f"{med['ns']:.2f} us/call (runs in the agent threads)"),
        ],
        verdict=(
            f"added {added_async:.2f} us/call for async agents "
            f"(ratio {med['na'] / med['da']:.2f}x); sync agents add {added_sync:.1f} us/call, "
            "the cost of running them off the event loop"
        ),
        goal=f"under {WARM_GOAL_US:.0f} us added in process",
        met=added_async < WARM_GOAL_US,
        notes=[f"median of {WARM_ROUNDS} rounds of {WARM_CALLS} calls"],
    )


async def _executor_hop(
    executor: ThreadPoolExecutor, call: Callable[[], Any], finished: Callable[[], None]
) -> Any:
    """The hand-off AgentThreads.run made before its own pool: the baseline."""
    context = contextvars.copy_context()
    future = asyncio.get_running_loop().run_in_executor(executor, context.run, call)

    def done(completed: asyncio.Future[Any]) -> None:
        if not completed.cancelled():
            completed.exception()
        finished()

    future.add_done_callback(done)
    result = await asyncio.shield(future)
    return await result if inspect.isawaitable(result) else result


async def _sync_hop() -> Outcome:
    def perform(message: str) -> str:
        return f"1:{message}"

    call = functools.partial(perform, "m")
    executor = ThreadPoolExecutor(HOP_THREADS, "bench-executor")
    threads = AgentThreads(HOP_THREADS)
    threads.start()

    async def hop_us(hop: Callable[[], Awaitable[Any]]) -> float:
        start = time.perf_counter_ns()
        for _ in range(HOP_CALLS):
            await hop()
        return (time.perf_counter_ns() - start) / HOP_CALLS / 1000

    def direct_us() -> float:
        start = time.perf_counter_ns()
        for _ in range(HOP_CALLS):
            call()
        return (time.perf_counter_ns() - start) / HOP_CALLS / 1000

    def old() -> Awaitable[Any]:
        return _executor_hop(executor, call, lambda: None)

    def new() -> Awaitable[Any]:
        return threads.run(call, lambda: None)

    samples: dict[str, list[float]] = {"direct": [], "old": [], "new": []}
    try:
        await old()
        await new()
        for _ in range(HOP_ROUNDS):
            samples["direct"].append(direct_us())
            samples["old"].append(await hop_us(old))
            samples["new"].append(await hop_us(new))
    finally:
        executor.shutdown()
        threads.stop()
    med = {k: statistics.median(v) for k, v in samples.items()}
    added_old, added_new = med["old"] - med["direct"], med["new"] - med["direct"]
    ratio = added_new / added_old
    return Outcome(
        name="sync_hop",
        title="a sync call run in the agent threads vs the run_in_executor hand-off it replaced",
        figures=[
            ("direct call", f"{med['direct']:.2f} us/call"),
            ("run_in_executor hand-off (before)", f"{med['old']:.1f} us/call"),
            ("AgentThreads.run", f"{med['new']:.1f} us/call"),
            ("added by the hop, before / now", f"{added_old:.1f} / {added_new:.1f} us/call"),
        ],
        verdict=f"the sync hop adds {added_new:.1f} us/call, {ratio:.2f}x the {added_old:.1f} us "
        "of run_in_executor",
        goal=f"at most {HOP_GOAL}x the run_in_executor hand-off",
        met=ratio <= HOP_GOAL,
        notes=[
            f"median of {HOP_ROUNDS} interleaved rounds of {HOP_CALLS} sequential calls, "
            f"{HOP_THREADS} threads each"
        ],
    )


def _process_per_tenant_kb(bundle: dict[str, Any], folder: Path) -> int:
    """RSS of a fresh Python process holding one tenant's bundle (plain imports, no plughost)."""
    for entry in bundle["agents"]:
        text = entry["source"].replace("from agents.basic_agent import BasicAgent", "")
        text = text.replace("(BasicAgent)", "")
        (folder / entry["filename"]).write_text(text)
    script = (
        "import sys, pathlib\n"
        f"sys.path.insert(0, {str(folder)!r})\n"
        "import helpers, agent_0, agent_1, agent_2, agent_3, agent_4\n"
        "agents = [m.__dict__[f'Agent{i}']() for i, m in "
        "enumerate([agent_0, agent_1, agent_2, agent_3, agent_4])]\n"
        "for line in pathlib.Path('/proc/self/status').read_text().splitlines():\n"
        "    if line.startswith('VmRSS:'):\n"
        "        print(line.split()[1])\n"
    )
    result = subprocess.run(
        [sys.executable, "-S", "-c", script], capture_output=True, text=True, check=True
    )
    return int(result.stdout.strip())


async def _density(data: Path, scratch: Path) -> Outcome:
    bundle = five_agent_bundle()
    gc.collect()
    async with Network(data, max_loaded_namespaces=DENSITY_TENANTS) as network:
        await network.deploy("warmup", bundle)
        gc.collect()
        before = rss_kb()
        start = time.perf_counter()
        for i in range(DENSITY_TENANTS):
            await network.deploy(f"tenant{i}", bundle)
        elapsed = time.perf_counter() - start
        gc.collect()
        after = rss_kb()
        loaded = len(network.loaded_namespaces())
        answer = await network.call_agent(
            f"tenant{DENSITY_TENANTS - 1}", "Agent3", {"message": "x"}
        )
        assert answer == "3:x", answer
    per_namespace = (after - before) / DENSITY_TENANTS
    process_kb = _process_per_tenant_kb(bundle, scratch)
    return Outcome(
        name="density",
        title=f"{DENSITY_TENANTS:,} tenants with a 5-agent bundle, all loaded at once",
        figures=[
            ("namespaces loaded", f"{loaded:,}"),
            ("resident memory added", f"{(after - before) / 1024:.1f} MiB"),
            ("per loaded namespace", f"{per_namespace:.1f} KiB"),
            ("one process per tenant", f"{process_kb:,} KiB resident (python -S, same bundle)"),
            ("deploys", f"{elapsed:.1f} s, {elapsed / DENSITY_TENANTS * 1000:.2f} ms each"),
        ],
        verdict=(
            f"{per_namespace:.1f} KiB per namespace, "
            f"{process_kb / per_namespace:.0f}x denser than a process per tenant"
        ),
        goal=f"under {DENSITY_GOAL_KB:.0f} KB per loaded namespace",
        met=per_namespace * 1024 < DENSITY_GOAL_KB * 1000,
        notes=["every tenant deploys the same bundle, so compiled code is shared by all"],
    )


async def _latencies(network: Network, redeploy: bool) -> tuple[dict[str, list[float]], int]:
    """Call latencies (seconds) by agent kind, and the failed calls, over SWAP_SECONDS."""
    loop = asyncio.get_running_loop()
    latencies: dict[str, list[float]] = {"async": [], "sync": []}
    failures = 0
    deadline = loop.time() + SWAP_SECONDS

    async def caller(kind: str) -> None:
        nonlocal failures
        agent = "Agent0" if kind == "async" else "Agent1"
        while loop.time() < deadline:
            start = time.perf_counter()
            try:
                await network.call_agent("swap", agent, {"message": "m"})
            except Exception:
                failures += 1
            latencies[kind].append(time.perf_counter() - start)
            # An async agent that never awaits would otherwise keep the loop to this caller.
            await asyncio.sleep(0)

    kinds = ["async", "sync"] * (SWAP_CALLERS // 2)
    callers = [asyncio.create_task(caller(kind)) for kind in kinds]
    deploys = 0
    while loop.time() < deadline:
        if redeploy:
            deploys += 1
            await network.deploy("swap", five_agent_bundle(f" #{deploys}"))
        await asyncio.sleep(SWAP_EVERY)
    await asyncio.gather(*callers)
    return latencies, failures


async def _hot_swap(data: Path) -> Outcome:
    async with Network(data) as network:
        await network.deploy("swap", five_agent_bundle())
        await network.call_agent("swap", "Agent0", {"message": "m"})
        steady, steady_failures = await _latencies(network, redeploy=False)
        swapping, swap_failures = await _latencies(network, redeploy=True)
        versions = network.get_deployment("swap").version

    figures = []
    for kind in ("async", "sync"):
        figures.append((f"{kind} agent, no redeploys", _latency_line(steady[kind])))
        figures.append((f"{kind} agent, while redeploying", _latency_line(swapping[kind])))
    figures.append(("redeploys", f"{versions - 1}"))
    figures.append(("failed calls", f"{steady_failures} without, {swap_failures} with redeploys"))
    ratios = ", ".join(
        f"{kind} p50 {pct(swapping[kind], 50) / pct(steady[kind], 50):.2f}x "
        f"p99 {pct(swapping[kind], 99) / pct(steady[kind], 99):.2f}x"
        for kind in ("async", "sync")
    )
    return Outcome(
        name="hot_swap",
        title=(
            f"{SWAP_CALLERS} callers for {SWAP_SECONDS:.0f} s, "
            f"redeploying every {SWAP_EVERY * 1000:.0f} ms"
        ),
        figures=figures,
        verdict=f"latency while redeploying vs steady: {ratios}; {swap_failures} failed calls",
        goal="no failed call",
        met=swap_failures == 0 and steady_failures == 0,
    )


def pct(samples: list[float], q: int) -> float:
    """The q-th percentile of ``samples`` (seconds), in milliseconds."""
    return statistics.quantiles(samples, n=100)[q - 1] * 1000


def _latency_line(samples: list[float]) -> str:
    return f"p50 {pct(samples, 50):.3f} ms, p99 {pct(samples, 99):.3f} ms, {len(samples):,} calls"


def _run(coroutine_factory: Any) -> Outcome:
    with tempfile.TemporaryDirectory(prefix="plughost-bench-") as tmp:
        outcome: Outcome = asyncio.run(coroutine_factory(Path(tmp)))
        return outcome


def warm_call() -> Outcome:
    async def scenario(tmp: Path) -> Outcome:
        async with Network(tmp / "data") as network:
            return await _warm_calls(network)

    return _run(scenario)


def sync_hop() -> Outcome:
    outcome: Outcome = asyncio.run(_sync_hop())
    return outcome


def density() -> Outcome:
    async def scenario(tmp: Path) -> Outcome:
        scratch = tmp / "process"
        scratch.mkdir()
        return await _density(tmp / "data", scratch)

    return _run(scenario)


def hot_swap() -> Outcome:
    return _run(lambda tmp: _hot_swap(tmp / "data"))


BENCHMARKS = (warm_call, sync_hop, hot_swap, density)
