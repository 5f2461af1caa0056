"""Every route against a real server: who may call it, and what bad input gets."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from plughost.client import ClientError

from .server import ServerProcess

ADMIN = "admin-token-for-tests"
ROOT = Path(__file__).resolve().parent.parent


class Api:
    def __init__(self, server: ServerProcess, tokens: dict[str, str]) -> None:
        self.server = server
        self.tokens = tokens

    def request(self, method: str, path: str, token: str | None, **kwargs: Any) -> httpx.Response:
        headers = kwargs.pop("headers", {})
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        return httpx.request(method, self.server.url + path, headers=headers, timeout=60, **kwargs)


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    folder = tmp_path_factory.mktemp("server")
    (folder / "config.yaml").write_text(
        "data_dir: data\n"
        "bundle_limits: {max_total_bytes: 200000, max_files: 50, max_file_bytes: 100000}\n"
        "max_request_bytes: 400000\n"
    )
    server = ServerProcess(folder, admin_token=ADMIN, config=folder / "config.yaml").start()
    tokens = {}
    with server.client() as client:
        for tenant in ("t1", "t2"):
            tokens[tenant] = client.deploy(tenant, ROOT / "examples" / "alice")["token"]
            client.create_snapshot(tenant, "keep")
    try:
        yield Api(server, tokens)
    finally:
        assert server.stop()


def _json_bundle() -> dict[str, Any]:
    source = (ROOT / "examples" / "bob" / "notifier_agent.py").read_text()
    helpers = (ROOT / "examples" / "bob" / "helpers.py").read_text()
    return {
        "agents": [
            {"filename": "notifier_agent.py", "source": source},
            {"filename": "helpers.py", "source": helpers},
        ]
    }


# (method, path, request kwargs, admin only?) for routes inside tenant t1.
T1_ROUTES: list[tuple[str, str, dict[str, Any], bool]] = [
    ("GET", "/api/tenants/t1", {}, False),
    ("GET", "/api/tenants/t1/agents", {}, False),
    ("POST", "/api/tenants/t1/agents/Notifier/call", {"json": {"args": {"message": "m"}}}, False),
    ("GET", "/api/tenants/t1/snapshots", {}, False),
    ("POST", "/api/tenants/t1/snapshots", {"json": {"name": "matrix"}}, False),
    ("DELETE", "/api/tenants/t1/snapshots/matrix", {}, False),
    ("PUT", "/api/tenants/t1/bundle", {"json": _json_bundle()}, False),
    (
        "POST",
        "/api/mods",
        {"json": {"mod_path": "plughost.mods.shared_cache", "tenant": "t1"}},
        False,
    ),
    ("DELETE", "/api/mods/shared_cache?tenant=t1", {}, False),
    ("POST", "/api/tenants/t1/token", {}, True),
]


@pytest.mark.parametrize(("method", "path", "kwargs", "admin_only"), T1_ROUTES)
def test_every_tenant_route_checks_the_token(
    api: Api, method: str, path: str, kwargs: dict[str, Any], admin_only: bool
) -> None:
    assert api.request(method, path, None, **kwargs).status_code == 401
    assert api.request(method, path, "not-a-token", **kwargs).status_code == 401
    other = api.request(method, path, api.tokens["t2"], **kwargs)
    assert other.status_code == 403, other.text
    assert other.json()["error"]["code"] == "forbidden"
    own = api.request(method, path, api.tokens["t1"], **kwargs)
    if admin_only:
        assert own.status_code == 403
        right = api.request(method, path, ADMIN, **kwargs)
        assert right.status_code == 200, right.text
        api.tokens["t1"] = right.json()["token"]
    else:
        assert own.status_code in (200, 201), own.text


def test_admin_only_routes(api: Api) -> None:
    for method, path, kwargs in [
        ("GET", "/metrics", {}),
        ("DELETE", "/api/tenants/t2", {}),
        ("PUT", "/api/tenants/brand-new/bundle", {"json": _json_bundle()}),
    ]:
        assert api.request(method, path, None, **kwargs).status_code == 401
        assert api.request(method, path, "wrong", **kwargs).status_code == 401
        assert api.request(method, path, api.tokens["t1"], **kwargs).status_code == 403, path
    metrics = api.request("GET", "/metrics", ADMIN)
    assert metrics.status_code == 200 and "plughost_agent_calls_total" in metrics.text
    # Global mods are the admin's: a tenant token that names no tenant acts in its own.
    mod = {"json": {"mod_path": "plughost.mods.shared_cache"}}
    for token in (None, "wrong"):
        assert api.request("POST", "/api/mods", token, **mod).status_code == 401
    loaded = api.request("POST", "/api/mods", api.tokens["t1"], **mod)
    assert loaded.status_code == 201 and loaded.json()["key"] == "t1/shared_cache", loaded.text
    assert "shared_cache" not in api.request("GET", "/api/mods", ADMIN).json()["loaded"]
    unloaded = api.request("DELETE", "/api/mods/shared_cache", api.tokens["t1"])
    assert unloaded.status_code == 200, unloaded.text
    assert "t1/shared_cache" not in api.request("GET", "/api/mods", ADMIN).json()["loaded"]


def test_health_is_public_and_listings_are_scoped(api: Api) -> None:
    assert api.request("GET", "/api/health", None).status_code == 200
    assert [t["name"] for t in api.request("GET", "/api/tenants", ADMIN).json()] == ["t1", "t2"]
    assert [t["name"] for t in api.request("GET", "/api/tenants", api.tokens["t2"]).json()] == [
        "t2"
    ]
    for path in ("/api/tenants", "/api/mods", "/api/events"):
        method = "POST" if path == "/api/events" else "GET"
        assert api.request(method, path, None, json={"event_name": "a"}).status_code == 401


def test_tenant_events_are_confined_to_the_tenant(api: Api) -> None:
    t1 = api.tokens["t1"]

    def send(event: dict[str, Any]) -> httpx.Response:
        return api.request("POST", "/api/events", t1, json=event)

    own = send(
        {"event_name": "call", "destination_id": "agent:t1/Notifier", "payload": {"message": "m"}}
    )
    # t1 runs alice's code, or bob's once the route matrix redeployed it.
    assert own.status_code == 200 and own.json()["data"]["output"] in ("[alice] m", "<bob> M")
    for event in [
        {"event_name": "call", "destination_id": "agent:t2/Notifier"},
        {"event_name": "x", "tenant": "t2"},
        {"event_name": "x", "destination_id": "mod:t2/shared_cache"},
        {"event_name": "tick", "destination_id": "topic:/clock"},
        {
            "event_name": "system.mod.load",
            "destination_id": "system:system",
            "payload": {"mod_path": "plughost.mods.shared_cache", "tenant": "t2"},
        },
    ]:
        assert send(event).status_code == 403, event
    tenantless = send(
        {
            "event_name": "system.mod.load",
            "destination_id": "system:system",
            "payload": {"mod_path": "plughost.mods.shared_cache"},
        }
    )
    assert tenantless.status_code == 403, tenantless.text
    loaded = send(
        {
            "event_name": "system.mod.load",
            "destination_id": "system:system",
            "payload": {"mod_path": "plughost.mods.shared_cache", "mod_id": "scoped"},
            "tenant": "t1",
        }
    )
    assert loaded.status_code == 200 and loaded.json()["success"], loaded.text
    assert "t1/scoped" in api.request("GET", "/api/health", t1).json()["mods"]["loaded"]
    unloaded = send(
        {
            "event_name": "system.mod.unload",
            "destination_id": "system:system",
            "payload": {"mod_id": "scoped", "tenant": "t1"},
        }
    )
    assert unloaded.json()["success"], unloaded.text


def _zip(entries: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return buffer.getvalue()


FAILING_CONSTRUCTOR = (
    "from plughost import Agent\n"
    "class A(Agent):\n"
    "    def __init__(self):\n"
    "        raise RuntimeError('x')\n"
    "    def perform(self, **k):\n"
    "        return 1\n"
)

BAD_INPUTS: list[tuple[str, str, dict[str, Any], int, str]] = [
    (
        "PUT",
        "/api/tenants/t1/bundle",
        {
            "json": {
                "files": [{"filename": "a", "source": ""}, {"filename": "a/b.py", "source": ""}]
            }
        },
        400,
        "bundle_rejected",
    ),
    (
        "PUT",
        "/api/tenants/t1/bundle",
        {"json": {"files": [{"filename": "n" * 300, "source": ""}]}},
        400,
        "bundle_rejected",
    ),
    (
        "PUT",
        "/api/tenants/t1/bundle",
        {
            "json": {
                "agents": [
                    {
                        "filename": "a.py",
                        "source": FAILING_CONSTRUCTOR,
                    }
                ]
            }
        },
        422,
        "bundle_load_failed",
    ),
    (
        "PUT",
        "/api/tenants/t1/bundle",
        {"content": b"{nope", "headers": {"Content-Type": "application/json"}},
        400,
        "invalid_json",
    ),
    ("PUT", "/api/tenants/t1/bundle", {"json": [1, 2]}, 400, "bundle_rejected"),
    (
        "PUT",
        "/api/tenants/t1/bundle",
        {"json": {"agents": [{"filename": 3}]}},
        400,
        "bundle_rejected",
    ),
    (
        "PUT",
        "/api/tenants/t1/bundle",
        {"json": {"agents": [{"filename": "x.py", "source": "1/0"}]}},
        422,
        "bundle_load_failed",
    ),
    (
        "PUT",
        "/api/tenants/t1/bundle",
        {"content": b"plain text", "headers": {"Content-Type": "text/plain"}},
        415,
        "unsupported_media_type",
    ),
    (
        "PUT",
        "/api/tenants/t1/bundle",
        {"content": b"not a zip", "headers": {"Content-Type": "application/zip"}},
        400,
        "bundle_rejected",
    ),
    (
        "PUT",
        "/api/tenants/t1/bundle",
        {"content": _zip({"../evil.py": b"x"}), "headers": {"Content-Type": "application/zip"}},
        400,
        "bundle_rejected",
    ),
    (
        "PUT",
        "/api/tenants/t1/bundle",
        {"content": _zip({"/abs.py": b"x"}), "headers": {"Content-Type": "application/zip"}},
        400,
        "bundle_rejected",
    ),
    (
        "PUT",
        "/api/tenants/t1/bundle",
        {
            "content": _zip({f"m{i}.py": b"" for i in range(60)}),
            "headers": {"Content-Type": "application/zip"},
        },
        413,
        "too_large",
    ),
    (
        "PUT",
        "/api/tenants/t1/bundle",
        {"content": b"x" * 300_000, "headers": {"Content-Type": "application/zip"}},
        413,
        "too_large",
    ),
    (
        "PUT",
        "/api/tenants/t1/bundle",
        {"json": {"agents": [{"filename": "big.py", "source": "#" * 150_000}]}},
        413,
        "too_large",
    ),
    ("PUT", "/api/tenants/..%2Fetc/bundle", {"json": _json_bundle()}, 404, "not_found"),
    ("PUT", "/api/tenants/bad%20name/bundle", {"json": _json_bundle()}, 422, "invalid_request"),
    ("PUT", "/api/tenants/.hidden/bundle", {"json": _json_bundle()}, 422, "invalid_request"),
    (
        "POST",
        "/api/tenants/t1/agents/Notifier/call",
        {"content": b"{", "headers": {"Content-Type": "application/json"}},
        400,
        "invalid_json",
    ),
    (
        "POST",
        "/api/tenants/t1/agents/Notifier/call",
        {"json": {"args": "not an object"}},
        422,
        "invalid_request",
    ),
    (
        "POST",
        "/api/tenants/t1/agents/Notifier/call",
        {"json": {"args": {"message": 5}}},
        422,
        "invalid_arguments",
    ),
    ("POST", "/api/tenants/t1/agents/Nobody/call", {"json": {}}, 404, "unknown_agent"),
    ("POST", "/api/tenants/nobody/agents/Notifier/call", {"json": {}}, 404, "unknown_tenant"),
    (
        "POST",
        "/api/tenants/t1/agents/Notifier/call?snapshot=nope",
        {"json": {}},
        404,
        "unknown_snapshot",
    ),
    ("POST", "/api/tenants/t1/snapshots", {"json": {}}, 422, "invalid_request"),
    ("POST", "/api/tenants/t1/snapshots", {"json": {"name": 7}}, 422, "invalid_request"),
    ("POST", "/api/tenants/t1/snapshots", {"json": {"name": "keep"}}, 409, "duplicate_snapshot"),
    ("POST", "/api/tenants/t1/snapshots", {"json": {"name": "a\x01b"}}, 422, "invalid_request"),
    ("DELETE", "/api/tenants/t1/snapshots/never", {}, 404, "unknown_snapshot"),
    ("DELETE", "/api/tenants/nobody", {}, 404, "unknown_tenant"),
    ("POST", "/api/mods", {"json": {}}, 422, "invalid_request"),
    ("POST", "/api/mods", {"json": {"mod_path": "os"}}, 403, "mod_path_refused"),
    ("POST", "/api/mods", {"json": {"mod_path": "../../etc/passwd"}}, 403, "mod_path_refused"),
    (
        "POST",
        "/api/mods",
        {"json": {"mod_path": "plughost.mods.shared_cache", "config": {"max_items": -1}}},
        422,
        "mod_load_failed",
    ),
    (
        "POST",
        "/api/mods",
        {"json": {"mod_path": "plughost.mods.shared_cache", "config": []}},
        422,
        "invalid_request",
    ),
    ("DELETE", "/api/mods/never_loaded", {}, 404, "mod_not_loaded"),
    ("POST", "/api/events", {"json": {"event_name": "bad name!"}}, 422, "invalid_request"),
    (
        "POST",
        "/api/events",
        {"json": {"event_name": "a.b", "payload": "x"}},
        422,
        "invalid_request",
    ),
    ("POST", "/api/events", {"json": {"event_name": "a.b", "surprise": 1}}, 422, "invalid_request"),
    (
        "POST",
        "/api/events",
        {"content": b"[" * 100_000, "headers": {"Content-Type": "application/json"}},
        400,
        "invalid_json",
    ),
    (
        "PUT",
        "/api/tenants/t1/bundle",
        {
            "content": b"[" * 100_000 + b"]" * 100_000,
            "headers": {"Content-Type": "application/json"},
        },
        400,
        "invalid_json",
    ),
    (
        "POST",
        "/api/tenants/t1/agents/Notifier/call",
        {"json": {"args": {"message": "x" * 500_000}}},
        413,
        "too_large",
    ),
    (
        "POST",
        "/api/events",
        {
            "content": (b"x" * (1 << 16) for _ in range(40)),  # chunked: no Content-Length
            "headers": {"Content-Type": "application/json"},
        },
        413,
        "too_large",
    ),
    ("GET", "/api/nowhere", {}, 404, "not_found"),
    ("PATCH", "/api/tenants/t1", {}, 405, "method_not_allowed"),
]


@pytest.mark.parametrize(("method", "path", "kwargs", "status", "code"), BAD_INPUTS)
def test_bad_input_gets_a_clear_error_and_never_a_500(
    api: Api, method: str, path: str, kwargs: dict[str, Any], status: int, code: str
) -> None:
    before = api.request("GET", "/api/tenants/t1", ADMIN).json()
    response = api.request(method, path, ADMIN, **kwargs)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code and error["message"]
    assert api.request("GET", "/api/tenants/t1", ADMIN).json()["version"] == before["version"]
    assert api.request("GET", "/api/health", None).json()["status"] == "healthy"


def test_a_tenant_token_cannot_touch_global_or_other_tenants_mods(api: Api) -> None:
    admin = api.server.client()
    admin.load_mod("plughost.mods.shared_cache", mod_id="global_cache")
    admin.load_mod("plughost.mods.shared_artifact", mod_id="theirs", tenant="t2")
    t1 = api.tokens["t1"]

    def system(event_name: str, payload: dict[str, Any]) -> httpx.Response:
        event = {
            "event_name": event_name,
            "destination_id": "system:system",
            "payload": payload,
            "tenant": "t1",
        }
        return api.request("POST", "/api/events", t1, json=event)

    for target in ("global_cache", "t2/theirs", "theirs", "plughost.mods.shared_cache"):
        response = system("system.mod.unload", {"mod_id": target})
        assert response.status_code == 200 and not response.json()["success"], target
    for rpc_name in ("t2/theirs", "global_cache"):
        for event_name in ("system.instance.unload", "system.instance.restart"):
            response = system(event_name, {"rpc_name": rpc_name})
            assert not response.json()["success"], (event_name, rpc_name)
        assert api.request("DELETE", f"/api/instances/{rpc_name}", t1).status_code == 403
    listed = system("system.mod.list", {}).json()["data"]["mods"]
    assert "t2/theirs" not in listed and "global_cache" in listed
    loaded = admin.health()["mods"]["loaded"]
    assert "global_cache" in loaded and "t2/theirs" in loaded
    admin.unload_mod("global_cache")
    admin.unload_mod("theirs", tenant="t2")


def test_the_client_keeps_every_name_inside_its_path_segment(api: Api) -> None:
    with api.server.client() as admin:
        for name in ("jan#old", "jan?x=1", "a b%2F", "..x", "ünï"):
            admin.create_snapshot("t1", name)
            assert name in [s["name"] for s in admin.list_snapshots("t1")]
            admin.delete_snapshot("t1", name)
        with pytest.raises(ClientError) as caught:
            admin.delete_snapshot("t1", "..")
        assert caught.value.status == 404
        assert "t1" in [t["name"] for t in admin.list_tenants()]
        with pytest.raises(ClientError) as caught:
            admin.call("t1", "W/../../../mods")
        assert caught.value.status == 404  # no route matches: it reached nothing
