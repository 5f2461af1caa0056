"""The README quickstart, step by step, against a real server; restarts keep everything."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from plughost.client import Client

from .server import ServerProcess

ROOT = Path(__file__).resolve().parent.parent


def quickstart_lines() -> list[str]:
    """The commands of the README's Quickstart block."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Quickstart", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S)
    assert block is not None, "the README has no quickstart block"
    return [line for line in block.group(1).splitlines() if line.strip()]


def test_the_readme_quickstart_works_step_by_step(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    server = ServerProcess(tmp_path).start()
    try:
        outputs: dict[str, str] = {}
        for line in quickstart_lines():
            if line.startswith("source .venv/bin/activate"):
                continue  # the test runs with this interpreter's scripts on PATH
            command = line.replace("127.0.0.1:8700", f"127.0.0.1:{server.port}")
            env = _env(tmp_path, server)
            result = subprocess.run(
                ["bash", "-c", command],
                cwd=tmp_path,
                capture_output=True,
                text=True,
                timeout=120,
                env=env,
            )
            assert result.returncode == 0, (line, result.stdout, result.stderr)
            outputs[line] = result.stdout
            _check_step(line, result.stdout, server.client(env["PLUGHOST_TOKEN"]))
        assert len(outputs) >= 15
    finally:
        assert server.stop()


def _env(tmp_path: Path, server: ServerProcess) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PLUGHOST_")}
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"
    env["PLUGHOST_URL"] = server.url
    token = (tmp_path / ".plughost-admin-token").read_text().strip()
    env["PLUGHOST_TOKEN"] = token
    return env


def _check_step(line: str, stdout: str, admin: Client) -> None:
    """What each quickstart step must show."""
    if line.startswith("plughost tenant deploy alice examples/alice-v2"):
        assert "deployed alice version 2" in stdout
    elif line.startswith("plughost tenant deploy"):
        assert "version 1" in stdout and "tenant token (shown once): pht_" in stdout
    elif line == 'plughost call bob Notifier --args \'{"message": "hi"}\'':
        assert stdout.strip() == "<bob> HI"
    elif line.endswith("--snapshot jan"):
        assert stdout.strip() == "[alice] hi"
    elif line.startswith("plughost call alice"):
        assert stdout.strip() in ("[alice] hi", "[alice v2] hi!")
    elif line.startswith("plughost mod load"):
        assert "loaded shared_cache" in stdout
        assert admin.health()["mods"]["loaded"] == ["shared_cache"]
    elif line.startswith("curl"):
        health = json.loads(stdout)
        assert health["mods"]["loaded"] == ["shared_cache"]
        assert health["mods"]["details"]["shared_cache"]["mod_path"] == "plughost.mods.shared_cache"
    elif line.startswith("plughost mod unload"):
        assert admin.health()["mods"]["loaded"] == []
    elif line.startswith("plughost network send-event"):
        assert stdout.startswith("ok:")
    elif line == "plughost tenant list":
        assert "alice" in stdout and "bob" in stdout and "jan" in stdout


def test_a_restarted_server_has_its_tenants_snapshots_and_mods(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path, admin_token="admin-token-for-tests").start()
    try:
        client = server.client()
        deployed = client.deploy("alice", ROOT / "examples" / "alice")
        tenant_token = deployed["token"]
        client.create_snapshot("alice", "jan")
        client.deploy("alice", ROOT / "examples" / "alice-v2")
        client.load_mod("plughost.mods.shared_cache", {"max_items": 5})
        client.load_mod("plughost.mods.shared_artifact", tenant="alice")
    finally:
        assert server.stop()

    again = ServerProcess(tmp_path, admin_token="admin-token-for-tests").start()
    try:
        client = again.client()
        assert client.health()["mods"]["loaded"] == ["shared_cache", "alice/shared_artifact"]
        assert [t["name"] for t in client.list_tenants()] == ["alice"]
        assert client.call("alice", "Notifier", {"message": "x"}) == "[alice v2] x!"
        assert client.call("alice", "Notifier", {"message": "x"}, snapshot="jan") == "[alice] x"
        with again.client(tenant_token) as tenant_client:
            assert tenant_client.call("alice", "Notifier", {"message": "t"}) == "[alice v2] t!"
    finally:
        assert again.stop()


def test_robots_in_worker_processes_through_the_cli(tmp_path: Path) -> None:
    from .test_instances import robot_bundle

    for robot, fps in (("robot1", 30), ("robot2", 10)):
        folder = tmp_path / robot
        folder.mkdir()
        for entry in robot_bundle(fps)["files"]:  # type: ignore[union-attr]
            (folder / entry["filename"]).write_text(entry["source"])
    server = ServerProcess(tmp_path, admin_token="admin-token-for-tests").start()
    env = {
        **_env_without_plughost(),
        "PLUGHOST_URL": server.url,
        "PLUGHOST_TOKEN": "admin-token-for-tests",
    }

    def cli(*args: str) -> str:
        result = subprocess.run(
            [sys.executable, "-m", "plughost", *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        assert result.returncode == 0, (args, result.stdout, result.stderr)
        return result.stdout

    try:
        for robot in ("robot1", "robot2"):
            assert "version 1" in cli(
                "tenant", "deploy", robot, str(tmp_path / robot), "--placement", "process"
            )
        instances = json.loads(cli("instance", "list", "--json"))
        assert {i["rpc_name"]: i["placement"] for i in instances} == {
            "robot1/camera": "process",
            "robot1/mapper": "process",
            "robot2/camera": "process",
            "robot2/mapper": "process",
        }
        assert "restarted robot1/camera" in cli("instance", "restart", "robot1/camera")
        assert "'mapper' unloaded" in cli("instance", "unload", "robot2/mapper")
        health = server.client().health()
        assert set(health["workers"]) == {"robot1", "robot2"}
        assert all(w["state"] == "ready" for w in health["workers"].values())
        assert "robot2/mapper" not in health["mods"]["loaded"]
        assert "worker robot1" in cli("network", "health")
        # The same bundle, with a config of its own for robot2's camera.
        set_fps = ("--set", "camera.fps=25", "--set", "camera.lens=wide")
        assert "version 2" in cli("tenant", "deploy", "robot2", str(tmp_path / "robot1"), *set_fps)
        listed = {i["rpc_name"]: i["config"] for i in json.loads(cli("instance", "list", "--json"))}
        assert listed["robot2/camera"] == {"fps": 25, "lens": "wide"}
        assert listed["robot1/camera"] == {"fps": 30}
        pids = [w["pid"] for w in health["workers"].values()]
    finally:
        assert server.stop()
    assert all(not Path(f"/proc/{pid}").exists() for pid in pids)


def _env_without_plughost() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("PLUGHOST_")}


@pytest.mark.parametrize("flag", [None, "--no-access-log"])
def test_the_server_logs_each_request_unless_told_not_to(tmp_path: Path, flag: str | None) -> None:
    server = ServerProcess(tmp_path, args=[flag] if flag else []).start()
    try:
        with httpx.Client(base_url=server.url) as http:
            assert http.get("/api/health").status_code == 200
            assert (
                http.get("/api/tenants?x=1", headers={"authorization": "Bearer no"}).status_code
                == 401
            )
    finally:
        assert server.stop()
    log = server.log.read_text()
    assert "HTTP: the httptools parser on the uvloop event loop" in log
    lines = [line for line in log.splitlines() if '"GET /api/' in line]
    if flag:
        assert lines == []
    else:
        lines = lines[-2:]  # before them, the readiness checks of ServerProcess.start
        assert lines[0].split()[1:5] == ["127.0.0.1", '"GET', "/api/health", 'HTTP/1.1"']
        assert lines[0].split()[5] == "200" and lines[0].endswith("ms")
        assert '"GET /api/tenants?x=1 HTTP/1.1" 401' in lines[1]
