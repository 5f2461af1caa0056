"""A bound on request bodies: no request can make the server buffer without end."""

from __future__ import annotations

from collections.abc import Callable

from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BodyLimit:
    """ASGI middleware that answers ``too_large(limit)`` to a body over ``limit`` bytes.

    A body with a ``Content-Length`` is judged by it (the HTTP server
    delivers no more than it declares) and passes through untouched. A
    chunked body is read, up to the limit, before the app sees the request,
    then handed to it whole. Requests for which ``streams(scope)`` is true
    pass through unread: their route reads the body as a stream and bounds it
    itself (bundle uploads, whose limit is the bundle size limit).
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        limit: int,
        too_large: Callable[[int], Response],
        streams: Callable[[Scope], bool],
    ) -> None:
        self.app = app
        self.limit = limit
        self.too_large = too_large
        self.streams = streams

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.streams(scope):
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        declared = headers.get(b"content-length")
        if declared is not None or b"transfer-encoding" not in headers:
            if declared is not None and declared.isdigit() and int(declared) > self.limit:
                await self.too_large(self.limit)(scope, receive, send)
            else:
                await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away: there is no one to answer
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                await self.too_large(self.limit)(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body: Message | None = {"type": "http.request", "body": b"".join(chunks)}

        async def replay() -> Message:
            nonlocal body
            if body is not None:
                message, body = body, None
                return message
            return await receive()

        await self.app(scope, replay, send)
