"""The HTTP API: a thin adapter over one :class:`~plughost.network.Network`.

Auth is ``Authorization: Bearer <token>``. The admin token may do everything;
a tenant token only its own tenant: deploy, call, snapshot, and mods and
events scoped to it. Health is public. Errors are JSON
``{"error": {"code", "message"}}`` with a fitting 4xx status.

One router per area (:mod:`.health`, :mod:`.events`, :mod:`.mods`,
:mod:`.instances`, :mod:`.tenants`, :mod:`.agents`, :mod:`.snapshots`), and
the docs pages (:mod:`.docs`); :func:`create_app` only composes them.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Collection
from contextlib import asynccontextmanager
from typing import TextIO

from fastapi import FastAPI

from .. import __version__
from .._body_limit import BodyLimit
from ..network import Network
from . import agents, docs, events, health, instances, mods, snapshots, state, swarm, tenants, ui
from .access_log import AccessLog
from .admin_token import admin_token_for
from .errors import EXCEPTION_HANDLERS, body_too_large

log = logging.getLogger("plughost.serve")

COMPAT = {"rapp": swarm.router}
"""The other servers' APIs :func:`create_app` can serve beside its own, by name."""

__all__ = ["admin_token_for", "create_app"]

# In this order: it is the order of the routes, and of the paths in the OpenAPI document.
_ROUTERS = (
    health.router,
    events.router,
    mods.router,
    instances.router,
    tenants.router,
    agents.router,
    snapshots.router,
)


def create_app(
    network: Network,
    *,
    admin_token_hash: str,
    max_upload_bytes: int | None = None,
    max_request_bytes: int = 1 << 20,
    access_log: TextIO | None = None,
    compat: Collection[str] = (),
) -> FastAPI:
    """The ASGI app over ``network``; starting the app starts the network.

    ``admin_token_hash`` is the sha256 (hex) of the admin token: the app never
    holds the token itself.

    ``max_upload_bytes`` bounds a bundle upload (default: the network's
    ``BundleLimits.max_total_bytes``), ``max_request_bytes`` every other
    request body; a larger body gets 413. With ``access_log``, one line per
    request is written there (see :mod:`.access_log`). ``compat`` names other
    servers' APIs to serve too: ``"rapp"``, the swarm server's (:mod:`.swarm`).
    """
    unknown = sorted(set(compat) - set(COMPAT))
    if unknown:
        raise ValueError(f"unknown compat API {unknown[0]!r}; known: {', '.join(COMPAT)}")
    app = FastAPI(
        title="plughost",
        version=__version__,
        description="A multi-tenant plugin host: tenants, snapshots, agents, mods and events.",
        lifespan=_running_network,
        exception_handlers=EXCEPTION_HANDLERS,
        openapi_url=docs.SCHEMA,
        docs_url=None,
        redoc_url=None,
    )
    state.keep(
        app,
        network,
        admin_hash=admin_token_hash,
        upload_limit=max_upload_bytes or network.limits.max_total_bytes,
    )
    app.add_middleware(
        BodyLimit,
        limit=max_request_bytes,
        too_large=body_too_large,
        streams=tenants.is_bundle_upload,
    )
    if access_log is not None:
        # Added last, so it is the outermost: a 413 or an error answer is logged too.
        app.add_middleware(AccessLog, stream=access_log)
    for router in _ROUTERS:
        app.include_router(router)
    for name in compat:
        app.include_router(COMPAT[name])
    docs.serve(app)
    ui.serve(app)
    return app


@asynccontextmanager
async def _running_network(app: FastAPI) -> AsyncIterator[None]:
    network = state.network_of_app(app)
    await network.start()
    # Where tenants can run here: a sandbox asked for where none can be made is refused.
    for name, availability in network.health()["placements"].items():
        log.info("placement %s: %s", name, availability)
    try:
        yield
    finally:
        await network.stop()
