"""Hostile code in the ``sandbox`` placement: each attack is contained, and another
tenant's calls go on meanwhile (none waits more than 100 ms).

One real server (``plughost serve`` on 127.0.0.1) hosts ``quick``, an honest
tenant in process, and ``hostile`` and ``spinner`` in sandboxes. The attacks
run as agents of ``hostile``, over HTTP, each while ``quick`` is called over
and over. The sandbox's guarantees that every placement gives (isolation, hot
swap, restarts, ...) are in the placement matrix (``PLACEMENTS``).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from plughost import CallTimeoutError, Network
from plughost.placements.sandbox import availability

from .conftest import STALL_ATTEMPTS, agent_bundle
from .server import ServerProcess
from .test_tenant_isolation import ADMIN, ROOT

HOSTILE = """
import errno
import os
import socket
import sys
import time
from pathlib import Path


def attempt(action):
    try:
        return "done: " + str(action())
    except BaseException as exc:
        return f"{type(exc).__name__}: {exc}"


class Who(BasicAgent):
    name = "Who"

    def perform(self, **kwargs):
        return {"uid": os.getuid(), "gid": os.getgid(), "file": __file__}


class Read(BasicAgent):
    name = "Read"

    def perform(self, **kwargs):
        paths = kwargs["paths"]
        seen = {path: attempt(lambda p=path: Path(p).read_bytes()[:20]) for path in paths}
        # Walking up from its own file, as the worker placement let it reach the token.
        found = []
        for folder in [Path(__file__).parent, *Path(__file__).parents]:
            found += [str(entry) for entry in folder.iterdir()]
        return {"seen": seen, "found": sorted(set(found))}


class Write(BasicAgent):
    name = "Write"

    def perform(self, **kwargs):
        paths = kwargs["paths"]
        return {path: attempt(lambda p=path: Path(p).write_text("x")) for path in paths}


class Connect(BasicAgent):
    name = "Connect"

    def perform(self, **kwargs):
        port = kwargs["port"]
        return {
            host: attempt(lambda h=host: socket.create_connection((h, port), timeout=2).close())
            for host in ("127.0.0.1", "::1", "10.0.2.2", "pypi.org")
        }


class ForkBomb(BasicAgent):
    name = "ForkBomb"

    def perform(self):
        while True:
            if os.fork() == 0:
                while True:  # each child keeps its place
                    time.sleep(1)


class Threads(BasicAgent):
    name = "Threads"

    def perform(self):
        import threading
        while True:
            threading.Thread(target=time.sleep, args=(60,), daemon=True).start()


class Allocate(BasicAgent):
    name = "Allocate"

    def perform(self, **kwargs):
        return len(bytearray(kwargs.get("mib", 2048) << 20))


class Spin(BasicAgent):
    name = "Spin"

    def perform(self):
        while True:
            pass


class Flood(BasicAgent):
    name = "Flood"

    def perform(self):
        line = "x" * 1000 + "\\n"
        for _ in range(200_000):  # 200 MB, if nothing held it back
            sys.stdout.write(line)
        sys.stdout.flush()
        return "flooded"


class BigFile(BasicAgent):
    name = "BigFile"

    def perform(self):
        with open("/tmp/big", "wb") as file:
            for _ in range(1000):
                file.write(b"x" * (1 << 20))


class Kernel(BasicAgent):
    name = "Kernel"

    def perform(self, **kwargs):
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        calls = {
            "keyctl": (250, 0, -3, 0),           # the session keyring, the host's included
            "add_key": (248, b"user", b"k", b"v", 1, -3),
            "unshare": (272, 0x10000000),         # a user namespace of its own
            "io_uring_setup": (425, 8, 0),
            "bpf": (321, 0, 0, 0),
            "ptrace": (101, 16, 1, 0, 0),         # attach to pid 1
            # fork into a user namespace of its own (17: SIGCHLD to the parent)
            "clone": (56, 0x10000000 | 17, 0, 0, 0, 0),
        }
        found = {}
        for name, (number, *args) in calls.items():
            result = libc.syscall(number, *args)
            if result == 0 and name == "clone":
                os._exit(0)  # the child, had the call been let through
            found[name] = errno.errorcode.get(ctypes.get_errno()) if result < 0 else "done"
        # clone3 answers "no such call", so that the C library falls back to clone
        result = libc.syscall(435, 0, 0)
        found["clone3"] = errno.errorcode.get(ctypes.get_errno()) if result < 0 else "done"
        found["cmdline"] = open("/proc/1/cmdline", "rb").read().decode(errors="replace")
        return found


