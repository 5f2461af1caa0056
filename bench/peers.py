"""plughost side by side with its peer, openagents 0.9.3, the project that ships system.mod.load.

The baseline is openagents ``0.9.3.post20`` (``openagents[sdk]``), installed by
this file into its own venv under ``bench/.scratch/`` (reused on later runs)
and driven only by that venv's interpreter: over HTTP through its own CLI,
``openagents network start``, and in process by ``bench/peer_openagents.py``.
Without PyPI (or with a broken install) every peer figure is reported as
SKIPPED and its goal as MISSED.

Measured, plughost and peer in alternating rounds, medians:

1. ``GET /api/health`` requests/s with ``wrk`` (4 connections), per-request
   log off on both sides, and again with each side's logging as shipped.
2. p50 latency of health over 500 keep-alive requests (httpx).
3. A mod event over HTTP to the built-in shared cache mod: plughost ``POST
   /api/events`` ``shared_cache.get`` to ``mod:shared_cache``; the peer ``POST
   /api/send_event`` ``shared_cache.get`` to
   ``mod:openagents.mods.core.shared_cache``, with a registered agent's secret.
   Requests/s (wrk) and p50, log off and as shipped.
4. Listing the mods with an event over HTTP, p50: plughost
   ``system.mod.list``, the peer ``system.list_mods`` (its name for it).
5. A warm ``load_mod`` + ``unload_mod`` cycle of the shared cache mod, in
   process (``plughost.Network`` / the peer's ``AgentNetwork``).
6. A cold ``load_mod`` in a fresh interpreter (only the load is timed).
7. Import time of the network module (``import plughost`` /
   ``import openagents.sdk.network``) in a fresh interpreter.

Both servers run on 127.0.0.1, their output to /dev/null; the load generator
runs in a separate process. Every event body carries a new ``event_id``: the
peer drops an event whose id it has seen before and still answers 200.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import httpx

from .http import _free_port, _wrk_errors
from .report import Outcome

ROOT = Path(__file__).resolve().parent.parent
SCRATCH = ROOT / "bench" / ".scratch"
PEER_SPEC = "openagents[sdk]==0.9.3.post20"
PEER_VENV = SCRATCH / "peer-openagents"
PEER_SCRIPT = Path(__file__).resolve().parent / "peer_openagents.py"
PEER_MOD = "openagents.mods.core.shared_cache"
PLUGHOST_MOD = "plughost.mods.shared_cache"
TOKEN = "bench-admin-token"

WRK_SECONDS = 3
WRK_CONNECTIONS = 4
WRK_ROUNDS = 3
LATENCY_REQUESTS = 500
LATENCY_BLOCKS = 5
CYCLES = 300
COLD_SAMPLES = 9
IMPORT_SAMPLES = 9
INSTALL_TIMEOUT = 900


# -- the peer's install ----------------------------------------------------------


@dataclass
class Peer:
    """The peer's venv, or why there is none."""

    python: Path | None
    openagents: Path | None
    note: str


def _peer_python() -> Path:
    return PEER_VENV / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def _peer_works(python: Path) -> str | None:
    """The installed version, if the venv imports the peer's network module."""
    if not python.exists():
        return None
    probe = subprocess.run(
        [
            str(python),
            "-c",
            "import importlib.metadata as m, openagents.sdk.network;"
            " print(m.version('openagents'))",
        ],
        capture_output=True,
        text=True,
        cwd=SCRATCH,
    )
    return probe.stdout.strip() if probe.returncode == 0 else None


