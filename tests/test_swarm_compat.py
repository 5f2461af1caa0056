"""The swarm server's wire API, against a real ``plughost serve --compat rapp``, called the
way that server's own shell tests call it: plain HTTP requests and their JSON."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from .server import ServerProcess

ADMIN = "admin-token-for-swarm-tests"

MEMORY_AGENTS = [
    {
        "filename": "save_memory_agent.py",
        "source": """\
import json, os
from agents.basic_agent import BasicAgent

class SaveMemoryAgent(BasicAgent):
    def __init__(self):
        self.name = "SaveMemory"
        self.metadata = {"name": self.name, "description": "Saves a fact",
                         "parameters": {"type": "object",
                                        "properties": {"fact": {"type": "string"}}}}
        super().__init__(name=self.name, metadata=self.metadata)

    def perform(self, fact="", **kwargs):
        path = os.environ.get("BRAINSTEM_MEMORY_PATH")
        memory = json.load(open(path)) if os.path.exists(path) else []
        memory.append(fact)
        with open(path, "w") as out:
            json.dump(memory, out)
        return f"saved: {fact}"
""",
    },
    {
        "filename": "recall_memory_agent.py",
        "source": """\
import json, os
from agents.basic_agent import BasicAgent

class RecallMemoryAgent(BasicAgent):
    def __init__(self):
        self.name = "RecallMemory"
        self.metadata = {"name": self.name, "description": "Recalls facts",
                         "parameters": {"type": "object", "properties": {}}}
        super().__init__(name=self.name, metadata=self.metadata)

    def perform(self, **kwargs):
        path = os.environ.get("BRAINSTEM_MEMORY_PATH")
        return json.load(open(path)) if os.path.exists(path) else []
