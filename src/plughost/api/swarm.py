"""The swarm server's wire API (``plughost serve --compat rapp``): its routes over ``Network``.

A swarm is a tenant, named by its ``swarm_guid``; a swarm's snapshot is a
snapshot; a call's ``user_guid`` is the user whose state it runs with. The
answers have the fields and statuses that server's clients read; an error is
``{"status": "error", "message"}``, with plughost's own ``error`` object beside
it. Auth is every route's: the admin token, or a swarm's own tenant token
(which a swarm's first deploy returns, once, as ``tenant_token``); the
top-level health without a token gives the count only.

Times are ISO 8601 in UTC. A snapshot's name is its label and the second it
was taken, made unique by a suffix (``jan--20261201T120000Z``,
``jan--20261201T120000Z-2``).
"""

from __future__ import annotations

import datetime
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, ValidationError

from .. import __version__
from ..errors import DuplicateSnapshotError, PlughostError, UnknownAgentError
from ..naming import TENANT_NAME_PATTERN, check_tenant_name
from ..network import Network
from .auth import Principal, principal_if_any, principal_of
from .errors import ApiError, status_of
from .state import ServedNetwork

SCHEMA = "rapp-swarm/1.0"
_TRIES = 100  # snapshot names tried for one label in one second

router = APIRouter(prefix="/api/swarm", tags=["swarm server"])


class _AgentFile(BaseModel):
    filename: str = Field(min_length=1)
    source: str


class _SwarmBundle(BaseModel):
    """A ``rapp-swarm/1.0`` bundle: what ``POST /api/swarm/deploy`` takes."""

    schema_: Annotated[str, Field(alias="schema")] = SCHEMA
    swarm_guid: str | None = Field(default=None, pattern=TENANT_NAME_PATTERN)
    name: str = ""
    purpose: str = ""
    created_by: str | None = None
    agents: list[_AgentFile] = Field(min_length=1)


class _AgentCall(BaseModel):
    name: str = Field(min_length=1)
    args: dict[str, Any] = Field(default_factory=dict)
    user_guid: str | None = Field(default=None, pattern=TENANT_NAME_PATTERN)


class _SealRequest(BaseModel):
    actor: str | None = Field(default=None, max_length=200)
    trigger: str = Field(default="manual", max_length=200)


class _SnapshotRequest(BaseModel):
    label: str = Field(default="snapshot", min_length=1, max_length=64, pattern=r"^[^/\x00-\x1f]+$")


# -- the routes -----------------------------------------------------------------------


@router.get("/healthz")
async def healthz(request: Request, network: ServedNetwork) -> JSONResponse:
    """The server and its swarms (a tenant token sees its own; no token, the count)."""
    try:
        principal = principal_if_any(request)
    except ApiError as exc:
        return _error(exc.status, exc.code, exc.message)
    swarms = [] if principal is None else _swarms(network, principal)
    count = len(network.list_tenants()) if principal is None else len(swarms)
    return _ok(schema=SCHEMA, version=__version__, swarm_count=count, swarms=swarms)


@router.get("/list")
async def list_swarms(request: Request, network: ServedNetwork) -> JSONResponse:
    try:
        principal = principal_of(request)
    except ApiError as exc:
        return _error(exc.status, exc.code, exc.message)
    return JSONResponse({"swarms": _swarms(network, principal)})


