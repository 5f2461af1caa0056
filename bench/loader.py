"""Loader benchmarks: a cold load, one bundle in 1,000 namespaces, load/unload cycles.

The baseline is what a host without plughost does: ``spec_from_file_location``
+ ``module_from_spec`` + registering the module in ``sys.modules`` under a
unique name + ``exec_module``, compiling from source (no ``__pycache__``).
Both sides execute exactly the same files. Sibling imports (``import mod_03``)
cannot resolve under unique names without plughost's redirect, so the bundles
of the ratio benchmarks import only the stdlib; the cycle benchmark and an
extra figure of the cold-load benchmark use sibling imports.
"""

from __future__ import annotations

import gc
import importlib.util
import statistics
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

from plughost import Namespace
from plughost.loader import LoadedBundle, code_cache, load_bundle, loaded_namespaces

from .report import Outcome, ms, seconds, spread
from .sample_bundle import copy_bundle, line_counts, preload_imports, write_bundle

BUNDLE_MODULES = 20
COLD_ROUNDS = 200
COLD_GOAL = 1.15
NAMESPACES = 1_000
NAMESPACES_GOAL = 2.0
CYCLES = 10_000
CYCLE_MODULES = 3
CYCLE_VERIFY_EVERY = 100
CYCLE_WARMUP = 100
CYCLE_GROWTH_GOAL = 1 << 20
NAMESPACE_ROOT = "plughost_ns."
SIBLING_NOTE = (
    "the bundle's modules import only the stdlib (json, re, dataclasses, ...), no siblings, "
    "so both sides execute exactly the same source"
)


def _temp_root() -> tempfile.TemporaryDirectory[str]:
    return tempfile.TemporaryDirectory(prefix="plughost-bench-")


def _assert_no_bytecode(folder: Path) -> None:
    cached = list(folder.rglob("__pycache__"))
    if not sys.dont_write_bytecode or cached:
        raise RuntimeError(f"bytecode would be reused or written: {cached[:3]}")