@cache
def peer() -> Peer:
    """Install the peer into its venv once (when PyPI answers); reuse it afterwards."""
    SCRATCH.mkdir(parents=True, exist_ok=True)
    python = _peer_python()
    wanted = PEER_SPEC.split("==")[1]
    version = _peer_works(python)
    if version == wanted:
        return Peer(python, _peer_cli(), f"openagents {version}, reused from {_rel(PEER_VENV)}")
    shutil.rmtree(PEER_VENV, ignore_errors=True)
    print(f"   installing {PEER_SPEC} into {_rel(PEER_VENV)} ...", flush=True)
    base = getattr(sys, "_base_executable", sys.executable)
    steps = [
        [base, "-m", "venv", str(PEER_VENV)],
        [str(python), "-m", "pip", "install", "-q", "--timeout", "20", "--retries", "1", PEER_SPEC],
    ]
    for step in steps:
        try:
            done = subprocess.run(step, capture_output=True, text=True, timeout=INSTALL_TIMEOUT)
        except subprocess.TimeoutExpired:
            shutil.rmtree(PEER_VENV, ignore_errors=True)
            return Peer(None, None, f"`{' '.join(step[-3:])}` timed out (is PyPI reachable?)")
        if done.returncode != 0:
            shutil.rmtree(PEER_VENV, ignore_errors=True)
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            return Peer(None, None, f"cannot install {PEER_SPEC} (is PyPI reachable?): {last}")
    version = _peer_works(python)
    if version != wanted:
        return Peer(None, None, f"installed {PEER_SPEC}, but it does not import")
    return Peer(python, _peer_cli(), f"openagents {version}, installed into {_rel(PEER_VENV)}")


def _peer_cli() -> Path:
    return PEER_VENV / ("Scripts/openagents.exe" if os.name == "nt" else "bin/openagents")


