"""Acknowledged deploys survive kill -9; a deploy killed midway leaves the previous one."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from pathlib import Path

from plughost import Network

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
