"""Deploys to a data folder in a loop, printing each acknowledged deploy; killed by the test."""

from __future__ import annotations

import asyncio
import sys

from plughost import Network


def bundle(marker: int) -> dict[str, object]:
    files = [
        {"filename": f"part{n}.py", "source": f"PART = {n}\nDATA = {'x' * (marker % 997)!r}\n"}
        for n in range(8)
    ]
    agent = (
        "from plughost import Agent\n"
        "import part0\n"
        "class Marker(Agent):\n"
        "    name = 'Marker'\n"
        f"    def perform(self, **kwargs):\n        return {marker}\n"
    )
    return {"agents": [{"filename": "marker.py", "source": agent}], "files": files}


async def main(data_dir: str, first_marker: int) -> None:
    async with Network(data_dir, keep_versions=2) as network:
        marker = first_marker
        while True:
            deployment = await network.deploy("crash", bundle(marker))
            if marker % 3 == 0:
                await network.create_snapshot("crash", f"s{marker}")
            if marker % 5 == 0:
                await network.collect_garbage()
            print(f"acked {deployment.version} {marker}", flush=True)
            marker += 1


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
