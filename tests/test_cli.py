"""The plughost command, run as a real process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import plughost

from .server import ServerProcess, free_port


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "plughost", *args], capture_output=True, text=True, timeout=120
    )


def test_version() -> None:
    result = _run("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"plughost {plughost.__version__}"


def test_help_lists_the_commands() -> None:
    result = _run("--help")
    assert result.returncode == 0
    for command in ("serve", "network", "mod", "tenant", "snapshot", "call"):
        assert command in result.stdout


def test_an_unknown_command_fails_with_a_message() -> None:
    result = _run("frobnicate")
    assert result.returncode != 0
    assert "frobnicate" in result.stderr


def test_a_server_that_is_not_there_gives_one_clear_line() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = _run("tenant", "list", "--url", url)
    assert result.returncode == 1
    assert result.stderr.strip() == f"error: cannot reach server at {url}"


def test_bad_json_options_are_named() -> None:
    result = _run("call", "t", "a", "--args", "{nope", "--url", "http://127.0.0.1:1")
    assert result.returncode == 1
    assert result.stderr.startswith("error: --args is not valid JSON")
    result = _run("call", "t", "a", "--args", "[1]", "--url", "http://127.0.0.1:1")
    assert result.stderr.strip() == "error: --args must be a JSON object"


def test_a_bad_config_file_stops_serve_with_a_message(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("port: not-a-number\n")
    result = _run("serve", "--config", str(config))
    assert result.returncode == 1
    assert "config file" in result.stderr and "port" in result.stderr


def test_fsck_finds_a_missing_file(tmp_path: Path) -> None:
    import asyncio

    from plughost import Network

    from .conftest import agent_bundle

    async def deploy() -> None:
        async with Network(tmp_path / "data") as network:
            await network.deploy("acme", agent_bundle("x"))

    asyncio.run(deploy())
    result = _run("fsck", "--data-dir", str(tmp_path / "data"))
    assert result.returncode == 0 and "consistent" in result.stdout
    next(p for p in (tmp_path / "data" / "blobs").rglob("*") if p.is_file()).unlink()
    result = _run("fsck", "--data-dir", str(tmp_path / "data"))
    assert result.returncode == 1
    assert "deployment acme/1" in result.stdout and "missing or corrupt" in result.stdout
    assert _run("fsck", "--data-dir", str(tmp_path / "nothing")).returncode == 1


def test_fsck_finds_a_changed_bundle_folder(tmp_path: Path) -> None:
    import asyncio

    from plughost import Network

    from .conftest import agent_bundle

    async def deploy() -> None:
        async with Network(tmp_path / "data") as network:
            await network.deploy("acme", agent_bundle("x"))

    asyncio.run(deploy())
    (folder,) = (tmp_path / "data" / "bundles").iterdir()
    helpers = folder / "helpers.py"
    helpers.chmod(0o644)
    helpers.write_text("def decorate(m):\n    return 'changed'\n")
    result = _run("fsck", "--data-dir", str(tmp_path / "data"))
    assert result.returncode == 1
    assert (
        f"deployment acme/1: bundle folder {folder.name[:12]}: helpers.py differs" in result.stdout
    )
    assert "1 problems" in result.stdout


def test_the_dynamic_mod_guide_runs_as_written(tmp_path: Path) -> None:
    """The three commands of the dynamic-mod guide, exactly as it writes them."""
    guide = [
        "plughost network send-event --event-name system.mod.load "
        '--payload \'{"mod_path": "plughost.mods.shared_artifact"}\'',
        "plughost network list-mods",
        "plughost network send-event --event-name system.mod.unload "
        '--payload \'{"mod_path": "plughost.mods.shared_artifact"}\'',
    ]
    server = ServerProcess(tmp_path, admin_token="admin-token-for-the-guide").start()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("PLUGHOST_")},
        "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
        "PLUGHOST_URL": server.url,
        "PLUGHOST_TOKEN": "admin-token-for-the-guide",
    }
    try:
        outputs = []
        for line in guide:
            result = subprocess.run(
                ["bash", "-c", line], capture_output=True, text=True, timeout=120, env=env
            )
            assert result.returncode == 0, (line, result.stdout, result.stderr)
            outputs.append(result.stdout)
            health = server.client().health()
            loaded = health["mods"]["loaded"]
            assert loaded == ([] if line == guide[2] else ["shared_artifact"]), line
        assert outputs[0].startswith("ok: mod 'shared_artifact' loaded")
        assert "shared_artifact" in outputs[1] and "plughost.mods.shared_artifact" in outputs[1]
        assert outputs[2].startswith("ok:")
    finally:
        assert server.stop()


def test_the_client_commands_a_newcomer_reaches_for(tmp_path: Path) -> None:
    admin_token = "admin-token-for-the-newcomer"
    server = ServerProcess(tmp_path, admin_token=admin_token).start()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("PLUGHOST_")},
        "PLUGHOST_TOKEN": admin_token,
    }

    def cli(
        *args: str, token: str | None = None, stdin: str = ""
    ) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "plughost", *args]
        run_env = {**env, "PLUGHOST_TOKEN": token} if token else env
        return subprocess.run(
            command, capture_output=True, text=True, timeout=120, env=run_env, input=stdin
        )

    bare = server.url.removeprefix("http://")  # no scheme, as people type it
    root = Path(__file__).resolve().parent.parent
    try:
        deployed = cli(
            "--json", "tenant", "deploy", "alice", str(root / "examples" / "alice"), "--url", bare
        )
        assert deployed.returncode == 0, deployed.stderr
        tenant_token = json.loads(deployed.stdout)["token"]
        shown = json.loads(cli("--json", "tenant", "show", "alice", "--url", bare).stdout)
        assert (shown["placement"], shown["state"], shown["agents"]) == (
            "inprocess",
            "in process",
            ["Notifier"],
        )
        assert "Notifier" in cli("agents", "alice", "--url", bare).stdout
        # A tenant token that names no tenant loads into its own.
        loaded = cli("mod", "load", "plughost.mods.shared_cache", "--url", bare, token=tenant_token)
        assert loaded.stdout.startswith("loaded alice/shared_cache"), loaded
        assert "alice/shared_cache" in cli("mod", "list", "--url", bare).stdout
        bad = cli("call", "alice", "Notifier", "--args", '{"msg": "hi"}', "--url", bare)
        assert bad.returncode == 1 and "'msg' was unexpected" in bad.stderr, bad
        asked = cli("tenant", "remove", "alice", "--url", bare, stdin="n\n")
        assert asked.returncode == 1 and "not removed" in asked.stderr
        assert cli("--json", "tenant", "list", "--url", bare).stdout.strip() != "[]"
        removed = cli("tenant", "remove", "alice", "--yes", "--json", "--url", bare)
        assert json.loads(removed.stdout) == {"removed": "alice"}, removed
    finally:
        assert server.stop()


def test_serve_stops_with_one_line_when_it_cannot_start(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path, admin_token="admin-token-for-the-second-one").start()
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PLUGHOST_")}
        second = subprocess.run(
            [sys.executable, "-m", "plughost", "serve", "--port", str(free_port())],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
            cwd=tmp_path,
        )
        assert second.returncode == 1
        assert (
            second.stderr.strip() == "error: the data folder .plughost is in use by another server"
        )
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        busy = subprocess.run(
            [sys.executable, "-m", "plughost", "serve", "--port", str(server.port)],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
            cwd=elsewhere,
        )
        assert busy.returncode == 1
        assert busy.stderr.startswith(f"error: cannot listen on 127.0.0.1:{server.port}")
        assert list(elsewhere.iterdir()) == []  # nothing created
    finally:
        assert server.stop()


def test_every_option_says_what_it_takes() -> None:
    import typer.main

    from plughost.cli import app

    def commands(group: Any, path: tuple[str, ...]) -> list[tuple[tuple[str, ...], Any]]:
        found = [(path, group)]
        for name, command in getattr(group, "commands", {}).items():
            found += commands(command, (*path, name))
        return found

    every = commands(typer.main.get_command(app), ())
    assert len(every) > 25
    for path, command in every:
        for param in command.params:
            if param.param_type_name == "option":
                assert param.help, f"plughost {' '.join(path)} {param.opts[0]} has no help"
        shown = _run(*path, "--help").stdout
        assert "<str>" not in shown and "<bool>" not in shown, path
        usage = next(line for line in shown.splitlines() if "Usage:" in line)
        assert "{" not in usage, path  # arguments are named plainly
