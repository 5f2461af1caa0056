"""Sending an event to the bus."""

from __future__ import annotations

from fastapi import APIRouter

from ..events import Event, EventResponse
from .auth import Auth
from .errors import ERRORS
from .state import ServedNetwork

router = APIRouter()


@router.post("/api/events", response_model=EventResponse, tags=["events"], responses=ERRORS)
async def send_event(event: Event, principal: Auth, network: ServedNetwork) -> EventResponse:
    """Send an event; the response says whether it succeeded."""
    return await network.send_event(event, confine_to=principal.tenant)
