"""The operator page, ``/``, and the routes only it needs: who a token is, the live feed,
the loaded namespaces and each tenant's recent calls.

The page (``plughost/ui``: Preact with htm, uPlot for the charts, all served from
the package, nothing from a CDN) asks for a token, keeps it in the tab's
``sessionStorage`` only, and uses the same routes as every client, with the
same rules: a tenant token sees its own tenant and the global mods.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import re
from collections.abc import AsyncGenerator, AsyncIterator
from importlib import resources
from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, Query, Request
from fastapi.responses import HTMLResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles

from ..feed import Entry
from .auth import Auth
from .errors import ERRORS, ApiError
from .parameters import TenantName
from .state import ServedNetwork

ASSETS = "/ui-assets"
MAX_STREAMS = 16
"""Feed streams one token may hold open at once."""
_KEEPALIVE_SECONDS = 15.0
_IMPORT_MAP = re.compile(r'<script type="importmap">(.*?)</script>', re.S)

router = APIRouter()


def serve(app: FastAPI) -> None:
    """Serve the page at ``/`` and its files under :data:`ASSETS` on ``app``."""
    folder = resources.files("plughost") / "ui"
    page = (folder / "index.html").read_text(encoding="utf-8")
    # The import map is the page's one inline script: allowed by its hash, no other.
    inline = _IMPORT_MAP.search(page)
    assert inline is not None, "the page's import map is missing"
    digest = base64.b64encode(hashlib.sha256(inline.group(1).encode()).digest()).decode()
    policy = (
        f"default-src 'self'; script-src 'self' 'sha256-{digest}'; style-src 'self';"
        " img-src 'self' data:; connect-src 'self'; base-uri 'none'; frame-ancestors 'none'"
    )
    app.state.operator_page = (page, policy)
    app.mount(ASSETS, StaticFiles(directory=str(folder / "assets")), name="ui-assets")
    app.include_router(router)


@router.get("/", include_in_schema=False)
async def operator_page(request: Request) -> HTMLResponse:
    page, policy = request.app.state.operator_page
    return HTMLResponse(page, headers={"Content-Security-Policy": policy})


@router.get("/api/whoami", tags=["operator page"], responses=ERRORS)
async def whoami(principal: Auth) -> dict[str, Any]:
    """Who the token is: the admin, or one tenant."""
    return {"admin": principal.is_admin, "tenant": principal.tenant}


@router.get(
    "/api/feed",
    response_class=StreamingResponse,
    tags=["operator page"],
    responses={**ERRORS, 200: {"content": {"text/event-stream": {}}}},
)
async def feed(
    principal: Auth,
    network: ServedNetwork,
    after: Annotated[int, Query(ge=0, description="replay the kept entries past this id")] = 0,
) -> StreamingResponse:
    """What happens, live, as server-sent events (``id:`` and a JSON ``data:`` line each):
    deploys, swaps, snapshots, seals, mods, instance restarts, worker state changes and
    refused requests, those the token may see. Replays the kept ones past ``after``. A
    token follows it at most :data:`MAX_STREAMS` times at once (then 429)."""
    if network.feed.following(principal.tenant) >= MAX_STREAMS:
        raise ApiError(
            429, "too_many_streams", f"this token follows the feed {MAX_STREAMS} times already"
        )
    entries = network.feed.follow(principal.tenant, after)
    return StreamingResponse(
        _events(entries),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


async def _events(entries: AsyncGenerator[Entry, None]) -> AsyncIterator[bytes]:
    # A comment line now and then keeps proxies from closing a quiet stream.
    yield b": feed\n\n"
    waiting: asyncio.Task[Entry] | None = None
    try:
        while True:
            waiting = waiting or asyncio.ensure_future(anext(entries))
            done, _ = await asyncio.wait({waiting}, timeout=_KEEPALIVE_SECONDS)
            if not done:
                yield b": keepalive\n\n"
                continue
            try:
                entry = waiting.result()
            except StopAsyncIteration:
                return
            waiting = None
            yield f"id: {entry.id}\ndata: {json.dumps(entry.to_json())}\n\n".encode()
    finally:
        # The client went (or the feed cut it off): the wait ends before the follower closes.
        if waiting is not None:
            waiting.cancel()
            with contextlib.suppress(BaseException):
                await waiting
        await entries.aclose()


@router.get("/api/namespaces", tags=["operator page"], responses=ERRORS)
async def namespaces(principal: Auth, network: ServedNetwork) -> list[dict[str, Any]]:
    """The loaded namespaces the token may see, least recently used first."""
    return network.namespaces(principal.tenant)


@router.get("/api/tenants/{tenant}/calls", tags=["operator page"], responses=ERRORS)
async def calls(
    tenant: TenantName,
    principal: Auth,
    network: ServedNetwork,
    window: Annotated[int, Query(ge=10, le=600)] = 300,
    step: Annotated[int, Query(ge=1, le=60)] = 5,
) -> dict[str, Any]:
    """The tenant's calls a second, errors a second, and p50 and p99 latency (ms), over the
    last ``window`` seconds in steps of ``step``."""
    principal.require_tenant(tenant)
    return network.call_series(tenant, window, step)
