"""Sending an event to the bus.

The route clients call most: it reads who asks and the network from the
request itself, and parses the event in one step, instead of through
FastAPI's dependencies and body parameter, which cost it a third of its time.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from ..bounded_json import dumps_async
from ..events import Event, EventResponse
from .auth import principal_of
from .errors import ERRORS
from .state import network_of_app

router = APIRouter()

_BODY: dict[str, Any] = {
    "required": True,
    "content": {"application/json": {"schema": Event.model_json_schema()}},
}


@router.post(
    "/api/events",
    response_model=EventResponse,
    tags=["events"],
    responses=ERRORS,
    openapi_extra={"requestBody": _BODY},
)
async def send_event(request: Request) -> Response:
    """Send an event; the response says whether it succeeded."""
    principal = principal_of(request)
    try:
        event = Event.model_validate_json(await request.body())
    except ValidationError as exc:
        raise RequestValidationError(exc.errors(include_url=False)) from None
    response = await network_of_app(request.app).send_event(event, confine_to=principal.tenant)
    # The network checked that the data is JSON; large data is encoded off the event loop.
    answer = {"success": response.success, "message": response.message, "data": response.data}
    return Response(await dumps_async(answer), media_type="application/json")