""",
    },
]


def swarm(agents: list[dict[str, str]], **fields: Any) -> dict[str, Any]:
    base = {"schema": "rapp-swarm/1.0", "name": "Twin", "purpose": "remembers"}
    return {**base, **fields, "agents": agents}


def echo_agent(name: str, body: str, imports: str = "") -> dict[str, str]:
    source = (
        f"{imports}from agents.basic_agent import BasicAgent\n\n"
        f"class {name}Agent(BasicAgent):\n"
        f"    name = {name!r}\n"
        f"    def perform(self, **kwargs):\n"
        f"        return {body}\n"
    )
    return {"filename": f"{name.lower()}_agent.py", "source": source}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    folder: Path = tmp_path_factory.mktemp("swarm")
    started = ServerProcess(folder, admin_token=ADMIN, args=["--compat", "rapp"]).start()
    yield started
    assert started.stop()


@pytest.fixture
def admin(server: ServerProcess) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=server.url, headers={"Authorization": f"Bearer {ADMIN}"}, timeout=60
    ) as client:
        yield client


def deployed(admin: httpx.Client, bundle: dict[str, Any]) -> dict[str, Any]:
    answer = admin.post("/api/swarm/deploy", json=bundle)
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def test_a_swarm_lives_remembers_is_snapshotted_and_sealed(
    server: ServerProcess, admin: httpx.Client
) -> None:
    count = httpx.get(f"{server.url}/api/swarm/healthz").json()["swarm_count"]

    # Deploy: no swarm_guid, so one is assigned.
    answer = deployed(admin, swarm(MEMORY_AGENTS))
    guid = answer["swarm_guid"]
    assert answer["status"] == "ok" and answer["name"] == "Twin" and answer["agent_count"] == 2
    assert answer["swarm_url"] == f"{server.url}/api/swarm/{guid}/agent"
    assert answer["info_url"] == f"{server.url}/api/swarm/{guid}/healthz"
    assert answer["tenant_token"]

    info = admin.get(f"/api/swarm/{guid}/healthz").json()
    assert info["agents"] == ["RecallMemory", "SaveMemory"] and info["sealed"] is False
    assert info["sealing"]["status"] == "active"

    def call(
        name: str,
        args: dict[str, Any] | None = None,
        user: str | None = None,
        snap: str | None = None,
    ) -> httpx.Response:
        path = f"/api/swarm/{guid}" + (f"/snapshots/{snap}" if snap else "") + "/agent"
        return admin.post(path, json={"name": name, "args": args or {}, "user_guid": user})

    # Call by name; memory saved and recalled, per user.
    assert call("SaveMemory", {"fact": "likes tea"}).json() == {
        "status": "ok",
        "output": "saved: likes tea",
    }
    assert call("SaveMemory", {"fact": "ann: jazz"}, user="ann-1").json()["output"]
    assert call("RecallMemory").json()["output"] == ["likes tea"]
    assert call("RecallMemory", user="ann-1").json()["output"] == ["ann: jazz"]
    unknown = call("Nope")
    assert unknown.status_code == 404
    assert unknown.json()["status"] == "error"
    assert unknown.json()["available"] == ["RecallMemory", "SaveMemory"]

    # Two snapshots, one label, one second: two names, each with its own state.
    first = admin.post(f"/api/swarm/{guid}/snapshot", json={"label": "birthday"}).json()
    call("SaveMemory", {"fact": "moved to Oslo"})
    second = admin.post(f"/api/swarm/{guid}/snapshot", json={"label": "birthday"}).json()
    call("SaveMemory", {"fact": "retired"})
    for taken in (first, second):
        assert taken["status"] == "ok" and taken["swarm_guid"] == guid
        assert taken["snapshot_label"] == "birthday" and taken["snapshot_iso"]
    assert first["snapshot_name"] != second["snapshot_name"]
    listed = admin.get(f"/api/swarm/{guid}/snapshots").json()
    assert [s["snapshot_name"] for s in listed["snapshots"]] == [
        first["snapshot_name"],
        second["snapshot_name"],
    ]
    then = call("RecallMemory", snap=first["snapshot_name"]).json()
    assert then == {
        "status": "ok",
        "output": ["likes tea"],
        "snapshot": first["snapshot_name"],
        "read_only": True,
    }
    later = call("RecallMemory", snap=second["snapshot_name"]).json()["output"]
    assert later == ["likes tea", "moved to Oslo"]
    assert call("RecallMemory").json()["output"] == ["likes tea", "moved to Oslo", "retired"]
    user_then = call("RecallMemory", user="ann-1", snap=first["snapshot_name"])
    assert user_then.json()["output"] == ["ann: jazz"]

    # A write to a snapshot is refused, says so, and changes nothing.
    refused = call("SaveMemory", {"fact": "rewrite"}, snap=first["snapshot_name"])
    assert refused.status_code == 423
    assert refused.json()["status"] == "error" and "read-only" in refused.json()["message"]
    assert call("RecallMemory", snap=first["snapshot_name"]).json()["output"] == ["likes tea"]
    unknown_snapshot = call("RecallMemory", snap="never")
    assert unknown_snapshot.status_code == 404

    # Seal: idempotent; redeploy, delete and writes answer 423; reads and snapshots go on.
    sealed = admin.post(f"/api/swarm/{guid}/seal", json={"actor": "family", "trigger": "death"})
    assert sealed.json()["status"] == "ok"
    sealing = sealed.json()["sealing"]
    assert (sealing["status"], sealing["sealed_by"], sealing["trigger"]) == (
        "sealed",
        "family",
        "death",
    )
    again = admin.post(f"/api/swarm/{guid}/seal", json={"actor": "someone", "trigger": "x"})
    assert again.json()["sealing"] == sealing
    assert admin.get(f"/api/swarm/{guid}/seal").json() == {
        "swarm_guid": guid,
        "sealed": True,
        "sealing": sealing,
    }
    redeploy = admin.post("/api/swarm/deploy", json=swarm(MEMORY_AGENTS, swarm_guid=guid))
    assert redeploy.status_code == 423 and "sealed" in redeploy.json()["message"]
    removal = admin.delete(f"/api/swarm/{guid}")
    assert removal.status_code == 423 and "sealed" in removal.json()["message"]
    write = call("SaveMemory", {"fact": "after the seal"})
    assert write.status_code == 423 and "sealed" in write.json()["message"]
    assert call("RecallMemory").json()["output"] == ["likes tea", "moved to Oslo", "retired"]
    last = admin.post(f"/api/swarm/{guid}/snapshot", json={"label": "final"})
    assert last.status_code == 200
    final = call("RecallMemory", snap=last.json()["snapshot_name"]).json()["output"]
    assert final == ["likes tea", "moved to Oslo", "retired"]
    info = admin.get(f"/api/swarm/{guid}/healthz").json()
    assert info["sealed"] is True and info["sealing"] == sealing

    # The top-level health counts it, with or without a token.
    top = admin.get("/api/swarm/healthz").json()
    assert top["status"] == "ok" and top["schema"] == "rapp-swarm/1.0"
    assert top["swarm_count"] == count + 1 == len(top["swarms"])
    entry = next(s for s in top["swarms"] if s["swarm_guid"] == guid)
    assert (entry["name"], entry["purpose"], entry["agent_count"]) == ("Twin", "remembers", 2)
    assert entry["created_at"] and entry["created_by"] == "admin"
    anonymous = httpx.get(f"{server.url}/api/swarm/healthz").json()
    assert anonymous["swarm_count"] == count + 1 and anonymous["swarms"] == []


def test_bad_bundles_get_400_and_change_nothing(admin: httpx.Client) -> None:
    before = admin.get("/api/swarm/list").json()["swarms"]
    for body, content in (
        (b"{not json", "application/json"),
        (b'{"schema": "rapp-swarm/1.0", "agents": []}', None),
        (b'{"schema": "rapp-swarm/9", "agents": [{"filename": "a.py", "source": ""}]}', None),
        (b'{"agents": [{"filename": "a.py"}]}', None),
        (b'{"swarm_guid": "../x", "agents": [{"filename": "a.py", "source": ""}]}', None),
        (b'{"agents": [{"filename": "../a.py", "source": "X = 1"}]}', None),
    ):
        headers = {"content-type": content or "application/json"}
        answer = admin.post("/api/swarm/deploy", content=body, headers=headers)
        assert answer.status_code == 400, (body, answer.text)
        assert answer.json()["status"] == "error" and answer.json()["message"]
    assert admin.get("/api/swarm/list").json()["swarms"] == before


def test_a_swarm_token_sees_its_own_swarm_only(server: ServerProcess, admin: httpx.Client) -> None:
    mine = deployed(admin, swarm([echo_agent("Echo", "'mine'")]))
    theirs = deployed(admin, swarm([echo_agent("Echo", "'theirs'")]))
    headers = {"Authorization": f"Bearer {mine['tenant_token']}"}
    with httpx.Client(base_url=server.url, headers=headers, timeout=60) as client:
        assert [s["swarm_guid"] for s in client.get("/api/swarm/list").json()["swarms"]] == [
            mine["swarm_guid"]
        ]
        top = client.get("/api/swarm/healthz").json()
        assert top["swarm_count"] == 1
        hidden = client.get(f"/api/swarm/{theirs['swarm_guid']}/healthz")
        assert hidden.status_code == 403 and theirs["swarm_guid"] not in hidden.text
        call = client.post(f"/api/swarm/{theirs['swarm_guid']}/agent", json={"name": "Echo"})
        assert call.status_code == 403
        assert (
            client.post(f"/api/swarm/{mine['swarm_guid']}/agent", json={"name": "Echo"}).json()[
                "output"
            ]
            == "mine"
        )
        # Creating a swarm, or removing one, is the admin's.
        assert (
            client.post("/api/swarm/deploy", json=swarm([echo_agent("X", "1")])).status_code == 403
        )
        assert client.delete(f"/api/swarm/{mine['swarm_guid']}").status_code == 403
    assert httpx.get(f"{server.url}/api/swarm/list").status_code == 401
    removed = admin.delete(f"/api/swarm/{theirs['swarm_guid']}")
    assert removed.json() == {"status": "ok", "removed": theirs["swarm_guid"]}
    assert admin.delete(f"/api/swarm/{theirs['swarm_guid']}").status_code == 404


def test_a_redeploy_replaces_the_swarm_and_keeps_no_removed_agent(admin: httpx.Client) -> None:
    """The swarm server's redeploy was additive: an agent file left out kept loading."""
    first = deployed(admin, swarm([echo_agent("Keep", "'v1'"), echo_agent("Drop", "'old'")]))
    guid = first["swarm_guid"]
    again = deployed(admin, swarm([echo_agent("Keep", "'v2'")], swarm_guid=guid))
    assert again["swarm_guid"] == guid and again["agent_count"] == 1 and "tenant_token" not in again
    assert admin.post(f"/api/swarm/{guid}/agent", json={"name": "Keep"}).json()["output"] == "v2"
    gone = admin.post(f"/api/swarm/{guid}/agent", json={"name": "Drop"})
    assert gone.status_code == 404 and gone.json()["available"] == ["Keep"]
    assert admin.get(f"/api/swarm/{guid}/healthz").json()["agents"] == ["Keep"]


