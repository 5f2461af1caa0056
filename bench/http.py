"""HTTP benchmarks: GET /api/health and an agent call, 1 and 16 concurrent clients.

A real ``plughost serve`` process on 127.0.0.1 is loaded by a separate
process: ``wrk`` (Debian package ``wrk``) when it is on PATH, else the
bounded Python client in this file. The baseline, measured in the same run,
is the same stack (FastAPI on uvicorn, access log on) serving the same two
routes with constant answers, so the ratio is what plughost itself costs.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI

from plughost.client import Client

from .report import Outcome

SECONDS = 5
CONCURRENCY = (1, 16)
TOKEN = "bench-admin-token"
ROOT = Path(__file__).resolve().parent.parent

baseline = FastAPI()


@baseline.get("/api/health")
async def _health() -> dict[str, Any]:
    return {"status": "healthy", "network_id": "baseline", "uptime": 0}


@baseline.post("/api/tenants/{tenant}/agents/{agent}/call")
async def _call(tenant: str, agent: str, body: dict[str, Any]) -> dict[str, Any]:
    return {"output": "[alice] hi"}


@dataclass
class Load:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _start(command: list[str], cwd: Path, url: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PLUGHOST_ADMIN_TOKEN": TOKEN}
    process = subprocess.Popen(
        command, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/api/health", timeout=1).status_code == 200:
                return process
        except httpx.TransportError:
            time.sleep(0.05)
    process.kill()
    raise RuntimeError(f"{command} did not come up")


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _wrk(url: str, path: str, concurrency: int, body: str | None, folder: Path) -> Load:
    command = [
        "wrk",
        f"-t{min(2, concurrency)}",
        f"-c{concurrency}",
        f"-d{SECONDS}s",
        "--latency",
        "-H",
        f"Authorization: Bearer {TOKEN}",
    ]
    if body is not None:
        script = folder / "post.lua"
        script.write_text(
            f'wrk.method = "POST"\nwrk.body = {json.dumps(body)}\n'
            'wrk.headers["Content-Type"] = "application/json"\n'
        )
        command += ["-s", str(script)]
    output = subprocess.run(
        [*command, url + path], capture_output=True, text=True, check=True
    ).stdout
    return Load(
        rps=float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1)),  # type: ignore[union-attr]
        p50_ms=_wrk_ms(output, "50%"),
        p99_ms=_wrk_ms(output, "99%"),
        errors=_wrk_errors(output),
    )


def _wrk_ms(output: str, percentile: str) -> float:
    match = re.search(rf"{re.escape(percentile)}\s+([\d.]+)(us|ms|s)\b", output)
    assert match is not None, output
    value, unit = float(match.group(1)), match.group(2)
    return value * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def _wrk_errors(output: str) -> int:
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    socket_errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    count = int(non_2xx.group(1)) if non_2xx else 0
    if socket_errors:
        count += sum(int(n) for n in socket_errors.groups())
    return count


def _python_load(url: str, path: str, concurrency: int, body: str | None) -> Load:
    """The fallback load generator: a bounded asyncio client in a separate process."""
    script = f"""
import asyncio, json, sys, time
import httpx
async def main():
    latencies, errors = [], 0
    deadline = time.perf_counter() + {SECONDS}
    async with httpx.AsyncClient(base_url={url!r}, headers={{"Authorization": "Bearer {TOKEN}"}},
                                 limits=httpx.Limits(max_connections={concurrency})) as client:
        async def worker():
            nonlocal errors
            while time.perf_counter() < deadline:
                start = time.perf_counter()
                if {body!r} is None:
                    response = await client.get({path!r})
                else:
                    response = await client.post({path!r}, content={body!r},
                                                 headers={{"Content-Type": "application/json"}})
                latencies.append(time.perf_counter() - start)
                errors += response.status_code >= 300
        await asyncio.gather(*(worker() for _ in range({concurrency})))
    print(json.dumps({{"latencies": latencies, "errors": errors}}))
