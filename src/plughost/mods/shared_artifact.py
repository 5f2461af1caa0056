"""Artifacts (named bytes with a content type) kept in the data folder, per namespace.

Events (payload -> response data):

* ``shared_artifact.put``: ``name``, ``content_base64``, optional ``content_type``
  -> ``{"name", "size", "sha256"}``
* ``shared_artifact.get``: ``name`` -> ``{"name", "content_type", "size", "content_base64"}``
* ``shared_artifact.list``: nothing -> ``{"artifacts": [{"name", "content_type", "size"}]}``
* ``shared_artifact.delete``: ``name`` -> ``{"deleted": bool}``

Files live in the tenant's data folder, ``<data folder>/tenants/<tenant>/artifacts/``
(or ``<data folder>/artifacts/global/`` for events without a tenant), each written
whole before it becomes visible; a removed tenant's go with its data folder.
Names: 1-128 characters of ``[A-Za-z0-9._-]``, not starting with ``.``.
Config: ``max_bytes`` per artifact (default 10 MiB).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from pathlib import Path
from typing import Any

from plughost import Event, EventResponse, Mod, on
from plughost.store import tenant_data_dir, write_durably

_NAME = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}$")


class SharedArtifactMod(Mod):
    def initialize(self) -> bool | None:
        self.max_bytes = int(self.config.get("max_bytes", 10 * 1024 * 1024))
        self.data_dir = Path(self.network.data_dir)
        # Earlier versions kept tenants' artifacts in artifacts/tenants/<tenant>/.
        earlier = self.data_dir / "artifacts" / "tenants"
        if earlier.is_dir():
            for folder in earlier.iterdir():
                moved = tenant_data_dir(self.data_dir, folder.name) / "artifacts"
                if not moved.exists():
                    moved.parent.mkdir(parents=True, exist_ok=True)
                    folder.rename(moved)
        return True

    def _folder(self, event: Event) -> Path:
        tenant = self.tenant or event.tenant
        if tenant:
            return tenant_data_dir(self.data_dir, tenant) / "artifacts"
        return self.data_dir / "artifacts" / "global"

    @staticmethod
    def _name(event: Event) -> str | EventResponse:
        name = event.payload.get("name")
        if not isinstance(name, str) or not _NAME.match(name):
            return EventResponse(
                success=False,
                message="payload.name must be 1-128 characters of [A-Za-z0-9._-], "
                "not starting with '.'",
            )
        return name

    @on("shared_artifact.put")
    def put(self, event: Event) -> EventResponse:
        name = self._name(event)
        if isinstance(name, EventResponse):
            return name
        try:
            content = base64.b64decode(event.payload.get("content_base64", ""), validate=True)
        except (binascii.Error, TypeError, ValueError):
            return EventResponse(success=False, message="payload.content_base64 is not base64")
        if len(content) > self.max_bytes:
            return EventResponse(
                success=False, message=f"artifact is over the limit of {self.max_bytes} bytes"
            )
        content_type = str(event.payload.get("content_type") or "application/octet-stream")
        folder = self._folder(event)
        folder.mkdir(parents=True, exist_ok=True)
        meta = {"content_type": content_type, "size": len(content)}
        write_durably(folder / f".{name}.json", json.dumps(meta).encode())
        write_durably(folder / name, content)
        digest = hashlib.sha256(content).hexdigest()
        return EventResponse(
            success=True, data={"name": name, "size": len(content), "sha256": digest}
        )

    @on("shared_artifact.get")
    def get(self, event: Event) -> EventResponse:
        name = self._name(event)
        if isinstance(name, EventResponse):
            return name
        path = self._folder(event) / name
        if not path.is_file():
            return EventResponse(success=False, message=f"no artifact {name!r}")
        content = path.read_bytes()
        return EventResponse(
            success=True,
            data={
                "name": name,
                "content_type": self._meta(path)["content_type"],
                "size": len(content),
                "content_base64": base64.b64encode(content).decode("ascii"),
            },
        )

    @on("shared_artifact.list")
    def list(self, event: Event) -> EventResponse:
        folder = self._folder(event)
        artifacts = []
        if folder.is_dir():
            for path in sorted(folder.iterdir()):
                if path.is_file() and not path.name.startswith("."):
                    meta = self._meta(path)
                    artifacts.append({"name": path.name, **meta})
        return EventResponse(success=True, data={"artifacts": artifacts})

    @on("shared_artifact.delete")
    def delete(self, event: Event) -> EventResponse:
        name = self._name(event)
        if isinstance(name, EventResponse):
            return name
        path = self._folder(event) / name
        deleted = path.is_file()
        path.unlink(missing_ok=True)
        (path.parent / f".{name}.json").unlink(missing_ok=True)
        return EventResponse(success=True, data={"deleted": deleted})

    @staticmethod
    def _meta(path: Path) -> dict[str, Any]:
        sidecar = path.parent / f".{path.name}.json"
        try:
            meta: dict[str, Any] = json.loads(sidecar.read_text())
        except (OSError, ValueError):
            meta = {"content_type": "application/octet-stream"}
        meta["size"] = path.stat().st_size
        return meta