class Answer(BasicAgent):
    name = "Answer"

    def perform(self, **kwargs):
        return "x" * (kwargs["mib"] << 20)


class RawFrame(BasicAgent):
    name = "RawFrame"

    def perform(self, **kwargs):
        # Past the worker's own checks: a frame written straight to its socket.
        link = socket.socket(fileno=os.dup(int(sys.argv[-1])))
        link.sendall((60 << 20).to_bytes(4, "big") + b'["publish",1,"t",{"x":[')
        time.sleep(5)


class OpenFiles(BasicAgent):
    name = "OpenFiles"

    def perform(self):
        return len([open("/dev/null") for _ in range(100_000)])
"""

CONFIG = """\
call_timeout: 3
sandbox:
  memory_mb: 768
  processes: 64
  file_size_mb: 8
  open_files: 128
  message_mb: 4
  tenants:
    spinner: {cpu_seconds: 1}
"""


class Sandboxes:
    def __init__(self, process: ServerProcess, data_dir: Path) -> None:
        self.process = process
        self.data_dir = data_dir

    def call(self, tenant: str, agent: str, **args: Any) -> httpx.Response:
        return httpx.post(
            f"{self.process.url}/api/tenants/{tenant}/agents/{agent}/call",
            json={"args": args},
            headers={"Authorization": f"Bearer {ADMIN}"},
            timeout=60,
        )

    def worker(self, tenant: str) -> dict[str, Any]:
        health = httpx.get(
            self.process.url + "/api/health", headers={"Authorization": f"Bearer {ADMIN}"}
        ).json()
        worker: dict[str, Any] = health["workers"][tenant]
        return worker

    def contained(
        self, tenant: str, agent: str, *, renews: bool = False, **args: Any
    ) -> httpx.Response:
        """Call ``agent`` while ``quick`` is called over and over; its answer, once no call
        of ``quick`` waited more than 100 ms (in one of ``STALL_ATTEMPTS`` runs).

        ``renews``: the call renews the tenant's worker; the next run waits for that.
        """
        stalls: list[float] = []
        answers: list[httpx.Response] = []
        for _ in range(STALL_ATTEMPTS):
            restarts = self.worker(tenant)["restarts"]
            stalls.append(
                self.process.longest_wait_beside(
                    lambda: answers.append(self.call(tenant, agent, **args))
                )
            )
            if stalls[-1] < 0.1:
                break
            self.until_ready(tenant, restarts + renews)
        assert min(stalls) < 0.1, f"quick's calls waited {[round(s * 1000) for s in stalls]} ms"
        return answers[-1]

    def until_ready(self, tenant: str, restarts: int = 0) -> None:
        for _ in range(1000):  # bounded: a renewal or restart takes well under a second
            worker = self.worker(tenant)
            if worker["state"] == "ready" and worker["restarts"] >= restarts:
                break
            httpx.get(self.process.url + "/api/health")
        assert self.call(tenant, "Notifier", message="m").json()["output"] == "ok:m"


@pytest.fixture(scope="module")
def sandboxes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandboxes]:
    folder = tmp_path_factory.mktemp("sandboxes")
    (folder / "plughost.yaml").write_text(CONFIG)
    bundle = folder / "hostile.json"
    bundle.write_text(json.dumps(agent_bundle("ok", extra=HOSTILE)))
    process = ServerProcess(
        folder, admin_token=ADMIN, config=folder / "plughost.yaml", data_dir=folder / "data"
    ).start()
    try:
        with process.client(ADMIN) as admin:
            admin.deploy("quick", ROOT / "examples" / "bob")
            admin.deploy("hostile", bundle, placement="sandbox")
            admin.deploy("spinner", bundle, placement="sandbox")
        yield Sandboxes(process, folder / "data")
    finally:
        assert process.stop()


def _renewed(sandboxes: Sandboxes, tenant: str, before: dict[str, Any]) -> None:
    """The tenant's worker was replaced by a new one, and the old one is gone."""
    sandboxes.until_ready(tenant, before["restarts"] + 1)
    assert sandboxes.worker(tenant)["pid"] != before["pid"]
    deadline = time.monotonic() + 10  # bounded: the old sandbox is being killed
    while Path(f"/proc/{before['pid']}").exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not Path(f"/proc/{before['pid']}").exists()


