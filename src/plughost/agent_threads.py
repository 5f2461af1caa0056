"""The threads that run tenants' sync code (agents, handlers), off the event loop."""

from __future__ import annotations

import asyncio
import contextvars
import inspect
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any


class AgentThreads:
    """A pool of threads for sync tenant code, started and stopped with the network.

    Args:
        size: how many sync calls may run at once.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._executor: ThreadPoolExecutor | None = None

    def start(self) -> None:
        self._executor = ThreadPoolExecutor(self.size, "plughost-agent")

    def stop(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False)
            self._executor = None

    async def run(self, call: Callable[[], Any], finished: Callable[[], None]) -> Any:
        """Run ``call`` in a thread; ``finished`` runs when the thread returns.

        A caller cancelled meanwhile (or past its deadline) does not stop the
        thread, so ``finished`` (which releases what the call uses) waits for
        the thread, not the caller. An awaitable result is awaited here, on
        the loop.
        """
        # In the caller's context: what it set (the calling tenant of an RPC) holds in the thread.
        context = contextvars.copy_context()
        future = asyncio.get_running_loop().run_in_executor(self._executor, context.run, call)

        def done(completed: asyncio.Future[Any]) -> None:
            if not completed.cancelled():
                completed.exception()  # retrieved here if the caller is gone
            finished()

        future.add_done_callback(done)
        result = await asyncio.shield(future)
        return await result if inspect.isawaitable(result) else result
