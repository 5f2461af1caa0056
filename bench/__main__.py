"""Run the benchmarks: ``python -m bench`` runs every group, ``python -m bench loader`` one."""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence

from . import (
    dependencies,
    http,
    loader,
    mods,
    network,
    peers,
    placements,
    ray_cluster,
    sandbox,
    scale,
    workers,
)
from .report import Outcome

GROUPS: dict[str, tuple[Callable[[], Outcome], ...]] = {
    "loader": loader.BENCHMARKS,
    "network": network.BENCHMARKS,
    "mods": mods.BENCHMARKS,
    "http": http.BENCHMARKS,
    "workers": workers.BENCHMARKS,
    "placements": placements.BENCHMARKS,
    "sandbox": sandbox.BENCHMARKS,
    "ray": ray_cluster.BENCHMARKS,
    "dependencies": dependencies.BENCHMARKS,
    "peers": peers.BENCHMARKS,
    "scale": scale.BENCHMARKS,
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "groups", nargs="*", metavar="group", help=f"one of {', '.join(GROUPS)} (default: all)"
    )
    args = parser.parse_args(argv)
    unknown = [group for group in args.groups if group not in GROUPS]
    if unknown:
        parser.error(f"unknown group {', '.join(unknown)}; choose from {', '.join(GROUPS)}")
    # Nothing may write or reuse bytecode: both sides of a "cold" figure compile from source.
    sys.dont_write_bytecode = True
    print(
        f"plughost benchmarks: Python {platform.python_version()} on {platform.system()} "
        f"{platform.machine()}, {os.cpu_count()} CPUs, {time.strftime('%Y-%m-%d %H:%M:%S')}"
    )
    outcomes: list[Outcome] = []
    start = time.perf_counter()
    for group in args.groups or list(GROUPS):
        for benchmark in GROUPS[group]:
            print(flush=True)
            started = time.perf_counter()
            outcome = benchmark()
            print(outcome.render(), flush=True)
            print(f"   ({time.perf_counter() - started:.0f} s)", flush=True)
            outcomes.append(outcome)
    print(f"\nSummary ({time.perf_counter() - start:.0f} s):")
    for outcome in outcomes:
        print(f"  {'MET   ' if outcome.met else 'MISSED'} {outcome.name}: {outcome.verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
