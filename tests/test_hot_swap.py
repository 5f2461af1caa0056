"""Redeploys under load: no call fails, each answer comes from a version live during its call."""

from __future__ import annotations

import asyncio
import math

from plughost import Network

from .conftest import namespace_keys


def versioned(marker: int) -> dict[str, object]:
    agent = (
        "import asyncio\n"
        "import time\n"
        "from helpers import MARKER\n"
        "from plughost import Agent\n"
        "class AsyncV(Agent):\n"
        "    name = 'AsyncV'\n"
        "    async def perform(self, **kwargs):\n"
        "        await asyncio.sleep(0.002)\n"
        "        from helpers import MARKER as again\n"
        "        return again\n"
        "class SyncV(Agent):\n"
        "    name = 'SyncV'\n"
        "    def perform(self, **kwargs):\n"
        "        time.sleep(0.002)\n"
        "        return MARKER\n"
    )
    return {
        "agents": [
            {"filename": "v.py", "source": agent},
            {"filename": "helpers.py", "source": f"MARKER = {marker}\n"},
        ]
    }


async def test_redeploying_100_times_under_load_fails_no_call(network: Network) -> None:
    loop = asyncio.get_running_loop()
    await network.deploy("hot", versioned(0))
    live_from: dict[int, float] = {0: 0.0}  # marker -> when its deploy started
    live_until: dict[int, float] = {}  # marker -> when the next deploy returned
    answers: list[tuple[float, float, int]] = []
    failures: list[BaseException] = []
    running = True

    async def caller(agent: str) -> None:
        while running:
            started = loop.time()
            try:
                answer = await network.call_agent("hot", agent)
            except Exception as exc:
                failures.append(exc)
            else:
                answers.append((started, loop.time(), answer))

    callers = [asyncio.create_task(caller("AsyncV" if i % 2 else "SyncV")) for i in range(8)]
    for marker in range(1, 101):
        started = loop.time()
        deployment = await network.deploy("hot", versioned(marker))
        live_from[marker] = started
        live_until[marker - 1] = loop.time()
        assert deployment.version == marker + 1
        await asyncio.sleep(0.003)
    running = False
    await asyncio.gather(*callers)

    assert failures == []
    assert len(answers) > 200
    for started, ended, marker in answers:
        # Live at some point of the call: made live before the call ended, replaced after it began.
        assert live_from[marker] <= ended
        assert live_until.get(marker, math.inf) >= started
    assert {answer for _, _, answer in answers} > {0, 100}
    assert [ns.version for ns in network.loaded_namespaces()] == ["101"]
    prefix = network.loaded_namespaces()[0].package_name
    assert all(key.startswith(prefix) for key in namespace_keys())
