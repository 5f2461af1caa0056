"""A tenant reaches nothing of another tenant: not its mods by a bare name, not a mod file
outside the roots by a link. Against a real server where the way in is HTTP."""

from __future__ import annotations

import asyncio
import base64
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from plughost import (
    Event,
    ModLoadError,
    ModNotLoadedError,
    ModPathRefusedError,
    Network,
    OutsideTenantError,
    RpcError,
)

from .conftest import PLACEMENTS, STALL_ATTEMPTS, SharedFolder, agent_bundle
from .server import ServerProcess
from .test_instances import robot_bundle
from .test_placements import FAILING_AGENTS

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
        tokens["carol"] = client.deploy("carol", ROOT / "examples" / "bob", placement="process")[
            "token"
        ]
        client.load_mod("plughost.mods.shared_cache", tenant="alice")
        client.load_mod("plughost.mods.shared_artifact")
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


def test_health_shows_each_caller_only_what_it_may_see(server: Server) -> None:
    def health(token: str | None) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        answer = httpx.get(server.process.url + "/api/health", headers=headers, timeout=60)
        assert answer.status_code == 200, answer.text
        body: dict[str, Any] = answer.json()
        return body

    established = {"status", "network_id", "uptime", "mods", "tenants", "namespaces", "workers"}
    anonymous = health(None)
    assert established <= anonymous.keys()
    # The established fields name global mods only; the rest is counted.
    assert anonymous["mods"]["loaded"] == ["shared_artifact"]
    assert anonymous["counts"] == {"mods": 2, "failed_mods": 0, "workers": 1}
    assert anonymous["workers"] == {}
    assert anonymous["tenants"] == {"count": 3, "sealed": []}
    text = json.dumps(anonymous)
    assert not any(name in text for name in ("alice", "bob", "carol", "shared_cache")), text

    bob = health(server.tokens["bob"])
    assert bob["mods"]["loaded"] == ["shared_artifact"]
    assert bob["workers"] == {}
    # Counts too are of bob's own tenant: how many others there are is not his to know.
    assert bob["tenants"] == {"count": 1, "sealed": []}
    assert bob["namespaces"]["loaded"] <= 1 < health(ADMIN)["namespaces"]["loaded"]
    assert "alice" not in json.dumps(bob) and "carol" not in json.dumps(bob)
    carol = health(server.tokens["carol"])
    assert list(carol["workers"]) == ["carol"] and carol["workers"]["carol"]["state"] == "ready"
    assert "alice" not in json.dumps(carol)

    admin = health(ADMIN)
    assert sorted(admin["mods"]["loaded"]) == ["alice/shared_cache", "shared_artifact"]
    assert list(admin["workers"]) == ["carol"]
    bad = httpx.get(
        server.process.url + "/api/health", headers={"Authorization": "Bearer nope"}, timeout=60
    )
    assert bad.status_code == 401


def test_error_texts_name_nothing_of_another_tenant(server: Server) -> None:
    system = "system:system"
    for event in (
        {"event_name": "system.mod.unload", "payload": {"mod_id": "shared_cache"}},
        {"event_name": "system.instance.restart", "payload": {"rpc_name": "shared_cache"}},
        {"event_name": "shared_cache.get", "destination_id": "mod:nope", "payload": {}},
    ):
        event = {"destination_id": system, "tenant": "bob", **event}
        answer = server.event("bob", event)
        assert "alice" not in answer.text and "carol" not in answer.text, answer.text
        assert answer.status_code in (200, 403, 404), answer.text
    texts = []
    for rpc_name in ("alice/shared_cache", "alice/nothing"):
        for verb in ("restart", "unload"):
            event = {
                "event_name": f"system.instance.{verb}",
                "destination_id": system,
                "tenant": "bob",
                "payload": {"rpc_name": rpc_name},
            }
            texts.append(server.event("bob", event).text.replace(rpc_name, "<name>"))
    assert texts[:2] == texts[2:]  # the answers do not tell which one exists
    listed = server.event(
        "bob", {"event_name": "system.mod.list", "destination_id": system, "tenant": "bob"}
    )
    assert list(listed.json()["data"]["mods"]) == ["shared_artifact"], listed.text


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