def test_health_says_sandboxes_can_be_made_here(sandboxes: Sandboxes) -> None:
    health = httpx.get(sandboxes.process.url + "/api/health").json()
    assert health["placements"] == {
        "inprocess": "available",
        "process": "available",
        "sandbox": "available",
        "ray": "available",
    }


def test_the_code_runs_as_a_user_of_its_own_and_sees_only_its_bundle(
    sandboxes: Sandboxes,
) -> None:
    who = sandboxes.contained("hostile", "Who").json()["output"]
    assert who["file"] == "/bundle/notifier_agent.py"
    assert who["uid"] != 0 and who["gid"] != 0 and who["uid"] != os.getuid()
    spinner = sandboxes.call("spinner", "Who").json()["output"]
    assert spinner["uid"] != who["uid"]  # a user each: limits on processes are per user


def test_it_reads_nothing_of_the_host_the_data_folder_or_other_tenants(
    sandboxes: Sandboxes,
) -> None:
    data = sandboxes.data_dir.resolve()
    # Every tenant's bundles and records, its own and quick's, as the host keeps them.
    stored = sorted(str(p) for p in data.rglob("*.py") if p.is_file())
    assert len(stored) > 2
    paths = [
        "/etc/passwd",
        "/etc/shadow",
        "/root/.bash_history",
        str(data / "plughost.db"),
        str(data / "admin-token.sha256"),
        str(data.parent / "plughost.yaml"),
        str(ROOT / ".git" / "config"),
        *stored,
        f"/proc/{os.getpid()}/environ",
        "/proc/1/environ",
    ]
    answer = sandboxes.contained("hostile", "Read", paths=paths).json()["output"]
    for path, result in answer["seen"].items():
        # Not there at all; only the sandbox's own /proc holds what it may not read.
        expected = "PermissionError" if path.startswith("/proc/") else "FileNotFoundError"
        assert result.startswith(expected) or result.startswith("FileNotFoundError"), (
            path,
            result,
        )
    found = answer["found"]
    assert not [entry for entry in found if entry.startswith(str(data))]
    assert "/etc" not in found and "/root/.bash_history" not in found


def test_it_writes_nowhere_but_its_own_tmp(sandboxes: Sandboxes, tmp_path: Path) -> None:
    escape = tmp_path / "escaped"
    paths = ["/bundle/x.py", "/usr/x", "/x", "/proc/x", str(escape), "/tmp/mine"]
    answer = sandboxes.contained("hostile", "Write", paths=paths).json()["output"]
    assert answer.pop("/tmp/mine") == "done: 1"
    for path, result in answer.items():
        assert result.startswith(("OSError: [Errno 30]", "FileNotFoundError", "PermissionError")), (
            path,
            result,
        )
    assert not escape.exists()


def test_it_reaches_no_network_not_even_the_hosts_own_ports(sandboxes: Sandboxes) -> None:
    answer = sandboxes.contained("hostile", "Connect", port=sandboxes.process.port).json()
    for host, result in answer["output"].items():
        assert not result.startswith("done"), (host, result)
        assert "refused" in result or "unreachable" in result or "resolution" in result


