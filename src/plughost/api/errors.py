"""Errors as the API answers them: JSON ``{"error": {"code", "message"}}`` and a status.

A route raises :class:`ApiError`; a :class:`~plughost.errors.PlughostError`
gets its status and code from ``_STATUSES``. ``ERRORS`` documents the error
responses of a route.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from ..errors import (
    AgentError,
    AmbiguousNameError,
    BundleLoadError,
    BundleRejectedError,
    BundleTooLargeError,
    CallTimeoutError,
    DependencyError,
    DuplicateAgentError,
    DuplicateSnapshotError,
    InstanceConfigError,
    InvalidArgumentsError,
    InvalidNameError,
    LimitExceededError,
    ModAlreadyLoadedError,
    ModLoadError,
    ModNotLoadedError,
    ModPathRefusedError,
    NotStartedError,
    OutsideTenantError,
    PlacementUnavailableError,
    PlughostError,
    ReadOnlyStateError,
    RpcError,
    StateTooLargeError,
    TenantSealedError,
    UnknownAgentError,
    UnknownRpcError,
    UnknownSnapshotError,
    UnknownTenantError,
    WorkerBusyError,
    WorkerCrashed,
    WorkerStartFailed,
)
from ..feed import REFUSED

# Most specific first: the first matching class decides the status.
_STATUSES: list[tuple[type[Exception], int, str]] = [
    (BundleTooLargeError, 413, "too_large"),
    (BundleRejectedError, 400, "bundle_rejected"),
    (BundleLoadError, 422, "bundle_load_failed"),
    (DuplicateAgentError, 422, "duplicate_agent"),
    (InvalidArgumentsError, 422, "invalid_arguments"),
    (InstanceConfigError, 422, "invalid_instance_config"),
    (InvalidNameError, 400, "invalid_name"),
    (UnknownTenantError, 404, "unknown_tenant"),
    (UnknownSnapshotError, 404, "unknown_snapshot"),
    (UnknownAgentError, 404, "unknown_agent"),
    (ModNotLoadedError, 404, "mod_not_loaded"),
    (UnknownRpcError, 404, "unknown_rpc"),
    (AmbiguousNameError, 409, "ambiguous_name"),
    (DuplicateSnapshotError, 409, "duplicate_snapshot"),
    (ModAlreadyLoadedError, 409, "mod_already_loaded"),
    (ModPathRefusedError, 403, "mod_path_refused"),
    (OutsideTenantError, 403, "forbidden"),
    (ModLoadError, 422, "mod_load_failed"),
    (AgentError, 422, "agent_error"),
    (RpcError, 422, "rpc_error"),
    (WorkerStartFailed, 422, "bundle_load_failed"),
    (PlacementUnavailableError, 422, "placement_unavailable"),
    (DependencyError, 422, "dependency_failed"),
    (LimitExceededError, 422, "limit_exceeded"),
    (WorkerCrashed, 503, "worker_crashed"),
    (WorkerBusyError, 429, "worker_busy"),
    (CallTimeoutError, 504, "call_timeout"),
    (TenantSealedError, 423, "tenant_sealed"),
    (ReadOnlyStateError, 423, "state_read_only"),
    (StateTooLargeError, 422, "state_too_large"),
    (NotStartedError, 503, "not_started"),
]


class ApiError(Exception):
    """An error answered as ``{"error": {"code", "message"}}`` with ``status``."""

    def __init__(self, status: int, code: str, message: str) -> None:
        self.status = status
        self.code = code
        self.message = message
        super().__init__(message)


def error_response(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


def body_too_large(limit: int) -> JSONResponse:
    """The answer to a request body over ``limit`` bytes."""
    return error_response(413, "too_large", f"the request body is over {limit} bytes")


# -- what the error responses look like, for the OpenAPI document --------------------


class ErrorBody(BaseModel):
    code: str
    message: str


class ErrorResponse(BaseModel):
    error: ErrorBody


_ERROR_STATUSES = (400, 401, 403, 404, 409, 413, 415, 422, 423, 503, 504)
ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse} for status in _ERROR_STATUSES
}
# A "model" would be documented in the route's own media type; errors are JSON on every route.
ERRORS_OF_TEXT_ROUTES: dict[int | str, dict[str, Any]] = {
    status: {
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}}
    }
    for status in _ERROR_STATUSES
}


# -- the exception handlers ----------------------------------------------------------


_REFUSALS = frozenset({401, 403, 423, 429})
"""Statuses the feed tells of: a request refused, rather than one that failed."""


def _tell_refused(request: Request, status: int, code: str) -> None:
    # Imported here: auth is above this module (it raises ApiError).
    from .auth import principal_if_any
    from .state import network_of_app

    try:
        principal = principal_if_any(request)
    except ApiError:
        principal = None  # a bad token: the admin's to see
    tenant = principal.tenant if principal is not None else None
    what = f"{request.method} {request.url.path}: {status} {code}"
    feed = network_of_app(request.app).feed
    if principal is None:
        feed.publish_for_admin(REFUSED, None, f"{what} (no valid token)")
    else:
        feed.publish_for_admin(REFUSED, tenant, what)


async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
    if exc.status in _REFUSALS:
        _tell_refused(request, exc.status, exc.code)
    return error_response(exc.status, exc.code, exc.message)


def status_of(exc: PlughostError) -> tuple[int, str]:
    """The HTTP status and error code an error is answered with."""
    for cls, status, code in _STATUSES:
        if isinstance(exc, cls):
            return status, code
    return 400, "error"


async def _plughost_error(request: Request, exc: PlughostError) -> JSONResponse:
    status, code = status_of(exc)
    if status in _REFUSALS:
        _tell_refused(request, status, code)
    return error_response(status, code, str(exc))


async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = exc.errors()
    for error in errors:
        if error.get("type") == "json_invalid":
            why = (error.get("ctx") or {}).get("error")
            message = "the request body is not valid JSON" + (f": {why}" if why else "")
            return error_response(400, "invalid_json", message)
    problems = "; ".join(
        f"{'.'.join(str(p) for p in error.get('loc', ()))}: {error.get('msg')}" for error in errors
    )
    return error_response(422, "invalid_request", problems)


async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    # FastAPI answers 400 itself only when it cannot parse a body (too deeply nested JSON).
    codes = {400: "invalid_json", 404: "not_found", 405: "method_not_allowed"}
    code = codes.get(exc.status_code, "http_error")
    return error_response(exc.status_code, code, str(exc.detail))


EXCEPTION_HANDLERS: dict[
    int | type[Exception], Callable[[Request, Any], Coroutine[Any, Any, Response]]
] = {
    ApiError: _api_error,
    PlughostError: _plughost_error,
    RequestValidationError: _invalid,
    StarletteHTTPException: _http_error,
}
