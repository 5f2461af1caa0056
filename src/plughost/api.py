"""The HTTP API: a thin adapter over one :class:`~plughost.network.Network`.

Auth is ``Authorization: Bearer <token>``. The admin token may do everything;
a tenant token only its own tenant: deploy, call, snapshot, and mods and
events scoped to it. Health is public. Errors are JSON
``{"error": {"code", "message"}}`` with a fitting 4xx status.
"""

from __future__ import annotations

import hmac
import json
import os
import re
import secrets
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Query, Request, Response
from fastapi import Path as PathParameter
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from . import __version__
from ._body_limit import BodyLimit
from .errors import (
    AgentError,
    AmbiguousNameError,
    BundleLoadError,
    BundleRejectedError,
    BundleTooLargeError,
    CallTimeoutError,
    DuplicateAgentError,
    DuplicateSnapshotError,
    InvalidNameError,
    ModAlreadyLoadedError,
    ModLoadError,
    ModNotLoadedError,
    ModPathRefusedError,
    NotStartedError,
    OutsideTenantError,
    PlughostError,
    RpcError,
    UnknownAgentError,
    UnknownRpcError,
    UnknownSnapshotError,
    UnknownTenantError,
    WorkerCrashed,
    WorkerStartFailed,
)
from .events import Event, EventResponse
from .manifest import Placement
from .mod import ModUnloadReport
from .naming import TENANT_NAME_PATTERN
from .network import Network
from .store import Snapshot
from .tenants import SNAPSHOT_NAME_PATTERN
from .tokens import hash_token

ARCHIVE_TYPES = frozenset(
    {"application/zip", "application/gzip", "application/x-gzip", "application/octet-stream"}
)
_CHUNK = 1 << 16
_BUNDLE_PATH = re.compile(r"/api/tenants/[^/]+/bundle")

# Most specific first: the first matching class decides the status.
_ERRORS: list[tuple[type[Exception], int, str]] = [
    (BundleTooLargeError, 413, "too_large"),
    (BundleRejectedError, 400, "bundle_rejected"),
    (BundleLoadError, 422, "bundle_load_failed"),
    (DuplicateAgentError, 422, "duplicate_agent"),
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
    (WorkerCrashed, 503, "worker_crashed"),
    (CallTimeoutError, 504, "call_timeout"),
    (NotStartedError, 503, "not_started"),
]


class ApiError(Exception):
    """An error answered as ``{"error": {"code", "message"}}`` with ``status``."""

    def __init__(self, status: int, code: str, message: str) -> None:
        self.status = status
        self.code = code
        self.message = message
        super().__init__(message)


def _error_response(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status)


# -- models ------------------------------------------------------------------------


TenantName = Annotated[str, PathParameter(pattern=TENANT_NAME_PATTERN)]
ModId = Annotated[str, PathParameter(pattern=TENANT_NAME_PATTERN)]
SnapshotName = Annotated[str, PathParameter(pattern=SNAPSHOT_NAME_PATTERN)]
TenantQuery = Annotated[str | None, Query(pattern=TENANT_NAME_PATTERN)]
SnapshotQuery = Annotated[str | None, Query(pattern=SNAPSHOT_NAME_PATTERN)]


class ErrorBody(BaseModel):
    code: str
    message: str


class ErrorResponse(BaseModel):
    error: ErrorBody


class DeploymentModel(BaseModel):
    tenant: str
    version: int
    digest: str
    files: list[str]
    agents: list[str]
    created_at: float
    metadata: dict[str, Any]
    placement: str
    token: str | None = Field(
        default=None, description="the tenant token, returned once: on the tenant's first deploy"
    )


class TenantModel(BaseModel):
    name: str
    version: int
    digest: str
    agents: list[str]
    files: list[str]
    snapshots: list[str]
    created_at: float


class TenantToken(BaseModel):
    tenant: str
    token: str


class SnapshotCreate(BaseModel):
    name: str = Field(pattern=SNAPSHOT_NAME_PATTERN)


class AgentModel(BaseModel):
    name: str
    description: str
    tool: dict[str, Any]


class CallRequest(BaseModel):
    args: dict[str, Any] = Field(default_factory=dict)


class CallResponse(BaseModel):
    output: Any