@router.post("/deploy")
async def deploy(request: Request, network: ServedNetwork) -> JSONResponse:
    """Deploy a ``rapp-swarm/1.0`` bundle as a swarm: a new one (admin) when it names no
    ``swarm_guid`` or an unknown one, else a redeploy that replaces all its files."""
    try:
        principal = principal_of(request)
        bundle = _SwarmBundle.model_validate_json(await request.body())
        if bundle.schema_ != SCHEMA:
            raise ApiError(400, "bundle_rejected", f"schema is {bundle.schema_!r}, not {SCHEMA!r}")
        guid = bundle.swarm_guid or str(uuid.uuid4())
        document = bundle.model_dump(by_alias=True)
        document["swarm_guid"] = guid
        document["created_by"] = bundle.created_by or principal.tenant or "admin"
        deployment, token = await network.deploy_confined(
            guid, document, confine_to=principal.tenant
        )
    except ValidationError as exc:
        return _error(400, "bundle_rejected", _problems(exc))
    except (ApiError, PlughostError) as exc:
        return _failed(exc)
    base = str(request.base_url).rstrip("/")
    fields: dict[str, Any] = {
        "swarm_guid": guid,
        "name": bundle.name,
        "swarm_url": f"{base}/api/swarm/{guid}/agent",
        "info_url": f"{base}/api/swarm/{guid}/healthz",
        "agent_count": len(deployment.agents),
    }
    if token is not None:  # a new swarm: its token, shown this once
        fields["tenant_token"] = token
    return _ok(**fields)


@router.get("/{guid}/healthz")
async def swarm_healthz(guid: str, request: Request, network: ServedNetwork) -> JSONResponse:
    try:
        _allowed(request, guid)
        swarm = _swarm(network, guid)
        agents = sorted(network.get_deployment(guid).agents)
        sealing = _sealing(network, guid)
    except (ApiError, PlughostError) as exc:
        return _failed(exc)
    return _ok(
        swarm_guid=guid,
        name=swarm["name"],
        purpose=swarm["purpose"],
        agent_count=len(agents),
        agents=agents,
        sealed=sealing["status"] == "sealed",
        sealing=sealing,
    )


@router.post("/{guid}/agent")
async def call_agent(guid: str, request: Request, network: ServedNetwork) -> JSONResponse:
    """Run an agent of the swarm by name: ``{name, args, user_guid}``."""
    return await _call(guid, None, request, network)


@router.get("/{guid}/seal")
async def sealing(guid: str, request: Request, network: ServedNetwork) -> JSONResponse:
    try:
        _allowed(request, guid)
        sealing = _sealing(network, guid)
    except (ApiError, PlughostError) as exc:
        return _failed(exc)
    return JSONResponse(
        {"swarm_guid": guid, "sealed": sealing["status"] == "sealed", "sealing": sealing}
    )


@router.post("/{guid}/seal")
async def seal(guid: str, request: Request, network: ServedNetwork) -> JSONResponse:
    """Seal the swarm (``{actor, trigger}``); sealing a sealed swarm changes nothing."""
    try:
        principal = _allowed(request, guid)
        body = _SealRequest.model_validate_json(await request.body() or b"{}")
        caller = f"tenant {principal.tenant}" if principal.tenant else "admin"
        await network.seal_tenant(guid, sealed_by=caller, trigger=body.trigger, actor=body.actor)
        sealing = _sealing(network, guid)
    except ValidationError as exc:
        return _error(400, "invalid_request", _problems(exc))
    except (ApiError, PlughostError) as exc:
        return _failed(exc)
    return _ok(swarm_guid=guid, sealing=sealing)


@router.post("/{guid}/snapshot")
async def snapshot(guid: str, request: Request, network: ServedNetwork) -> JSONResponse:
    """Snapshot the swarm's code and state under a label: ``{label}``."""
    try:
        _allowed(request, guid)
        body = _SnapshotRequest.model_validate_json(await request.body() or b"{}")
        taken = None
        stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
        for attempt in range(1, _TRIES + 1):
            name = f"{body.label}--{stamp}" + (f"-{attempt}" if attempt > 1 else "")
            try:
                taken = await network.create_snapshot(guid, name)
                break
            except DuplicateSnapshotError:
                continue
        if taken is None:
            raise ApiError(409, "duplicate_snapshot", f"too many snapshots named {body.label!r}")
    except ValidationError as exc:
        return _error(400, "invalid_request", _problems(exc))
    except (ApiError, PlughostError) as exc:
        return _failed(exc)
    return _ok(swarm_guid=guid, **_snapshot(taken.name, taken.created_at))


