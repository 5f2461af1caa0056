"""A tenant reaches nothing of another tenant: not its mods by a bare name, not a mod file
outside the roots by a link. Against a real server where the way in is HTTP."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from plughost import ModNotLoadedError, ModPathRefusedError, Network, OutsideTenantError

from .conftest import agent_bundle
from .server import ServerProcess
from .test_instances import robot_bundle

ADMIN = "admin-token-for-isolation"
ROOT = Path(__file__).resolve().parent.parent


class Server:
    def __init__(self, process: ServerProcess, tokens: dict[str, str]) -> None:
        self.process = process
        self.tokens = tokens

    def event(self, tenant: str, event: dict[str, Any]) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.tokens[tenant]}"}
        return httpx.post(self.process.url + "/api/events", json=event, headers=headers, timeout=60)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    folder = tmp_path_factory.mktemp("isolation")
    process = ServerProcess(folder, admin_token=ADMIN).start()
    tokens = {ADMIN: ADMIN}
    with process.client() as client:
        for tenant in ("alice", "bob"):
            tokens[tenant] = client.deploy(tenant, ROOT / "examples" / tenant)["token"]
        client.load_mod("plughost.mods.shared_cache", tenant="alice")
    try:
        yield Server(process, tokens)
    finally:
        assert process.stop()


def _cache(event_name: str, destination: str, **payload: Any) -> dict[str, Any]:
    return {"event_name": event_name, "destination_id": destination, "payload": payload}


@pytest.mark.parametrize("name", ["shared_cache", "SharedCacheMod"])
def test_a_bare_mod_name_never_resolves_in_another_tenant(server: Server, name: str) -> None:
    stored = server.event("alice", _cache("shared_cache.set", f"mod:{name}", key="k", value="a"))
    assert stored.status_code == 200 and stored.json()["success"], stored.text
    for event in (
        _cache("shared_cache.get", f"mod:{name}", key="k"),
        _cache("shared_cache.set", f"mod:{name}", key="k", value="forged by bob"),
    ):
        answer = server.event("bob", event)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert not body["success"] and "alice" not in answer.text, answer.text
        assert "is not loaded" in body["message"]
    kept = server.event("alice", _cache("shared_cache.get", f"mod:{name}", key="k"))
    assert kept.json()["data"]["value"] == "a", kept.text


def test_another_tenants_mod_key_is_refused_whether_it_exists_or_not(server: Server) -> None:
    texts = []
    for key in ("alice/shared_cache", "alice/no_such_mod"):
        answer = server.event("bob", _cache("shared_cache.get", f"mod:{key}", key="k"))
        assert answer.status_code == 403, answer.text
        texts.append(answer.json()["error"]["message"].replace(key, "<key>"))
    assert texts[0] == texts[1]  # the answer does not tell which one exists


async def test_rpc_by_a_bare_name_stays_inside_the_callers_tenant(network: Network) -> None:
    await network.deploy("robot1", robot_bundle(fps=30))
    await network.deploy("lonely", {"agents": [{"filename": "a.py", "source": "X = 1\n"}]})
    assert (await network.rpc("camera", "settings", tenant="robot1"))["config"] == {"fps": 30}
    with pytest.raises(ModNotLoadedError) as refused:
        await network.rpc("camera", "settings", tenant="lonely")
    assert "robot1" not in str(refused.value)
    with pytest.raises(OutsideTenantError):
        await network.rpc("robot1/camera", "settings", tenant="lonely")
    # The admin, acting for no tenant, still finds the one camera there is.
    assert (await network.rpc("camera", "settings"))["config"] == {"fps": 30}


async def test_a_dotted_mod_path_may_not_follow_a_link_out_of_the_roots(
    network: Network, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    marker = tmp_path / "ran"
    (outside / "evil.py").write_text(
        f"from pathlib import Path\nPath({str(marker)!r}).touch()\n"
        "from plughost import Mod\nclass EvilMod(Mod):\n    pass\n"
    )
    (outside / "pkg").mkdir()
    (outside / "pkg" / "__init__.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    mods = network.data_dir / "mods"
    (mods / "evil.py").symlink_to(outside / "evil.py")
    (mods / "linked_pkg").symlink_to(outside / "pkg", target_is_directory=True)
    for mod_path in ("evil", "linked_pkg", str(mods / "evil.py"), str(mods / "linked_pkg")):
        with pytest.raises(ModPathRefusedError, match="not inside an allowed mod root"):
            await network.load_mod(mod_path)
    assert not marker.exists()
    assert network.get_loaded_mods() == []


def test_a_removed_tenant_is_not_brought_back_by_its_own_slow_upload(
    tmp_path: Path,
) -> None:
    marker = tmp_path / "bob-code-ran"
    source = f"open({str(marker)!r}, 'w').close()\n"
    body = json.dumps({"agents": [{"filename": "late.py", "source": source}]}).encode()
    process = ServerProcess(tmp_path, admin_token=ADMIN).start()
    try:
        with process.client() as admin:
            token = admin.deploy("bob", ROOT / "examples" / "bob")["token"]
        half_sent, removed = threading.Event(), threading.Event()

        def slow_body() -> Iterator[bytes]:
            yield body[:10]
            half_sent.set()
            assert removed.wait(60)
            yield body[10:]

        answers: list[httpx.Response] = []

        def upload() -> None:
            answers.append(
                httpx.put(
                    process.url + "/api/tenants/bob/bundle",
                    content=slow_body(),
                    headers={
                        "Authorization": f"Bearer {token}",
                        "Content-Type": "application/json",
                    },
                    timeout=60,
                )
            )

        uploading = threading.Thread(target=upload)
        uploading.start()
        assert half_sent.wait(60)
        deleted = httpx.delete(
            process.url + "/api/tenants/bob", headers={"Authorization": f"Bearer {ADMIN}"}
        )
        assert deleted.status_code == 200, deleted.text
        removed.set()
        uploading.join(60)
        assert answers and answers[0].status_code in (401, 403, 404), answers[0].text
        tenants = httpx.get(
            process.url + "/api/tenants", headers={"Authorization": f"Bearer {ADMIN}"}
        )
        assert tenants.json() == []
        assert not marker.exists()
    finally:
        assert process.stop()


_REWRITER = '''\
import os
from pathlib import Path

from plughost import Agent

REPLACEMENT = """\\
from plughost import Agent
class Rewriter(Agent):
    name = 'Rewriter'
    def perform(self, **kwargs):
        return 'rewritten'
