"""Sending an event to the bus."""

from __future__ import annotations

from fastapi import APIRouter, Response

from ..events import Event, EventResponse
from ..protocol import dumps_async
from .auth import Auth
from .errors import ERRORS
from .state import ServedNetwork

router = APIRouter()


@router.post("/api/events", response_model=EventResponse, tags=["events"], responses=ERRORS)
async def send_event(event: Event, principal: Auth, network: ServedNetwork) -> Response:
    """Send an event; the response says whether it succeeded."""
    response = await network.send_event(event, confine_to=principal.tenant)
    # The network checked that the data is JSON; large data is encoded off the event loop.
    answer = {"success": response.success, "message": response.message, "data": response.data}
    return Response(await dumps_async(answer), media_type="application/json")
