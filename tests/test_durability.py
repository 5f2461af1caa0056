"""Acknowledged deploys survive kill -9; a deploy killed midway leaves the previous one; what
an upload killed midway leaves is removed at the next start."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from plughost import Network

from .server import ServerProcess

CHILD = Path(__file__).with_name("crash_child.py")


def _run_until_killed(
    data: Path, first_marker: int, acks: int, rng: random.Random
) -> list[tuple[int, int]]:
    """Start a deploying child, kill -9 it after ``acks`` acknowledgements plus a random delay."""
    child = subprocess.Popen(
        [sys.executable, str(CHILD), str(data), str(first_marker)],
        stdout=subprocess.PIPE,
        text=True,
    )
    acked: list[tuple[int, int]] = []
    try:
        assert child.stdout is not None
        while len(acked) < acks:
            line = child.stdout.readline()
            assert line, "the child stopped before it was killed"
            _, version, marker = line.split()
            acked.append((int(version), int(marker)))
        # Land anywhere in the next deploy: before, during or after its commit.
        delay = rng.uniform(0, 0.03)
        subprocess.run(["sleep", f"{delay:.4f}"], check=True)
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    # Acknowledgements printed between the last one read and the kill count too.
    assert child.stdout is not None
    for line in child.stdout:
        _, version, marker = line.split()
        acked.append((int(version), int(marker)))
    child.stdout.close()
    return acked


async def test_kill_9_during_deploys_never_loses_an_acknowledged_deploy(tmp_path: Path) -> None:
    data = tmp_path / "data"
    rng = random.Random(7)
    # 8 kills in CI; PLUGHOST_CRASH_ROUNDS=100 for the full crash soak.
    for round_number in range(int(os.environ.get("PLUGHOST_CRASH_ROUNDS", "8"))):
        first_marker = round_number * 1000
        acked = _run_until_killed(data, first_marker, rng.randint(1, 4), rng)
        last_version, last_marker = acked[-1]

        async with Network(data) as network:
            assert await network.check() == []
            deployment = network.get_deployment("crash")
            # The deploy in flight at the kill either committed whole or not at all.
            assert deployment.version in (last_version, last_version + 1)
            expected = last_marker + (deployment.version - last_version)
            assert await network.call_agent("crash", "Marker") == expected
            snapshots = {s.name for s in network.list_snapshots("crash")}
            for _, marker in acked:
                if marker % 3 == 0:
                    assert f"s{marker}" in snapshots
                    assert (
                        await network.call_agent("crash", "Marker", snapshot=f"s{marker}") == marker
                    )
            await network.collect_garbage()
            assert await network.check() == []


def test_an_upload_cut_by_kill_9_leaves_files_that_the_next_start_removes(tmp_path: Path) -> None:
    data = tmp_path / "data"
    server = ServerProcess(tmp_path, admin_token="admin-token-for-durability", data_dir=data)
    server.start()
    assert server.process is not None
    stop_sending = threading.Event()

    def half_an_archive() -> Iterator[bytes]:
        yield b"PK\x03\x04" + b"\0" * 4096
        stop_sending.wait(60)

    def upload() -> None:
        with contextlib.suppress(httpx.HTTPError):
            httpx.put(
                server.url + "/api/tenants/acme/bundle",
                content=half_an_archive(),
                headers={
                    "Authorization": "Bearer admin-token-for-durability",
                    "Content-Type": "application/zip",
                },
                timeout=60,
            )

    uploading = threading.Thread(target=upload)
    uploading.start()
    try:
        deadline = time.monotonic() + 30
        while not list(data.glob("tmp/plughost-upload-*/bundle")):
            assert time.monotonic() < deadline, "the upload never reached the data folder"
            time.sleep(0.01)
    finally:
        server.process.kill()
        server.process.wait()
        server.process = None
        stop_sending.set()
        uploading.join(60)
    assert list(data.glob("tmp/plughost-upload-*/bundle"))  # the kill left it

    async def start() -> None:
        async with Network(data):
            pass

    asyncio.run(start())
    assert list((data / "tmp").iterdir()) == []
