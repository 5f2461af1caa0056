"""Scale curves: how calls, deploys and unloads behave as a host grows, plotted to PNG files.

Each curve is read against its own smallest point (there is no outside baseline):

* calls: calls/s and p99 latency of ``Network.call_agent`` with 1, 10, 100,
  1,000 and 10,000 tenants deployed and loaded in process (a fresh network
  per count, every tenant deploying :func:`one_file_bundle`), one caller,
  back to back, each call to a tenant drawn at random; an async agent and a
  sync one (run in the agent threads). The deploys that fill each network
  are timed too, and so is each tenant's first call, apart: it makes the
  tenant's state folder, and the curve is of warm calls.
* unload, in the same networks: the time to unload one namespace
  (``LoadedBundle.unload(verify=False)`` of a probe namespace loaded beside
  the N tenants) with 10, 100, 1,000 and 10,000 loaded, and the time to
  unload all N (``Network.stop()``). Goal: unloading all is linear, i.e. what
  each namespace adds to ``stop()`` at the largest size is at most 2x what it
  adds at the first size where unloading outweighs the fixed cost of a stop.
  An unload that scans all of ``sys.modules`` grows with the number of loaded
  namespaces, and unloading all of them is then quadratic. The one-unload
  time is shown beside it: the same few dict operations, which a larger heap
  makes slower (cache misses) but not more numerous.
* deploy, in a fresh interpreter: the time of one ``Network.deploy`` and the
  resident memory added per tenant against bundle size (1, 5, 20 and 100
  generated modules of :mod:`bench.sample_bundle`, with sibling imports, plus
  one agent file); every tenant's bundle has distinct source, so every
  module compiles.

The PNGs (``bench/scale_calls.png``, ``bench/scale_unload.png``,
``bench/scale_deploy.png``) are overwritten by every run.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import gc
import json
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from plughost import Namespace, Network
from plughost.loader import code_cache, load_bundle, loaded_namespaces

from .memory import rss_kb
from .report import Outcome
from .sample_bundle import module_name, module_source, preload_imports

if TYPE_CHECKING:
    from matplotlib.figure import Figure

HERE = Path(__file__).resolve().parent
CALLS_PNG = HERE / "scale_calls.png"
DEPLOY_PNG = HERE / "scale_deploy.png"
UNLOAD_PNG = HERE / "scale_unload.png"

TENANT_COUNTS = (1, 10, 100, 1_000, 10_000)
ASYNC_CALLS = 20_000
SYNC_CALLS = 3_000
WARMUP_CALLS = 500
CALL_SEED = 20

BUNDLE_SIZES = (1, 5, 20, 100)
DEPLOY_MODULES = 400
"""Generated modules deployed per bundle size: ``DEPLOY_MODULES // size`` tenants, clamped."""
DEPLOY_TENANTS_MIN = 5
DEPLOY_TENANTS_MAX = 100

UNLOAD_COUNTS = (10, 100, 1_000, 10_000)
UNLOAD_PROBES = 200
UNLOAD_GOAL = 2.0

TWO_AGENTS = textwrap.dedent(
    """\
    from agents.basic_agent import BasicAgent

    PARAMETERS = {"type": "object", "properties": {"message": {"type": "string"}}}


    class AsyncAgent(BasicAgent):
        name = "Async"
        metadata = {"name": "Async", "description": "Echoes, on the loop", "parameters": PARAMETERS}

        async def perform(self, **kwargs):
            return "async:" + kwargs.get("message", "")


    class SyncAgent(BasicAgent):
        name = "Sync"
        metadata = {"name": "Sync", "description": "Echoes, in a thread", "parameters": PARAMETERS}

        def perform(self, **kwargs):
            return "sync:" + kwargs.get("message", "")
    """
)

ENTRY_AGENT = textwrap.dedent(
    """\
    from agents.basic_agent import BasicAgent
    import {last}

    class Entry(BasicAgent):
        name = "Entry"
        metadata = {{
            "name": "Entry",
            "description": "Summarises the bundle's last module",
            "parameters": {{"type": "object", "properties": {{}}}},
        }}

        async def perform(self, **kwargs):
            return {last}.summary_{index:02d}()
    """
)