class ModLoadRequest(BaseModel):
    mod_path: str = Field(min_length=1, max_length=1024)
    config: dict[str, Any] = Field(default_factory=dict)
    mod_id: str | None = Field(default=None, pattern=TENANT_NAME_PATTERN)
    tenant: str | None = Field(default=None, pattern=TENANT_NAME_PATTERN)


class ModLoadResponse(BaseModel):
    mod_id: str
    key: str
    mod_path: str


class ModUnloadResponse(BaseModel):
    mod_id: str
    mod_path: str
    message: str
    shutdown_error: str | None
    leaked: list[str]

    @classmethod
    def of(cls, report: ModUnloadReport) -> ModUnloadResponse:
        return cls(
            mod_id=report.mod_id,
            mod_path=report.mod_path,
            message=report.message,
            shutdown_error=report.shutdown_error,
            leaked=report.leaked,
        )


class ModsModel(BaseModel):
    loaded: list[str]
    count: int
    failed: list[str]
    details: dict[str, dict[str, Any]]


class InstanceModel(BaseModel):
    rpc_name: str
    tenant: str | None
    name: str
    mod_path: str
    class_: str = Field(alias="class")
    origin: str
    placement: str


class Removed(BaseModel):
    removed: str


# -- auth --------------------------------------------------------------------------


@dataclass(frozen=True)
class Principal:
    """Who is asking: the admin (``tenant is None``) or one tenant."""

    tenant: str | None

    @property
    def is_admin(self) -> bool:
        return self.tenant is None

    def require_admin(self) -> None:
        if not self.is_admin:
            raise ApiError(403, "forbidden", "this needs the admin token")

    def require_tenant(self, tenant: str) -> None:
        if not self.is_admin and self.tenant != tenant:
            raise ApiError(403, "forbidden", f"this token may only use tenant {self.tenant!r}")

    def scope(self, tenant: str | None) -> str | None:
        """The tenant a request acts in; a tenant token must name its own, never none."""
        if self.is_admin:
            return tenant
        if tenant is None:
            raise ApiError(
                403, "forbidden", f"a tenant token acts in its tenant only: name {self.tenant!r}"
            )
        self.require_tenant(tenant)
        return tenant


async def _principal(request: Request) -> Principal:
    # Async on purpose: FastAPI runs a plain-def dependency in a thread, on every request.
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(401, "unauthorized", "an 'Authorization: Bearer <token>' header is needed")
    token = token.strip()
    state = request.app.state
    if hmac.compare_digest(hash_token(token), state.admin_hash):
        return Principal(None)
    tenant = state.network.tenant_for_token(token)
    if tenant is None:
        raise ApiError(401, "unauthorized", "the token is not valid")
    return Principal(tenant)


Auth = Annotated[Principal, Depends(_principal)]
_ERROR_STATUSES = (400, 401, 403, 404, 409, 413, 415, 422, 503, 504)
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


def admin_token_for(data_dir: Path, configured: str | None = None) -> tuple[str, str]:
    """Return the admin token and where it came from.

    ``PLUGHOST_ADMIN_TOKEN``, else ``configured``, else the file ``admin_token``
    in the data folder, created (readable by its owner only) on first use.
    """
    from_env = os.environ.get("PLUGHOST_ADMIN_TOKEN")
    if from_env:
        return from_env, "the PLUGHOST_ADMIN_TOKEN environment variable"
    if configured:
        return configured, "the config file"
    path = data_dir / "admin_token"
    data_dir.mkdir(parents=True, exist_ok=True)
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip(), f"{path}"
    with os.fdopen(descriptor, "w") as out:
        out.write("pha_" + secrets.token_urlsafe(32) + "\n")
    return path.read_text().strip(), f"{path} (created now)"


# -- the app -----------------------------------------------------------------------


