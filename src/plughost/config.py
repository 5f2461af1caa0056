"""The network config file (YAML): what a network starts with.

Example::

    network_id: my_network
    data_dir: .plughost
    host: 127.0.0.1
    port: 8700
    max_loaded_namespaces: 1000
    max_request_bytes: 1048576  # every request body but bundle uploads
    bundle_limits:
      {max_total_bytes: 67108864, max_files: 5000, max_file_bytes: 16777216, max_ratio: 100}
    mod_roots: [plughost.mods, ./mods]
    mods:
      - mod_path: plughost.mods.shared_cache
        config: {max_items: 100}
    sandbox:                # the limits of tenants' sandboxes (placement "sandbox")
      memory_mb: 1024
      cpu_seconds: 3600
      tenants:
        acme: {memory_mb: 4096}

Mods named here load at every start; loading or unloading mods at runtime
never rewrites the file. Relative paths are relative to the file's folder.

``admin_token`` (at least 16 characters) sets the admin token; the
environment's ``PLUGHOST_ADMIN_TOKEN`` wins over it. Left unset (best), the
data folder keeps only the token's sha256, and a token created at the first
start is shown once and written beside the folder (see
:mod:`plughost.api.admin_token`). A file that holds the token must stay
outside the data folder, where tenant code runs, and out of its reach: tenant
code runs as the server's user and can read what that user can.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .bundle import BundleLimits
from .errors import PlughostError
from .manifest import SandboxLimits
from .network import ModSpec, Network


class ModEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mod_path: str
    config: dict[str, Any] = Field(default_factory=dict)
    mod_id: str | None = None
    tenant: str | None = None


class LimitsEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_total_bytes: int = Field(default=BundleLimits.max_total_bytes, ge=1)
    max_files: int = Field(default=BundleLimits.max_files, ge=1)
    max_file_bytes: int = Field(default=BundleLimits.max_file_bytes, ge=1)
    max_ratio: int = Field(default=BundleLimits.max_ratio, ge=1)
    max_metadata_bytes: int = Field(default=BundleLimits.max_metadata_bytes, ge=2)


class SandboxEntry(SandboxLimits):
    """Every tenant's sandbox limits, and under ``tenants`` one tenant's own."""

    tenants: dict[str, SandboxLimits] = Field(default_factory=dict)


class NetworkConfig(BaseModel):
    """The settings a config file may hold; every one has the embedded default."""

    model_config = ConfigDict(extra="forbid")

    network_id: str = "plughost"
    data_dir: Path = Path(".plughost")
    host: str = "127.0.0.1"
    port: int = Field(default=8700, ge=0, le=65535)
    admin_token: str | None = Field(default=None, min_length=16)
    """Never passed to the network or its workers: only its hash reaches the HTTP layer."""
    max_loaded_namespaces: int = Field(default=1000, ge=1)
    keep_versions: int = Field(default=5, ge=1)
    agent_threads: int = Field(default=32, ge=1)
    unload_timeout: float = Field(default=10.0, gt=0)
    worker_start_timeout: float = Field(default=60.0, gt=0)
    call_timeout: float = Field(default=60.0, gt=0)
    worker_max_inflight: int = Field(default=64, ge=1)
    install_timeout: float = Field(default=300.0, gt=0)
    """Seconds the install of a bundle's ``dependencies`` may take."""
    shared_topics: list[str] = Field(default_factory=list)
    """Absolute topics (``/clock``) every tenant may use besides its own."""
    max_request_bytes: int = Field(default=1 << 20, ge=1)
    http_keep_alive_timeout: int = Field(default=5, ge=1)
    """Seconds an idle keep-alive connection stays open (uvicorn's ``timeout_keep_alive``)."""
    http_max_connections: int | None = Field(default=None, ge=1)
    """Connections served at once; past it, 503 (uvicorn's ``limit_concurrency``)."""
    access_log: bool = True
    """One line per request on standard error, written in batches."""
    compat: list[Literal["rapp"]] = Field(default_factory=list)
    """Other servers' APIs to serve too: ``rapp``, the swarm server's ``/api/swarm/...``."""
    bundle_limits: LimitsEntry = Field(default_factory=LimitsEntry)
    mod_roots: list[str] | None = None
    mods: list[ModEntry] = Field(default_factory=list)
    sandbox: SandboxEntry = Field(default_factory=SandboxEntry)
    ray_address: str | None = None
    """The Ray cluster of the ``ray`` placement (``ray.init``'s ``address``, "auto" too)."""
    ray_resources: list[str] = Field(default_factory=list)
    """The custom resources of the cluster's nodes a tenant's ``[ray]`` table may ask for."""

    def network(self) -> Network:
        """A :class:`Network` with these settings (not yet started)."""
        return Network(
            self.data_dir,
            self.network_id,
            max_loaded_namespaces=self.max_loaded_namespaces,
            limits=BundleLimits(**self.bundle_limits.model_dump()),
            keep_versions=self.keep_versions,
            agent_threads=self.agent_threads,
            mod_roots=list(self.mod_roots) if self.mod_roots is not None else None,
            mods=[ModSpec(m.mod_path, m.config, m.mod_id, m.tenant) for m in self.mods],
            unload_timeout=self.unload_timeout,
            worker_start_timeout=self.worker_start_timeout,
            call_timeout=self.call_timeout,
            worker_max_inflight=self.worker_max_inflight,
            shared_topics=list(self.shared_topics),
            sandbox_limits=SandboxLimits(**self.sandbox.model_dump(exclude={"tenants"})),
            sandbox_tenant_limits=dict(self.sandbox.tenants),
            install_timeout=self.install_timeout,
            ray_address=self.ray_address,
            ray_resources=list(self.ray_resources),
        )


class ConfigError(PlughostError):
    """A config file cannot be read or does not fit :class:`NetworkConfig`.

    Attributes:
        path: the file.
    """

    def __init__(self, path: Path, message: str) -> None:
        self.path = path
        super().__init__(f"config file {path}: {message}")


def load_config(path: str | Path) -> NetworkConfig:
    """Read a YAML config file; relative paths in it are made relative to its folder.

    Raises:
        ConfigError: the file is missing, not YAML, or holds unknown or invalid settings.
    """
    path = Path(path)
    try:
        document = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(path, str(exc)) from None
    if not isinstance(document, dict):
        raise ConfigError(path, "expected a mapping of settings at the top level")
    try:
        config = NetworkConfig.model_validate(document)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in error['loc'])}: {error['msg']}" for error in exc.errors()
        )
        raise ConfigError(path, problems) from None
    base = path.parent
    if not config.data_dir.is_absolute():
        config.data_dir = base / config.data_dir
    if config.mod_roots is not None:
        config.mod_roots = [
            str(base / root) if ("/" in root or root.startswith(".")) else root
            for root in config.mod_roots
        ]
    return config