def _temp_root() -> tempfile.TemporaryDirectory[str]:
    return tempfile.TemporaryDirectory(prefix="plughost-bench-")


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """No garbage collection inside; what piled up is collected on the way out."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
        gc.collect()


def _first_call_figure(samples: list[int]) -> str:
    if len(samples) < 2:
        return f"{samples[0] / 1000:.1f} µs (makes its state folder)"
    return (
        f"p50 {_percentile(samples, 50):.1f} µs, p99 {_percentile(samples, 99):.1f} µs "
        "(makes its state folder)"
    )


def _percentile(samples: list[int], q: int) -> float:
    """The q-th percentile of ``samples`` (nanoseconds), in microseconds."""
    return statistics.quantiles(samples, n=100)[q - 1] / 1000


def _figure(columns: int, title: str) -> tuple[Figure, list[Any]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, columns, figsize=(6 * columns, 4.5), squeeze=False)
    figure.suptitle(title)
    return figure, list(axes[0])


def _save(figure: Figure, path: Path) -> Path:
    import matplotlib.pyplot as plt

    figure.text(
        0.99,
        0.01,
        f"python -m bench scale, {time.strftime('%Y-%m-%d %H:%M')}",
        ha="right",
        va="bottom",
        fontsize=7,
        color="gray",
    )
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def _log_y(axis: Any) -> None:
    """A log y axis labelled at 1, 2 and 5 of each decade, in plain numbers."""
    from matplotlib.ticker import FormatStrFormatter, LogLocator, NullFormatter

    axis.set_yscale("log")
    axis.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.yaxis.set_major_formatter(FormatStrFormatter("%g"))
    axis.yaxis.set_minor_formatter(NullFormatter())


def _log_x(axis: Any, values: tuple[int, ...], label: str) -> None:
    axis.set_xscale("log")
    axis.set_xticks(list(values), [f"{value:,}" for value in values])
    axis.minorticks_off()
    axis.set_xlabel(label)
    axis.grid(True, which="major", alpha=0.3)


# -- 1 and 3. calls and unloads against loaded tenants ---------------------------------


def one_file_bundle() -> dict[str, Any]:
    """A JSON bundle of one agent file with an async and a sync agent.

    The five-agent bundle of :mod:`bench.network` holds six modules, so each
    tenant adds seven ``sys.modules`` keys; a load's cost grows with the keys
    already there, and 10,000 of those deploys take minutes here. One file
    (two keys per tenant) keeps the pass to 10,000 tenants within the time box.
    """
    return {"agents": [{"filename": "echo.py", "source": TWO_AGENTS}]}


@dataclasses.dataclass
class CallPoint:
    """Calls of one agent kind at one tenant count."""

    tenants: int
    kind: str
    calls_per_s: float
    p50_us: float
    p99_us: float


@dataclasses.dataclass
class TenantPoint:
    """What one network of ``tenants`` tenants measured; times in nanoseconds."""

    tenants: int
    loaded: int
    modules_keys: int
    deploy_ns: int
    first_call_ns: list[int]
    calls: list[CallPoint]
    unload_one: list[int]
    stop_ns: int


async def _first_calls(network: Network, tenants: int) -> list[int]:
    """One call of every tenant, its first: it makes the tenant's state folder (ns each)."""
    args = {"message": "m"}
    latencies: list[int] = []
    clock = time.perf_counter_ns
    for i in range(tenants):
        before = clock()
        await network.call_agent(f"tenant{i}", "Async", args)
        latencies.append(clock() - before)
    return latencies


async def _timed_calls(
    network: Network, tenants: int, agent: str, calls: int, rng: random.Random
) -> tuple[float, list[int]]:
    """Back-to-back calls of ``agent``, each to a random tenant; (calls/s, latencies ns)."""
    targets = [f"tenant{rng.randrange(tenants)}" for _ in range(calls)]
    args = {"message": "m"}
    latencies: list[int] = []
    clock = time.perf_counter_ns
    start = clock()
    for tenant in targets:
        before = clock()
        await network.call_agent(tenant, agent, args)
        latencies.append(clock() - before)
    elapsed = clock() - start
    return calls / (elapsed / 1e9), latencies