def create_app(
    network: Network,
    *,
    admin_token: str,
    max_upload_bytes: int | None = None,
    max_request_bytes: int = 1 << 20,
) -> FastAPI:
    """The ASGI app over ``network``; starting the app starts the network.

    ``max_upload_bytes`` bounds a bundle upload (default: the network's
    ``BundleLimits.max_total_bytes``), ``max_request_bytes`` every other
    request body; a larger body gets 413.
    """
    upload_limit = max_upload_bytes or network.limits.max_total_bytes

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await network.start()
        try:
            yield
        finally:
            await network.stop()

    app = FastAPI(
        title="plughost",
        version=__version__,
        description="A multi-tenant plugin host: tenants, snapshots, agents, mods and events.",
        lifespan=lifespan,
    )
    app.state.network = network
    app.state.admin_hash = hash_token(admin_token)
    app.add_middleware(
        BodyLimit,
        limit=max_request_bytes,
        too_large=lambda limit: _error_response(
            413, "too_large", f"the request body is over {limit} bytes"
        ),
        streams=lambda scope: (
            scope["method"] == "PUT" and _BUNDLE_PATH.fullmatch(scope["path"]) is not None
        ),
    )

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return _error_response(exc.status, exc.code, exc.message)

    @app.exception_handler(PlughostError)
    async def _plughost_error(request: Request, exc: PlughostError) -> JSONResponse:
        for cls, status, code in _ERRORS:
            if isinstance(exc, cls):
                return _error_response(status, code, str(exc))
        return _error_response(400, "error", str(exc))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        if any(error.get("type") == "json_invalid" for error in errors):
            return _error_response(400, "invalid_json", "the request body is not valid JSON")
        problems = "; ".join(
            f"{'.'.join(str(p) for p in error.get('loc', ()))}: {error.get('msg')}"
            for error in errors
        )
        return _error_response(422, "invalid_request", problems)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        # FastAPI answers 400 itself only when it cannot parse a body (too deeply nested JSON).
        codes = {400: "invalid_json", 404: "not_found", 405: "method_not_allowed"}
        code = codes.get(exc.status_code, "http_error")
        return _error_response(exc.status_code, code, str(exc.detail))

    @app.get("/api/health", tags=["health"])
    async def health() -> dict[str, Any]:
        """What is loaded right now. No token needed."""
        return network.health()

    @app.get(
        "/metrics",
        response_class=PlainTextResponse,
        tags=["health"],
        responses=ERRORS_OF_TEXT_ROUTES,
    )
    async def metrics(principal: Auth) -> Response:
        """Prometheus text format (admin)."""
        principal.require_admin()
        return Response(network.metrics.render(), media_type="text/plain; version=0.0.4")

    # -- events and mods -----------------------------------------------------------

    @app.post("/api/events", response_model=EventResponse, tags=["events"], responses=ERRORS)
    async def send_event(event: Event, principal: Auth) -> EventResponse:
        """Send an event; the response says whether it succeeded."""
        return await network.send_event(event, confine_to=principal.tenant)

    @app.get("/api/mods", response_model=ModsModel, tags=["mods"], responses=ERRORS)
    async def list_mods(principal: Auth) -> ModsModel:
        """The loaded mods (a tenant token sees global ones and its own)."""
        return ModsModel(**network.mod_status(principal.tenant))

    @app.post(
        "/api/mods",
        response_model=ModLoadResponse,
        status_code=201,
        tags=["mods"],
        responses=ERRORS,
    )
    async def load_mod(body: ModLoadRequest, principal: Auth) -> ModLoadResponse:
        """Load a mod; a tenant token loads into its own tenant only."""
        tenant = principal.scope(body.tenant)
        mod = await network.load_mod(body.mod_path, body.config, mod_id=body.mod_id, tenant=tenant)
        key = f"{tenant}/{mod.mod_id}" if tenant else mod.mod_id
        return ModLoadResponse(mod_id=mod.mod_id, key=key, mod_path=body.mod_path)

    @app.delete(
        "/api/mods/{mod_id}", response_model=ModUnloadResponse, tags=["mods"], responses=ERRORS
    )
    async def unload_mod(
        mod_id: ModId, principal: Auth, tenant: TenantQuery = None
    ) -> ModUnloadResponse:
        """Unload a mod by id (``?tenant=`` for one loaded inside a tenant)."""
        scoped = principal.scope(tenant)
        key = mod_id if scoped is None else f"{scoped}/{mod_id}"
        report = await network.unload_mod(key, confine_to=principal.tenant)
        return ModUnloadResponse.of(report)

    # -- instances -----------------------------------------------------------------

    @app.get(
        "/api/instances", response_model=list[InstanceModel], tags=["instances"], responses=ERRORS
    )
    async def list_instances(principal: Auth) -> list[dict[str, Any]]:
        """Every running mod instance (a tenant token sees its own)."""
        return [
            item
            for item in network.instances()
            if principal.is_admin or item["tenant"] == principal.tenant
        ]

    @app.post(
        "/api/instances/{rpc_name:path}/restart",
        response_model=InstanceModel,
        tags=["instances"],
        responses=ERRORS,
    )
    async def restart_instance(
        rpc_name: str, principal: Auth, reload: Annotated[bool, Query()] = True
    ) -> dict[str, Any]:
        """Restart one instance with fresh code (``?reload=false``: the code it runs)."""
        _require_instance(principal, rpc_name)
        mod = await network.restart(rpc_name, reload=reload, confine_to=principal.tenant)
        key = f"{mod.tenant}/{mod.mod_id}" if mod.tenant else mod.mod_id
        return next(item for item in network.instances() if item["rpc_name"] == key)

    @app.delete(
        "/api/instances/{rpc_name:path}",
        response_model=ModUnloadResponse,
        tags=["instances"],
        responses=ERRORS,
    )
    async def unload_instance(rpc_name: str, principal: Auth) -> ModUnloadResponse:
        """Unload one instance; the others keep running."""
        _require_instance(principal, rpc_name)
        report = await network.unload(rpc_name, confine_to=principal.tenant)
        return ModUnloadResponse.of(report)

    # -- tenants -------------------------------------------------------------------

    @app.put(
        "/api/tenants/{tenant}/bundle",
        response_model=DeploymentModel,
        tags=["tenants"],
        responses={
            **ERRORS,
            201: {"model": DeploymentModel, "description": "the tenant's first deploy"},
        },
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "properties": {
                                "agents": {
                                    "type": "array",
                                    "items": {
                                        "type": "object",
                                        "properties": {
                                            "filename": {"type": "string"},
                                            "source": {"type": "string"},
                                        },
                                        "required": ["filename", "source"],
                                    },
                                }
                            },
                            "required": ["agents"],
                        }
                    },
                    "application/zip": {"schema": {"type": "string", "format": "binary"}},
                    "application/gzip": {"schema": {"type": "string", "format": "binary"}},
                },
            }
        },
    )
    async def deploy(
        tenant: TenantName,
        request: Request,
        response: Response,
        principal: Auth,
        placement: Annotated[Placement | None, Query()] = None,
    ) -> DeploymentModel:
        """Deploy a bundle: a zip, a tar.gz or a JSON bundle. The first deploy of a
        tenant (admin only) returns its token, once. ``?placement=process`` runs
        it in a worker process (default: its ``plughost.toml``, else in process)."""
        if not principal.is_admin:
            principal.require_tenant(tenant)
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        with tempfile.TemporaryDirectory(prefix="plughost-upload-") as tmp:
            if content_type == "application/json":
                document = _parse_json(await _read_limited(request, upload_limit))
                if not isinstance(document, dict):
                    raise ApiError(400, "bundle_rejected", "a JSON bundle must be an object")
                deployed = await network.deploy_confined(
                    tenant, document, placement=placement, confine_to=principal.tenant
                )
            elif content_type in ARCHIVE_TYPES:
                upload = Path(tmp, "bundle")
                await _save_limited(request, upload, upload_limit)
                deployed = await network.deploy_confined(
                    tenant, upload, placement=placement, confine_to=principal.tenant
                )
            else:
                raise ApiError(
                    415,
                    "unsupported_media_type",
                    "send application/zip, application/gzip or application/json",
                )
        deployment, token = deployed
        response.status_code = 201 if token is not None else 200
        return DeploymentModel(**jsonable_encoder(deployment), token=token)

    @app.get("/api/tenants", response_model=list[TenantModel], tags=["tenants"], responses=ERRORS)
    async def list_tenants(principal: Auth) -> list[TenantModel]:
        """Every tenant (a tenant token sees its own)."""
        names = network.list_tenants()
        if not principal.is_admin:
            names = [name for name in names if name == principal.tenant]
        return [_tenant_model(network, name) for name in names]

    @app.get(
        "/api/tenants/{tenant}", response_model=TenantModel, tags=["tenants"], responses=ERRORS
    )
    async def describe_tenant(tenant: TenantName, principal: Auth) -> TenantModel:
        principal.require_tenant(tenant)
        return _tenant_model(network, tenant)

    @app.delete("/api/tenants/{tenant}", response_model=Removed, tags=["tenants"], responses=ERRORS)
    async def remove_tenant(tenant: TenantName, principal: Auth) -> Removed:
        """Remove a tenant with its snapshots and files (admin)."""
        principal.require_admin()
        await network.remove_tenant(tenant)
        return Removed(removed=tenant)

    @app.post(
        "/api/tenants/{tenant}/token",
        response_model=TenantToken,
        tags=["tenants"],
        responses=ERRORS,
    )
    async def replace_token(tenant: TenantName, principal: Auth) -> TenantToken:
        """Issue a new tenant token; the old one stops working (admin)."""
        principal.require_admin()
        token = await network.issue_tenant_token(tenant, replace=True)
        assert token is not None  # replace=True always issues one
        return TenantToken(tenant=tenant, token=token)

    # -- agents --------------------------------------------------------------------

    @app.get(
        "/api/tenants/{tenant}/agents",
        response_model=list[AgentModel],
        tags=["agents"],
        responses=ERRORS,
    )
    async def list_agents(
        tenant: TenantName, principal: Auth, snapshot: SnapshotQuery = None
    ) -> list[AgentModel]:
        principal.require_tenant(tenant)
        agents = await network.list_agents(tenant, snapshot)
        return [AgentModel(name=a.name, description=a.description, tool=a.tool) for a in agents]

    @app.post(
        "/api/tenants/{tenant}/agents/{agent}/call",
        response_model=CallResponse,
        tags=["agents"],
        responses=ERRORS,
    )
    async def call_agent(
        tenant: TenantName,
        agent: str,
        body: CallRequest,
        principal: Auth,
        snapshot: SnapshotQuery = None,
    ) -> CallResponse:
        """Run an agent with ``args``; ``?snapshot=`` runs a snapshot's code."""
        principal.require_tenant(tenant)
        output = await network.call_agent(tenant, agent, body.args, snapshot=snapshot)
        try:
            json.dumps(jsonable_encoder(output))
        except (TypeError, ValueError):
            raise ApiError(
                422, "agent_error", f"agent {agent!r} returned {type(output).__name__}, not JSON"
            ) from None
        return CallResponse(output=jsonable_encoder(output))

    # -- snapshots -----------------------------------------------------------------

    @app.post(
        "/api/tenants/{tenant}/snapshots",
        response_model=Snapshot,
        status_code=201,
        tags=["snapshots"],
        responses=ERRORS,
    )
    async def create_snapshot(
        tenant: TenantName, body: SnapshotCreate, principal: Auth
    ) -> Snapshot:
        principal.require_tenant(tenant)
        return await network.create_snapshot(tenant, body.name)

    @app.get(
        "/api/tenants/{tenant}/snapshots",
        response_model=list[Snapshot],
        tags=["snapshots"],
        responses=ERRORS,
    )
    async def list_snapshots(tenant: TenantName, principal: Auth) -> list[Snapshot]:
        principal.require_tenant(tenant)
        return network.list_snapshots(tenant)

    @app.delete(
        "/api/tenants/{tenant}/snapshots/{name}",
        response_model=Removed,
        tags=["snapshots"],
        responses=ERRORS,
    )
    async def delete_snapshot(tenant: TenantName, name: SnapshotName, principal: Auth) -> Removed:
        principal.require_tenant(tenant)
        await network.delete_snapshot(tenant, name)
        return Removed(removed=name)

    return app