"""


class Rewriter(Agent):
    name = "Rewriter"

    def perform(self, **kwargs):
        if kwargs.get("rewrite"):
            # Read-only by mode; the files' owner may undo that, and root need not.
            os.chmod(Path(__file__).parent, 0o755)
            os.chmod(__file__, 0o644)
            Path(__file__).write_text(REPLACEMENT)
        return "original"
'''


async def test_a_snapshot_that_rewrites_its_own_file_runs_its_original_code_when_loaded_again(
    tmp_path: Path,
) -> None:
    rewriter = {"agents": [{"filename": "rewriter.py", "source": _REWRITER}]}
    async with Network(tmp_path / "data", max_loaded_namespaces=1) as network:
        await network.deploy("acme", rewriter)
        await network.create_snapshot("acme", "jan")
        await network.deploy("other", agent_bundle("other"))
        assert await network.call_agent("acme", "Rewriter", {"rewrite": True}, snapshot="jan") == (
            "original"
        )
        problems = await network.check()
        assert any(
            p.startswith("snapshot acme/jan: ") and "rewriter.py differs" in p for p in problems
        )
        # The bound is 1: a call to another tenant unloads the snapshot.
        assert await network.call_agent("other", "Notifier") == "other:"
        assert [ns.tenant for ns in network.loaded_namespaces()] == ["other"]

        assert await network.call_agent("acme", "Rewriter", snapshot="jan") == "original"
        assert await network.call_agent("acme", "Rewriter") == "original"
        assert await network.check() == []