@router.get("/{guid}/snapshots")
async def snapshots(guid: str, request: Request, network: ServedNetwork) -> JSONResponse:
    try:
        _allowed(request, guid)
        taken = network.list_snapshots(guid)
    except (ApiError, PlughostError) as exc:
        return _failed(exc)
    listed = [
        {**_snapshot(each.name, each.created_at), "agent_count": len(each.agents)} for each in taken
    ]
    return JSONResponse({"swarm_guid": guid, "snapshots": listed})


@router.post("/{guid}/snapshots/{snap}/agent")
async def call_snapshot_agent(
    guid: str, snap: str, request: Request, network: ServedNetwork
) -> JSONResponse:
    """Run an agent of a snapshot, with the state the swarm had then (read-only)."""
    return await _call(guid, snap, request, network)


@router.delete("/{guid}")
async def remove(guid: str, request: Request, network: ServedNetwork) -> JSONResponse:
    """Remove the swarm with its snapshots and state (admin); a sealed one stays (423)."""
    try:
        principal_of(request).require_admin()
        await network.remove_tenant(guid)
    except (ApiError, PlughostError) as exc:
        return _failed(exc)
    return _ok(removed=guid)


# -- the parts ------------------------------------------------------------------------


async def _call(guid: str, snap: str | None, request: Request, network: Network) -> JSONResponse:
    try:
        _allowed(request, guid)
        body = _AgentCall.model_validate_json(await request.body())
        output = await network.call_agent(
            guid, body.name, body.args, snapshot=snap, user=body.user_guid
        )
    except ValidationError as exc:
        return _error(400, "invalid_request", _problems(exc))
    except UnknownAgentError as exc:
        return _error(404, "unknown_agent", str(exc), available=sorted(exc.known))
    except (ApiError, PlughostError) as exc:
        return _failed(exc)
    if snap is None:
        return _ok(output=output)
    return _ok(output=output, snapshot=snap, read_only=True)


def _allowed(request: Request, guid: str) -> Principal:
    principal = principal_of(request)
    principal.require_tenant(guid)
    try:
        check_tenant_name(guid)
    except ValueError:
        raise ApiError(404, "unknown_tenant", f"no swarm {guid!r}") from None
    return principal


def _swarms(network: Network, principal: Principal) -> list[dict[str, Any]]:
    names = network.list_tenants()
    return [_swarm(network, name) for name in names if principal.tenant in (None, name)]


def _swarm(network: Network, guid: str) -> dict[str, Any]:
    deployment = network.get_deployment(guid)
    metadata = deployment.metadata
    return {
        "swarm_guid": guid,
        "name": str(metadata.get("name") or guid),
        "purpose": str(metadata.get("purpose") or ""),
        "agent_count": len(deployment.agents),
        "created_at": _iso(deployment.created_at),
        "created_by": str(metadata.get("created_by") or "admin"),
    }


def _sealing(network: Network, guid: str) -> dict[str, Any]:
    seal = network.sealing_of(guid)
    if seal is None:
        return {"status": "active", "sealed_at": None, "sealed_by": None, "trigger": None}
    return {
        "status": "sealed",
        "sealed_at": _iso(seal.sealed_at),
        "sealed_by": seal.actor,  # the swarm server's sealed_by: the actor its caller named
        "trigger": seal.trigger,
    }


def _snapshot(name: str, created_at: float) -> dict[str, Any]:
    label = name.rpartition("--")[0] or name
    return {"snapshot_name": name, "snapshot_label": label, "snapshot_iso": _iso(created_at)}


def _iso(seconds: float) -> str:
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC).isoformat()


def _ok(**fields: Any) -> JSONResponse:
    return JSONResponse({"status": "ok", **fields})


def _failed(exc: ApiError | PlughostError) -> JSONResponse:
    if isinstance(exc, ApiError):
        return _error(exc.status, exc.code, exc.message)
    status, code = status_of(exc)
    return _error(status, code, str(exc))


def _error(status: int, code: str, message: str, **fields: Any) -> JSONResponse:
    body = {"status": "error", "message": message, **fields}
    body["error"] = {"code": code, "message": message}
    return JSONResponse(body, status_code=status)


def _problems(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(part) for part in error['loc']) or 'body'}: {error['msg']}"
        for error in exc.errors()
    )