LISTENER = """
from plughost import Mod, on, rpc


class ListenerMod(Mod):
    def initialize(self):
        self.heard = []

    @on("system.mod.*")
    def mod_changed(self, event):
        self.heard.append(event.payload["mod_id"])

    @rpc
    def heard_of(self):
        return list(self.heard)
"""


@pytest.mark.parametrize("placement", PLACEMENTS)
async def test_a_tenant_hears_of_its_own_and_global_mods_only(
    network: Network, placement: str
) -> None:
    listener = {
        "files": [
            {"filename": "listener.py", "source": LISTENER},
            {
                "filename": "plughost.toml",
                "source": '[[mods]]\npath = "listener"\nname = "listener"\n',
            },
        ]
    }
    await network.deploy("bob", listener, placement=placement)  # type: ignore[arg-type]
    await network.deploy("alice", {"agents": [{"filename": "a.py", "source": "X = 1\n"}]})
    await network.load_mod("plughost.mods.shared_cache", tenant="alice", mod_id="alices_cache")
    await network.unload_mod("alice/alices_cache")
    await network.load_mod("plughost.mods.shared_cache", tenant="bob", mod_id="bobs_cache")
    await network.load_mod("plughost.mods.shared_artifact")
    heard = await network.rpc("bob/listener", "heard_of")
    assert heard == ["bobs_cache", "shared_artifact"]


SNOOP = """
from plughost import Mod, on, rpc


class SnoopMod(Mod):
    def initialize(self):
        self.heard = []

    @on("topic:{subscribe}")
    def hear(self, event):
        self.heard.append(event.payload)

    @rpc
    async def send(self, topic):
        return await self.publish(topic, {{"from": self.tenant}})

    @rpc
    def heard_of(self):
        return list(self.heard)
"""


def _snoop_bundle(subscribe: str, expose: list[str] | None = None) -> dict[str, Any]:
    manifest = f'[[mods]]\npath = "snoop"\nname = "snoop"\nexpose = {json.dumps(expose or [])}\n'
    return {
        "files": [
            {"filename": "snoop.py", "source": SNOOP.format(subscribe=subscribe)},
            {"filename": "plughost.toml", "source": manifest},
        ]
    }


@pytest.mark.parametrize("placement", PLACEMENTS)
async def test_a_tenant_subscribes_and_publishes_only_where_it_may(
    tmp_path: Path, placement: str
) -> None:
    async with Network(tmp_path / "data", shared_topics=["/clock"]) as network:
        await network.deploy("alice", _snoop_bundle("secret"), placement=placement)  # type: ignore[arg-type]
        # An exposed topic is for publishing: reading /status would read everyone's.
        for topic, expose in (("/alice/secret", []), ("/status", []), ("/status", ["status"])):
            with pytest.raises(ModLoadError, match=r"at subscribe: .*outside what a mod of tenant"):
                await network.deploy("bob", _snoop_bundle(topic, expose), placement=placement)  # type: ignore[arg-type]
            assert "bob" not in network.list_tenants()
        (network.data_dir / "mods" / "peek.py").write_text(
            SNOOP.format(subscribe="/bob/status").replace("SnoopMod", "PeekMod")
        )
        with pytest.raises(ModLoadError, match="at subscribe: /bob/status"):
            await network.load_mod("peek", tenant="alice")
        assert network.get_loaded_mods() == ["alice/snoop"]
        await network.deploy("bob", _snoop_bundle("/clock", expose=["status"]), placement=placement)  # type: ignore[arg-type]
        # Bob may not forge into Alice's stream, nor into a global topic he does not expose.
        for topic in ("/alice/secret", "/news"):
            # In a worker the refusal comes back through the RPC, as what the method raised.
            with pytest.raises((OutsideTenantError, RpcError), match=r"outside tenant 'bob'"):
                await network.rpc("bob/snoop", "send", topic)
        assert await network.rpc("alice/snoop", "heard_of") == []
        assert await network.rpc("alice/snoop", "send", "secret") == 1
        assert await network.rpc("bob/snoop", "send", "/clock") == 1
        assert await network.rpc("bob/snoop", "send", "status") == 0  # published to /status
        assert await network.rpc("alice/snoop", "heard_of") == [{"from": "alice"}]
        assert await network.rpc("bob/snoop", "heard_of") == [{"from": "bob"}]


