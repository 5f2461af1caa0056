"""Each tenant brings its own libraries, at its own versions, installed from the package index.

These tests install real packages with the real installer (``uv``) from the index this
machine reaches: ``toolz`` (pure Python) and ``msgpack`` (compiled). They are marked
``index``; CI runs them.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

from plughost import DependencyError, Network

from .conftest import STALL_ATTEMPTS
from .server import ServerProcess
from .test_tenant_isolation import ADMIN, ROOT

pytestmark = pytest.mark.index

TOOLZ = """
from agents.basic_agent import BasicAgent
import toolz


class Version(BasicAgent):
    name = "Version"

    def perform(self, **kwargs):
        import toolz.curried  # a submodule, imported at call time
        return {"version": toolz.__version__, "key": toolz.__name__, "id": id(toolz),
                "curried": toolz.curried.__name__}
"""

MSGPACK = """
from agents.basic_agent import BasicAgent
import msgpack


class Pack(BasicAgent):
    name = "Pack"

    def perform(self, **kwargs):
        return {"version": list(msgpack.version), "packed": list(msgpack.packb([1, 2]))}
"""


def bundle(source: str, dependencies: list[str], placement: str | None = None) -> dict[str, Any]:
    toml = f"dependencies = {json.dumps(dependencies)}\n"
    if placement is not None:
        toml += f'placement = "{placement}"\n'
    return {
        "files": [
            {"filename": "lib_agent.py", "source": source},
            {"filename": "plughost.toml", "source": toml},
        ]
    }


async def test_two_tenants_run_two_versions_of_one_library_in_process(tmp_path: Path) -> None:
    async with Network(tmp_path / "data") as network:
        await network.deploy("old", bundle(TOOLZ, ["toolz==0.12.0"]))
        await network.deploy("new", bundle(TOOLZ, ["toolz==0.12.1"]))
        old = await network.call_agent("old", "Version")
        new = await network.call_agent("new", "Version")
        assert (old["version"], new["version"]) == ("0.12.0", "0.12.1")
        assert old["id"] != new["id"]
        assert old["key"].endswith(".toolz") and old["key"] != new["key"]
        assert old["curried"] == old["key"] + ".curried"
        # Neither is the process's own toolz: each lives under its namespace's keys.
        assert "toolz" not in sys.modules and "toolz.curried" not in sys.modules
        assert network.dependencies_of("old") == {
            "asked": ["toolz==0.12.0"],
            "installed": ["toolz==0.12.0"],
            "shared_with_host": [],
        }
        assert network.health()["dependencies"] == {
            "new": ["toolz==0.12.1"],
            "old": ["toolz==0.12.0"],
        }
        assert network.health(confine_to="old")["dependencies"] == {"old": ["toolz==0.12.0"]}
        await network.remove_tenant("old")
        assert not [key for key in sys.modules if ".t_old" in key]  # freed with it
        assert await network.call_agent("new", "Version") == new


@pytest.mark.parametrize("placement", ["process", "sandbox", "ray"])
async def test_a_compiled_library_runs_at_two_versions_in_workers_side_by_side(
    tmp_path: Path, placement: str
) -> None:
    hosts_own = sys.modules.get("msgpack")  # Ray's, when the tests run on it
    async with Network(tmp_path / "data") as network:
        await network.deploy("a", bundle(MSGPACK, ["msgpack==1.0.7"], placement))
        await network.deploy("b", bundle(MSGPACK, ["msgpack==1.0.8"], placement))
        a = await network.call_agent("a", "Pack")
        b = await network.call_agent("b", "Pack")
        assert (a["version"], b["version"]) == ([1, 0, 7], [1, 0, 8])
        assert a["packed"] == b["packed"] == [146, 1, 2]
        assert sys.modules.get("msgpack") is hosts_own  # neither tenant's copy came in


async def test_a_compiled_library_is_refused_in_process_naming_it(tmp_path: Path) -> None:
    async with Network(tmp_path / "data") as network:
        with pytest.raises(DependencyError, match=r"msgpack has compiled extensions.*process"):
            await network.deploy("c", bundle(MSGPACK, ["msgpack==1.0.7"]))
        assert network.list_tenants() == []


async def test_a_bad_requirement_is_refused_and_the_old_version_stays_live(
    tmp_path: Path,
) -> None:
    async with Network(tmp_path / "data") as network:
        await network.deploy("t", bundle(TOOLZ, ["toolz==0.12.0"]))
        envs = sorted(os.listdir(tmp_path / "data" / "envs"))
        with pytest.raises(DependencyError, match="no-such-package-plughost-test"):
            await network.deploy("t", bundle(TOOLZ, ["no-such-package-plughost-test==1.0"]))
        assert network.get_deployment("t").version == 1
        assert (await network.call_agent("t", "Version"))["version"] == "0.12.0"
        assert sorted(os.listdir(tmp_path / "data" / "envs")) == envs  # nothing kept


async def test_the_same_set_installs_once_and_a_restart_serves_without_installing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with Network(tmp_path / "data") as network:
        await network.deploy("one", bundle(TOOLZ, ["toolz==0.12.0"]))
        await network.deploy("two", bundle(TOOLZ, ["toolz==0.12.0"]))  # another tenant, same set
        assert network.deploy_progress("two") == []  # found installed: the installer never ran
        envs = tmp_path / "data" / "envs"
        folders = [p for p in envs.iterdir() if p.name != "asked"]
        assert len(folders) == 1
        stamp = folders[0].stat().st_mtime_ns
    # From here the installer could install nothing: neither its cache nor the index.
    monkeypatch.setenv("UV_OFFLINE", "1")
    monkeypatch.setenv("UV_NO_CACHE", "1")
    async with Network(tmp_path / "data") as network:
        assert (await network.call_agent("one", "Version"))["version"] == "0.12.0"
        assert network.deploy_progress("one") == []
    assert [p for p in envs.iterdir() if p.name != "asked"] == folders
    assert folders[0].stat().st_mtime_ns == stamp


async def test_an_environment_no_deployment_uses_is_collected(tmp_path: Path) -> None:
    async with Network(tmp_path / "data", keep_versions=1) as network:
        await network.deploy("t", bundle(TOOLZ, ["toolz==0.12.0"]))
        await network.deploy("t", bundle(TOOLZ, ["toolz==0.12.1"]))
        await network.collect_garbage()
        envs = tmp_path / "data" / "envs"
        assert len([p for p in envs.iterdir() if p.name != "asked"]) == 1
        await network.remove_tenant("t")
        await network.collect_garbage()
        assert [p for p in envs.iterdir() if p.name != "asked"] == []


def test_an_install_over_http_stalls_no_other_tenant_and_reports_its_progress(
    tmp_path: Path,
) -> None:
    process = ServerProcess(tmp_path, admin_token=ADMIN).start()
    try:
        with process.client(ADMIN) as admin:
            admin.deploy("quick", ROOT / "examples" / "bob")
        stalls: list[float] = []
        answers: list[httpx.Response] = []
        for attempt in range(STALL_ATTEMPTS):
            # A version not installed yet each time: the installer runs.
            version = ["0.11.2", "0.11.1", "0.11.0"][attempt]

            def deploy(into: list[httpx.Response] = answers, at: str = version) -> None:
                into.append(
                    httpx.put(
                        f"{process.url}/api/tenants/libs/bundle",
                        json=bundle(TOOLZ, [f"toolz=={at}"]),
                        headers={"Authorization": f"Bearer {ADMIN}"},
                        timeout=300,
                    )
                )

            stalls.append(process.longest_wait_beside(deploy))
            if stalls[-1] < 0.1:
                break
        assert min(stalls) < 0.1, f"quick's calls waited {[round(s * 1000) for s in stalls]} ms"
        assert answers[-1].status_code in (200, 201), answers[-1].text
        headers = {"Authorization": f"Bearer {ADMIN}"}
        progress = httpx.get(f"{process.url}/api/tenants/libs/deploy/progress", headers=headers)
        assert any("toolz" in line for line in progress.json()["lines"]), progress.text
        described = httpx.get(f"{process.url}/api/tenants/libs", headers=headers).json()
        assert described["dependencies"]["installed"] == [f"toolz=={version}"]
        refused = httpx.put(
            f"{process.url}/api/tenants/libs/bundle",
            json=bundle(TOOLZ, ["toolz @ file:///etc"]),
            headers=headers,
        )
        assert refused.status_code == 400, refused.text
        assert "names a URL" in refused.json()["error"]["message"]
        failed = httpx.put(
            f"{process.url}/api/tenants/libs/bundle",
            json=bundle(TOOLZ, ["no-such-package-plughost-test==1.0"]),
            headers=headers,
            timeout=300,
        )
        assert failed.status_code == 422, failed.text
        assert failed.json()["error"]["code"] == "dependency_failed"
        assert "no-such-package-plughost-test" in failed.json()["error"]["message"]
    finally:
        assert process.stop()


def test_fsck_checks_the_environments(tmp_path: Path) -> None:
    async def deploy() -> None:
        async with Network(tmp_path / "data") as network:
            await network.deploy("t", bundle(TOOLZ, ["toolz==0.12.0"]))

    asyncio.run(deploy())

    def fsck() -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "plughost", "fsck", "--data-dir", str(tmp_path / "data")]
        return subprocess.run(command, capture_output=True, text=True, timeout=120)

    assert fsck().returncode == 0
    envs = tmp_path / "data" / "envs"
    (folder,) = [p for p in envs.iterdir() if p.name != "asked"]
    folder.rename(envs / ("0" * 64))
    checked = fsck()
    assert checked.returncode == 1
    assert f"environment {folder.name[:12]}" in checked.stdout and "is missing" in checked.stdout
    assert "(toolz==0.12.0): its files are not what its name says" in checked.stdout
    (envs / ("0" * 64)).rename(folder)
    assert fsck().returncode == 0
    # A file changed in an environment (a worker runs as root: modes do not stop it).
    target = folder / "toolz" / "__init__.py"
    target.chmod(0o644)
    target.write_text(target.read_text() + "\n# changed\n")
    assert fsck().returncode == 1


def test_the_cli_shows_the_installers_progress_while_it_deploys(tmp_path: Path) -> None:
    process = ServerProcess(tmp_path, admin_token=ADMIN).start()
    folder = tmp_path / "libs"
    folder.mkdir()
    (folder / "lib_agent.py").write_text(TOOLZ)
    (folder / "plughost.toml").write_text('dependencies = ["toolz==0.11.2"]\n')
    try:
        command = [sys.executable, "-m", "plughost", "tenant", "deploy", "libs", str(folder)]
        command += ["--url", process.url, "--token", ADMIN]
        done = subprocess.run(command, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        assert "toolz==0.11.2" in done.stdout, done.stdout  # the installer's own line
        assert "deployed libs version 1" in done.stdout
    finally:
        assert process.stop()


async def test_only_wheels_are_installed_so_no_tenant_code_runs_at_install(
    tmp_path: Path,
) -> None:
    # termcolor 1.1.0 is published as a source distribution only: building it would run
    # its setup.py on the server.
    async with Network(tmp_path / "data") as network:
        with pytest.raises(DependencyError, match="termcolor") as refused:
            await network.deploy("t", bundle(TOOLZ, ["termcolor==1.1.0"]))
        assert "no-build" in str(refused.value) or "source distribution" in str(refused.value)
        assert network.list_tenants() == []


async def test_an_install_shared_by_two_tenants_names_each_only_itself(tmp_path: Path) -> None:
    async with Network(tmp_path / "data") as network:
        failing = bundle(TOOLZ, ["no-such-package-plughost-shared==1.0"])
        outcomes = await asyncio.gather(
            network.deploy("alice", failing), network.deploy("bob", failing), return_exceptions=True
        )
        for tenant, outcome in zip(("alice", "bob"), outcomes, strict=True):
            assert isinstance(outcome, DependencyError), outcome
            other = "bob" if tenant == "alice" else "alice"
            assert outcome.tenant == tenant and f"tenant {tenant!r}" in str(outcome)
            assert repr(other) not in str(outcome)
        await network.deploy("carol", bundle(TOOLZ, ["toolz==0.12.0"]))
        lines = network.deploy_progress("carol")
        assert any("<python>" in line for line in lines), lines  # the interpreter, unnamed
        for folder in {sys.prefix, sys.base_prefix, str(tmp_path), os.environ.get("HOME", "/")}:
            assert folder == "/" or not [line for line in lines if folder in line], lines


INSTANCE = """
import toolz
from plughost import Mod, rpc


class VersionMod(Mod):
    @rpc
    def version(self):
        return toolz.__version__
"""


@pytest.mark.parametrize("placement", ["inprocess", "process"])
async def test_a_declared_instance_imports_its_tenants_libraries_and_a_restart_too(
    tmp_path: Path, placement: str
) -> None:
    toml = 'dependencies = ["toolz==0.12.0"]\n[[mods]]\npath = "version_module"\nname = "v"\n'
    files = [
        {"filename": "version_module.py", "source": INSTANCE},
        {"filename": "plughost.toml", "source": f'placement = "{placement}"\n{toml}'},
    ]
    async with Network(tmp_path / "data") as network:
        await network.deploy("t", {"files": files})
        assert await network.rpc("t/v", "version") == "0.12.0"
        await network.restart("t/v")
        assert await network.rpc("t/v", "version") == "0.12.0"
        assert "toolz" not in sys.modules
