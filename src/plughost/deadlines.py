"""Deadlines for many calls at once, kept by one sweeper instead of a timer per call.

Every agent call and every request to a worker has a deadline. A timer per
call (``asyncio.timeout``, ``wait_for``) costs a few microseconds each time,
more than a warm in-process call costs in all; here a call only writes its
deadline into a dict, and one task looks over the dict every
``resolution`` seconds and cancels what is late. A deadline is so met within
``resolution`` (a tenth of a second), which is plenty for deadlines of
seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable
from typing import Any, TypeVar

T = TypeVar("T")


class DeadlineExceeded(TimeoutError):
    """A call ran past its deadline and was cancelled."""


class Deadlines:
    """The deadlines of the calls running on one event loop.

    Args:
        resolution: seconds between two looks at the running calls.
    """

    def __init__(self, resolution: float = 0.1) -> None:
        self.resolution = resolution
        self._running: dict[int, tuple[asyncio.Task[Any], float]] = {}
        self._expired: set[int] = set()
        self._sweeper: asyncio.Task[None] | None = None

    async def run(self, awaitable: Awaitable[T], seconds: float) -> T:
        """Await ``awaitable`` in the current task, cancelling it after ``seconds``.

        Raises:
            DeadlineExceeded: it ran past ``seconds``; anything else it raised, as it
                raised it.
        """
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("Deadlines.run needs a running task")
        if self._sweeper is None:
            self._sweeper = task.get_loop().create_task(self._sweep())
        # The awaitable is alive until this returns, so its id is unique among running calls.
        token = id(awaitable)
        self._running[token] = (task, time.monotonic() + seconds)
        try:
            return await awaitable
        except asyncio.CancelledError:
            if token in self._expired:
                raise DeadlineExceeded(f"no answer within {seconds:g} s") from None
            raise
        finally:
            self._running.pop(token, None)
            if token in self._expired:  # the cancel was ours, whether it was swallowed or not
                self._expired.discard(token)
                task.uncancel()

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(self.resolution)
            now = time.monotonic()
            late = [token for token, (_, deadline) in self._running.items() if deadline <= now]
            for token in late:
                task, _ = self._running.pop(token)
                self._expired.add(token)
                task.cancel()

    async def stop(self) -> None:
        """Stop the sweeper (the network is stopping); deadlines still running are not kept."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
