"""Every call has a deadline: one sweeper ends what is late, in process and in a worker."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import pytest

from plughost import CallTimeoutError, Network
from plughost.deadlines import DeadlineExceeded, Deadlines

from .conftest import PLACEMENTS, agent_bundle


async def test_a_late_call_is_cancelled_and_said_late() -> None:
    deadlines = Deadlines(resolution=0.01)
    cancelled = asyncio.Event()

    async def slow() -> str:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return "never"

    with pytest.raises(DeadlineExceeded, match=r"within 0\.05 s"):
        await deadlines.run(slow(), 0.05)
    assert cancelled.is_set()
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]
    assert await deadlines.run(asyncio.sleep(0, "in time"), 5) == "in time"
    await deadlines.stop()


async def test_a_timeout_the_call_raises_itself_is_its_own() -> None:
    deadlines = Deadlines(resolution=0.01)

    async def raises() -> None:
        raise TimeoutError("the agent's own")

    with pytest.raises(TimeoutError, match="the agent's own") as raised:
        await deadlines.run(raises(), 5)
    assert not isinstance(raised.value, DeadlineExceeded)
    await deadlines.stop()


async def test_a_call_that_swallows_its_cancellation_leaves_the_task_clean() -> None:
    deadlines = Deadlines(resolution=0.01)

    async def stubborn() -> str:
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(30)
        return "finished anyway"

    assert await deadlines.run(stubborn(), 0.05) == "finished anyway"
    assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]
    await asyncio.sleep(0.05)  # nothing is cancelled later by mistake
    await deadlines.stop()


SLOW = """

import asyncio
import time


class SlowAsync(BasicAgent):
    name = "SlowAsync"

    async def perform(self, **kwargs):
        await asyncio.sleep(30)


class SlowSync(BasicAgent):
    name = "SlowSync"

    def perform(self, **kwargs):
        time.sleep(kwargs.get("seconds", 30))
        return "woke"
"""


@pytest.mark.parametrize("placement", PLACEMENTS)
@pytest.mark.parametrize("agent", ["SlowAsync", "SlowSync"])
async def test_an_agent_call_past_call_timeout_gets_a_clear_error(
    tmp_path: Path, placement: str, agent: str
) -> None:
    async with Network(tmp_path / "data", call_timeout=0.3) as network:
        await network.deploy("slow", agent_bundle("ok", extra=SLOW), placement=placement)  # type: ignore[arg-type]
        with pytest.raises(CallTimeoutError, match=f"{agent!r} of tenant 'slow'"):
            await network.call_agent("slow", agent, {"seconds": 1})
        assert await network.call_agent("slow", "Notifier", {"message": "m"}) == "ok:m"


async def test_a_timed_out_sync_call_keeps_its_namespace_until_the_thread_returns(
    tmp_path: Path,
) -> None:
    async with Network(tmp_path / "data", call_timeout=0.2) as network:
        await network.deploy("slow", agent_bundle("v1", extra=SLOW))
        with pytest.raises(CallTimeoutError):
            await network.call_agent("slow", "SlowSync", {"seconds": 1})
        await network.deploy("slow", agent_bundle("v2"))
        # The thread still runs the old code: its namespace drains, it is not unloaded under it.
        assert {ns.version for ns in network.loaded_namespaces()} == {"1", "2"}
        for _ in range(300):  # bounded: the thread sleeps 1 s
            if {ns.version for ns in network.loaded_namespaces()} == {"2"}:
                break
            await asyncio.sleep(0.01)
        assert {ns.version for ns in network.loaded_namespaces()} == {"2"}


@pytest.mark.parametrize("placement", PLACEMENTS)
async def test_an_rpc_call_past_call_timeout_gets_a_clear_error(
    tmp_path: Path, placement: str
) -> None:
    slow = """
import time
from plughost import Mod, rpc

class SlowMod(Mod):
    @rpc
    def nap(self):
        time.sleep(3)
"""
    bundle = {
        "files": [
            {"filename": "slow_module.py", "source": slow},
            {
                "filename": "plughost.toml",
                "source": '[[mods]]\npath = "slow_module"\nname = "slow"\n',
            },
        ]
    }
    async with Network(tmp_path / "data", unload_timeout=1, call_timeout=0.5) as network:
        await network.deploy("sleepy", bundle, placement=placement)  # type: ignore[arg-type]
        with pytest.raises(CallTimeoutError, match=r"'slow\.nap' of tenant 'sleepy'"):
            await network.rpc("sleepy/slow", "nap")
