"""The supervisor on its own, with fake worker processes: start, crash, backoff, failed, stop."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from plughost import WorkerCrashed, WorkerStartFailed
from plughost.deadlines import Deadlines
from plughost.lifecycle import TransitionError, WorkerState
from plughost.placements.worker import MAX_ATTEMPTS, Ready, Supervisor
from plughost.protocol import WorkerSpec

SPEC = WorkerSpec(
    "robot1",
    1,
    "/nowhere",
    "/nowhere",
    (("camera_module", "camera", {}, ()), ("mapper_module", "mapper", {}, ())),
)


class Processes:
    """A factory of fake worker processes, each started as the script says."""

    def __init__(self, outcomes: list[str]) -> None:
        self.outcomes = outcomes  # "ok" or "fail", one per start; the last repeats
        self.made: list[FakeProcess] = []
        self.pids = itertools.count(100)

    def __call__(
        self,
        spec: WorkerSpec,
        on_request: Callable[[str, tuple[Any, ...]], Awaitable[Any]],
        on_exit: Callable[[str], None],
    ) -> FakeProcess:
        outcome = self.outcomes[min(len(self.made), len(self.outcomes) - 1)]
        process = FakeProcess(spec, on_exit, next(self.pids), outcome)
        self.made.append(process)
        return process


class FakeProcess:
    def __init__(
        self, spec: WorkerSpec, on_exit: Callable[[str], None], pid: int, outcome: str
    ) -> None:
        self.spec = spec
        self.on_exit = on_exit
        self._pid = pid
        self.outcome = outcome
        self.started_at = 0.0
        self.stopped = False
        self.killed = False

    @property
    def pid(self) -> int | None:
        return self._pid

    async def start(self) -> Ready:
        if self.outcome == "fail":
            raise WorkerStartFailed(self.spec.tenant, "load", "ImportError", "no module")
        instances = [{"name": name} for _, name, _, _ in self.spec.instances]
        return {"Agent": ["does things", {}]}, instances

    async def request(self, kind: str, *args: Any) -> Any:
        return [kind, *args]

    def kill(self) -> None:
        self.killed = True

    async def stop(self, timeout: float) -> None:
        self.stopped = True

    def die(self, reason: str = "the worker exited") -> None:
        self.on_exit(reason)


async def _no_request(kind: str, args: tuple[Any, ...]) -> Any:
    raise AssertionError("the fake worker asks nothing")


def supervisor(processes: Processes) -> Supervisor:
    return Supervisor(
        SPEC, _no_request, Deadlines(), process=processes, first_backoff=0.001, max_backoff=0.004
    )


async def _until(check: Callable[[], bool]) -> None:
    for _ in range(2000):  # bounded: backoffs here are milliseconds
        if check():
            return
        await asyncio.sleep(0.001)
    raise AssertionError("the supervisor did not get there")


async def test_a_started_worker_is_ready_and_serves() -> None:
    processes = Processes(["ok"])
    worker = supervisor(processes)
    assert worker.state is WorkerState.STARTING
    agents, instances = await worker.start()
    assert worker.state is WorkerState.READY and list(agents) == ["Agent"]
    assert [i["name"] for i in instances] == ["camera", "mapper"]
    assert await worker.request("call", "Agent", {}) == ["call", "Agent", {}]
    assert worker.describe() == {"pid": 100, "state": "ready", "restarts": 0}


async def test_a_crash_fails_requests_until_a_new_process_is_ready() -> None:
    processes = Processes(["ok"])
    worker = supervisor(processes)
    await worker.start()
    processes.made[0].die("protocol error: ProtocolError: bad frame")
    assert worker.state is WorkerState.RESTARTING
    assert worker.describe()["error"] == "protocol error: ProtocolError: bad frame"
    with pytest.raises(WorkerCrashed, match="protocol error"):
        await worker.request("call", "Agent", {})
    await _until(lambda: worker.state is WorkerState.READY)
    assert worker.restarts == 1 and worker.pid == 101 and "error" not in worker.describe()
    assert await worker.request("rpc", "camera") == ["rpc", "camera"]


async def test_failed_starts_back_off_and_end_in_failed() -> None:
    processes = Processes(["ok", "fail"])
    worker = supervisor(processes)
    await worker.start()
    processes.made[0].die()
    await _until(lambda: worker.state is WorkerState.FAILED)
    assert len(processes.made) == 1 + MAX_ATTEMPTS
    described = worker.describe()
    assert described["state"] == "failed" and "ImportError: no module" in described["error"]
    with pytest.raises(WorkerCrashed):
        await worker.request("call", "Agent", {})
    processes.made[-1].die()  # a failed worker is not restarted again
    await asyncio.sleep(0.01)
    assert len(processes.made) == 1 + MAX_ATTEMPTS and worker.state is WorkerState.FAILED


async def test_a_start_that_keeps_failing_is_retried_when_asked() -> None:
    processes = Processes(["fail", "fail", "ok"])
    worker = supervisor(processes)
    with pytest.raises(WorkerStartFailed):
        await worker.start()
    worker.keep_trying("first start failed")
    await _until(lambda: worker.state is WorkerState.READY)
    assert len(processes.made) == 3 and worker.restarts == 1


async def test_an_instance_unloaded_by_hand_is_not_brought_back() -> None:
    processes = Processes(["ok"])
    worker = supervisor(processes)
    await worker.start()
    worker.forget("mapper")
    processes.made[0].die()
    await _until(lambda: worker.state is WorkerState.READY)
    assert [i["name"] for i in worker.ready[1]] == ["camera"]
    assert [name for _, name, _, _ in processes.made[1].spec.instances] == ["camera"]


async def test_stop_ends_a_restart_in_progress_and_stops_the_process() -> None:
    processes = Processes(["ok", "fail"])
    worker = Supervisor(SPEC, _no_request, Deadlines(), process=processes, first_backoff=0.05)
    await worker.start()
    processes.made[0].die()
    await worker.stop(timeout=1)
    assert worker.state is WorkerState.STOPPED and processes.made[0].stopped
    await asyncio.sleep(0.1)  # past the backoff: no restart was started
    assert len(processes.made) == 1
    processes.made[0].die()  # a stopped worker's exit changes nothing
    assert worker.state is WorkerState.STOPPED


def test_the_lifecycle_refuses_what_its_table_does_not_allow() -> None:
    worker = Supervisor(SPEC, _no_request, Deadlines(), process=Processes(["ok"]))
    with pytest.raises(TransitionError, match="starting -> failed"):
        worker.lifecycle.set(WorkerState.FAILED)
    worker.lifecycle.set(WorkerState.STOPPED)
    with pytest.raises(TransitionError, match="stopped -> ready"):
        worker.lifecycle.set(WorkerState.READY)