asyncio.run(main())
"""
    result = json.loads(
        subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, check=True
        ).stdout
    )
    latencies = sorted(result["latencies"])
    cut = statistics.quantiles(latencies, n=100)
    return Load(len(latencies) / SECONDS, cut[49] * 1000, cut[98] * 1000, result["errors"])


ASYNC_AGENT = {
    "agents": [
        {
            "filename": "notifier_agent.py",
            "source": "from plughost import Agent\n"
            "class Notifier(Agent):\n"
            "    name = 'Notifier'\n"
            "    async def perform(self, **kwargs):\n"
            "        return '[quick] ' + kwargs.get('message', '')\n",
        }
    ]
}


def _measure(url: str, folder: Path) -> dict[tuple[str, int], Load]:
    call = json.dumps({"args": {"message": "hi"}})
    routes = {
        "health": ("/api/health", None),
        "call sync agent": ("/api/tenants/alice/agents/Notifier/call", call),
        "call async agent": ("/api/tenants/quick/agents/Notifier/call", call),
    }
    found: dict[tuple[str, int], Load] = {}
    for name, (path, body) in routes.items():
        for concurrency in CONCURRENCY:
            if shutil.which("wrk"):
                found[(name, concurrency)] = _wrk(url, path, concurrency, body, folder)
            else:
                found[(name, concurrency)] = _python_load(url, path, concurrency, body)
    return found


def http() -> Outcome:
    generator = "wrk" if shutil.which("wrk") else "a bounded Python asyncio client"
    with tempfile.TemporaryDirectory(prefix="plughost-bench-") as tmp:
        folder = Path(tmp)
        url = f"http://127.0.0.1:{_free_port()}"
        server = _start(
            [
                sys.executable,
                "-m",
                "plughost",
                "serve",
                "--port",
                url.rsplit(":", 1)[1],
                "--data-dir",
                str(folder / "data"),
            ],
            folder,
            url,
        )
        try:
            with Client(url, TOKEN) as client:
                client.deploy("alice", ROOT / "examples" / "alice")
                assert client.call("alice", "Notifier", {"message": "hi"}) == "[alice] hi"
                client.request("PUT", "/api/tenants/quick/bundle", json=ASYNC_AGENT)
                assert client.call("quick", "Notifier", {"message": "hi"}) == "[quick] hi"
            plughost = _measure(url, folder)
        finally:
            _stop(server)
        base_url = f"http://127.0.0.1:{_free_port()}"
        base = _start(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "bench.http:baseline",
                "--port",
                base_url.rsplit(":", 1)[1],
                "--log-level",
                "info",
            ],
            ROOT,
            base_url,
        )
        try:
            reference = _measure(base_url, folder)
        finally:
            _stop(base)
    figures = []
    for key, load in plughost.items():
        ref = reference[key]
        figures.append(
            (
                f"{key[0]}, {key[1]} client{'s' if key[1] > 1 else ''}",
                f"{load.rps:,.0f} req/s, p50 {load.p50_ms:.2f} ms, p99 {load.p99_ms:.2f} ms"
                f" | baseline {ref.rps:,.0f} req/s, p50 {ref.p50_ms:.2f} ms,"
                f" p99 {ref.p99_ms:.2f} ms | {load.rps / ref.rps:.2f}x throughput"
                f"{f', {load.errors} errors' if load.errors else ''}",
            )
        )
    errors = sum(load.errors for load in plughost.values())
    ratios = ", ".join(
        f"{name}/{n}: {plughost[(name, n)].rps / reference[(name, n)].rps:.2f}x"
        for name, n in plughost
    )
    return Outcome(
        name="http",
        title="requests per second and latency over loopback, against a bare FastAPI baseline",
        figures=figures,
        verdict=f"throughput vs baseline {ratios}; {errors} errors",
        goal="report req/s and p50/p99 with 1 and 16 clients",
        met=errors == 0,
        notes=[
            f"load from {generator}, {SECONDS} s per figure, in a separate process",
            "the sync agent runs in a worker thread, the async one on the event loop",
        ],
    )


BENCHMARKS = (http,)