def _rel(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


# -- servers ---------------------------------------------------------------------


@contextmanager
def _server(command: list[str], cwd: Path, url: str, env: dict[str, str]) -> Iterator[None]:
    """Run a server in its own process group until the block ends; kill the group then."""
    process = subprocess.Popen(
        command,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 90
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"{command[:4]} exited with {process.returncode}")
            try:
                if httpx.get(url + "/api/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{command[:4]} did not come up")
            time.sleep(0.1)
        yield
    finally:
        _stop_group(process)


def _stop_group(process: subprocess.Popen[bytes]) -> None:
    for sig, wait in ((signal.SIGTERM, 20), (signal.SIGKILL, 10)):
        if process.poll() is not None:
            break
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            break
        try:
            process.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
    if process.poll() is None:
        process.kill()
        process.wait()


# -- one side over HTTP ----------------------------------------------------------


@dataclass
class Side:
    """How one side is reached over HTTP: its URL, headers, and event bodies."""

    name: str
    url: str
    headers: dict[str, str]
    event_path: str
    event: dict[str, Any]  # shared_cache.get to the mod
    listing: dict[str, Any]  # the mod list event
    check: Callable[[dict[str, Any]], bool]  # is the event's answer the cached value
    health_bytes: int = 0
    event_bytes: int = 0

    def post(self, client: httpx.Client, body: dict[str, Any]) -> dict[str, Any]:
        body = {**body, "event_id": os.urandom(8).hex()}
        response = client.post(self.event_path, json=body, headers=self.headers)
        response.raise_for_status()
        answer: dict[str, Any] = response.json()
        return answer


def _plughost_side(url: str) -> Side:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    side = Side(
        name="plughost",
        url=url,
        headers=headers,
        event_path="/api/events",
        event={
            "event_name": "shared_cache.get",
            "destination_id": "mod:shared_cache",
            "payload": {"key": "greeting"},
        },
        listing={"event_name": "system.mod.list", "destination_id": "system:system"},
        check=lambda answer: (
            answer.get("success") is True and answer.get("data", {}).get("value") == "hello"
        ),
    )
    with httpx.Client(base_url=url) as client:
        loaded = side.post(
            client,
            {
                "event_name": "system.mod.load",
                "destination_id": "system:system",
                "payload": {"mod_path": PLUGHOST_MOD},
            },
        )
        assert loaded["success"], loaded
        stored = side.post(
            client,
            {
                "event_name": "shared_cache.set",
                "destination_id": "mod:shared_cache",
                "payload": {"key": "greeting", "value": "hello"},
            },
        )
        assert stored["success"], stored
    return side


def _peer_side(url: str) -> Side:
    with httpx.Client(base_url=url) as client:
        registered = client.post("/api/register", json={"agent_id": "bench"}).json()
        assert registered.get("success") and registered.get("secret"), registered
        secret = registered["secret"]
        side = Side(
            name="openagents",
            url=url,
            headers={},
            event_path="/api/send_event",
            event={},
            listing={"event_name": "system.list_mods", "source_id": "bench", "secret": secret},
            check=lambda answer: (
                answer.get("success") is True and (answer.get("data") or {}).get("value") == "hello"
            ),
        )
        loaded = side.post(
            client,
            {
                "event_name": "system.mod.load",
                "source_id": "bench",
                "secret": secret,
                "payload": {"mod_path": PEER_MOD},
            },
        )
        assert loaded["success"], loaded
        created = side.post(
            client,
            {
                "event_name": "shared_cache.create",
                "source_id": "bench",
                "secret": secret,
                "target_agent_id": f"mod:{PEER_MOD}",
                "payload": {"value": "hello"},
            },
        )
        assert created["success"], created
    side.event = {
        "event_name": "shared_cache.get",
        "source_id": "bench",
        "secret": secret,
        "target_agent_id": f"mod:{PEER_MOD}",
        "payload": {"cache_id": created["data"]["cache_id"]},
    }
    return side


def _verify(side: Side) -> None:
    """The event reaches the mod and answers the cached value; the listing names the mod."""
    with httpx.Client(base_url=side.url) as client:
        answer = side.post(client, side.event)
        if not side.check(answer):
            raise RuntimeError(f"{side.name}: the mod event did not answer the value: {answer}")
        listing = side.post(client, side.listing)
        mods = json.dumps((listing.get("data") or {}).get("mods"))
        if not listing.get("success") or "shared_cache" not in mods:
            raise RuntimeError(f"{side.name}: the mod list does not name the mod: {listing}")
        side.event_bytes = len(
            client.post(
                side.event_path,
                json={**side.event, "event_id": os.urandom(8).hex()},
                headers=side.headers,
            ).content
        )
        side.health_bytes = len(client.get("/api/health").content)


def _lua(side: Side, folder: Path) -> Path:
    """A wrk script that POSTs the mod event, each request with a new event_id."""
    head = json.dumps({**side.event, "event_id": "@@"}).split('"@@"')
    headers = "".join(
        f"wrk.headers[{json.dumps(k)}] = {json.dumps(v)}\n" for k, v in side.headers.items()
    )
    script = folder / f"{side.name}-event.lua"
    script.write_text(
        'wrk.method = "POST"\n'
        'wrk.headers["Content-Type"] = "application/json"\n'
        f"{headers}"
        # Each wrk thread gets its own number from setup(), so no two requests share an id.
        "local threads = 0\n"
        "function setup(thread)\n"
        "  threads = threads + 1\n"
        "  thread:set('tag', threads)\n"
        "end\n"
        "local counter = 0\n"
        "request = function()\n"
        "  counter = counter + 1\n"
        f"  local body = {json.dumps(head[0])} .. '\"' .. tag .. '-' .. counter .. '\"'"
        f" .. {json.dumps(head[1])}\n"
        "  return wrk.format(nil, nil, nil, body)\n"
        "end\n"
    )
    return script


@dataclass
class Rate:
    rps: float
    errors: int


def _wrk(url: str, path: str, script: Path | None) -> Rate:
    command = ["wrk", "-t2", f"-c{WRK_CONNECTIONS}", f"-d{WRK_SECONDS}s"]
    if script is not None:
        command += ["-s", str(script)]
    output = subprocess.run(
        [*command, url + path], capture_output=True, text=True, check=True, timeout=120
    ).stdout
    found = re.search(r"Requests/sec:\s+([\d.]+)", output)
    assert found is not None, output
    return Rate(float(found.group(1)), _wrk_errors(output))


def _p50s(sides: list[Side]) -> dict[tuple[str, str], float]:
    """Median latency (ms) of health, the mod event and the mod list, blocks alternating."""
    samples: dict[tuple[str, str], list[float]] = {}
    clients = {side.name: httpx.Client(base_url=side.url) for side in sides}
    try:
        per_block = LATENCY_REQUESTS // LATENCY_BLOCKS
        for block in range(LATENCY_BLOCKS):
            order = sides if block % 2 == 0 else sides[::-1]
            for side in order:
                client = clients[side.name]
                for figure in ("health", "event", "list"):
                    found = samples.setdefault((side.name, figure), [])
                    for _ in range(per_block):
                        started = time.perf_counter()
                        if figure == "health":
                            client.get("/api/health").raise_for_status()
                        else:
                            side.post(client, side.event if figure == "event" else side.listing)
                        found.append((time.perf_counter() - started) * 1000)
    finally:
        for client in clients.values():
            client.close()
    return {key: statistics.median(values) for key, values in samples.items()}


@dataclass
class Session:
    """The HTTP figures of one logging mode; ``skipped`` says why there are none."""

    mode: str
    rps: dict[tuple[str, str], float] = field(default_factory=dict)
    p50: dict[tuple[str, str], float] = field(default_factory=dict)
    errors: int = 0
    notes: list[str] = field(default_factory=list)
    skipped: str | None = None


@cache
def _session(quiet: bool) -> Session:
    mode = "log off" if quiet else "logging as shipped"
    installed = peer()
    session = Session(mode)
    if installed.python is None or installed.openagents is None:
        session.skipped = installed.note
        return session
    if shutil.which("wrk") is None:
        session.skipped = "wrk is not on PATH"
        return session
    with tempfile.TemporaryDirectory(prefix="plughost-bench-peers-") as tmp:
        folder = Path(tmp)
        env = {**os.environ, "PLUGHOST_ADMIN_TOKEN": TOKEN}
        plug_url = f"http://127.0.0.1:{_free_port()}"
        plug_args = ["--port", plug_url.rsplit(":", 1)[1], "--data-dir", str(folder / "data")]
        if quiet:
            plug_command = [sys.executable, "-m", "plughost", "serve", "--no-access-log"]
            session.notes.append("plughost: `plughost serve --no-access-log`")
        else:
            plug_command = [sys.executable, "-m", "plughost", "serve"]
            session.notes.append("plughost: `plughost serve` (its access line per request)")
        plug_command += plug_args
        peer_port = _free_port()
        peer_url = f"http://127.0.0.1:{peer_port}"
        workspace = folder / "peer"
        workspace.mkdir()
        (workspace / "network.yaml").write_text(_peer_network_yaml(peer_port))
        peer_command = [str(installed.openagents)]
        peer_command += ["--log-level", "WARNING"] if quiet else []
        peer_command += ["network", "start", str(workspace), "--port", str(peer_port)]
        session.notes.append(
            "openagents: `openagents "
            + ("--log-level WARNING " if quiet else "")
            + "network start` (HTTP transport only"
            + ("" if quiet else "; INFO log with aiohttp's access line, to stdout and a file")
            + ")"
        )
        # The peer's CLI writes under the home folder; it gets one of its own here.
        peer_env = {**os.environ, "HOME": str(folder / "home")}
        with (
            _server(plug_command, folder, plug_url, env),
            _server(peer_command, folder, peer_url, peer_env),
        ):
            sides = [_plughost_side(plug_url), _peer_side(peer_url)]
            for side in sides:
                _verify(side)
            scripts = {side.name: _lua(side, folder) for side in sides}
            rates: dict[tuple[str, str], list[float]] = {}
            for round_ in range(WRK_ROUNDS):
                order = sides if round_ % 2 == 0 else sides[::-1]
                for figure in ("health", "event"):
                    for side in order:
                        if figure == "health":
                            rate = _wrk(side.url, "/api/health", None)
                        else:
                            rate = _wrk(side.url, side.event_path, scripts[side.name])
                        rates.setdefault((side.name, figure), []).append(rate.rps)
                        session.errors += rate.errors
            for side in sides:
                _verify(side)  # still answering the value, with new event ids
            session.p50 = _p50s(sides)
            session.rps = {key: statistics.median(values) for key, values in rates.items()}
            session.notes.append(
                "answer sizes: health "
                + ", ".join(f"{side.name} {side.health_bytes} B" for side in sides)
                + "; mod event "
                + ", ".join(f"{side.name} {side.event_bytes} B" for side in sides)
            )
    return session


def _peer_network_yaml(port: int) -> str:
    return textwrap.dedent(
        f"""\
        network:
          name: "BenchNetwork"
          mode: "centralized"
          node_id: "bench-network"
          initialized: true
          created_by_version: "{PEER_SPEC.split("==")[1]}"
          transports:
            - type: "http"
              config:
                host: "127.0.0.1"
                port: {port}
          encryption_enabled: false
          mods: []
        """
    )


# -- in process ------------------------------------------------------------------

_PLUGHOST_CHILD = textwrap.dedent(
    f"""
    import asyncio, json, sys, tempfile, time

    MOD = {PLUGHOST_MOD!r}

    async def cycle(data, count):
        from plughost import Network
        async with Network(data) as network:
            await network.load_mod(MOD)
            await network.unload_mod("shared_cache")
            cycles, loads = [], []
            for _ in range(count):
                started = time.perf_counter_ns()
                await network.load_mod(MOD)
                loaded = time.perf_counter_ns()
                await network.unload_mod("shared_cache")
                cycles.append(time.perf_counter_ns() - started)
                loads.append(loaded - started)
        return {{"cycles_ns": cycles, "loads_ns": loads}}

    async def cold(data):
        from plughost import Network
        async with Network(data) as network:
            if any(name.startswith(MOD) for name in sys.modules):
                raise RuntimeError(MOD + " was imported before the cold load")
            with tempfile.TemporaryDirectory(prefix="plughost-no-bytecode-") as empty:
                sys.pycache_prefix = empty
                sys.dont_write_bytecode = True
                started = time.perf_counter_ns()
                await network.load_mod(MOD)
                elapsed = time.perf_counter_ns() - started
            await network.unload_mod("shared_cache")
        return {{"load_ns": elapsed}}

    command = sys.argv[1]
    if command == "import":
        started = time.perf_counter_ns()
        import plughost
        result = {{"import_ns": time.perf_counter_ns() - started}}
    elif command == "cycle":
        result = asyncio.run(cycle(sys.argv[2], int(sys.argv[3])))
    else:
        result = asyncio.run(cold(sys.argv[2]))
    print(json.dumps(result))
    """
)


def _run_json(command: list[str], cwd: Path) -> dict[str, Any]:
    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=300,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
    )
    if done.returncode != 0:
        raise RuntimeError(f"{command[:3]} failed: {done.stderr.strip()[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _in_process(command: str, *args: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run ``command`` once on each side, each in a fresh interpreter and data folder."""
    installed = peer()
    assert installed.python is not None
    with tempfile.TemporaryDirectory(prefix="plughost-bench-peers-") as tmp:
        folder = Path(tmp)
        # Run from a copy: the bench folder would shadow the stdlib (bench/http.py).
        script = folder / PEER_SCRIPT.name
        shutil.copyfile(PEER_SCRIPT, script)
        (folder / "plughost").mkdir()
        (folder / "peer").mkdir()
        plug = [sys.executable, "-c", _PLUGHOST_CHILD, command]
        other = [str(installed.python), str(script), command]
        if command != "import":
            plug += [str(folder / "plughost"), *args]
            other += [str(folder / "peer"), str(_free_port()), *args]
        return _run_json(plug, folder), _run_json(other, folder)


def _alternating(command: str, samples: int, key: str) -> tuple[list[int], list[int]]:
    plug: list[int] = []
    other: list[int] = []
    for _ in range(samples):
        ours, theirs = _in_process(command)
        plug.append(ours[key])
        other.append(theirs[key])
    return plug, other


# -- outcomes --------------------------------------------------------------------


def _skipped(name: str, title: str, goal: str, why: str) -> Outcome:
    return Outcome(
        name=name,
        title=title,
        figures=[("peer", f"SKIPPED: {why}")],
        verdict=f"SKIPPED, no peer figures ({why})",
        goal=goal,
        met=False,
    )


def _http_outcome(figure: str, quiet: bool) -> Outcome:
    what = "GET /api/health" if figure == "health" else "mod event over HTTP"
    mode = "log off" if quiet else "logging as shipped"
    minimum = 1.2 if quiet else 1.0
    goal = f"plughost req/s >= {minimum}x the peer's" if quiet else "plughost req/s > the peer's"
    name = f"peers-{figure}-{'quiet' if quiet else 'shipped'}"
    title = f"{what}, {mode}: plughost vs openagents {PEER_SPEC.split('==')[1]}"
    try:
        session = _session(quiet)
    except Exception as exc:  # a failed peer or server is reported, not a crash of the run
        return _skipped(name, title, goal, f"the HTTP session failed: {exc}")
    if session.skipped is not None:
        return _skipped(name, title, goal, session.skipped)
    ours, theirs = session.rps[("plughost", figure)], session.rps[("openagents", figure)]
    ratio = ours / theirs
    met = (ratio >= minimum if quiet else ratio > minimum) and session.errors == 0
    figures = [
        (
            f"req/s, wrk {WRK_CONNECTIONS} connections",
            f"plughost {ours:,.0f} | openagents {theirs:,.0f} | {ratio:.2f}x",
        )
    ]
    latency = [("p50", figure)] + ([("p50", "list")] if figure == "health" else [])
    for _, key in latency:
        p_ours, p_theirs = session.p50[("plughost", key)], session.p50[("openagents", key)]
        label = {
            "health": "health",
            "event": "mod event",
            "list": "mod list event",
        }[key]
        figures.append(
            (
                f"p50 {label}, {LATENCY_REQUESTS} keep-alive requests",
                f"plughost {p_ours:.2f} ms | openagents {p_theirs:.2f} ms"
                f" | {p_ours / p_theirs:.2f}x time",
            )
        )
    if session.errors:
        figures.append(("wrk errors (non-2xx or socket), this session", str(session.errors)))
    return Outcome(
        name=name,
        title=title,
        figures=figures,
        verdict=f"req/s plughost / openagents {ratio:.2f}x ({ours:,.0f} vs {theirs:,.0f})"
        + (f"; {session.errors} errors" if session.errors else ""),
        goal=goal,
        met=met,
        notes=[
            peer().note,
            f"{WRK_ROUNDS} alternating wrk rounds of {WRK_SECONDS} s each, medians;"
            f" p50 over {LATENCY_BLOCKS} alternating blocks",
            *session.notes,
        ],
    )


def health_quiet() -> Outcome:
    return _http_outcome("health", quiet=True)


def event_quiet() -> Outcome:
    return _http_outcome("event", quiet=True)


def health_shipped() -> Outcome:
    return _http_outcome("health", quiet=False)


def event_shipped() -> Outcome:
    return _http_outcome("event", quiet=False)


def _ms(nanoseconds: float) -> str:
    return f"{nanoseconds / 1e6:.2f} ms" if nanoseconds >= 1e5 else f"{nanoseconds / 1e3:.0f} us"


def warm_cycle() -> Outcome:
    name, goal = "peers-cycle", "plughost time <= 2x the peer's"
    title = "warm load_mod + unload_mod of the shared cache mod, in process"
    installed = peer()
    if installed.python is None:
        return _skipped(name, title, goal, installed.note)
    try:
        ours, theirs = _in_process("cycle", str(CYCLES))
    except Exception as exc:  # reported as a miss, not a crash of the run
        return _skipped(name, title, goal, f"a side failed: {exc}")
    plug, other = statistics.median(ours["cycles_ns"]), statistics.median(theirs["cycles_ns"])
    plug_load, other_load = (
        statistics.median(ours["loads_ns"]),
        statistics.median(theirs["loads_ns"]),
    )
    ratio = plug / other
    return Outcome(
        name=name,
        title=title,
        figures=[
            (
                f"median of {CYCLES} cycles after one warm-up",
                f"plughost {_ms(plug)} | openagents {_ms(other)} | {ratio:.2f}x time",
            ),
            (
                "of which load_mod, median (info)",
                f"plughost {_ms(plug_load)} | openagents {_ms(other_load)}"
                f" | {plug_load / other_load:.2f}x time",
            ),
        ],
        verdict=f"plughost / openagents {ratio:.2f}x time ({_ms(plug)} vs {_ms(other)})",
        goal=goal,
        met=ratio <= 2.0,
        notes=[
            "plughost: `await network.load_mod('plughost.mods.shared_cache')` / "
            "`unload_mod('shared_cache')` on a started `plughost.Network(data_folder)`",
            f"openagents: `await network.load_mod('{PEER_MOD}')` / `unload_mod(...)` on an "
            "initialized `AgentNetwork` (it needs a transport: HTTP on 127.0.0.1, not called)",
            "plughost records each load and runs the mod's code afresh at each load; the peer's"
            " load re-imports nothing once the module is in sys.modules, and unload keeps it",
        ],
    )


def cold_load() -> Outcome:
    name, goal = "peers-cold", "plughost cold load_mod time <= the peer's"
    title = "cold load_mod in a fresh interpreter, and the network module's import time"
    installed = peer()
    if installed.python is None:
        return _skipped(name, title, goal, installed.note)
    try:
        plug_cold, peer_cold = _alternating("cold", COLD_SAMPLES, "load_ns")
        plug_import, peer_import = _alternating("import", IMPORT_SAMPLES, "import_ns")
    except Exception as exc:  # reported as a miss, not a crash of the run
        return _skipped(name, title, goal, f"a side failed: {exc}")
    ours, theirs = statistics.median(plug_cold), statistics.median(peer_cold)
    ratio = ours / theirs
    imp_ours, imp_theirs = statistics.median(plug_import), statistics.median(peer_import)
    return Outcome(
        name=name,
        title=title,
        figures=[
            (
                f"cold load_mod, median of {COLD_SAMPLES}",
                f"plughost {_ms(ours)} | openagents {_ms(theirs)} | {ratio:.2f}x time",
            ),
            (
                f"import of the network module, median of {IMPORT_SAMPLES} (info)",
                f"plughost {_ms(imp_ours)} | openagents {_ms(imp_theirs)}"
                f" | {imp_ours / imp_theirs:.2f}x time",
            ),
        ],
        verdict=f"cold load plughost / openagents {ratio:.2f}x time ({_ms(ours)} vs"
        f" {_ms(theirs)}); import {imp_ours / imp_theirs:.2f}x",
        goal=goal,
        met=ratio <= 1.0,
        notes=[
            "each sample is a new interpreter that imports and starts the network; only the"
            " load is timed, with no bytecode read or written for what the load imports",
            "import: `import plughost` vs `import openagents.sdk.network`, each interpreter"
            " as installed: the peer's venv has pip's bytecode, plughost here is imported from"
            " source (the benchmarks write no bytecode)",
        ],
    )


BENCHMARKS = (health_quiet, event_quiet, health_shipped, event_shipped, warm_cycle, cold_load)