@pytest.mark.parametrize(
    ("agent", "limit"),
    [
        ("ForkBomb", "processes"),
        ("Threads", "processes"),
        ("Allocate", "memory_mb"),
        ("BigFile", "file_size_mb"),
        ("OpenFiles", "open_files"),
    ],
)
def test_a_breached_limit_fails_the_call_naming_it_and_renews_only_that_worker(
    sandboxes: Sandboxes, agent: str, limit: str
) -> None:
    before = sandboxes.worker("hostile")
    answer = sandboxes.contained("hostile", agent, renews=True)
    assert answer.status_code == 422, answer.text
    error = answer.json()["error"]
    assert error["code"] == "limit_exceeded"
    assert f"reached its {limit} limit" in error["message"]
    _renewed(sandboxes, "hostile", before)
    assert sandboxes.worker("spinner")["state"] == "ready"


def test_an_endless_call_ends_at_its_deadline_and_renews_the_worker(
    sandboxes: Sandboxes,
) -> None:
    before = sandboxes.worker("hostile")
    answer = sandboxes.contained("hostile", "Spin", renews=True)
    assert answer.status_code == 504, answer.text
    assert answer.json()["error"]["code"] == "call_timeout"
    _renewed(sandboxes, "hostile", before)


def test_cpu_time_in_all_is_limited_and_the_worker_is_restarted_with_the_limit_named(
    sandboxes: Sandboxes,
) -> None:
    before = sandboxes.worker("spinner")
    # spinner may use 1 s of CPU in all; each call may run 3 s.
    answer = sandboxes.contained("spinner", "Spin", renews=True)
    assert answer.status_code == 503, answer.text
    reason = "the worker reached its cpu_seconds limit (1 s of CPU time)"
    assert reason in answer.json()["error"]["message"]
    sandboxes.until_ready("spinner", before["restarts"] + 1)


def test_a_flood_of_output_is_read_at_a_bounded_rate_and_holds_nothing_back(
    sandboxes: Sandboxes,
) -> None:
    log = sandboxes.process.log
    size = log.stat().st_size
    before = sandboxes.worker("hostile")
    answer = sandboxes.contained("hostile", "Flood", renews=True)
    # Held back at the host's reading rate, it cannot write 200 MB within its deadline.
    assert answer.status_code == 504, answer.text
    _renewed(sandboxes, "hostile", before)
    assert log.stat().st_size - size < 4 << 20


def test_a_bundle_may_lower_its_limits_but_not_raise_them(sandboxes: Sandboxes) -> None:
    def deploy(table: str) -> httpx.Response:
        bundle = agent_bundle("ok", extra=HOSTILE)
        bundle["files"] = [{"filename": "plughost.toml", "source": table}]
        return httpx.put(
            f"{sandboxes.process.url}/api/tenants/modest/bundle?placement=sandbox",
            json=bundle,
            headers={"Authorization": f"Bearer {ADMIN}"},
            timeout=60,
        )

    refused = deploy("[sandbox]\nmemory_mb = 4096\n")
    assert refused.status_code == 400, refused.text
    assert "memory_mb = 4096 (at most 768)" in refused.json()["error"]["message"]
    assert deploy("[sandbox]\nmemory_mb = 256\n").status_code == 201
    # 300 MiB fits in the network's 768 MiB, not in the 256 the bundle asked for.
    assert sandboxes.call("hostile", "Allocate", mib=300).json()["output"] == 300 << 20
    answer = sandboxes.call("modest", "Allocate", mib=300)
    assert "memory_mb limit (memory_mb = 256)" in answer.json()["error"]["message"]


