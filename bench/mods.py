"""Mod benchmarks: event dispatch through the network, and mod load and unload time.

Baselines, measured in the same run: awaiting the mod's handler directly with
the same event; for load and unload there is none but the medians themselves.
"""

from __future__ import annotations

import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from plughost import Event, Network

from .report import Outcome

DISPATCH_EVENTS = 20_000
DISPATCH_ROUNDS = 7
CYCLES = 100

ECHO_MOD = """\
from plughost import EventResponse, Mod, on


class EchoMod(Mod):
    @on("echo.*")
    async def echo(self, event):
        return EventResponse(success=True, data=event.payload)
"""


async def _dispatch(data: Path) -> Outcome:
    async with Network(data) as network:
        (data / "mods" / "echo.py").write_text(ECHO_MOD)
        mod = await network.load_mod("echo")
        handler = mod.echo  # type: ignore[attr-defined]
        event = Event(event_name="echo.ping", destination_id="mod:echo", payload={"n": 1})
        broadcast = Event(event_name="echo.ping", payload={"n": 1})

        async def direct() -> None:
            for _ in range(DISPATCH_EVENTS):
                await handler(event)

        async def routed() -> None:
            for _ in range(DISPATCH_EVENTS):
                await network.send_event(event)

        async def broadcasted() -> None:
            for _ in range(DISPATCH_EVENTS):
                await network.send_event(broadcast)

        samples: dict[str, list[float]] = {"direct": [], "routed": [], "broadcast": []}
        for _ in range(DISPATCH_ROUNDS):
            for name, run in (("direct", direct), ("routed", routed), ("broadcast", broadcasted)):
                start = time.perf_counter_ns()
                await run()
                samples[name].append((time.perf_counter_ns() - start) / DISPATCH_EVENTS / 1000)
    med = {name: statistics.median(values) for name, values in samples.items()}
    return Outcome(
        name="event_dispatch",
        title="send_event to one async mod handler vs awaiting the handler directly",
        figures=[
            ("direct await", f"{med['direct']:.2f} us/event"),
            (
                "send_event, mod:echo",
                f"{med['routed']:.2f} us/event, {1e6 / med['routed']:,.0f} events/s",
            ),
            (
                "send_event, broadcast",
                f"{med['broadcast']:.2f} us/event, {1e6 / med['broadcast']:,.0f} events/s",
            ),
        ],
        verdict=(
            f"routed {med['routed'] / med['direct']:.1f}x and broadcast "
            f"{med['broadcast'] / med['direct']:.1f}x a direct call; "
            f"{1e6 / med['routed']:,.0f} routed events/s on one core"
        ),
        goal="report the ratio and events per second",
        met=True,
        notes=[f"median of {DISPATCH_ROUNDS} rounds of {DISPATCH_EVENTS:,} events"],
    )


async def _load_unload(data: Path) -> Outcome:
    loads: list[float] = []
    unloads: list[float] = []
    reports = []
    async with Network(data) as network:
        (data / "mods" / "echo.py").write_text(ECHO_MOD)
        for _ in range(CYCLES):
            start = time.perf_counter()
            await network.load_mod("echo")
            loads.append(time.perf_counter() - start)
            start = time.perf_counter()
            reports.append(await network.unload_mod("echo"))
            unloads.append(time.perf_counter() - start)
        # The proof that each unload freed the code runs after the unloads returned.
        while not all(report.verified for report in reports):
            await asyncio.sleep(0.05)
    leaks = sum(bool(report.leaked) for report in reports)
    load_ms = statistics.median(loads) * 1000
    unload_ms = statistics.median(unloads) * 1000
    return Outcome(
        name="mod_load_unload",
        title=f"load_mod + unload_mod of a one-handler mod, {CYCLES} cycles",
        figures=[
            ("load (median)", f"{load_ms:.2f} ms"),
            ("unload (median)", f"{unload_ms:.2f} ms (the proof that it was freed follows)"),
            ("unloads that reported a leak", f"{leaks}"),
        ],
        verdict=f"load {load_ms:.2f} ms, unload {unload_ms:.2f} ms (medians); {leaks} leaks",
        goal="report the medians; no leak",
        met=leaks == 0,
        notes=[
            "each load and unload is recorded in SQLite with an fsync, so it survives a crash",
            "leaks are counted once every unload's proof (weakrefs, garbage collection) has run",
        ],
    )


def _run(scenario: object) -> Outcome:
    with tempfile.TemporaryDirectory(prefix="plughost-bench-") as tmp:
        outcome: Outcome = asyncio.run(scenario(Path(tmp) / "data"))  # type: ignore[operator]
        return outcome


def event_dispatch() -> Outcome:
    return _run(_dispatch)


def mod_load_unload() -> Outcome:
    return _run(_load_unload)


BENCHMARKS = (event_dispatch, mod_load_unload)
