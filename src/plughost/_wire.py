"""Frames between host and worker: a 4-byte length, then that many bytes of JSON.

JSON, not pickle: the worker runs tenant code, and nothing it sends may run
code in the host. Streams are asyncio's, so a slow or silent peer never
blocks the event loop, and a frame larger than ``MAX_FRAME`` is refused.

Both sides send requests ``[kind, id, *args]`` and answer each with
``["reply", id, ok, value]``, where ``value`` is the result when ``ok`` and
``[kind, error type, message]`` when not; :class:`Requests` keeps one side's
account of them.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from typing import Any

MAX_FRAME = 64 * 1024 * 1024


class WireError(Exception):
    """A frame that is too large or not JSON: the peer broke the protocol."""


class RemoteError(Exception):
    """A failure to send back: which kind of error, its type name and message."""

    def __init__(self, kind: str, error_type: str, message: str) -> None:
        self.kind = kind
        self.error_type = error_type
        self.message = message
        super().__init__(message)


class Requests:
    """The requests one side has sent and still waits for, by id."""

    def __init__(self) -> None:
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[Any]] = {}

    def open(self, kind: str, *args: Any) -> tuple[list[Any], asyncio.Future[Any]]:
        """Return a new request's message and the future its reply settles."""
        request_id = next(self._ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting[request_id] = future
        return [kind, request_id, *args], future

    def drop(self, message: list[Any]) -> None:
        """Forget a request that could not be sent."""
        self._waiting.pop(message[1], None)

    def settle(self, reply: list[Any]) -> None:
        """Settle the future of the request a reply answers: its value or a RemoteError.

        A reply to no request waiting (answered already, or never asked) is ignored.
        """
        future = self._waiting.pop(reply[1], None)
        if future is None or future.done():
            return
        if reply[2]:
            future.set_result(reply[3])
        else:
            future.set_exception(RemoteError(*reply[3]))

    def fail_all(self, error: BaseException) -> None:
        """Fail every request still waiting with ``error``."""
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(error)
        self._waiting.clear()


def encode(message: Any) -> bytes:
    """Return ``message`` as one frame.

    Raises:
        TypeError, ValueError: the message holds something JSON cannot carry.
    """
    data = json.dumps(message, separators=(",", ":"), allow_nan=False).encode("utf-8")
    if len(data) > MAX_FRAME:
        raise ValueError(f"message of {len(data)} bytes is over the {MAX_FRAME}-byte limit")
    return len(data).to_bytes(4, "big") + data


async def read(reader: asyncio.StreamReader) -> Any:
    """Read one frame and return its message.

    Raises:
        asyncio.IncompleteReadError: the peer closed the connection.
        WireError: the frame is too large or not JSON.
    """
    size = int.from_bytes(await reader.readexactly(4), "big")
    if size > MAX_FRAME:
        raise WireError(f"frame of {size} bytes is over the {MAX_FRAME}-byte limit")
    data = await reader.readexactly(size)
    try:
        return json.loads(data)
    except ValueError as exc:
        raise WireError(f"frame is not JSON: {exc}") from None