def test_the_agents_alias_is_each_swarms_own(admin: httpx.Client) -> None:
    """The swarm server's ``agents.<stem>`` alias was one for all swarms: a swarm could get
    another's sibling module. Here each resolves its own, whichever loaded first."""
    guids = []
    for word in ("red", "blue"):
        files = [
            echo_agent("Color", "COLOR", imports="from agents.palette import COLOR\n"),
            {"filename": "palette.py", "source": f"COLOR = {word!r}\n"},
        ]
        guids.append(deployed(admin, swarm(files))["swarm_guid"])
    for guid, word in [*zip(guids, ("red", "blue"), strict=True)][::-1]:
        answer = admin.post(f"/api/swarm/{guid}/agent", json={"name": "Color"}).json()
        assert answer["output"] == word


def test_a_snapshot_of_a_composite_swarm_runs_its_own_helper(admin: httpx.Client) -> None:
    """The swarm server's snapshot of a swarm whose agent imports a sibling ran the live
    sibling. Here a snapshot runs the files it was taken with."""

    def files(version: str) -> list[dict[str, str]]:
        return [
            echo_agent("Greet", "greeting()", imports="from helper import greeting\n"),
            {"filename": "helper.py", "source": f"def greeting():\n    return {version!r}\n"},
        ]

    guid = deployed(admin, swarm(files("hello v1")))["swarm_guid"]
    snap = admin.post(f"/api/swarm/{guid}/snapshot", json={"label": "v1"}).json()
    deployed(admin, swarm(files("hello v2"), swarm_guid=guid))
    live = admin.post(f"/api/swarm/{guid}/agent", json={"name": "Greet"}).json()
    then = admin.post(
        f"/api/swarm/{guid}/snapshots/{snap['snapshot_name']}/agent", json={"name": "Greet"}
    ).json()
    assert (live["output"], then["output"]) == ("hello v2", "hello v1")


