"""A bundle's ``plughost.toml``: how the bundle runs and which mod instances make it up.

Example::

    placement = "process"            # or "inprocess", "sandbox", "ray"; unset: as it runs now

    dependencies = ["toolz==0.12.0"] # libraries of its own, installed at deploy

    [sandbox]                        # with placement = "sandbox": lower limits than the
    memory_mb = 256                  # network gives the tenant (never higher)

    [ray]                            # with placement = "ray": what its actor reserves
    num_cpus = 0.5                   # on its node (unset: Ray's default for actors)
    resources = {camera = 1}         # custom resources of the cluster's nodes

    [[mods]]
    path = "camera_module"           # a module of the bundle, optionally "module:Class"
    name = "camera"                  # the instance name; its RPC name is "<tenant>/camera"
    config = {fps = 30}              # given to the instance exactly as written
    expose = ["status"]              # topics published to "/status" instead of "/<tenant>/status"

Deploying the same bundle as ``robot1`` and as ``robot2`` creates two
independent sets of instances.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated, Any, Literal

from packaging.requirements import InvalidRequirement, Requirement
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .errors import BundleRejectedError
from .naming import TENANT_NAME_PATTERN

MANIFEST = "plughost.toml"
Placement = Literal["inprocess", "process", "sandbox", "ray"]
_MIB = 1 << 20
_TOPIC_SEGMENT = r"^[A-Za-z0-9_.-]+$"  # an exposed topic is one segment: /<it>


class InstanceSpec(BaseModel):
    """One mod instance a bundle declares."""

    model_config = ConfigDict(extra="forbid")

    path: str = Field(min_length=1)
    name: str = Field(pattern=TENANT_NAME_PATTERN)
    config: dict[str, Any] = Field(default_factory=dict)
    expose: list[Annotated[str, Field(pattern=_TOPIC_SEGMENT)]] = Field(default_factory=list)

    @field_validator("path")
    @classmethod
    def _module_path(cls, value: str) -> str:
        module, _, class_name = value.partition(":")
        if not all(part.isidentifier() for part in module.split(".")) or (
            class_name and not class_name.isidentifier()
        ):
            raise ValueError("expected a bundle module, optionally 'module:ClassName'")
        return value

    @property
    def module(self) -> str:
        return self.path.partition(":")[0]

    @property
    def class_name(self) -> str | None:
        return self.path.partition(":")[2] or None


class SandboxLimits(BaseModel):
    """The limits of one sandbox (the ``sandbox`` placement), with safe defaults.

    The network's config sets them for every tenant and for one tenant; a
    bundle's ``[sandbox]`` table may only lower its tenant's.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    memory_mb: int = Field(default=1024, ge=128)
    """Address space of each of its processes (what it maps, not only what it touches)."""
    cpu_seconds: int = Field(default=3600, ge=1)
    """CPU time each of its processes may use in all; a call's own budget is its deadline."""
    processes: int = Field(default=128, ge=48)
    """Processes and threads, its worker's own (about 40) included."""
    open_files: int = Field(default=256, ge=32)
    file_size_mb: int = Field(default=16, ge=1)
    """The largest file it may write."""
    tmp_mb: int = Field(default=64, ge=1)
    """Its private, writable ``/tmp``, in memory."""
    message_mb: int = Field(default=16, ge=1, le=64)
    """The largest message its worker may send the host (an answer, a publish)."""

    @property
    def memory_bytes(self) -> int:
        return self.memory_mb * _MIB

    @property
    def file_size_bytes(self) -> int:
        return self.file_size_mb * _MIB

    @property
    def tmp_bytes(self) -> int:
        return self.tmp_mb * _MIB

    @property
    def message_bytes(self) -> int:
        return self.message_mb * _MIB

    def lowered_to(self, asked: SandboxLimits, *, refuse: bool = True) -> SandboxLimits:
        """These limits with the ones ``asked`` sets (and only those) in their place;
        one asked above these stays as it is here unless ``refuse``.

        Raises:
            BundleRejectedError: with ``refuse``, one asked for is above these.
        """
        wanted = {name: getattr(asked, name) for name in asked.model_fields_set}
        above = sorted(name for name, value in wanted.items() if value > getattr(self, name))
        if above and not refuse:
            wanted = {name: min(value, getattr(self, name)) for name, value in wanted.items()}
        elif above:
            limits = ", ".join(f"{n} = {wanted[n]} (at most {getattr(self, n)})" for n in above)
            raise BundleRejectedError(
                f"[sandbox] asks for more than the network gives this tenant: {limits}", MANIFEST
            )
        return self.model_copy(update=wanted)


