"""The plughost command, run as a real process."""

from __future__ import annotations

import subprocess
import sys

import plughost


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
    assert "demo" in result.stdout


def test_demo_shows_each_tenant_running_its_own_code() -> None:
    result = _run("demo")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert any("plughost_ns.t_alice.notifier_agent" in s and "Hello from alice" in s for s in lines)
    assert any("plughost_ns.t_bob.notifier_agent" in s and "Bonjour from bob" in s for s in lines)
    assert "unloaded alice: 3 modules freed" in lines
    assert "unloaded bob: 3 modules freed" in lines


def test_an_unknown_command_fails_with_a_message() -> None:
    result = _run("frobnicate")
    assert result.returncode != 0
    assert "frobnicate" in result.stderr
