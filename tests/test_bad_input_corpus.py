"""Every input of the bad-input corpus, sent to a real server while two other tenants
are being called: each gets its clear error, and no call of the others fails.

One of them, ``good``, runs in process; ``good-worker`` runs in a worker process.
What cannot be contained in process (an import that never returns) is shown
as documented: it holds only its own tenant's deploys.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from .corpus import CASES, ZIP, zipped_bundle
from .server import ServerProcess

ADMIN = "admin-token-for-the-corpus"
ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT = 3  # worker_start_timeout, seconds


class Callers:
    """Threads that call both good tenants without pause, counting answers and failures."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.answers = {"good": 0, "good-worker": 0}
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(tenant,), daemon=True)
            for tenant in self.answers
        ]

    def _run(self, tenant: str) -> None:
        headers = {"Authorization": f"Bearer {ADMIN}"}
        with httpx.Client(base_url=self.url, headers=headers, timeout=30) as client:
            while not self._stop.is_set():
                try:
                    response = client.post(
                        f"/api/tenants/{tenant}/agents/Notifier/call",
                        json={"args": {"message": "still here"}},
                    )
                    if response.status_code == 200 and "still here" in response.text.lower():
                        self.answers[tenant] += 1
                    else:
                        self.failures.append(f"{tenant}: {response.status_code} {response.text}")
                except httpx.HTTPError as exc:
                    self.failures.append(f"{tenant}: {exc!r}")

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)

    def snapshot(self) -> dict[str, int]:
        return dict(self.answers)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, Callers]]:
    folder = tmp_path_factory.mktemp("corpus")
    (folder / "config.yaml").write_text(f"data_dir: data\nworker_start_timeout: {START_TIMEOUT}\n")
    server = ServerProcess(folder, admin_token=ADMIN, config=folder / "config.yaml").start()
    callers = Callers(server.url)
    try:
        with server.client() as client:
            client.deploy("good", ROOT / "examples" / "alice")
            client.deploy("good-worker", ROOT / "examples" / "bob", placement="process")
        callers.start()
        yield server, callers
    finally:
        callers.stop()
        (folder / "release-spinners").touch()
        assert server.stop()
    print(f"calls answered while the corpus ran: {callers.answers}")
    assert callers.failures == []
    assert min(callers.answers.values()) > 0


def _request(
    server: ServerProcess,
    method: str,
    path: str,
    *,
    content: bytes | None = None,
    content_type: str | None = None,
    json: object = None,
) -> httpx.Response:
    headers = {"Authorization": f"Bearer {ADMIN}"}
    if content_type is not None:
        headers["Content-Type"] = content_type
    return httpx.request(
        method, server.url + path, headers=headers, content=content, json=json, timeout=120
    )


def _children(pid: int) -> set[int]:
    """The live child processes of ``pid``."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue  # it ended meanwhile
        if int(fields[1]) == pid and fields[0] != "Z":
            found.add(int(stat.parent.name))
    return found


def _others_were_served_meanwhile(callers: Callers, before: dict[str, int]) -> None:
    """Both good tenants answered again since ``before``, and nothing failed."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        now = callers.snapshot()
        if all(now[tenant] > before[tenant] for tenant in now):
            break
        time.sleep(0.01)
    assert all(callers.snapshot()[tenant] > before[tenant] for tenant in before)
    assert callers.failures == []


