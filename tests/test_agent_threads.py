"""The agent threads: sync tenant code off the event loop, with the caller's context."""

from __future__ import annotations

import asyncio
import contextvars
import threading
from collections.abc import AsyncIterator

import pytest

from plughost.agent_threads import AgentThreads

tenant_var: contextvars.ContextVar[str] = contextvars.ContextVar("tenant", default="none")


@pytest.fixture
async def threads() -> AsyncIterator[AgentThreads]:
    pool = AgentThreads(2)
    pool.start()
    yield pool
    pool.stop()


async def test_a_call_runs_in_a_thread_with_the_callers_context(threads: AgentThreads) -> None:
    tenant_var.set("acme")
    finished: list[str] = []

    def call() -> tuple[str, int]:
        return tenant_var.get(), threading.get_ident()

    seen, thread = await threads.run(call, lambda: finished.append("done"))
    assert seen == "acme"
    assert thread != threading.get_ident()
    assert finished == ["done"]


async def test_what_the_call_sets_in_its_context_stays_there(threads: AgentThreads) -> None:
    tenant_var.set("acme")
    await threads.run(lambda: tenant_var.set("changed"), lambda: None)
    assert tenant_var.get() == "acme"


async def test_an_exception_is_raised_to_the_caller_and_finished_still_runs(
    threads: AgentThreads,
) -> None:
    finished: list[str] = []

    def call() -> None:
        raise KeyError("no robot")

    with pytest.raises(KeyError, match="no robot"):
        await threads.run(call, lambda: finished.append("done"))
    assert finished == ["done"]


async def test_an_awaitable_result_is_awaited_on_the_loop(threads: AgentThreads) -> None:
    async def later() -> int:
        return threading.get_ident()

    assert await threads.run(later, lambda: None) == threading.get_ident()


async def test_a_cancelled_caller_leaves_the_thread_running_and_finished_waits_for_it(
    threads: AgentThreads,
) -> None:
    started, release = threading.Event(), threading.Event()
    finished = asyncio.Event()

    def call() -> str:
        started.set()
        release.wait()
        return "late"

    caller = asyncio.create_task(threads.run(call, finished.set))
    await asyncio.to_thread(started.wait)
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert not finished.is_set()  # the thread still runs the call
    release.set()
    await finished.wait()


async def test_size_bounds_the_calls_that_run_at_once(threads: AgentThreads) -> None:
    lock = threading.Lock()
    running = most = 0
    used: set[threading.Thread] = set()
    two_run, release = threading.Event(), threading.Event()

    def call() -> None:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
            used.add(threading.current_thread())
            if running == 2:
                two_run.set()
        release.wait()
        with lock:
            running -= 1

    calls = [asyncio.create_task(threads.run(call, lambda: None)) for _ in range(5)]
    await asyncio.to_thread(two_run.wait)  # all five were handed over before this
    release.set()
    await asyncio.gather(*calls)
    assert most == 2
    assert len(used) == 2


async def test_stop_ends_the_threads_once_their_calls_are_done() -> None:
    pool = AgentThreads(2)
    pool.start()
    names = await asyncio.gather(
        *(pool.run(lambda: threading.current_thread().name, lambda: None) for _ in range(4))
    )
    ours = [t for t in threading.enumerate() if t.name in set(names)]
    assert ours
    pool.stop()
    for thread in ours:
        thread.join(timeout=30)
        assert not thread.is_alive()
    assert await pool.run(lambda: "again", lambda: None) == "again"  # a later call starts anew
    pool.stop()


async def test_a_call_that_raises_stopiteration_fails_instead_of_hanging(
    threads: AgentThreads,
) -> None:
    def stops() -> None:
        raise StopIteration("done early")

    finished: list[bool] = []
    with pytest.raises(RuntimeError, match="raised StopIteration: done early"):
        await asyncio.wait_for(threads.run(stops, lambda: finished.append(True)), 10)
    assert finished == [True]