class RayResources(BaseModel):
    """What a tenant's Ray actor reserves on its node (the ``ray`` placement)."""

    model_config = ConfigDict(extra="forbid")

    num_cpus: float | None = Field(default=None, ge=0)
    """CPUs it reserves; unset, Ray's default for an actor (one to be placed, none held)."""
    resources: dict[str, Annotated[float, Field(ge=0)]] = Field(default_factory=dict)
    """Custom resources of the cluster's nodes (``{"camera": 1}``): it runs where they are."""


class Manifest(BaseModel):
    """What ``plughost.toml`` says; a bundle without one gets these defaults.

    ``placement`` is ``None`` when the file does not set it.
    """

    model_config = ConfigDict(extra="forbid")

    placement: Placement | None = None
    mods: list[InstanceSpec] = Field(default_factory=list)
    dependencies: list[str] = Field(default_factory=list)
    """Requirements as pip takes them (``"toolz==0.12.0"``): the libraries it imports."""
    sandbox: SandboxLimits = Field(default_factory=SandboxLimits)
    """Only what the table sets counts (see :meth:`SandboxLimits.lowered_to`)."""
    ray: RayResources = Field(default_factory=RayResources)
    """Custom resources only those the network lets tenants ask for (``ray_resources``)."""

    @field_validator("dependencies")
    @classmethod
    def _requirements(cls, asked: list[str]) -> list[str]:
        """Normalized and sorted; a name, extras, versions and markers only: a URL or a
        path would make the installer fetch or read what the tenant chooses."""
        found = set()
        for text in asked:
            try:
                requirement = Requirement(text)
            except InvalidRequirement as exc:
                raise ValueError(f"{text!r} is not a requirement: {exc}") from None
            if requirement.url:
                raise ValueError(f"{text!r} names a URL; give a name and versions")
            found.add(str(requirement))
        return sorted(found)

    @field_validator("mods")
    @classmethod
    def _unique_names(cls, mods: list[InstanceSpec]) -> list[InstanceSpec]:
        names = [mod.name for mod in mods]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"instance names must be unique; repeated: {', '.join(repeated)}")
        return mods


def dependencies_in(text: bytes | None) -> list[str]:
    """The ``dependencies`` a ``plughost.toml`` holds (none, if it cannot be read)."""
    if text is None:
        return []
    try:
        return Manifest.model_validate(tomllib.loads(text.decode("utf-8"))).dependencies
    except (tomllib.TOMLDecodeError, UnicodeDecodeError, ValidationError):
        return []


def read_manifest(bundle_dir: Path) -> Manifest:
    """Read ``plughost.toml`` from a bundle folder (defaults when there is none).

    Raises:
        BundleRejectedError: the file is not TOML or does not fit :class:`Manifest`.
    """
    path = bundle_dir / MANIFEST
    if not path.is_file():
        return Manifest()
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
        return Manifest.model_validate(document)
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise BundleRejectedError(f"not valid TOML: {exc}", MANIFEST) from None
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in error['loc'])}: {error['msg']}" for error in exc.errors()
        )
        raise BundleRejectedError(problems, MANIFEST) from None