async def test_removing_a_tenant_removes_the_data_its_own_mods_kept(tmp_path: Path) -> None:
    encoded = base64.b64encode(b"alice's secret").decode()
    put = Event(
        event_name="shared_artifact.put",
        destination_id="mod:alice/shared_artifact",
        payload={"name": "secret.txt", "content_base64": encoded},
    )
    async with Network(tmp_path / "data") as network:
        await network.deploy("alice", {"agents": [{"filename": "a.py", "source": "X = 1\n"}]})
        await network.load_mod("plughost.mods.shared_artifact", tenant="alice")
        assert (await network.send_event(put, confine_to="alice")).success
        await network.remove_tenant("alice")
        await network.deploy("alice", {"agents": [{"filename": "b.py", "source": "X = 2\n"}]})
        await network.load_mod("plughost.mods.shared_artifact", tenant="alice")
        listed = await network.send_event(
            Event(event_name="shared_artifact.list", destination_id="mod:alice/shared_artifact"),
            confine_to="alice",
        )
        assert listed.data == {"artifacts": []}
        assert await network.collect_garbage() is not None
        # A removal cut short after its commit (here: data written back meanwhile) is
        # finished at the next start; a name that never was a tenant keeps its data.
        await network.remove_tenant("alice")
    left = tmp_path / "data" / "tenants" / "alice" / "artifacts" / "secret.txt"
    left.parent.mkdir(parents=True)
    left.write_text("left behind")
    never = tmp_path / "data" / "tenants" / "nobody" / "artifacts" / "kept.txt"
    never.parent.mkdir(parents=True)
    never.write_text("kept")
    async with Network(tmp_path / "data"):
        assert not left.exists()
        assert never.read_text() == "kept"


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


def test_a_60_mib_json_upload_stalls_no_other_tenants_call(tmp_path: Path) -> None:
    agent = (ROOT / "examples" / "bob" / "notifier_agent.py").read_text()
    helpers = (ROOT / "examples" / "bob" / "helpers.py").read_text()
    files = [
        {"filename": "notifier_agent.py", "source": agent},
        {"filename": "helpers.py", "source": helpers},
        *({"filename": f"data/part{i}.txt", "source": "x" * (1 << 20)} for i in range(40)),
    ]
    # 40 MiB of files, then 20 MiB of small items: what a parser on the loop chews longest.
    large = json.dumps({"files": files}).encode()
    many_items = json.dumps({"files": files[:2], "tags": list(range(3_000_000))}).encode()
    assert len(large) + len(many_items) > 60 * (1 << 20)
    process = ServerProcess(tmp_path, admin_token=ADMIN).start()
    try:
        with process.client() as admin:
            admin.deploy("quick", ROOT / "examples" / "bob")
            admin.deploy("big", ROOT / "examples" / "alice")
        stalls: list[float] = []
        answers: list[httpx.Response] = []
        for _ in range(STALL_ATTEMPTS):
            answers = []

            def uploads(into: list[httpx.Response] = answers) -> None:
                for body in (large, many_items):
                    _upload(process, "big", body, into)

            stall = process.longest_wait_beside(uploads)
            stalls.append(stall)
            if stall < 0.1:
                break
        assert min(stalls) < 0.1, (
            f"another tenant's call waited {[round(s * 1000) for s in stalls]} ms"
        )
        assert answers[0].status_code == 200, answers[0].text[:500]
        assert answers[1].status_code == 400, answers[1].text[:500]
        assert "metadata" in answers[1].json()["error"]["message"]
    finally:
        assert process.stop()


