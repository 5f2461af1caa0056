"""A bundle's ``plughost.toml``: how the bundle runs and which mod instances make it up.

Example::

    placement = "process"            # or "inprocess"; unset: as the tenant runs now

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

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .errors import BundleRejectedError
from .naming import TENANT_NAME_PATTERN

MANIFEST = "plughost.toml"
Placement = Literal["inprocess", "process"]
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


class Manifest(BaseModel):
    """What ``plughost.toml`` says; a bundle without one gets these defaults.

    ``placement`` is ``None`` when the file does not set it.
    """

    model_config = ConfigDict(extra="forbid")

    placement: Placement | None = None
    mods: list[InstanceSpec] = Field(default_factory=list)

    @field_validator("mods")
    @classmethod
    def _unique_names(cls, mods: list[InstanceSpec]) -> list[InstanceSpec]:
        names = [mod.name for mod in mods]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"instance names must be unique; repeated: {', '.join(repeated)}")
        return mods


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
