"""The peer's side of ``python -m bench peers``: openagents, driven in its own venv.

Run only by the peer venv's interpreter; it must not import plughost. Each
command prints one JSON document on stdout:

* ``cycle WORKSPACE PORT N``: a network (HTTP transport on PORT) is initialized, the built-in
  ``openagents.mods.core.shared_cache`` is loaded and unloaded once to warm up,
  then ``N`` more ``load_mod`` + ``unload_mod`` cycles are timed one by one
  -> ``{"cycles_ns": [...], "loads_ns": [...]}`` (the load part of each cycle).
* ``cold WORKSPACE PORT``: the same network in this fresh interpreter, then one
  ``load_mod`` of the mod, timed alone, with no bytecode read or written for
  what the load imports -> ``{"load_ns": n}``.
* ``import``: ``import openagents.sdk.network`` (what ``openagents.core.network``
  re-exports), timed -> ``{"import_ns": n}``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import tempfile
import time
from typing import Any

MOD_PATH = "openagents.mods.core.shared_cache"


def _import() -> dict[str, Any]:
    started = time.perf_counter_ns()
    import openagents.sdk.network  # noqa: F401

    return {"import_ns": time.perf_counter_ns() - started}


async def _network(workspace: str, port: int) -> Any:
    from openagents.models.network_config import NetworkConfig
    from openagents.sdk.network import AgentNetwork

    # The network refuses to start without a transport: HTTP on 127.0.0.1, never called.
    http = {"type": "http", "config": {"host": "127.0.0.1", "port": port}}
    config = NetworkConfig(name="BenchNetwork", node_id="bench-network", transports=[http])
    network = AgentNetwork.create_from_config(config, workspace_path=workspace)
    if not await network.initialize():
        raise RuntimeError("the openagents network did not initialize")
    return network


async def _load(network: Any) -> None:
    response = await network.load_mod(MOD_PATH)
    if not response.success:
        raise RuntimeError(f"load_mod failed: {response.message}")


async def _unload(network: Any) -> None:
    response = await network.unload_mod(MOD_PATH)
    if not response.success:
        raise RuntimeError(f"unload_mod failed: {response.message}")


async def _cycle(workspace: str, port: int, count: int) -> dict[str, Any]:
    network = await _network(workspace, port)
    try:
        await _load(network)
        await _unload(network)
        cycles, loads = [], []
        for _ in range(count):
            started = time.perf_counter_ns()
            await _load(network)
            loaded = time.perf_counter_ns()
            await _unload(network)
            cycles.append(time.perf_counter_ns() - started)
            loads.append(loaded - started)
    finally:
        await network.shutdown()
    return {"cycles_ns": cycles, "loads_ns": loads}


async def _cold(workspace: str, port: int) -> dict[str, Any]:
    network = await _network(workspace, port)
    try:
        if any(name.startswith(MOD_PATH) for name in sys.modules):
            raise RuntimeError(f"{MOD_PATH} was imported before the cold load")
        # What the load imports is compiled from source: no bytecode read, none written.
        with tempfile.TemporaryDirectory(prefix="peer-no-bytecode-") as empty:
            sys.pycache_prefix = empty
            sys.dont_write_bytecode = True
            started = time.perf_counter_ns()
            await _load(network)
            elapsed = time.perf_counter_ns() - started
        await _unload(network)
    finally:
        await network.shutdown()
    return {"load_ns": elapsed}


def main(argv: list[str]) -> int:
    # The per-event INFO lines of load_mod/unload_mod are kept off: only the work is timed.
    logging.basicConfig(level=logging.WARNING)
    command = argv[0]
    if command == "import":
        result = _import()
    elif command == "cycle":
        result = asyncio.run(_cycle(argv[1], int(argv[2]), int(argv[3])))
    elif command == "cold":
        result = asyncio.run(_cold(argv[1], int(argv[2])))
    else:
        raise SystemExit(f"unknown command {command!r}")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
