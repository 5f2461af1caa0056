"""Health and metrics: what is loaded now (public), and the counters (admin)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import PlainTextResponse

from .auth import Auth, principal_if_any
from .errors import ERRORS_OF_TEXT_ROUTES
from .state import ServedNetwork, network_of_app

router = APIRouter()


@router.get("/api/health", tags=["health"])
async def health(request: Request) -> dict[str, Any]:
    """What is loaded right now. No token needed: without one, counts in place of names;
    a tenant token sees the global mods and its own tenant's; the admin sees everything."""
    # Read from the request, not through dependencies: the route every monitor polls.
    principal = principal_if_any(request)
    network = network_of_app(request.app)
    if principal is None:
        return network.health(counts_only=True)
    return network.health(principal.tenant)


@router.get(
    "/metrics",
    response_class=PlainTextResponse,
    tags=["health"],
    responses=ERRORS_OF_TEXT_ROUTES,
)
async def metrics(principal: Auth, network: ServedNetwork) -> Response:
    """Prometheus text format (admin)."""
    principal.require_admin()
    return Response(network.metrics.render(), media_type="text/plain; version=0.0.4")
