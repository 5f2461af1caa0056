"""A client of the HTTP API, for scripts, the CLI and tests.

Every call returns the decoded JSON answer or raises :class:`ClientError`
with the server's error code and message (or ``unreachable``).
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from .errors import PlughostError

Progress = Callable[[int, int], None]
_UPLOAD_CHUNK = 1 << 16


class ClientError(PlughostError):
    """A request failed.

    Attributes:
        status: the HTTP status, or 0 when the server could not be reached.
        code: the server's error code (``unreachable`` when it could not be reached).
        message: the server's error message.
    """

    def __init__(self, status: int, code: str, message: str) -> None:
        self.status = status
        self.code = code
        self.message = message
        super().__init__(message)


class Client:
    """Talks to a plughost server at ``url`` with ``token`` (admin or tenant)."""

    def __init__(self, url: str, token: str | None = None, *, timeout: float = 60.0) -> None:
        # "localhost:8700" means what a browser would take it to mean.
        self.url = (url if "://" in url else f"http://{url}").rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """Send a request; return the decoded JSON (or text) answer.

        Raises:
            ClientError: the server answered with an error, or could not be reached.
        """
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError:
            raise ClientError(0, "unreachable", f"cannot reach server at {self.url}") from None
        if response.status_code >= 400:
            try:
                error = response.json()["error"]
                code, message = str(error["code"]), str(error["message"])
            except (ValueError, KeyError, TypeError):
                code, message = "http_error", f"HTTP {response.status_code}: {response.text[:200]}"
            raise ClientError(response.status_code, code, message)
        if response.headers.get("content-type", "").startswith("application/json"):
            return response.json()
        return response.text

    # -- routes --------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        result: dict[str, Any] = self.request("GET", "/api/health")
        return result

    def send_event(self, event: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = self.request("POST", "/api/events", json=event)
        return result

    def list_mods(self) -> dict[str, Any]:
        result: dict[str, Any] = self.request("GET", "/api/mods")
        return result

    def load_mod(
        self,
        mod_path: str,
        config: dict[str, Any] | None = None,
        *,
        mod_id: str | None = None,
        tenant: str | None = None,
    ) -> dict[str, Any]:
        body = {"mod_path": mod_path, "config": config or {}, "mod_id": mod_id, "tenant": tenant}
        result: dict[str, Any] = self.request("POST", "/api/mods", json=body)
        return result

    def unload_mod(self, mod_id: str, *, tenant: str | None = None) -> dict[str, Any]:
        params = {"tenant": tenant} if tenant else {}
        result: dict[str, Any] = self.request(
            "DELETE", f"/api/mods/{_segment(mod_id)}", params=params
        )
        return result

    def list_instances(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.request("GET", "/api/instances")
        return result

    def restart_instance(self, rpc_name: str, *, reload: bool = True) -> dict[str, Any]:
        params = {"reload": "true" if reload else "false"}
        result: dict[str, Any] = self.request(
            "POST", f"/api/instances/{_segment(rpc_name)}/restart", params=params
        )
        return result

    def unload_instance(self, rpc_name: str) -> dict[str, Any]:
        result: dict[str, Any] = self.request("DELETE", f"/api/instances/{_segment(rpc_name)}")
        return result

    def deploy(
        self,
        tenant: str,
        source: str | Path,
        progress: Progress | None = None,
        *,
        placement: str | None = None,
        config: dict[str, dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        """Deploy a folder (zipped on the fly), a ``.zip`` / ``.tar.gz`` or a ``.json`` bundle;
        ``config`` is laid over the declared instances' own, by instance name."""
        path = Path(source)
        if path.is_dir():
            data, content_type = _zip_folder(path), "application/zip"
        elif path.suffix == ".json":
            data, content_type = path.read_bytes(), "application/json"
        elif path.is_file():
            data = path.read_bytes()
            content_type = "application/zip" if data[:2] == b"PK" else "application/gzip"
        else:
            raise ClientError(0, "no_such_path", f"no such folder or file: {path}")
        result: dict[str, Any] = self.request(
            "PUT",
            f"/api/tenants/{_segment(tenant)}/bundle",
            content=_chunks(data, progress),
            headers={"Content-Type": content_type, "Content-Length": str(len(data))},
            params={
                **({"placement": placement} if placement else {}),
                **({"config": json.dumps(config)} if config is not None else {}),
            },
        )
        return result

    def deploy_progress(self, tenant: str) -> list[str]:
        """What the tenant's deploy under way (or its last) said while it installed the
        bundle's dependencies."""
        result: dict[str, Any] = self.request(
            "GET", f"/api/tenants/{_segment(tenant)}/deploy/progress"
        )
        lines: list[str] = result["lines"]
        return lines

    def list_tenants(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.request("GET", "/api/tenants")
        return result

    def describe_tenant(self, tenant: str) -> dict[str, Any]:
        result: dict[str, Any] = self.request("GET", f"/api/tenants/{_segment(tenant)}")
        return result

    def remove_tenant(self, tenant: str) -> dict[str, Any]:
        result: dict[str, Any] = self.request("DELETE", f"/api/tenants/{_segment(tenant)}")
        return result

    def replace_tenant_token(self, tenant: str) -> dict[str, Any]:
        """A new token for ``tenant`` (admin); its old one stops working."""
        result: dict[str, Any] = self.request("POST", f"/api/tenants/{_segment(tenant)}/token")
        return result

    def list_agents(self, tenant: str, snapshot: str | None = None) -> list[dict[str, Any]]:
        params = {"snapshot": snapshot} if snapshot else {}
        result: list[dict[str, Any]] = self.request(
            "GET", f"/api/tenants/{_segment(tenant)}/agents", params=params
        )
        return result

    def call(
        self,
        tenant: str,
        agent: str,
        args: dict[str, Any] | None = None,
        snapshot: str | None = None,
        user: str | None = None,
    ) -> Any:
        params = {"snapshot": snapshot} if snapshot else {}
        body: dict[str, Any] = {"args": args or {}}
        if user is not None:
            body["user_id"] = user
        result = self.request(
            "POST",
            f"/api/tenants/{_segment(tenant)}/agents/{_segment(agent)}/call",
            json=body,
            params=params,
        )
        return result["output"]

    def seal(self, tenant: str, trigger: str = "manual") -> dict[str, Any]:
        result: dict[str, Any] = self.request(
            "POST", f"/api/tenants/{_segment(tenant)}/seal", json={"trigger": trigger}
        )
        return result

    def create_snapshot(self, tenant: str, name: str) -> dict[str, Any]:
        result: dict[str, Any] = self.request(
            "POST", f"/api/tenants/{_segment(tenant)}/snapshots", json={"name": name}
        )
        return result

    def list_snapshots(self, tenant: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.request(
            "GET", f"/api/tenants/{_segment(tenant)}/snapshots"
        )
        return result

    def delete_snapshot(self, tenant: str, name: str) -> dict[str, Any]:
        result: dict[str, Any] = self.request(
            "DELETE", f"/api/tenants/{_segment(tenant)}/snapshots/{_segment(name)}"
        )
        return result


def _segment(name: str) -> str:
    """One path segment, so that no name can reach another route (``..``, ``/``, ``#``, ``?``)."""
    if name in (".", ".."):
        return name.replace(".", "%2E")  # URL clients resolve bare dot segments away
    return quote(name, safe="")


def _zip_folder(folder: Path) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(folder.rglob("*")):
            relative = path.relative_to(folder)
            if path.is_file() and "__pycache__" not in relative.parts:
                archive.write(path, relative.as_posix())
    return buffer.getvalue()


def _chunks(data: bytes, progress: Progress | None) -> Iterator[bytes]:
    for start in range(0, len(data), _UPLOAD_CHUNK):
        chunk = data[start : start + _UPLOAD_CHUNK]
        yield chunk
        if progress is not None:
            progress(start + len(chunk), len(data))


def parse_json_option(text: str, what: str) -> Any:
    """Decode a JSON command-line option, naming it in the error."""
    try:
        return json.loads(text)
    except ValueError as exc:
        raise ClientError(0, "bad_option", f"{what} is not valid JSON: {exc}") from None