def _probe_unloads(folder: Path, count: int) -> list[int]:
    """Load one more namespace beside the others and time its unload alone, many times."""
    samples: list[int] = []
    with _gc_paused():
        for probe in range(UNLOAD_PROBES):
            bundle = load_bundle(Namespace(f"probe{count}n{probe}"), folder)
            start = time.perf_counter_ns()
            bundle.unload(verify=False)
            samples.append(time.perf_counter_ns() - start)
    return samples


async def _tenant_point(data: Path, probe_folder: Path, count: int) -> TenantPoint:
    rng = random.Random(CALL_SEED + count)
    bundle = one_file_bundle()
    network = Network(data, max_loaded_namespaces=count)
    await network.start()
    stopped = False
    try:
        start = time.perf_counter_ns()
        for i in range(count):
            await network.deploy(f"tenant{i}", bundle)
        deploy_ns = time.perf_counter_ns() - start
        loaded = len(network.loaded_namespaces())
        # Every tenant's first call makes its state folder: timed apart from the warm calls.
        first_call_ns = await _first_calls(network, count)
        answer = await network.call_agent(f"tenant{count - 1}", "Sync", {"message": "x"})
        assert answer == "sync:x", answer
        gc.collect()
        points: list[CallPoint] = []
        for kind, agent, calls in (("async", "Async", ASYNC_CALLS), ("sync", "Sync", SYNC_CALLS)):
            await _timed_calls(network, count, agent, WARMUP_CALLS, rng)
            rate, latencies = await _timed_calls(network, count, agent, calls, rng)
            p50, p99 = _percentile(latencies, 50), _percentile(latencies, 99)
            points.append(CallPoint(count, kind, rate, p50, p99))
        keys = len(sys.modules)
        unload_one = _probe_unloads(probe_folder, count) if count in UNLOAD_COUNTS else []
        with _gc_paused():
            start = time.perf_counter_ns()
            stopped = True
            await network.stop()
            stop_ns = time.perf_counter_ns() - start
    finally:
        if not stopped:
            await network.stop()
    if loaded_namespaces():
        raise RuntimeError(f"namespaces left loaded after stop(): {loaded_namespaces()[:3]}")
    return TenantPoint(count, loaded, keys, deploy_ns, first_call_ns, points, unload_one, stop_ns)


async def _tenant_points(tmp: Path) -> list[TenantPoint]:
    probe_folder = tmp / "probe"
    probe_folder.mkdir()
    for entry in one_file_bundle()["agents"]:
        (probe_folder / entry["filename"]).write_text(entry["source"])
    if loaded_namespaces():
        raise RuntimeError(f"namespaces loaded before the pass: {loaded_namespaces()[:3]}")
    points = []
    for count in TENANT_COUNTS:
        data = tmp / f"data{count}"
        points.append(await _tenant_point(data, probe_folder, count))
        await asyncio.to_thread(shutil.rmtree, data)
    return points


@functools.cache
def tenant_pass() -> tuple[TenantPoint, ...]:
    """One network per tenant count: deploy, calls, unload probes, stop. Run once, shared."""
    preload_imports()
    with _temp_root() as tmp:
        return tuple(asyncio.run(_tenant_points(Path(tmp))))