@pytest.mark.filterwarnings("ignore:Duplicate name")
@pytest.mark.parametrize("name", list(CASES))
def test_each_bad_input_gets_its_clear_error_and_the_others_are_served(
    served: tuple[ServerProcess, Callers], tmp_path: Path, name: str
) -> None:
    server, callers = served
    case = CASES[name]
    tenant = "bad-" + "".join(c if c.isalnum() else "-" for c in name)[:50]
    path = case.path.format(tenant=tenant)
    if case.placement is not None:
        path += f"?placement={case.placement}"
    before = callers.snapshot()

    response = _request(
        server,
        case.method,
        path,
        content=case.make(tmp_path),
        content_type=case.content_type,
    )

    assert response.status_code == case.status, response.text
    error = response.json()["error"]
    assert error["code"] == case.code
    assert case.says in error["message"], error["message"]
    if case.path.endswith("/bundle"):
        # A refused first deploy creates nothing.
        assert _request(server, "GET", f"/api/tenants/{tenant}").status_code == 404
    health = _request(server, "GET", "/api/health").json()
    assert health["status"] == "healthy", health
    assert sorted(health["workers"]) == ["good-worker"]
    # A worker that failed to start was killed: the only one left is good-worker's.
    assert server.process is not None
    assert _children(server.process.pid) == {health["workers"]["good-worker"]["pid"]}
    _others_were_served_meanwhile(callers, before)


def test_a_bundle_that_replaces_the_import_function_is_contained(
    served: tuple[ServerProcess, Callers], tmp_path: Path
) -> None:
    server, callers = served
    before = callers.snapshot()
    upload = zipped_bundle("replace_import", tmp_path / "hijack.zip").read_bytes()
    response = _request(
        server,
        "PUT",
        "/api/tenants/hijacker/bundle",
        content=upload,
        content_type=ZIP,
    )
    assert response.status_code == 201, response.text
    call = _request(server, "POST", "/api/tenants/hijacker/agents/Notifier/call", json={})
    assert call.json() == {"output": '{"still": "importing"}'}
    _others_were_served_meanwhile(callers, before)
    assert "changed builtins.__import__ while loading; the change was undone" in (
        server.log.read_text()
    )


def test_an_import_that_never_returns_holds_only_its_own_tenant_in_process(
    served: tuple[ServerProcess, Callers], tmp_path: Path
) -> None:
    server, callers = served
    upload = zipped_bundle("import_loop", tmp_path / "loop.zip").read_bytes()
    before = callers.snapshot()

    # The deploy's import spins on; its client gives up, the server goes on.
    with pytest.raises(httpx.ReadTimeout):
        httpx.put(
            server.url + "/api/tenants/spinner/bundle",
            content=upload,
            headers={"Authorization": f"Bearer {ADMIN}", "Content-Type": ZIP},
            timeout=2,
        )
    _others_were_served_meanwhile(callers, before)
    other = _request(
        server,
        "PUT",
        "/api/tenants/bystander/bundle",
        content=zipped_bundle("replace_import", tmp_path / "other.zip").read_bytes(),
        content_type=ZIP,
    )
    assert other.status_code == 201, other.text
    assert _request(server, "GET", "/api/tenants/spinner").status_code == 404

    # Once the import returns, the deploy that was waiting completes.
    (server.cwd / "release-spinners").touch()
    try:
        deadline = time.monotonic() + 60
        while _request(server, "GET", "/api/tenants/spinner").status_code == 404:
            assert time.monotonic() < deadline, "the released deploy never completed"
            time.sleep(0.05)
    finally:
        (server.cwd / "release-spinners").unlink()


def test_a_worker_tenant_whose_new_code_never_loads_keeps_its_old_code(
    served: tuple[ServerProcess, Callers], tmp_path: Path
) -> None:
    server, callers = served
    old = _request(server, "GET", "/api/tenants/good-worker").json()
    before = callers.snapshot()
    started = time.monotonic()
    response = _request(
        server,
        "PUT",
        "/api/tenants/good-worker/bundle",
        content=zipped_bundle("import_loop", tmp_path / "loop.zip").read_bytes(),
        content_type=ZIP,
    )
    waited = time.monotonic() - started
    assert response.status_code == 422, response.text
    assert f"not ready after {START_TIMEOUT} s" in response.json()["error"]["message"]
    assert waited >= START_TIMEOUT
    assert _request(server, "GET", "/api/tenants/good-worker").json()["version"] == old["version"]
    health = _request(server, "GET", "/api/health").json()
    assert health["workers"]["good-worker"]["state"] == "ready"
    _others_were_served_meanwhile(callers, before)
