"""A bundle placed in a worker process (examples/worker): call its agent, then read health."""

import asyncio
import os
import tempfile
from pathlib import Path

from plughost import Network

WORKER = Path(__file__).resolve().parent.parent / "worker"


async def main() -> None:
    with tempfile.TemporaryDirectory() as data:
        async with Network(data) as network:
            deployment = await network.deploy("crunch", WORKER)  # plughost.toml: "process"
            print("placement:", deployment.placement)
            answer = await network.call_agent("crunch", "Stats", {"numbers": [3, 1, 4, 1, 5]})
            print("answer:", answer)
            print("agent ran in another process:", answer["pid"] != os.getpid())
            for tenant, worker in network.health()["workers"].items():
                print(f"worker {tenant}: state {worker['state']}, pid {worker['pid']}")


asyncio.run(main())
