"""The admin token is out of tenant code's reach: not in the data folder's tree, not in
the environment of the server or its workers; ``plughost token rotate`` replaces it.
Against real server and worker processes."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from plughost import Network

from .conftest import PLACEMENTS
from .server import ServerProcess

ADMIN = "pha_admin-token-from-the-environment"
ROOT = Path(__file__).resolve().parent.parent

# Tenant code looking for the token where it can reach: every file from the data
# folder's root down (found by walking up from its own file), and its environment.
SEEKER = """
import os
from pathlib import Path

from plughost import Agent


class SeekerAgent(Agent):
    name = "Seeker"
    metadata = {
        "name": "Seeker",
        "description": "Looks for a secret",
        "parameters": {
            "type": "object",
            "properties": {"needle": {"type": "string"}, "token_file": {"type": "string"}},
        },
    }

    def perform(self, needle, token_file=None):
        if token_file is not None:  # where it lies on the host, beside the data folder
            try:
                return {"token_file": needle in Path(token_file).read_text()}
            except OSError as exc:
                return {"token_file": type(exc).__name__}
        folder = Path(__file__).resolve().parent
        while not (folder / "plughost.db").exists():
            if folder == folder.parent:
                return {"data_folder": None}
            folder = folder.parent
        files = [
            str(path.relative_to(folder))
            for path in sorted(folder.rglob("*"))
            if path.is_file() and needle.encode() in path.read_bytes()
        ]
        variables = sorted(name for name, value in os.environ.items() if needle in value)
        return {"data_folder": str(folder), "files": files, "variables": variables}
"""


def _seeker_bundle(tmp_path: Path) -> Path:
    folder = tmp_path / "seeker"
    folder.mkdir(exist_ok=True)
    (folder / "seeker_agent.py").write_text(SEEKER)
    return folder


def _seek(
    server: ServerProcess, token: str, needle: str, **args: str
) -> dict[str, dict[str, object]]:
    """What the seeker finds in each placement."""
    bundle = _seeker_bundle(server.cwd)
    found = {}
    with server.client(token) as admin:
        for placement in PLACEMENTS:
            tenant = f"seeker-{placement}"
            admin.deploy(tenant, bundle, placement=placement)
            found[placement] = admin.call(tenant, "Seeker", {"needle": needle, **args})
    return found


def _rotate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "plughost", "token", "rotate", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def _status(server: ServerProcess, token: str) -> int:
    headers = {"Authorization": f"Bearer {token}"}
    return httpx.get(server.url + "/api/tenants", headers=headers, timeout=30).status_code


def test_tenant_code_finds_no_admin_token_in_the_data_folder(tmp_path: Path) -> None:
    data = tmp_path / "data"
    server = ServerProcess(tmp_path, data_dir=data).start()
    try:
        token_file = tmp_path / "data-admin-token"
        token = token_file.read_text().strip()
        assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
        assert server.log.read_text().count(token) == 1  # shown once, at its creation
        found = _seek(server, token, token)
        beside = _seek(server, token, token, token_file=str(token_file))
    finally:
        assert server.stop()
    for placement in ("inprocess", "process"):
        assert found[placement]["data_folder"] == str(data.resolve()), found
        assert found[placement]["files"] == [], found
        # Beside the data folder, the file is the operator's to move: these placements reach it.
        assert beside[placement] == {"token_file": True}, beside
    # A sandbox sees no data folder above its own files, and nothing beside it.
    assert found["sandbox"] == {"data_folder": None}, found
    assert beside["sandbox"] == {"token_file": "FileNotFoundError"}, beside


def test_a_token_from_the_environment_is_in_no_tenant_codes_environment(tmp_path: Path) -> None:
    # An operator's shell that exported both: the server's own and a client's.
    server = ServerProcess(tmp_path, admin_token=ADMIN, env={"PLUGHOST_TOKEN": ADMIN}).start()
    try:
        found = _seek(server, ADMIN, ADMIN)
        assert _status(server, ADMIN) == 200
        metrics = httpx.get(
            server.url + "/metrics", headers={"Authorization": f"Bearer {ADMIN}"}, timeout=30
        )
        assert metrics.status_code == 200
    finally:
        assert server.stop()
    for placement in ("inprocess", "process"):
        assert found[placement]["variables"] == [], found
        assert found[placement]["files"] == [], found
    assert found["sandbox"] == {"data_folder": None}, found
    assert ADMIN not in server.log.read_text()


def test_token_rotate_replaces_the_admin_token_from_the_next_start(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path).start()
    token_file = tmp_path / ".plughost-admin-token"
    old = token_file.read_text().strip()
    try:
        rotated = _rotate("--data-dir", str(tmp_path / ".plughost"))
        assert rotated.returncode == 0, rotated.stderr
        new = token_file.read_text().strip()
        assert new != old and new in rotated.stdout
        assert "until it restarts" in rotated.stdout
        assert (_status(server, old), _status(server, new)) == (200, 401)
    finally:
        assert server.stop()
    again = ServerProcess(tmp_path).start()
    try:
        assert (_status(again, old), _status(again, new)) == (401, 200)
        assert new not in again.log.read_text()  # shown by the rotation, not again
    finally:
        assert again.stop()


def test_token_rotate_refuses_a_folder_that_is_no_data_folder(tmp_path: Path) -> None:
    rotated = _rotate("--data-dir", str(tmp_path))
    assert rotated.returncode == 1
    assert rotated.stderr.strip() == f"error: {tmp_path} is not a plughost data folder"
    assert list(tmp_path.iterdir()) == []


def test_a_token_file_in_the_data_folder_is_moved_out_at_start(tmp_path: Path) -> None:
    legacy = tmp_path / ".plughost" / "admin_token"
    legacy.parent.mkdir()
    legacy.write_text("pha_a-token-kept-by-an-older-version\n")
    server = ServerProcess(tmp_path).start()
    try:
        assert _status(server, "pha_a-token-kept-by-an-older-version") == 200
        assert not legacy.exists()
        moved = (tmp_path / ".plughost-admin-token").read_text()
        assert moved == "pha_a-token-kept-by-an-older-version\n"
        assert "moved the admin token out of the data folder" in server.log.read_text()
    finally:
        assert server.stop()


def test_token_rotate_for_a_tenant_replaces_its_token_at_once(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path, admin_token=ADMIN).start()
    try:
        with server.client() as admin:
            old = admin.deploy("alice", ROOT / "examples" / "alice")["token"]
        rotated = _rotate("--tenant", "alice", "--url", server.url, "--token", ADMIN, "--json")
        assert rotated.returncode == 0, rotated.stderr
        new = json.loads(rotated.stdout)["token"]
        call = "/api/tenants/alice/agents/Notifier/call"
        for token, status in ((new, 200), (old, 401)):
            answer = httpx.post(
                server.url + call,
                json={"args": {"message": "hi"}},
                headers={"Authorization": f"Bearer {token}"},
                timeout=30,
            )
            assert answer.status_code == status, answer.text
    finally:
        assert server.stop()


async def test_a_worker_started_by_an_embedding_program_gets_no_token_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A program that runs a Network itself keeps its environment: the worker's must not.
    monkeypatch.setenv("PLUGHOST_ADMIN_TOKEN", ADMIN)
    monkeypatch.setenv("PLUGHOST_TOKEN", ADMIN)
    async with Network(tmp_path / "data", network_id="embedded") as network:
        await network.deploy("seeker", _seeker_bundle(tmp_path), placement="process")
        found = await network.call_agent("seeker", "Seeker", {"needle": ADMIN})
    assert found["variables"] == [], found