def _upload(
    process: ServerProcess, tenant: str, body: bytes, answers: list[httpx.Response]
) -> None:
    answers.append(
        httpx.put(
            f"{process.url}/api/tenants/{tenant}/bundle",
            content=body,
            headers={"Authorization": f"Bearer {ADMIN}", "Content-Type": "application/json"},
            timeout=300,
        )
    )


def test_a_deeply_nested_answer_is_a_422_over_http_in_every_placement(tmp_path: Path) -> None:
    process = ServerProcess(tmp_path, admin_token=ADMIN).start()
    try:
        with process.client() as admin:
            for placement in PLACEMENTS:
                bundle = tmp_path / f"deep-{placement}.json"
                bundle.write_text(json.dumps(agent_bundle("ok", extra=FAILING_AGENTS)))
                admin.deploy(f"deep-{placement}", bundle, placement=placement)
        for placement in PLACEMENTS:
            answer = httpx.post(
                f"{process.url}/api/tenants/deep-{placement}/agents/Deep/call",
                json={"args": {}},
                headers={"Authorization": f"Bearer {ADMIN}"},
                timeout=60,
            )
            assert answer.status_code == 422, answer.text
            error = answer.json()["error"]
            assert error["code"] == "agent_error" and "nested deeper than 200" in error["message"]
    finally:
        assert process.stop()


BIG_ANSWER = """
from agents.basic_agent import BasicAgent


class BigAgent(BasicAgent):
    name = "Big"

    def perform(self, **kwargs):
        return [{"id": i, "name": f"record {i}", "even": i % 2 == 0} for i in range(300_000)]
"""


def test_a_large_answer_over_http_stalls_no_other_tenants_call(tmp_path: Path) -> None:
    bundle = tmp_path / "big.json"
    bundle.write_text(json.dumps({"agents": [{"filename": "big.py", "source": BIG_ANSWER}]}))
    process = ServerProcess(tmp_path, admin_token=ADMIN).start()
    try:
        with process.client() as admin:
            admin.deploy("quick", ROOT / "examples" / "bob")
            for placement in PLACEMENTS:
                admin.deploy(f"big-{placement}", bundle, placement=placement)
        for placement in PLACEMENTS:
            stalls: list[float] = []
            answers: list[httpx.Response] = []
            for _ in range(STALL_ATTEMPTS):

                def call_big(into: list[httpx.Response] = answers, where: str = placement) -> None:
                    into.append(
                        httpx.post(
                            f"{process.url}/api/tenants/big-{where}/agents/Big/call",
                            json={"args": {}},
                            headers={"Authorization": f"Bearer {ADMIN}"},
                            timeout=300,
                        )
                    )

                stalls.append(process.longest_wait_beside(call_big))
                if stalls[-1] < 0.1:
                    break
            assert min(stalls) < 0.1, (
                f"{placement}: another tenant's call waited {[round(s * 1000) for s in stalls]} ms"
            )
            output = answers[-1].json()["output"]
            assert len(output) == 300_000 and output[-1]["name"] == "record 299999"
    finally:
        assert process.stop()


ASKER = """
from plughost import Mod, rpc


class AskerMod(Mod):
    @rpc
    async def cache_stats(self):
        return await self.rpc("shared_cache", "stats")
"""