def _plot_calls(points: tuple[TenantPoint, ...]) -> Path:
    figure, (rate_axis, latency_axis, deploy_axis) = _figure(
        3, "call_agent against loaded tenants (in process, one caller, random tenant per call)"
    )
    x = [point.tenants for point in points]
    for index, (kind, marker) in enumerate((("async", "o"), ("sync", "s"))):
        series = [point.calls[index] for point in points]
        assert all(call.kind == kind for call in series)
        color = f"C{index}"
        rate_axis.plot(
            x, [c.calls_per_s for c in series], marker=marker, color=color, label=f"{kind} agent"
        )
        latency_axis.plot(
            x, [c.p99_us for c in series], marker=marker, color=color, label=f"{kind}, p99"
        )
        latency_axis.plot(
            x,
            [c.p50_us for c in series],
            marker=marker,
            color=color,
            linestyle=":",
            alpha=0.6,
            label=f"{kind}, p50",
        )
    rate_axis.set_title("throughput")
    rate_axis.set_ylabel("calls/s")
    rate_axis.set_ylim(bottom=0)
    latency_axis.set_title("latency per call")
    latency_axis.set_ylabel("latency (µs, log)")
    _log_y(latency_axis)
    deploy_axis.plot(x, [p.deploy_ns / p.tenants / 1e6 for p in points], marker="o", color="C2")
    deploy_axis.set_title("deploying the x tenants")
    deploy_axis.set_ylabel("mean time per deploy (ms)")
    deploy_axis.set_ylim(bottom=0)
    for axis in (rate_axis, latency_axis, deploy_axis):
        _log_x(axis, TENANT_COUNTS, "tenants deployed and loaded")
    rate_axis.legend()
    latency_axis.legend(fontsize=8)
    return _save(figure, CALLS_PNG)


def calls() -> Outcome:
    """Curve 1: calls/s and p99 latency against the number of loaded tenants."""
    points = tenant_pass()
    path = _plot_calls(points)
    figures: list[tuple[str, str]] = []
    for point in points:
        cells = "; ".join(
            f"{c.kind} {c.calls_per_s:,.0f}/s p50 {c.p50_us:.1f} µs p99 {c.p99_us:.1f} µs"
            for c in point.calls
        )
        figures.append((f"{point.tenants:,} tenants ({point.loaded:,} loaded)", cells))
        figures.append(
            (
                "  deploying them",
                f"{point.deploy_ns / 1e9:.2f} s, {point.deploy_ns / point.tenants / 1e6:.2f} ms "
                "each",
            )
        )
        figures.append(("  each one's first call", _first_call_figure(point.first_call_ns)))
    figures.append(("plot", str(path)))

    def ends(index: int) -> str:
        first, last = points[0].calls[index], points[-1].calls[index]
        return (
            f"{first.kind} {first.calls_per_s:,.0f} -> {last.calls_per_s:,.0f} calls/s "
            f"({last.calls_per_s / first.calls_per_s:.2f}x), "
            f"p99 {first.p99_us:.1f} -> {last.p99_us:.1f} µs"
        )

    return Outcome(
        name="scale.calls",
        title=f"call_agent against {', '.join(f'{c:,}' for c in TENANT_COUNTS)} loaded tenants",
        notes=[
            "a one-file bundle with an async and a sync agent (one_file_bundle), every tenant "
            "deployed and loaded in process; a fresh network per tenant count",
            f"one caller, back to back; {ASYNC_CALLS:,} async and {SYNC_CALLS:,} sync calls per "
            f"point, each to a tenant drawn at random, after one call of every tenant (its "
            f"first, timed apart) and {WARMUP_CALLS} untimed ones; "
            "garbage collection left on (what a host with that many objects pays)",
        ],
        figures=figures,
        verdict=(f"{TENANT_COUNTS[0]:,} -> {TENANT_COUNTS[-1]:,} tenants: {ends(0)}; {ends(1)}"),
        goal="report the curve",
        met=True,
    )


# -- 2. deploy time and memory against bundle size -----------------------------------


@dataclasses.dataclass
class DeployPoint:
    """Deploys of one bundle size: per-deploy times (ns) and resident memory per tenant."""

    modules: int
    source_bytes: int
    tenants: int
    times: list[int]
    rss_per_tenant_kb: float
    compiled: int


def sized_bundle(modules: int, seed: int) -> dict[str, Any]:
    """A JSON bundle of ``modules`` generated modules (sibling imports) and one agent file.

    The agent imports the last module, which imports earlier ones; ``seed``
    makes every module's source distinct from other seeds'.
    """
    rng = random.Random(seed)
    # The seed's line makes every file distinct, even two that the same words would match.
    mark = f"# bundle {seed}\n"
    files = [
        {
            "filename": f"{module_name(index)}.py",
            "source": mark + module_source(index, sibling_imports=True, rng=rng),
        }
        for index in range(modules)
    ]
    last = modules - 1
    entry = ENTRY_AGENT.format(last=module_name(last), index=last)
    files.append({"filename": "entry.py", "source": mark + entry})
    return {"agents": files}


