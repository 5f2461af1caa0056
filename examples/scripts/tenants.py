"""Two tenants with the same file names, a snapshot, and a hot swap (examples/alice, bob)."""

import asyncio
import tempfile
from pathlib import Path

from plughost import Network

EXAMPLES = Path(__file__).resolve().parent.parent


async def main() -> None:
    with tempfile.TemporaryDirectory() as data:  # its own data folder, beside any server
        async with Network(data) as network:
            await network.deploy("alice", EXAMPLES / "alice")
            await network.deploy("bob", EXAMPLES / "bob")
            await network.create_snapshot("alice", "jan")
            await network.deploy("alice", EXAMPLES / "alice-v2")
            for tenant, snapshot in (("alice", None), ("alice", "jan"), ("bob", None)):
                answer = await network.call_agent(
                    tenant, "Notifier", {"message": "hi"}, snapshot=snapshot
                )
                print(f"{tenant} {snapshot or 'live'}: {answer}")


asyncio.run(main())
