"""Frames between host and worker: a 4-byte length, then that many bytes of JSON.

JSON, not pickle: the worker runs tenant code, and nothing it sends may run
code in the host. Streams are asyncio's, so a slow or silent peer never
blocks the event loop, and a frame larger than ``MAX_FRAME`` is refused.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

MAX_FRAME = 64 * 1024 * 1024


class WireError(Exception):
    """A frame that is too large or not JSON: the peer broke the protocol."""


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
