"""Loader benchmarks: a cold load, one bundle in 1,000 namespaces, load/unload cycles.

The baseline is what a host without plughost does: ``spec_from_file_location``
+ ``module_from_spec`` + registering the module in ``sys.modules`` under a
unique name + ``exec_module``, compiling from source (no ``__pycache__``).
Both sides execute exactly the same files. Sibling imports (``import mod_03``)
cannot resolve under unique names without plughost's redirect, so the bundles
of the ratio benchmarks import only the stdlib; the cycle benchmark and an
extra figure of the cold-load benchmark use sibling imports. The cycle
benchmark runs in a child ``python -X tracemalloc -B -m bench.loader``.
"""

from __future__ import annotations

import dataclasses
import gc
import importlib.util
import json
import py_compile
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass
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
CYCLE_UNTRACED = 1_000
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


def _plughost_cold(namespace: Namespace, source: Path, source_of_code: str = "misses") -> int:
    """Time one load with an empty memory cache; then unload.

    Every module must come from ``source_of_code``: the code cache's counter of
    compiles (``misses``) or of reads from its disk entries (``disk_hits``).
    """
    code_cache.clear()
    before = getattr(code_cache, source_of_code)
    start = time.perf_counter_ns()
    loaded = load_bundle(namespace, source)
    elapsed = time.perf_counter_ns() - start
    counted = getattr(code_cache, source_of_code) - before
    loaded.unload(verify=False)
    if counted != BUNDLE_MODULES:
        raise RuntimeError(f"{counted} modules of a load were {source_of_code}, not all")
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