def test_a_seal_racing_redeploys_freezes_the_version_it_answered(admin: httpx.Client) -> None:
    """The swarm server checked the seal outside its lock: a redeploy under way could land
    after the seal. Here, once the seal answers, the live version never changes."""

    def files(n: int) -> list[dict[str, str]]:
        slow = "import time\ntime.sleep(0.1)\n"
        return [echo_agent("Slow", str(n), imports=slow)]

    guid = deployed(admin, swarm(files(0)))["swarm_guid"]
    statuses: list[int] = []

    def redeploy(n: int) -> None:
        with httpx.Client(base_url=str(admin.base_url), headers=admin.headers, timeout=60) as c:
            answer = c.post("/api/swarm/deploy", json=swarm(files(n), swarm_guid=guid))
            statuses.append(answer.status_code)

    threads = [threading.Thread(target=redeploy, args=(n,)) for n in range(1, 7)]
    for thread in threads:
        thread.start()
        time.sleep(0.03)
        if thread is threads[2]:
            sealed = admin.post(f"/api/swarm/{guid}/seal", json={"trigger": "race"})
            assert sealed.status_code == 200
            version = admin.get(f"/api/tenants/{guid}/seal").json()["version"]
    for thread in threads:
        thread.join()
    assert sorted(set(statuses)) <= [200, 423] and 423 in statuses, statuses
    assert admin.get(f"/api/tenants/{guid}").json()["version"] == version


def test_the_swarm_routes_are_off_unless_asked_for(tmp_path: Path) -> None:
    plain = ServerProcess(tmp_path, admin_token=ADMIN).start()
    try:
        answer = httpx.get(f"{plain.url}/api/swarm/healthz")
        assert answer.status_code == 404
    finally:
        assert plain.stop()
