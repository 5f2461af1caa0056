"""The access log: one line per request, cheap enough to leave on.

A line is formatted when its response starts and kept in a buffer that is
written out in one call at most ``interval`` seconds later (or once it holds
``max_buffered`` bytes), instead of a logging record, a formatter and a flush
per request. The timestamp is formatted once per second.
"""

from __future__ import annotations

import asyncio
import time
from typing import TextIO

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class AccessLog:
    """ASGI middleware that writes ``<time> <client> "<method> <path> HTTP/<v>" <status> <ms>ms``.

    Args:
        app: the app it logs for.
        stream: where lines go (``plughost serve``: standard error).
        interval: the longest a line waits in the buffer, in seconds.
        max_buffered: bytes after which the buffer is written at once.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        stream: TextIO,
        interval: float = 0.2,
        max_buffered: int = 64 * 1024,
    ) -> None:
        self.app = app
        self.stream = stream
        self.interval = interval
        self.max_buffered = max_buffered
        self._lines: list[str] = []
        self._buffered = 0
        self._flush_scheduled = False
        self._second = -1
        self._stamp = ""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.app(scope, receive, self._flushing_at_shutdown(send))
            return
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 0

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            self._add(scope, status or 500, time.perf_counter() - started)

    def _flushing_at_shutdown(self, send: Send) -> Send:
        async def sending(message: Message) -> None:
            if message["type"].startswith("lifespan.shutdown."):
                self.flush()  # the last requests' lines, before the server exits
            await send(message)

        return sending

    def _add(self, scope: Scope, status: int, seconds: float) -> None:
        now = time.time()
        if int(now) != self._second:
            self._second = int(now)
            self._stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(now))
        client = scope.get("client")
        path = scope.get("raw_path", b"").decode("latin-1") or scope["path"]
        if scope.get("query_string"):
            path += "?" + scope["query_string"].decode("latin-1")
        line = (
            f"{self._stamp} {client[0] if client else '-'} "
            f'"{scope["method"]} {path} HTTP/{scope["http_version"]}" '
            f"{status} {seconds * 1000:.1f}ms\n"
        )
        self._lines.append(line)
        self._buffered += len(line)
        if self._buffered >= self.max_buffered:
            self.flush()
        elif not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_later(self.interval, self.flush)

    def flush(self) -> None:
        """Write out what is buffered."""
        self._flush_scheduled = False
        if self._lines:
            text, self._lines, self._buffered = "".join(self._lines), [], 0
            self.stream.write(text)
            self.stream.flush()