def cold_load_compiled(rounds: int = COLD_ROUNDS) -> Outcome:
    """A new process's first load, where compiled code is on disk: plughost's code
    cache against bare importlib reading the ``__pycache__`` that Python writes."""
    preload_imports()
    saved = code_cache.folder
    with _temp_root() as tmp:
        folder = Path(tmp, "bundle")
        paths = write_bundle(folder, modules=BUNDLE_MODULES)
        for path in paths:
            py_compile.compile(str(path), doraise=True)
        code_cache.keep_on_disk(Path(tmp, "code"))
        try:
            code_cache.clear()
            load_bundle(Namespace("warm"), folder).unload(verify=False)  # fills the disk cache
            arms: list[tuple[list[int], Callable[[int], int]]] = [
                ([], lambda r: _plughost_cold(Namespace(f"disk{r}"), folder, "disk_hits")),
                ([], lambda r: _bare_timed(paths, f"bench_bare_pyc{r}")),
            ]
            for round_ in range(rounds):
                for offset in range(len(arms)):
                    samples, measure = arms[(round_ + offset) % len(arms)]
                    gc.collect()
                    samples.append(measure(round_))
        finally:
            code_cache.keep_on_disk(saved)
    gc.collect()
    plughost_ns, bare_ns = (samples for samples, _ in arms)
    ratio = statistics.median(plughost_ns) / statistics.median(bare_ns)
    return Outcome(
        name="loader.cold_load_compiled",
        title=(
            f"first load of a {BUNDLE_MODULES}-file bundle in a new process, compiled code "
            "on disk: plughost vs bare importlib"
        ),
        notes=[
            SIBLING_NOTE,
            "plughost: code_cache.clear() before each load, its disk cache filled once; "
            "bare: the same import as the cold benchmark, reading the __pycache__ that "
            "py_compile wrote (what a plain Python host, the peer included, runs from)",
        ],
        figures=[
            ("plughost, code cache on disk", spread(plughost_ns)),
            ("bare importlib, __pycache__", spread(bare_ns)),
        ],
        verdict=(
            f"plughost {ms(statistics.median(plughost_ns))} vs bare "
            f"{ms(statistics.median(bare_ns))} (medians of {rounds}) "
            f"-> {ratio:.3f}x plughost/bare"
        ),
        goal="<= 1.00x",
        met=ratio <= 1.0,
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


def _time_bare_namespaces(copy_paths: list[list[Path]]) -> int:
    """Bare-import copy i under unique names; keep all loaded while timing, then remove them."""
    gc.collect()
    start = time.perf_counter_ns()
    loaded = [_bare_load(paths, f"bench_bare_c{i:04d}") for i, paths in enumerate(copy_paths)]
    elapsed = time.perf_counter_ns() - start
    for names in loaded:
        _forget(names)
    gc.collect()
    return elapsed


def _time_exec_floor(paths: list[Path], namespaces: int) -> int:
    """Exec pre-compiled code into plain modules without the import system; no loader beats it."""
    codes = [
        (path, compile(path.read_bytes(), str(path), "exec", dont_inherit=True)) for path in paths
    ]
    modules: list[ModuleType] = []
    gc.collect()
    start = time.perf_counter_ns()
    for i in range(namespaces):
        for path, code in codes:
            module = ModuleType(f"bench_floor_{i:04d}_{path.stem}")
            module.__file__ = str(path)
            sys.modules[module.__name__] = module
            exec(code, module.__dict__)
            modules.append(module)
    elapsed = time.perf_counter_ns() - start
    _forget([module.__name__ for module in modules])
    modules.clear()
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

        # Whichever run first grows the process to its full size paid up to ~25% more in
        # trials, so an untimed run goes first.
        warmup_ns, _, loaded = _time_plughost_namespaces([folder] * namespaces)
        _unload_all(loaded)

        one_ns, one_hits, loaded = _time_plughost_namespaces([folder] * namespaces)
        modules_loaded = sum(len(bundle.modules) for bundle in loaded)
        one_unload_ns = _unload_all(loaded)
        bare_ns = _time_bare_namespaces(copy_paths)
        copies_ns, copies_hits, loaded = _time_plughost_namespaces(copies)
        copies_unload_ns = _unload_all(loaded)
        floor_ns = _time_exec_floor(paths, namespaces)
        _assert_no_bytecode(Path(tmp))
        description = _bundle_description(paths)
    code_cache.clear()
    if _namespace_keys() or loaded_namespaces():
        raise RuntimeError("namespaces left loaded after unloading all")
    speedup = bare_ns / one_ns
    copies_speedup = bare_ns / copies_ns
    total = namespaces * BUNDLE_MODULES

    def per_run(elapsed: int) -> str:
        return f"{seconds(elapsed)} total, {ms(elapsed / namespaces)} per namespace"

    return Outcome(
        name="loader.many_namespaces",
        title=f"one {BUNDLE_MODULES}-file bundle into {namespaces:,} namespaces vs bare imports",
        notes=[
            SIBLING_NOTE,
            f"each run keeps all {namespaces:,} namespaces loaded until its timed loop ends "
            f"({modules_loaded:,} modules); code_cache is cleared before each plughost run, "
            "so its first load compiles",
            f"bare: {namespaces:,} copies on disk, each compiled from source, no __pycache__",
            f"an untimed plughost run first grows the process "
            f"(it took {seconds(warmup_ns)}, the timed one-folder run {seconds(one_ns)})",
        ],
        figures=[
            ("bundle", description),
            ("plughost, one folder", f"{per_run(one_ns)}, cache hits {one_hits:,}/{total:,}"),
            (
                f"plughost, {namespaces:,} copies",
                f"{per_run(copies_ns)}, cache hits {copies_hits:,}/{total:,} (co_filename copies)",
            ),
            ("bare importlib, copies", per_run(bare_ns)),
            ("speedup, copies variant", f"{copies_speedup:.2f}x bare/plughost"),
            (
                "exec-only floor (info)",
                f"{per_run(floor_ns)}: pre-compiled code exec'd into plain modules, "
                f"no import system; best possible speedup {bare_ns / floor_ns:.2f}x",
            ),
            (
                "unload all (info)",
                f"verify=False: {seconds(one_unload_ns)} one folder, "
                f"{seconds(copies_unload_ns)} copies",
            ),
        ],
        verdict=(
            f"plughost {seconds(one_ns)} vs bare {seconds(bare_ns)} "
            f"-> {speedup:.2f}x bare/plughost (copies variant {copies_speedup:.2f}x)"
        ),
        goal=f">= {NAMESPACES_GOAL:.1f}x (one folder)",
        met=speedup >= NAMESPACES_GOAL,
    )


def _traced_now() -> int:
    """Bytes traced by tracemalloc that are still alive after a full collection."""
    gc.collect()
    return tracemalloc.get_traced_memory()[0]


@dataclass
class CycleFigures:
    """What :func:`measure_cycles` saw; ``traced`` is (cycle, bytes grown since the warm-up)."""

    bundle: str
    modules_before: int
    modules_after: int
    alive: int
    verified: int
    leaky: int
    traced: list[tuple[int, int]]
    top_changes: list[str]
    elapsed_ns: int


def measure_cycles(cycles: int) -> CycleFigures:
    """Load and unload a small bundle ``cycles`` times, each into a fresh namespace.

    Memory is traced from cycle ``CYCLE_WARMUP`` on, or from interpreter start
    when run under ``-X tracemalloc``; growth is counted from that cycle either way.
    """
    preload_imports()
    checkpoints = {cycles * k // 4 for k in (1, 2, 3)} - {0}
    with _temp_root() as tmp:
        folder = Path(tmp, "small")
        paths = write_bundle(folder, modules=CYCLE_MODULES, sibling_imports=True)
        gc.collect()
        modules_before = len(sys.modules)
        verified = leaky = baseline = 0
        before: tracemalloc.Snapshot | None = None
        traced: list[tuple[int, int]] = []
        start = time.perf_counter_ns()
        for cycle in range(cycles):
            if cycle == CYCLE_WARMUP:
                if not tracemalloc.is_tracing():
                    tracemalloc.start()
                before = tracemalloc.take_snapshot()
                baseline = _traced_now()
            elif cycle in checkpoints and before is not None:
                traced.append((cycle, _traced_now() - baseline))
            loaded = load_bundle(Namespace(f"cycle{cycle}"), folder)
            verify = cycle % CYCLE_VERIFY_EVERY == CYCLE_VERIFY_EVERY - 1
            report = loaded.unload(verify=verify)
            if verify:
                verified += report.verified
                leaky += bool(report.leaked)
            del loaded, report
        elapsed = time.perf_counter_ns() - start
        top_changes: list[str] = []
        if before is not None:
            traced.append((cycles, _traced_now() - baseline))
            changes = tracemalloc.take_snapshot().compare_to(before, "lineno")
            top_changes = [str(stat) for stat in changes[:3]]
            del before, changes
        tracemalloc.stop()
        description = _bundle_description(paths)
    return CycleFigures(
        bundle=description,
        modules_before=modules_before,
        modules_after=len(sys.modules),
        alive=_namespace_modules_alive(),
        verified=verified,
        leaky=leaky,
        traced=traced,
        top_changes=top_changes,
        elapsed_ns=elapsed,
    )


def _measure_cycles_in_fresh_interpreter(cycles: int) -> CycleFigures:
    """Run :func:`measure_cycles` in ``python -X tracemalloc -B -m bench.loader``; read its JSON."""
    child = subprocess.run(
        [sys.executable, "-X", "tracemalloc", "-B", "-m", __name__, str(cycles)],
        cwd=Path(__file__).resolve().parent.parent,
        capture_output=True,
        text=True,
        check=False,
    )
    if child.returncode != 0:
        raise RuntimeError(f"the cycle benchmark failed:\n{child.stderr}")
    data = json.loads(child.stdout.splitlines()[-1])
    data["traced"] = [(cycle, size) for cycle, size in data["traced"]]
    return CycleFigures(**data)


def _untraced_cycle_ns(cycles: int) -> float:
    """Mean time of one load/unload cycle of the small bundle, without tracemalloc."""
    with _temp_root() as tmp:
        folder = Path(tmp, "small")
        write_bundle(folder, modules=CYCLE_MODULES, sibling_imports=True)
        gc.collect()
        start = time.perf_counter_ns()
        for cycle in range(cycles):
            load_bundle(Namespace(f"untraced{cycle}"), folder).unload(verify=False)
        elapsed = time.perf_counter_ns() - start
    gc.collect()
    return elapsed / cycles


def load_unload_cycles(cycles: int = CYCLES) -> Outcome:
    """Benchmark 3: many load/unload cycles of a small bundle must not leak."""
    seen = _measure_cycles_in_fresh_interpreter(cycles)
    untraced_ns = _untraced_cycle_ns(CYCLE_UNTRACED)
    growth = seen.traced[-1][1] if seen.traced else 0
    met = (
        growth < CYCLE_GROWTH_GOAL
        and not seen.leaky
        and not seen.alive
        and seen.modules_after == seen.modules_before
    )
    series = ", ".join(f"{cycle:,}: {size / 1024:.0f}" for cycle, size in seen.traced)
    return Outcome(
        name="loader.load_unload_cycles",
        title=f"{cycles:,} load/unload cycles of a {CYCLE_MODULES}-file bundle",
        notes=[
            "runs in a fresh interpreter under -X tracemalloc (python -X tracemalloc -B -m "
            "bench.loader): nothing the other benchmarks left can move its figures, and a table "
            "allocated before the warm-up that later moves is counted net (new minus freed)",
            f"a fresh namespace per cycle; unload(verify=True) every {CYCLE_VERIFY_EVERY}th "
            "cycle, verify=False otherwise",
            *(f"largest change since cycle {CYCLE_WARMUP}: {line}" for line in seen.top_changes),
        ],
        figures=[
            ("bundle", f"{seen.bundle}; modules import 1-2 siblings each"),
            ("sys.modules size", f"{seen.modules_before} before, {seen.modules_after} after"),
            ("namespace modules alive after", str(seen.alive)),
            ("verified unloads with leaks", f"{seen.leaky} of {seen.verified}"),
            (f"tracemalloc growth since cycle {CYCLE_WARMUP}", f"{growth / 1024:.1f} KiB"),
            ("  growth at cycle (KiB)", series),
            (
                "wall time",
                f"{seconds(seen.elapsed_ns)} for {cycles:,} cycles under tracemalloc "
                f"({ms(seen.elapsed_ns / cycles)} per cycle); untraced {ms(untraced_ns)} per "
                f"cycle ({CYCLE_UNTRACED:,} cycles in this process)",
            ),
        ],
        verdict=(
            f"growth {growth / 1024:.1f} KiB, {seen.leaky} leaky of {seen.verified} verified, "
            f"{seen.alive} modules alive, "
            f"sys.modules {seen.modules_before} -> {seen.modules_after}, {seconds(seen.elapsed_ns)}"
        ),
        goal="growth < 1 MiB, 0 leaks, 0 alive, sys.modules unchanged",
        met=met,
    )


BENCHMARKS: tuple[Callable[[], Outcome], ...] = (
    cold_load,
    cold_load_compiled,
    many_namespaces,
    load_unload_cycles,
)


if __name__ == "__main__":
    # The child side of load_unload_cycles: measure, then print the figures as one JSON line.
    sys.dont_write_bytecode = True
    print(json.dumps(dataclasses.asdict(measure_cycles(int(sys.argv[1])))))
