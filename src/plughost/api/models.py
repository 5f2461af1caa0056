"""The request and response bodies of the routes (errors are in :mod:`.errors`)."""

from __future__ import annotations

from typing import Any

from pydantic import AliasChoices, BaseModel, Field

from ..mod import ModUnloadReport
from ..naming import TENANT_NAME_PATTERN
from ..tenants import SNAPSHOT_NAME_PATTERN


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


class SealRequest(BaseModel):
    actor: str | None = Field(
        default=None, max_length=200, description="who seals it, as the caller says"
    )
    trigger: str = Field(default="manual", max_length=200, description="why it is sealed")


class SealingModel(BaseModel):
    tenant: str
    sealed: bool
    sealed_at: float | None = None
    sealed_by: str | None = Field(
        default=None, description="who sealed it: the admin, or the tenant"
    )
    actor: str | None = Field(default=None, description="who sealed it, as the caller said")
    trigger: str | None = None
    version: int | None = Field(default=None, description="the version that was live then")


class TenantModel(BaseModel):
    name: str
    version: int
    digest: str
    agents: list[str]
    files: list[str]
    snapshots: list[str]
    created_at: float
    placement: str
    dependencies: dict[str, list[str]] | None = Field(
        default=None,
        description="what its plughost.toml asks for (asked), what was installed for it"
        " (installed, name==version), and what runs from the server's own copy in process"
        " (shared_with_host); null when it asks for nothing",
    )
    sealing: SealingModel


class DeployProgress(BaseModel):
    tenant: str
    lines: list[str] = Field(description="the installer's output, oldest first")


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
    user_id: str | None = Field(
        default=None,
        validation_alias=AliasChoices("user_id", "user_guid"),
        pattern=TENANT_NAME_PATTERN,
        description="the user whose state the call runs with (also read as user_guid)",
    )


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
    verified: bool = Field(
        description="whether the check that the code was freed has run (``?verify=true`` waits)"
    )
    leaked: list[str]

    @classmethod
    def of(cls, report: ModUnloadReport) -> ModUnloadResponse:
        return cls(
            mod_id=report.mod_id,
            mod_path=report.mod_path,
            message=report.message,
            shutdown_error=report.shutdown_error,
            verified=report.verified,
            leaked=report.leaked,
        )


class ModsModel(BaseModel):
    loaded: list[str]
    count: int
    failed: list[str]
    details: dict[str, dict[str, Any]]
    unloaded: list[dict[str, Any]] = Field(
        default_factory=list,
        description="the latest unloads, newest first, with the check that their code was freed",
    )


class InstanceModel(BaseModel):
    rpc_name: str
    tenant: str | None
    name: str
    mod_path: str
    class_: str = Field(alias="class")
    origin: str
    placement: str
    config: dict[str, Any]


class Removed(BaseModel):
    removed: str