def test_no_sandbox_here_is_a_clear_422_and_never_a_weaker_placement(tmp_path: Path) -> None:
    empty = tmp_path / "no-tools"
    empty.mkdir()
    process = ServerProcess(tmp_path, admin_token=ADMIN, env={"PATH": str(empty)}).start()
    try:
        health = httpx.get(process.url + "/api/health").json()
        assert health["placements"]["sandbox"] == (
            "unavailable: bwrap not found (install bubblewrap)"
        )
        bundle = tmp_path / "b.json"
        bundle.write_text(json.dumps(agent_bundle("ok")))
        answer = httpx.put(
            f"{process.url}/api/tenants/t/bundle?placement=sandbox",
            content=bundle.read_bytes(),
            headers={"Authorization": f"Bearer {ADMIN}", "Content-Type": "application/json"},
        )
        assert answer.status_code == 422, answer.text
        assert answer.json()["error"]["code"] == "placement_unavailable"
        assert "bwrap not found" in answer.json()["error"]["message"]
        described = httpx.get(
            process.url + "/api/tenants/t", headers={"Authorization": f"Bearer {ADMIN}"}
        )
        assert described.status_code == 404, described.text
    finally:
        assert process.stop()


def test_the_kernel_calls_a_plugin_has_no_use_for_are_refused(sandboxes: Sandboxes) -> None:
    found = sandboxes.contained("hostile", "Kernel").json()["output"]
    cmdline = found.pop("cmdline")
    assert found.pop("clone3") == "ENOSYS"
    assert found == {name: "EPERM" for name in found} and "clone" in found, found
    # The sandbox's first process names none of the host's folders.
    assert str(sandboxes.data_dir) not in cmdline and "--ro-bind" not in cmdline


def test_an_answer_past_the_message_limit_is_refused_by_the_worker(sandboxes: Sandboxes) -> None:
    assert sandboxes.call("hostile", "Answer", mib=1).status_code == 200
    before = sandboxes.worker("hostile")
    answer = sandboxes.contained("hostile", "Answer", renews=True, mib=5)
    assert answer.status_code == 422, answer.text
    assert "reached its message_mb limit (message_mb = 4)" in answer.json()["error"]["message"]
    _renewed(sandboxes, "hostile", before)


def test_a_frame_past_the_message_limit_written_past_the_worker_restarts_it(
    sandboxes: Sandboxes,
) -> None:
    before = sandboxes.worker("hostile")
    answer = sandboxes.contained("hostile", "RawFrame", renews=True)
    assert answer.status_code == 503, answer.text
    assert "over the 4194304-byte limit" in answer.json()["error"]["message"]
    sandboxes.until_ready("hostile", before["restarts"] + 1)


@pytest.mark.parametrize("folder", ["/usr/local/plughost-data", "/lib/plughost-data"])
def test_a_data_folder_inside_what_a_sandbox_shows_makes_sandboxes_unavailable(
    folder: str,
) -> None:
    said = availability(Path(folder))
    assert said.startswith("unavailable: the data folder /usr/"), said
    assert said.endswith("lies in /usr, which a sandbox must show"), said


SPINNING_RPC = """
from plughost import Mod, rpc


class SpinMod(Mod):
    @rpc
    def spin(self):
        while True:
            pass

    @rpc
    def ping(self):
        return "pong"
"""


async def test_an_rpc_call_past_its_deadline_renews_the_sandbox_worker(tmp_path: Path) -> None:
    toml = 'placement = "sandbox"\n[[mods]]\npath = "spin_module"\nname = "spin"\n'
    files = [
        {"filename": "spin_module.py", "source": SPINNING_RPC},
        {"filename": "plughost.toml", "source": toml},
    ]
    async with Network(tmp_path / "data", call_timeout=1) as network:
        await network.deploy("spinner", {"files": files})
        before = network.health()["workers"]["spinner"]
        with pytest.raises(CallTimeoutError):
            await network.rpc("spinner/spin", "spin")
        deadline = time.monotonic() + 30  # bounded: a sandbox starts in well under a second
        while time.monotonic() < deadline:
            worker = network.health()["workers"]["spinner"]
            if worker["restarts"] == before["restarts"] + 1 and worker["pid"] != before["pid"]:
                break
            await asyncio.sleep(0.05)
        assert worker["restarts"] == before["restarts"] + 1, worker
        assert await network.rpc("spinner/spin", "ping") == "pong"
        while Path(f"/proc/{before['pid']}").exists() and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert not Path(f"/proc/{before['pid']}").exists()  # the spinning one is gone
