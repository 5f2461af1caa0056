"""Worker benchmarks: RPC across the process boundary, worker start, idle worker memory.

Baselines, measured in the same run: a bare ``multiprocessing.Pipe`` round
trip to an echoing child process; the same RPC to the same instance placed in
process; the memory of one in-process namespace of the same bundle.
"""

from __future__ import annotations

import asyncio
import gc
import multiprocessing
import statistics
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from plughost import Network

from .memory import rss_kb
from .report import Outcome

CALLS = 3000
ROUNDS = 5
STARTS = 10
RPC_GOAL = 1.5

CAMERA = """
from plughost import Mod, rpc


class CameraMod(Mod):
    @rpc
    def settings(self):
        return {"fps": self.config["fps"]}

    @rpc
    async def settings_async(self):
        return {"fps": self.config["fps"]}
"""
MANIFEST = '[[mods]]\npath = "camera_module"\nname = "camera"\nconfig = {fps = 30}\n'


def bundle() -> dict[str, Any]:
    return {
        "files": [
            {"filename": "camera_module.py", "source": CAMERA},
            {"filename": "plughost.toml", "source": MANIFEST},
        ]
    }


def _echo(conn: Connection) -> None:
    while True:
        try:
            message = conn.recv()
        except EOFError:
            return
        conn.send(message)


def _bare_pipe_us() -> float:
    host, child_end = multiprocessing.get_context("spawn").Pipe()
    child = multiprocessing.get_context("spawn").Process(target=_echo, args=(child_end,))
    child.start()
    try:
        message = ("rpc", 1, "camera", "settings", (), {})
        host.send(message)
        host.recv()
        start = time.perf_counter()
        for _ in range(CALLS):
            host.send(message)
            host.recv()
        return (time.perf_counter() - start) / CALLS * 1e6
    finally:
        host.close()
        child.join(5)


async def _rpc_us(network: Network, name: str, method: str) -> float:
    await network.rpc(name, method)
    start = time.perf_counter()
    for _ in range(CALLS):
        await network.rpc(name, method)
    return (time.perf_counter() - start) / CALLS * 1e6


async def _scenario(data: Path) -> Outcome:
    async with Network(data) as network:
        await network.deploy("remote", bundle(), placement="process")
        await network.deploy("local", bundle(), placement="inprocess")
        remote, local, bare, remote_async, local_async = [], [], [], [], []
        for _ in range(ROUNDS):
            remote.append(await _rpc_us(network, "remote/camera", "settings"))
            local.append(await _rpc_us(network, "local/camera", "settings"))
            remote_async.append(await _rpc_us(network, "remote/camera", "settings_async"))
            local_async.append(await _rpc_us(network, "local/camera", "settings_async"))
            bare.append(await asyncio.to_thread(_bare_pipe_us))
        starts = []
        for i in range(STARTS):
            start = time.perf_counter()
            await network.deploy(f"start{i}", bundle(), placement="process")
            await network.rpc(f"start{i}/camera", "settings")
            starts.append(time.perf_counter() - start)
            await network.remove_tenant(f"start{i}")
        worker_kb = rss_kb(network.health()["workers"]["remote"]["pid"])
        gc.collect()
        before = rss_kb()
        for i in range(200):
            await network.deploy(f"mem{i}", bundle(), placement="inprocess")
        gc.collect()
        namespace_kb = (rss_kb() - before) / 200
    med_remote, med_local, med_bare = (statistics.median(v) for v in (remote, local, bare))
    med_remote_async = statistics.median(remote_async)
    med_local_async = statistics.median(local_async)
    ratio = med_remote_async / med_bare
    return Outcome(
        name="worker_rpc",
        title="RPC to an instance in a worker vs a bare Pipe round trip and vs in process",
        figures=[
            ("bare multiprocessing.Pipe round trip", f"{med_bare:.1f} us"),
            ("async RPC method, in a worker", f"{med_remote_async:.1f} us/call"),
            ("async RPC method, in process", f"{med_local_async:.1f} us/call"),
            ("sync RPC method, in a worker", f"{med_remote:.1f} us/call"),
            ("sync RPC method, in process", f"{med_local:.1f} us/call (a worker-thread hop)"),
            ("worker RPC (async) / bare Pipe", f"{ratio:.2f}x"),
            ("worker RPC / in process, sync", f"{med_remote / med_local:.1f}x"),
            ("deploy to first answered RPC (median)", f"{statistics.median(starts) * 1000:.0f} ms"),
            ("idle worker, resident memory", f"{worker_kb / 1024:.1f} MiB"),
            (
                "in-process tenant with the same bundle",
                f"{namespace_kb:.0f} KiB each (200 tenants)",
            ),
        ],
        verdict=(
            f"worker RPC {ratio:.2f}x a bare Pipe round trip (async method; sync "
            f"{med_remote / med_bare:.2f}x); first call {statistics.median(starts) * 1000:.0f} ms "
            f"after deploy; idle worker {worker_kb / 1024:.1f} MiB vs {namespace_kb:.0f} KiB "
            "in process"
        ),
        goal=f"worker RPC at most {RPC_GOAL}x a bare Pipe round trip",
        met=ratio <= RPC_GOAL,
        notes=[f"median of {ROUNDS} rounds of {CALLS} sequential calls; {STARTS} worker starts"],
    )


def worker_rpc() -> Outcome:
    with tempfile.TemporaryDirectory(prefix="plughost-bench-") as tmp:
        outcome: Outcome = asyncio.run(_scenario(Path(tmp) / "data"))
        return outcome


BENCHMARKS = (worker_rpc,)