@pytest.mark.parametrize("placement", PLACEMENTS)
async def test_a_global_mods_rpc_answers_a_tenant_with_its_own_data_only(
    network: Network, placement: str
) -> None:
    await network.load_mod("plughost.mods.shared_cache")
    asker = {
        "files": [
            {"filename": "asker.py", "source": ASKER},
            {"filename": "plughost.toml", "source": '[[mods]]\npath = "asker"\nname = "asker"\n'},
        ]
    }
    await network.deploy("bob", asker, placement=placement)  # type: ignore[arg-type]
    await network.deploy("alice", {"agents": [{"filename": "a.py", "source": "X = 1\n"}]})
    for tenant in ("alice", "bob"):
        event = Event(
            event_name="shared_cache.set",
            destination_id="mod:shared_cache",
            payload={"key": "k", "value": tenant},
        )
        assert (await network.send_event(event, confine_to=tenant)).success
    assert (await network.rpc("bob/asker", "cache_stats"))["items"] == {"bob": 1}
    assert (await network.rpc("shared_cache", "stats"))["items"] == {"alice": 1, "bob": 1}


SLOW_WRITER = """
import time
from pathlib import Path
from plughost import Mod, on
from plughost.store import tenant_data_dir


class SlowWriterMod(Mod):
    @on("slow_writer.put")
    def put(self, event):
        Path(self.network.data_dir, "started-" + event.tenant).touch()
        time.sleep(0.5)
        folder = tenant_data_dir(Path(self.network.data_dir), event.tenant)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "late.txt").write_text("written for " + event.tenant)
"""


@pytest.mark.parametrize("unload_timeout", [5.0, 0.05])
async def test_a_write_for_a_removed_tenant_reaches_no_new_tenant_of_its_name(
    tmp_path: Path, unload_timeout: float
) -> None:
    async with Network(tmp_path / "data", unload_timeout=unload_timeout) as network:
        (network.data_dir / "mods" / "slow_writer.py").write_text(SLOW_WRITER)
        await network.load_mod("slow_writer")
        await network.deploy("bob", {"agents": [{"filename": "a.py", "source": "X = 1\n"}]})
        event = Event(event_name="slow_writer.put", destination_id="mod:slow_writer")
        writing = asyncio.create_task(network.send_event(event, confine_to="bob"))
        while not (network.data_dir / "started-bob").exists():
            await asyncio.sleep(0.01)
        await network.remove_tenant("bob")
        late = network.data_dir / "tenants" / "bob" / "late.txt"
        if unload_timeout > 1:
            assert not late.exists()  # the removal waited for the write, then removed it
        assert (await writing).success
        await network.deploy("bob", {"agents": [{"filename": "b.py", "source": "X = 2\n"}]})
        assert not late.exists()  # a new bob starts with nothing of the old one


FICKLE = """
from pathlib import Path
from plughost import Mod, on, rpc

CHOSEN = Path({path!r})
TOPIC = CHOSEN.read_text() if CHOSEN.exists() else "mine"


class FickleMod(Mod):
    @on("topic:" + TOPIC)
    def hear(self, event):
        pass

    @rpc
    def topic(self):
        return TOPIC
"""


@pytest.mark.parametrize("placement", PLACEMENTS)
async def test_a_restart_refused_for_its_topics_keeps_the_instance_running(
    network: Network, tmp_path: Path, placement: str
) -> None:
    shared = SharedFolder(placement, tmp_path)
    bundle = {
        "files": [
            {"filename": "fickle.py", "source": FICKLE.format(path=f"{shared.inside}/topic.txt")},
            {"filename": "plughost.toml", "source": '[[mods]]\npath = "fickle"\nname = "f"\n'},
        ]
    }
    await network.deploy("bob", bundle, placement=placement)  # type: ignore[arg-type]
    (shared.on_host(network, "bob") / "topic.txt").write_text("/alice/secret")
    with pytest.raises(ModLoadError, match="/alice/secret"):
        await network.restart("bob/f")
    assert await network.rpc("bob/f", "topic") == "mine"