def _bare_load(paths: list[Path], prefix: str) -> list[str]:
    """Import each file as ``<prefix>_<stem>`` the way an import would; return the keys."""
    names = []
    for path in paths:
        name = f"{prefix}_{path.stem}"
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise RuntimeError(f"no spec for {path}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        names.append(name)
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[name]
            raise
    return names


def _forget(names: list[str]) -> None:
    for name in names:
        del sys.modules[name]


def _namespace_modules_alive() -> int:
    """Module objects of any plughost namespace that the garbage collector still tracks."""
    gc.collect()
    return sum(
        1
        for obj in gc.get_objects()
        if isinstance(obj, ModuleType) and obj.__name__.startswith(NAMESPACE_ROOT)
    )


def _namespace_keys() -> int:
    return sum(1 for key in list(sys.modules) if key.startswith(NAMESPACE_ROOT))


def _bundle_description(paths: list[Path]) -> str:
    counts = line_counts(paths)
    return (
        f"{len(paths)} modules, {sum(counts)} lines "
        f"({min(counts)}-{max(counts)} per module, dataclass/class/Enum/dicts/functions)"
    )


def _plughost_cold(namespace: Namespace, source: Path) -> int:
    """Time one load with an empty code cache, so that every module compiles; then unload."""
    code_cache.clear()
    misses = code_cache.misses
    start = time.perf_counter_ns()
    loaded = load_bundle(namespace, source)
    elapsed = time.perf_counter_ns() - start
    compiled = code_cache.misses - misses
    loaded.unload(verify=False)
    if compiled != BUNDLE_MODULES:
        raise RuntimeError(f"a cold load compiled {compiled} modules, not {BUNDLE_MODULES}")
    return elapsed


def _bare_timed(paths: list[Path], prefix: str) -> int:
    """Time one bare import of ``paths``; then remove the modules again."""
    start = time.perf_counter_ns()
    names = _bare_load(paths, prefix)
    elapsed = time.perf_counter_ns() - start
    _forget(names)
    return elapsed


def cold_load(rounds: int = COLD_ROUNDS) -> Outcome:
    """Benchmark 1: a cold load of the 20-file bundle against the bare import of its files."""
    preload_imports()
    with _temp_root() as tmp:
        folder = Path(tmp, "bundle")
        paths = write_bundle(folder, modules=BUNDLE_MODULES)
        sibling_folder = Path(tmp, "bundle_siblings")
        write_bundle(sibling_folder, modules=BUNDLE_MODULES, sibling_imports=True)
        arms: list[tuple[list[int], Callable[[int], int]]] = [
            ([], lambda r: _plughost_cold(Namespace(f"cold{r}"), folder)),
            ([], lambda r: _bare_timed(paths, f"bench_bare_cold{r}")),
            ([], lambda r: _plughost_cold(Namespace(f"siblings{r}"), sibling_folder)),
        ]
        for round_ in range(rounds):
            # Rotate the order each round so that no arm always runs first or last.
            for offset in range(len(arms)):
                samples, measure = arms[(round_ + offset) % len(arms)]
                gc.collect()
                samples.append(measure(round_))
        _assert_no_bytecode(Path(tmp))
        description = _bundle_description(paths)
    gc.collect()
    plughost_ns, bare_ns, siblings_ns = (samples for samples, _ in arms)
    ratio = statistics.median(plughost_ns) / statistics.median(bare_ns)
    return Outcome(
        name="loader.cold_load",
        title=f"cold load of a {BUNDLE_MODULES}-file bundle, plughost vs bare importlib",
        notes=[
            SIBLING_NOTE,
            "plughost: code_cache.clear() before each load; bare: spec_from_file_location + "
            "module_from_spec + sys.modules + exec_module, no __pycache__; "
            "arms interleaved, gc.collect() and cleanup outside the timed region",
        ],
        figures=[
            ("bundle", description),
            ("plughost cold load", spread(plughost_ns)),
            ("bare importlib load", spread(bare_ns)),
            ("plughost cold, sibling imports", spread(siblings_ns) + "  (info, no bare twin)"),
        ],
        verdict=(
            f"plughost {ms(statistics.median(plughost_ns))} vs bare "
            f"{ms(statistics.median(bare_ns))} (medians of {rounds}) "
            f"-> {ratio:.3f}x plughost/bare"
        ),
        goal=f"<= {COLD_GOAL:.2f}x",
        met=ratio <= COLD_GOAL,
    )


def _time_plughost_namespaces(folders: list[Path]) -> tuple[int, int, list[LoadedBundle]]:
    """Load folder i into namespace i; return (elapsed ns, cache hits, the loaded bundles)."""
    code_cache.clear()
    hits = code_cache.hits
    gc.collect()
    start = time.perf_counter_ns()
    loaded = [load_bundle(Namespace(f"tenant{i}"), folder) for i, folder in enumerate(folders)]
    elapsed = time.perf_counter_ns() - start
    return elapsed, code_cache.hits - hits, loaded


def _unload_all(loaded: list[LoadedBundle]) -> int:
    start = time.perf_counter_ns()
    for bundle in loaded:
        bundle.unload(verify=False)
    elapsed = time.perf_counter_ns() - start
    loaded.clear()
    gc.collect()
    return elapsed


def many_namespaces(namespaces: int = NAMESPACES) -> Outcome:
    """Benchmark 2: the same bundle into 1,000 namespaces against 1,000 bare imports."""
    preload_imports()
    with _temp_root() as tmp:
        folder = Path(tmp, "bundle")
        paths = write_bundle(folder, modules=BUNDLE_MODULES)
        copies = [Path(tmp, "copies", f"c{i:04d}") for i in range(namespaces)]
        for copy in copies:
            copy_bundle(folder, copy)
        copy_paths = [sorted(copy.glob("*.py")) for copy in copies]

        one_ns, one_hits, loaded = _time_plughost_namespaces([folder] * namespaces)
        modules_loaded = sum(len(bundle.modules) for bundle in loaded)
        one_unload_ns = _unload_all(loaded)

        gc.collect()
        start = time.perf_counter_ns()
        bare_names = [_bare_load(p, f"bench_bare_c{i:04d}") for i, p in enumerate(copy_paths)]
        bare_ns = time.perf_counter_ns() - start
        for names in bare_names:
            _forget(names)
        bare_names.clear()
        gc.collect()

        copies_ns, copies_hits, loaded = _time_plughost_namespaces(copies)
        copies_unload_ns = _unload_all(loaded)
        _assert_no_bytecode(Path(tmp))
        description = _bundle_description(paths)
    code_cache.clear()
    if _namespace_keys() or loaded_namespaces():
        raise RuntimeError("namespaces left loaded after unloading all")
    speedup = bare_ns / one_ns
    copies_speedup = bare_ns / copies_ns
    total = namespaces * BUNDLE_MODULES
    return Outcome(
        name="loader.many_namespaces",
        title=f"one {BUNDLE_MODULES}-file bundle into {namespaces:,} namespaces vs bare imports",
        notes=[
            SIBLING_NOTE,
            f"all {namespaces:,} namespaces stay loaded until the timed loop ends "
            f"({modules_loaded:,} modules); code_cache cleared before each plughost run, "
            "so its first load compiles",
            f"bare: {namespaces:,} copies on disk, each compiled from source, no __pycache__",
        ],
        figures=[
            ("bundle", description),
            (
                "plughost, one folder",
                f"{seconds(one_ns)} total, {ms(one_ns / namespaces)} per namespace, "
                f"cache hits {one_hits:,}/{total:,}",
            ),
            (
                "plughost, 1,000 copies",
                f"{seconds(copies_ns)} total, {ms(copies_ns / namespaces)} per namespace, "
                f"cache hits {copies_hits:,}/{total:,} (co_filename copies)",
            ),
            (
                "bare importlib, copies",
                f"{seconds(bare_ns)} total, {ms(bare_ns / namespaces)} each",
            ),
            ("speedup, copies variant", f"{copies_speedup:.2f}x bare/plughost"),
            (
                "unload all (verify=False)",
                f"{seconds(one_unload_ns)} one folder, {seconds(copies_unload_ns)} copies (info)",
            ),
        ],
        verdict=(
            f"plughost {seconds(one_ns)} vs bare {seconds(bare_ns)} "
            f"-> {speedup:.2f}x bare/plughost (copies variant {copies_speedup:.2f}x)"
        ),
        goal=f">= {NAMESPACES_GOAL:.1f}x (one folder)",
        met=speedup >= NAMESPACES_GOAL,
    )


def load_unload_cycles(cycles: int = CYCLES) -> Outcome:
    """Benchmark 3: many load/unload cycles of a small bundle must not leak."""
    preload_imports()
    with _temp_root() as tmp:
        folder = Path(tmp, "small")
        paths = write_bundle(folder, modules=CYCLE_MODULES, sibling_imports=True)
        gc.collect()
        modules_before = len(sys.modules)
        verified = leaky = 0
        warmup_ns = growth = baseline = 0
        top_allocations: list[str] = []
        start = time.perf_counter_ns()
        for cycle in range(cycles):
            if cycle == CYCLE_WARMUP:
                warmup_ns = time.perf_counter_ns() - start
                gc.collect()
                tracemalloc.start()
                baseline = tracemalloc.get_traced_memory()[0]
            loaded = load_bundle(Namespace(f"cycle{cycle}"), folder)
            verify = cycle % CYCLE_VERIFY_EVERY == CYCLE_VERIFY_EVERY - 1
            report = loaded.unload(verify=verify)
            if verify:
                verified += report.verified
                leaky += bool(report.leaked)
            del loaded, report
        elapsed = time.perf_counter_ns() - start
        if tracemalloc.is_tracing():
            gc.collect()
            growth = tracemalloc.get_traced_memory()[0] - baseline
            snapshot = tracemalloc.take_snapshot()
            tracemalloc.stop()
            top_allocations = [str(stat) for stat in snapshot.statistics("lineno")[:3]]
        description = _bundle_description(paths)
    alive = _namespace_modules_alive()
    modules_after = len(sys.modules)
    checks_met = (
        growth < CYCLE_GROWTH_GOAL and leaky == 0 and alive == 0 and modules_after == modules_before
    )
    notes = [
        f"a fresh namespace per cycle; unload(verify=True) every {CYCLE_VERIFY_EVERY}th cycle, "
        "verify=False otherwise",
        f"tracemalloc runs from cycle {CYCLE_WARMUP} to the end, which slows those cycles",
    ]
    if growth >= CYCLE_GROWTH_GOAL:
        notes += [f"largest live allocation: {line}" for line in top_allocations]
    traced = cycles - CYCLE_WARMUP
    return Outcome(
        name="loader.load_unload_cycles",
        title=f"{cycles:,} load/unload cycles of a {CYCLE_MODULES}-file bundle",
        notes=notes,
        figures=[
            ("bundle", f"{description}; modules import 1-2 siblings each"),
            ("sys.modules size", f"{modules_before} before, {modules_after} after"),
            ("namespace modules alive after", str(alive)),
            ("verified unloads with leaks", f"{leaky} of {verified}"),
            (f"tracemalloc growth, cycle {CYCLE_WARMUP} -> end", f"{growth / 1024:.1f} KiB"),
            (
                "wall time",
                f"{seconds(elapsed)} total; first {CYCLE_WARMUP} cycles untraced "
                f"{ms(warmup_ns / CYCLE_WARMUP)} per cycle, then "
                f"{ms((elapsed - warmup_ns) / traced)} per cycle traced",
            ),
        ],
        verdict=(
            f"growth {growth / 1024:.1f} KiB, {leaky} leaky of {verified} verified, "
            f"{alive} modules alive, sys.modules {modules_before} -> {modules_after}, "
            f"{seconds(elapsed)}"
        ),
        goal="growth < 1 MiB, 0 leaks, 0 alive, sys.modules unchanged",
        met=checks_met,
    )


BENCHMARKS: tuple[Callable[[], Outcome], ...] = (cold_load, many_namespaces, load_unload_cycles)