def _source_bytes(bundle: dict[str, Any]) -> int:
    return sum(len(entry["source"].encode()) for entry in bundle["agents"])


def _deploy_tenants(modules: int) -> int:
    return max(DEPLOY_TENANTS_MIN, min(DEPLOY_TENANTS_MAX, DEPLOY_MODULES // modules))


async def _deploy_curve(data: Path) -> list[DeployPoint]:
    preload_imports()
    points: list[DeployPoint] = []
    seed = 0
    async with Network(data, max_loaded_namespaces=10_000) as network:
        # One untimed deploy first: the first one sets up the data folder's layout.
        await network.deploy("warmup", sized_bundle(1, seed=-1))
        for modules in BUNDLE_SIZES:
            tenants = _deploy_tenants(modules)
            times: list[int] = []
            sizes: list[int] = []
            misses = code_cache.misses
            gc.collect()
            before = rss_kb()
            for i in range(tenants):
                seed += 1
                bundle = sized_bundle(modules, seed)
                sizes.append(_source_bytes(bundle))
                start = time.perf_counter_ns()
                await network.deploy(f"m{modules}t{i}", bundle)
                times.append(time.perf_counter_ns() - start)
                del bundle
            gc.collect()
            added = rss_kb() - before
            compiled = code_cache.misses - misses
            answer = await network.call_agent(f"m{modules}t{tenants - 1}", "Entry", {})
            assert isinstance(answer, str) and "defaults" in answer, answer
            points.append(
                DeployPoint(
                    modules, int(statistics.mean(sizes)), tenants, times, added / tenants, compiled
                )
            )
    return points


def _plot_deploy(points: list[DeployPoint]) -> Path:
    figure, (time_axis, memory_axis) = _figure(
        2, "deploy against bundle size (distinct source per tenant, so every module compiles)"
    )
    x = [p.modules for p in points]
    medians = [statistics.median(p.times) / 1e6 for p in points]
    q1 = [statistics.quantiles(p.times, n=4)[0] / 1e6 for p in points]
    q3 = [statistics.quantiles(p.times, n=4)[2] / 1e6 for p in points]
    time_axis.plot(x, medians, marker="o", label="median")
    time_axis.fill_between(x, q1, q3, alpha=0.25, label="p25-p75")
    _log_y(time_axis)
    time_axis.set_title("time of one Network.deploy")
    time_axis.set_ylabel("time per deploy (ms, log)")
    time_axis.legend()
    memory_axis.plot(x, [p.rss_per_tenant_kb for p in points], marker="o", color="C1")
    _log_y(memory_axis)
    memory_axis.set_title("resident memory added per deployed tenant")
    memory_axis.set_ylabel("RSS added (KiB per tenant, log)")
    label = "bundle size (generated modules, + 1 agent file)"
    for axis in (time_axis, memory_axis):
        _log_x(axis, BUNDLE_SIZES, label)
        axis.margins(y=0.15)
        for point, value in zip(points, axis.lines[0].get_ydata(), strict=True):
            axis.annotate(
                f"{point.source_bytes / 1024:.0f} KiB src",
                (point.modules, value),
                textcoords="offset points",
                xytext=(0, 8),
                ha="center",
                fontsize=7,
            )
    return _save(figure, DEPLOY_PNG)


def measure_deploys() -> list[DeployPoint]:
    """The deploy curve, in this process; see :func:`deploy` for why in a child."""
    with _temp_root() as tmp:
        return asyncio.run(_deploy_curve(Path(tmp, "data")))


def _deploys_in_fresh_interpreter() -> list[DeployPoint]:
    """Run :func:`measure_deploys` in ``python -B -m bench.scale``; read its JSON line."""
    child = subprocess.run(
        [sys.executable, "-B", "-m", __name__],
        cwd=HERE.parent,
        capture_output=True,
        text=True,
        check=False,
    )
    if child.returncode != 0:
        raise RuntimeError(f"the deploy curve failed:\n{child.stderr}")
    return [DeployPoint(**point) for point in json.loads(child.stdout.splitlines()[-1])]


def deploy() -> Outcome:
    """Curve 2: deploy time and resident memory added against bundle size.

    It runs in a fresh interpreter: memory that earlier benchmarks freed
    stays in this process, and deploys reuse it without growing the RSS.
    """
    points = _deploys_in_fresh_interpreter()
    path = _plot_deploy(points)
    figures: list[tuple[str, str]] = []
    for p in points:
        q1, median, q3 = (value / 1e6 for value in statistics.quantiles(p.times, n=4))
        figures.append(
            (
                f"{p.modules} modules ({p.source_bytes / 1024:.1f} KiB source)",
                f"deploy median {median:.1f} ms (p25 {q1:.1f}, p75 {q3:.1f}), "
                f"{median / p.modules:.2f} ms/module; "
                f"{p.rss_per_tenant_kb:,.0f} KiB RSS per tenant "
                f"({p.rss_per_tenant_kb / p.modules:.0f} KiB/module); "
                f"{p.tenants} tenants, {p.compiled:,} modules compiled",
            )
        )
    figures.append(("plot", str(path)))
    small, large = points[0], points[-1]
    return Outcome(
        name="scale.deploy",
        title=f"deploy time and memory against bundle size ({', '.join(map(str, BUNDLE_SIZES))} "
        "modules)",
        notes=[
            "bench.sample_bundle modules with sibling imports plus one agent file that imports "
            "the last module, as a JSON bundle; a new tenant per deploy, distinct source per "
            "tenant, so nothing is shared through the code cache",
            f"tenants per size: {DEPLOY_MODULES:,} modules' worth, at least "
            f"{DEPLOY_TENANTS_MIN} and at most {DEPLOY_TENANTS_MAX}; RSS after gc.collect(), "
            "before and after all of a size's deploys, divided by its tenants; in a fresh "
            "interpreter (python -B -m bench.scale), so no memory freed earlier is reused",
        ],
        figures=figures,
        verdict=(
            f"{small.modules} -> {large.modules} modules: deploy "
            f"{statistics.median(small.times) / 1e6:.1f} -> "
            f"{statistics.median(large.times) / 1e6:.1f} ms, RSS per tenant "
            f"{small.rss_per_tenant_kb:,.0f} -> {large.rss_per_tenant_kb:,.0f} KiB"
        ),
        goal="report the curve",
        met=True,
    )


# -- 3. unload, from the same pass ------------------------------------------------


def _plot_unload(points: list[TenantPoint]) -> Path:
    figure, (one_axis, all_axis) = _figure(2, "unloading namespaces against namespaces loaded")
    x = [p.tenants for p in points]
    one_axis.plot(
        x, [statistics.median(p.unload_one) / 1000 for p in points], marker="o", label="median"
    )
    one_axis.plot(
        x, [_percentile(p.unload_one, 90) for p in points], marker=".", linestyle=":", label="p90"
    )
    _log_y(one_axis)
    one_axis.set_title(f"unload one namespace ({UNLOAD_PROBES} probes per point)")
    one_axis.set_ylabel("time per unload (µs, log)")
    one_axis.legend()
    totals = [p.stop_ns / 1e9 for p in points]
    all_axis.plot(x, totals, marker="o", color="C1", label="Network.stop(), measured")
    linear = [totals[0] * n / x[0] for n in x]
    all_axis.plot(x, linear, linestyle="--", color="gray", label="linear from the smallest")
    all_axis.plot(
        x,
        [UNLOAD_GOAL * t for t in linear],
        linestyle=":",
        color="C3",
        label=f"goal: within {UNLOAD_GOAL:.0f}x of linear",
    )
    _log_y(all_axis)
    all_axis.set_title("unload all of them: Network.stop()")
    all_axis.set_ylabel("total time (s, log)")
    all_axis.legend()
    for axis in (one_axis, all_axis):
        _log_x(axis, UNLOAD_COUNTS, "namespaces loaded (tenants)")
    return _save(figure, UNLOAD_PNG)


def unload() -> Outcome:
    """Curve 3: unload time of one namespace against the number loaded; goal: linear."""
    every = tenant_pass()
    # stop() of the one-tenant network: the fixed cost of a stop, plus one unload.
    fixed_ns = every[0].stop_ns if every[0].tenants == 1 else 0
    points = [p for p in every if p.tenants in UNLOAD_COUNTS]
    smallest, largest = points[0], points[-1]
    small_us = statistics.median(smallest.unload_one) / 1000
    large_us = statistics.median(largest.unload_one) / 1000
    path = _plot_unload(points)

    def marginal_us(point: TenantPoint) -> float:
        """What each namespace adds to stop(), past the one-tenant network's stop()."""
        return (point.stop_ns - fixed_ns) / (point.tenants - 1) / 1000

    figures: list[tuple[str, str]] = []
    for p in points:
        q1, median, q3 = (value / 1000 for value in statistics.quantiles(p.unload_one, n=4))
        figures.append(
            (
                f"{p.tenants:,} loaded ({p.modules_keys:,} sys.modules keys)",
                f"one unload median {median:.1f} µs (p25 {q1:.1f}, p75 {q3:.1f}); "
                f"unload all {p.tenants:,} (stop): {p.stop_ns / 1e9:.3f} s, "
                f"{marginal_us(p):.1f} µs per namespace past the fixed cost",
            )
        )
    # Compared from the first point where unloading, not the fixed cost, is most of stop().
    reference = next((p for p in points if p.stop_ns >= 2 * fixed_ns), largest)
    ratio = marginal_us(largest) / marginal_us(reference)
    figures.append(
        (
            "unload all, per namespace",
            f"{ratio:.2f}x at {largest.tenants:,} vs {reference.tenants:,} (linear keeps this "
            f"near 1x; quadratic, {largest.tenants // reference.tenants}x; compared from the "
            f"first point whose stop() is at least twice the fixed cost, stop() of one tenant: "
            f"{fixed_ns / 1e6:.2f} ms)",
        )
    )
    figures.append(
        (
            "one unload (info)",
            f"{large_us / small_us:.2f}x at {largest.tenants:,} vs {smallest.tenants:,}: the "
            "same few dict operations, slower in a larger heap (cache misses), not more of them",
        )
    )
    figures.append(("plot", str(path)))
    return Outcome(
        name="scale.unload",
        title=f"unload one namespace with {', '.join(f'{c:,}' for c in UNLOAD_COUNTS)} loaded",
        notes=[
            "measured in the pass of scale.calls: its networks hold the N tenants (one-file "
            "bundle, two sys.modules keys each)",
            f"one unload: {UNLOAD_PROBES} probes per point, each loads one more namespace of the "
            "same file with plughost.loader.load_bundle beside the N and times its "
            "unload(verify=False) alone; unload all: Network.stop() of the N, timed whole, and "
            "per namespace past stop() of a one-tenant network; "
            "garbage collection paused while timing, collected after",
            "goal criterion: unloading all is linear, the time each namespace adds to "
            f"stop() at {largest.tenants:,} within {UNLOAD_GOAL:.0f}x of that at the reference "
            "point (a scan of sys.modules per unload made it grow with the namespaces loaded)",
        ],
        figures=figures,
        verdict=(
            f"unloading all {largest.tenants:,} (Network.stop) took "
            f"{largest.stop_ns / 1e9:.2f} s, {ratio:.2f}x per namespace of {reference.tenants:,}; "
            f"one unload {small_us:.1f} µs at {smallest.tenants:,} -> {large_us:.1f} µs"
        ),
        goal=f"unloading all linear: per namespace within {UNLOAD_GOAL:.0f}x, "
        f"{largest.tenants:,} vs {reference.tenants:,} loaded",
        met=ratio <= UNLOAD_GOAL,
    )


BENCHMARKS: tuple[Callable[[], Outcome], ...] = (calls, unload, deploy)


if __name__ == "__main__":
    # The child side of deploy(): measure, then print the points as one JSON line.
    sys.dont_write_bytecode = True
    print(json.dumps([dataclasses.asdict(point) for point in measure_deploys()]))
