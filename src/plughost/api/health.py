"""Health and metrics: what is loaded now (public), and the counters (admin)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response
from fastapi.responses import PlainTextResponse

from .auth import Auth
from .errors import ERRORS_OF_TEXT_ROUTES
from .state import ServedNetwork

router = APIRouter()


@router.get("/api/health", tags=["health"])
async def health(network: ServedNetwork) -> dict[str, Any]:
    """What is loaded right now. No token needed."""
    return network.health()


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
