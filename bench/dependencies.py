"""A tenant's own libraries: what a deploy costs with them installed or not, and what a
namespace's own copy of a library costs in memory against the host's shared one.

Baselines, measured in the same run: the same bundle deployed without dependencies, and
the host's own copy of the library (``idna``, which the host has: httpx needs it). The
installer's download cache is warm after the first round (as on a server that installed
the set once); an "uncached" deploy is one whose environment is not in the data folder.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import statistics
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

from plughost import Network

from .report import Outcome

ROUNDS = 5
CACHED_GOAL = 1.5  # a deploy whose environment is installed, against one with none

# The library is imported at the first call, so that a deploy's time is the deploy's own.
AGENT = """
from agents.basic_agent import BasicAgent


class Encode(BasicAgent):
    name = "Encode"

    def perform(self, **kwargs):
        import idna
        return idna.encode("bücher.example").decode()
"""


def _bundle(dependencies: list[str], note: str) -> dict[str, Any]:
    # Both with a plughost.toml: the same files stored, the same manifest read.
    toml = "dependencies = [" + ", ".join(f'"{d}"' for d in dependencies) + "]\n"
    return {
        "files": [
            {"filename": "encode_agent.py", "source": AGENT + f"# {note}\n"},
            {"filename": "plughost.toml", "source": toml},
        ]
    }


async def _deploys(data: Path, requirement: str) -> dict[str, list[float]]:
    found: dict[str, list[float]] = {"none": [], "uncached": [], "cached": []}
    async with Network(data) as network:
        for round_ in range(ROUNDS):
            for kind in ("none", "uncached", "cached"):
                tenant = f"{kind}-{round_}"
                asked = [] if kind == "none" else [requirement]
                if kind == "uncached":
                    # A data folder of its own each round: its environment is not there yet.
                    async with Network(data.parent / f"fresh-{round_}") as fresh:
                        started = time.perf_counter()
                        await fresh.deploy(tenant, _bundle(asked, tenant))
                        found[kind].append(time.perf_counter() - started)
                    continue
                started = time.perf_counter()
                await network.deploy(tenant, _bundle(asked, tenant))
                found[kind].append(time.perf_counter() - started)
    return found


async def _memory(data: Path, requirement: str) -> dict[str, int]:
    found = {}
    async with Network(data) as network:
        await network.deploy("warm", _bundle([requirement], "warm"))  # installed beforehand
        for kind, asked in (("shared", []), ("own", [requirement])):
            tracemalloc.start()
            await network.deploy(kind, _bundle(asked, kind))
            await network.call_agent(kind, "Encode")
            found[kind] = tracemalloc.get_traced_memory()[0]
            tracemalloc.stop()
    return found


def dependency_costs() -> Outcome:
    import idna  # the host's copy, loaded as a server that uses it has it

    assert idna.encode("example")
    version = importlib.metadata.version("idna")
    requirement = f"idna=={version}"
    with tempfile.TemporaryDirectory(prefix="plughost-bench-") as tmp:
        deploys = asyncio.run(_deploys(Path(tmp) / "data", requirement))
        memory = asyncio.run(_memory(Path(tmp) / "memory", requirement))
    median = {kind: statistics.median(times) * 1000 for kind, times in deploys.items()}
    ratio = median["cached"] / median["none"]
    figures = [
        ("deploy, no dependencies", f"median {median['none']:.1f} ms"),
        ("deploy, installed already", f"median {median['cached']:.1f} ms"),
        ("deploy, installed now", f"median {median['uncached']:.1f} ms"),
        (
            "a namespace's memory",
            f"its own {requirement}: {memory['own'] / 1024:.0f} KiB; "
            f"the host's copy: {memory['shared'] / 1024:.0f} KiB (traced, deploy and a call)",
        ),
    ]
    return Outcome(
        name="dependency_costs",
        title="a tenant's own libraries: deploy time and memory",
        figures=figures,
        verdict=(
            f"installed already {ratio:.2f}x a deploy without dependencies; installing "
            f"{median['uncached'] / median['none']:.1f}x; own copy "
            f"{memory['own'] / max(memory['shared'], 1):.1f}x the shared one in memory"
        ),
        goal=f"a deploy whose environment is installed at most {CACHED_GOAL}x one without",
        met=ratio <= CACHED_GOAL,
        notes=[
            f"{ROUNDS} rounds, interleaved; the installer is uv, its download cache warm",
            "an uncached deploy opens a fresh data folder each round (its open is not timed)",
        ],
    )


BENCHMARKS = (dependency_costs,)