def _tenant_model(network: Network, tenant: str) -> TenantModel:
    deployment = network.get_deployment(tenant)
    return TenantModel(
        name=tenant,
        version=deployment.version,
        digest=deployment.digest,
        agents=deployment.agents,
        files=deployment.files,
        snapshots=[s.name for s in network.list_snapshots(tenant)],
        created_at=deployment.created_at,
    )


def _require_instance(principal: Principal, rpc_name: str) -> None:
    """A tenant token names its instances by full RPC name, inside its own tenant."""
    tenant, slash, _ = rpc_name.partition("/")
    principal.scope(tenant if slash else None)


def _parse_json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (UnicodeDecodeError, ValueError):
        raise ApiError(400, "invalid_json", "the request body is not valid JSON") from None
    except RecursionError:
        raise ApiError(400, "invalid_json", "the request body is nested too deeply") from None


async def _read_limited(request: Request, limit: int) -> bytes:
    _check_declared_length(request, limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, "too_large", f"the request body is over {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def _save_limited(request: Request, path: Path, limit: int) -> None:
    _check_declared_length(request, limit)
    size = 0
    with path.open("wb") as out:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise ApiError(413, "too_large", f"the upload is over {limit} bytes")
            out.write(chunk)


def _check_declared_length(request: Request, limit: int) -> None:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, "too_large", f"the request body is over {limit} bytes")
