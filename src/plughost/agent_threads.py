"""The threads that run tenants' sync code (agents, handlers), off the event loop.

A call is handed to a thread through one queue, and its answer back to the loop
with one ``call_soon_threadsafe`` that settles an ``asyncio.Future``: none of
``run_in_executor``'s chain of a ``concurrent.futures.Future``, its wrapping
future and the callbacks between them, which cost as much again as the hop.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import contextvars
import inspect
import queue
import threading
from collections.abc import Callable
from typing import Any


class AgentThreads:
    """A pool of threads for sync tenant code, started and stopped with the network.

    Threads start as calls need them, up to ``size``. They are daemon threads: a
    process that exits does not wait for a tenant's call that never returns.

    Args:
        size: how many sync calls may run at once; more wait for a thread.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._crew: _Crew | None = None

    def start(self) -> None:
        if self._crew is None:
            self._crew = _Crew(self.size)

    def stop(self) -> None:
        """Let each thread end once the calls handed to it so far are done."""
        if self._crew is not None:
            self._crew.stop()
            self._crew = None

    async def run(self, call: Callable[[], Any], finished: Callable[[], None]) -> Any:
        """Run ``call`` in a thread; ``finished`` runs when the thread returns.

        A caller cancelled meanwhile (or past its deadline) does not stop the
        thread, so ``finished`` (which releases what the call uses) waits for
        the thread, not the caller. What ``call`` raises is raised here, and an
        awaitable result is awaited here, on the loop.
        """
        if self._crew is None:
            self.start()  # used before the network started, or after it stopped
        assert self._crew is not None
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[Any] = loop.create_future()
        # In the caller's context: what it set (the calling tenant of an RPC) holds in the thread.
        self._crew.hand(_Job(call, contextvars.copy_context(), loop, answer, finished))
        result = await answer  # a cancelled caller cancels only this future, not the thread
        return await result if inspect.isawaitable(result) else result


class _Job:
    """One call, and where its answer goes."""

    __slots__ = ("answer", "call", "context", "finished", "loop")

    def __init__(
        self,
        call: Callable[[], Any],
        context: contextvars.Context,
        loop: asyncio.AbstractEventLoop,
        answer: asyncio.Future[Any],
        finished: Callable[[], None],
    ) -> None:
        self.call = call
        self.context = context
        self.loop = loop
        self.answer = answer
        self.finished = finished

    def run(self) -> None:
        """In a thread: make the call, then hand its outcome to the loop."""
        result: Any = None
        error: BaseException | None = None
        try:
            result = self.context.run(self.call)
        except BaseException as exc:  # the caller gets it, whatever it is, as before
            error = exc
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
            self.loop.call_soon_threadsafe(self._settle, result, error)

    def _settle(self, result: Any, error: BaseException | None) -> None:
        try:
            self.finished()
        finally:
            if not self.answer.done():  # else the caller was cancelled and is gone
                if error is None:
                    self.answer.set_result(result)
                elif isinstance(error, StopIteration):
                    # A future refuses it (it would end the awaiting coroutine silently).
                    failure = RuntimeError(f"the call raised StopIteration: {error}")
                    failure.__cause__ = error
                    self.answer.set_exception(failure)
                else:
                    self.answer.set_exception(error)


class _Crew:
    """The threads of one start of the pool, and the queue they take jobs from.

    ``_idle`` holds one token for each thread that finished a job and is about to
    wait for the next: a hand-off that takes a token knows a thread will take its
    job; one that finds none starts a thread while there are fewer than ``size``.
    Deque appends and pops are atomic: no lock. As in ``ThreadPoolExecutor``, whose
    idle semaphore this replaces, a token can be stale (its thread took a job that
    came with a new thread), and the next job then waits for a running call.
    """

    def __init__(self, size: int) -> None:
        self._size = size
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._idle: collections.deque[None] = collections.deque()
        self._threads = 0

    def hand(self, job: _Job) -> None:
        self._jobs.put(job)
        try:
            self._idle.pop()
        except IndexError:
            if self._threads < self._size:
                self._threads += 1
                name = f"plughost-agent_{self._threads}"
                threading.Thread(target=self._serve, name=name, daemon=True).start()

    def stop(self) -> None:
        for _ in range(self._threads):
            self._jobs.put(None)

    def _serve(self) -> None:
        job = self._jobs.get()
        while job is not None:
            job.run()
            del job  # what the call returned is not kept alive while the thread waits
            self._idle.append(None)
            job = self._jobs.get()
