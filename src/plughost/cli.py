"""The ``plughost`` command: ``serve``, and client commands for a running server.

Client commands find the server and token in ``--url`` / ``--token`` or
``PLUGHOST_URL`` / ``PLUGHOST_TOKEN``; they print tables for people and JSON
with ``--json``, and on failure print one line and exit 1.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import socket
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import Progress
from rich.table import Table

from . import __version__
from .client import Client, ClientError, parse_json_option
from .config import NetworkConfig, load_config

DEFAULT_URL = "http://127.0.0.1:8700"

app = typer.Typer(
    help="plughost: a multi-tenant plugin host for Python.",
    no_args_is_help=True,
    add_completion=False,
)
network_app = typer.Typer(help="The network: events, mods, health.", no_args_is_help=True)
mod_app = typer.Typer(help="Load and unload mods.", no_args_is_help=True)
tenant_app = typer.Typer(help="Deploy, list and remove tenants.", no_args_is_help=True)
snapshot_app = typer.Typer(help="Create, list and delete snapshots.", no_args_is_help=True)
instance_app = typer.Typer(help="List, restart and unload mod instances.", no_args_is_help=True)
token_app = typer.Typer(help="Replace the admin token or a tenant's.", no_args_is_help=True)
app.add_typer(network_app, name="network")
app.add_typer(mod_app, name="mod")
app.add_typer(tenant_app, name="tenant")
app.add_typer(snapshot_app, name="snapshot")
app.add_typer(instance_app, name="instance")
app.add_typer(token_app, name="token")

console = Console()

Url = Annotated[str, typer.Option("--url", envvar="PLUGHOST_URL", help="The server.")]
Token = Annotated[
    str | None, typer.Option("--token", envvar="PLUGHOST_TOKEN", help="Admin or tenant token.")
]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
TenantOption = Annotated[
    str | None,
    typer.Option(help="The tenant it acts in (default: none for the admin, a token's own)."),
]
ModId = Annotated[str | None, typer.Option("--mod-id", help="Its id (default: from the path).")]

_everywhere = {"json": False}  # set by the global --json, before any command runs


def _as_json(as_json: bool) -> bool:
    return as_json or _everywhere["json"]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"plughost {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print JSON for scripts, for any command.")
    ] = False,
) -> None:
    """plughost: a multi-tenant plugin host for Python."""
    _everywhere["json"] = as_json


@contextmanager
def _client(url: str, token: str | None) -> Iterator[Client]:
    """A client; any :class:`ClientError` becomes one line on stderr and exit code 1."""
    client = Client(url, token)
    try:
        yield client
    except ClientError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(1) from None
    finally:
        client.close()


def _show(data: Any, as_json: bool, table: Callable[[], Table] | None = None) -> None:
    as_json = _as_json(as_json)
    if as_json or table is None:
        typer.echo(json.dumps(data, indent=None if as_json else 2, default=str))
    else:
        console.print(table())


def _table(title: str, columns: list[str], rows: list[list[Any]]) -> Callable[[], Table]:
    def build() -> Table:
        table = Table(title=title)
        for column in columns:
            table.add_column(column)
        for row in rows:
            table.add_row(*(str(cell) for cell in row))
        return table

    return build


def _json_option(text: str | None, what: str) -> Any:
    if text is None:
        return None
    try:
        return parse_json_option(text, what)
    except ClientError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(1) from None


# -- serve ---------------------------------------------------------------------------


@app.command()
def serve(
    config: Annotated[Path | None, typer.Option(help="A YAML network config file.")] = None,
    host: Annotated[str | None, typer.Option(help="Address to listen on [127.0.0.1].")] = None,
    port: Annotated[int | None, typer.Option(help="Port to listen on [8700].")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="The data folder [.plughost].")] = None,
    access_log: Annotated[
        bool | None,
        typer.Option(
            "--access-log/--no-access-log",
            help="One line per request on standard error [on; config access_log].",
        ),
    ] = None,
    compat: Annotated[
        list[str] | None,
        typer.Option(
            help="Serve another server's API too: rapp (the swarm server's /api/swarm/...)."
        ),
    ] = None,
    ray_address: Annotated[
        str | None,
        typer.Option(help="The Ray cluster of the ray placement [config ray_address]."),
    ] = None,
) -> None:
    """Run the server until SIGINT or SIGTERM."""
    import uvicorn

    from .api import COMPAT, admin_token_for, create_app
    from .api.admin_token import take_secrets_from_environment
    from .errors import PlughostError
    from .store import folder_in_use

    # First of all, so that no code the server loads, and no worker it starts, finds them.
    from_environment = take_secrets_from_environment()
    try:
        settings = load_config(config) if config is not None else NetworkConfig()
    except PlughostError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    if data_dir is not None:
        settings.data_dir = data_dir
    if access_log is not None:
        settings.access_log = access_log
    if ray_address is not None:
        settings.ray_address = ray_address
    for name in compat or []:
        if name not in COMPAT:
            typer.echo(f"error: unknown --compat {name!r}; known: {', '.join(COMPAT)}", err=True)
            raise typer.Exit(2)
    served = sorted({*settings.compat, *(compat or [])})
    listen = (host or settings.host, port if port is not None else settings.port)
    # Before anything is created: a server that cannot start leaves nothing behind.
    _check_free(*listen)
    if folder_in_use(settings.data_dir):
        typer.echo(
            f"error: the data folder {settings.data_dir} is in use by another server", err=True
        )
        raise typer.Exit(1)
    admin = admin_token_for(
        settings.data_dir, from_environment=from_environment, configured=settings.admin_token
    )
    typer.echo(
        f"plughost {__version__}: data folder {settings.data_dir}; admin token from {admin.source}"
    )
    for note in admin.notes:
        typer.echo(note)
    api = create_app(
        settings.network(),
        admin_token_hash=admin.token_hash,
        max_request_bytes=settings.max_request_bytes,
        access_log=sys.stderr if settings.access_log else None,
        compat=served,
    )
    loop, parser = _http_parts()
    typer.echo(f"HTTP: the {parser} parser on the {loop} event loop")
    # plughost's own lines (where tenants can run, what sandboxes write) beside uvicorn's.
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s:     %(name)s: %(message)s"))
    logging.getLogger("plughost").addHandler(handler)
    logging.getLogger("plughost").setLevel(logging.INFO)
    uvicorn.run(
        api,
        host=listen[0],
        port=listen[1],
        loop=loop,
        http=parser,
        log_level="info",
        access_log=False,  # the app writes its own, cheaper one
        timeout_graceful_shutdown=30,
        timeout_keep_alive=settings.http_keep_alive_timeout,
        limit_concurrency=settings.http_max_connections,
    )


def _http_parts() -> tuple[str, str]:
    """The event loop and HTTP parser to serve with: the compiled ones where installed.

    They are dependencies of the package except where they do not build
    (uvloop has no Windows build); there, the pure-Python ones serve.
    """
    loop = "uvloop" if importlib.util.find_spec("uvloop") is not None else "asyncio"
    parser = "httptools" if importlib.util.find_spec("httptools") is not None else "h11"
    return loop, parser


def _check_free(host: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            typer.echo(f"error: cannot listen on {host}:{port}: {exc.strerror}", err=True)
            raise typer.Exit(1) from None


@app.command()
def fsck(
    data_dir: Annotated[Path, typer.Option(help="The data folder to check.")] = Path(".plughost"),
) -> None:
    """Check a data folder: every deployment's and snapshot's files present and intact,
    and the environments of their dependencies.

    Their stored files, and the bundle folders their code loads from: a file
    changed, missing or added there is reported (the server rebuilds such a
    folder from the stored files the next time it loads it). Reads the folder
    only (no code runs); the server must not be running on it.
    """
    from .environments import Environments
    from .errors import PlughostError
    from .store import Store

    if not (data_dir / "plughost.db").is_file():
        typer.echo(f"error: {data_dir} is not a plughost data folder", err=True)
        raise typer.Exit(1)
    store = Store(data_dir)
    try:
        store.open()
    except PlughostError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    try:
        problems = store.check()
    finally:
        store.close()
    if (data_dir / "envs").is_dir():
        problems += Environments(data_dir / "envs").check()
    for problem in problems:
        typer.echo(problem)
    typer.echo(f"{len(problems)} problems" if problems else f"{data_dir}: consistent")
    if problems:
        raise typer.Exit(1)


# -- tokens --------------------------------------------------------------------------


@token_app.command("rotate")
def token_rotate(
    data_dir: Annotated[
        Path, typer.Option(help="The data folder whose admin token to replace.")
    ] = Path(".plughost"),
    tenant: Annotated[
        str | None,
        typer.Option(help="Replace this tenant's token instead, on the running server."),
    ] = None,
    url: Url = DEFAULT_URL,
    token: Token = None,
    as_json: AsJson = False,
) -> None:
    """Replace the admin token of a data folder, or (with --tenant) a tenant's token.

    The new admin token is printed once and written beside the data folder; a
    server running on the folder keeps the old one until it restarts. A tenant's
    new token works at once, and its old one stops working.
    """
    if tenant is not None:
        with _client(url, token) as client:
            issued = client.replace_tenant_token(tenant)
        shown = (
            json.dumps(issued)
            if _as_json(as_json)
            else f"tenant token of {tenant}: {issued['token']}"
        )
        typer.echo(shown)
        return
    from .api.admin_token import HASH_FILE, rotate, shown_once
    from .store import folder_in_use

    if not (data_dir / "plughost.db").is_file():
        typer.echo(f"error: {data_dir} is not a plughost data folder", err=True)
        raise typer.Exit(1)
    new_token = rotate(data_dir)
    running = folder_in_use(data_dir)
    if _as_json(as_json):
        typer.echo(json.dumps({"token": new_token, "restart_needed": running}))
        return
    typer.echo(shown_once(data_dir, new_token))
    typer.echo(f"its hash is in {data_dir / HASH_FILE}")
    if running:
        typer.echo("a server has this folder open: it accepts the old token until it restarts")


# -- network -------------------------------------------------------------------------


@network_app.command("health")
def network_health(url: Url = DEFAULT_URL, token: Token = None, as_json: AsJson = False) -> None:
    """Show what is loaded right now."""
    with _client(url, token) as client:
        health = client.health()
    mods, workers = health["mods"], health["workers"]
    rows = [
        ["status", health["status"]],
        ["network", health["network_id"]],
        ["uptime (s)", health["uptime"]],
        ["mods", ", ".join(mods["loaded"]) or "-"],
        ["failed mods", ", ".join(mods["failed"]) or "-"],
        ["tenants", health["tenants"]["count"]],
        [
            "loaded namespaces",
            f"{health['namespaces']['loaded']} / {health['namespaces']['limit']}",
        ],
    ]
    # Without a token the server names global mods only, and counts the rest.
    rows += [[f"all {what}", count] for what, count in health.get("counts", {}).items()]
    for tenant, worker in workers.items():
        state = f"pid {worker['pid']}, {worker['state']}, {worker['restarts']} restarts"
        rows.append([f"worker {tenant}", state])
    _show(health, as_json, _table("health", ["", ""], rows))


@network_app.command("list-mods")
@mod_app.command("list")
def network_list_mods(url: Url = DEFAULT_URL, token: Token = None, as_json: AsJson = False) -> None:
    """List the loaded mods."""
    with _client(url, token) as client:
        mods = client.list_mods()
    rows = [
        [key, d["mod_path"], d.get("tenant") or "-", d.get("status", "loaded")]
        for key, d in mods["details"].items()
    ]
    _show(mods, as_json, _table("mods", ["mod", "mod_path", "tenant", "status"], rows))


@network_app.command("send-event")
def network_send_event(
    event_name: Annotated[
        str, typer.Option("--event-name", help="e.g. shared_cache.set or system.mod.load")
    ],
    payload: Annotated[str, typer.Option(help="The payload, a JSON object.")] = "{}",
    source_id: Annotated[
        str, typer.Option("--source-id", help="Who sends it, as handlers see it.")
    ] = "cli",
    destination_id: Annotated[
        str | None,
        typer.Option(
            "--destination-id",
            help="Where it goes: system:system, mod:ID, agent:TENANT/AGENT or topic:NAME. "
            "Without one, a system.* event goes to the network, any other to every "
            "handler whose pattern matches it.",
        ),
    ] = None,
    tenant: Annotated[
        str | None, typer.Option(help="The tenant it acts in (a tenant token: its own).")
    ] = None,
    url: Url = DEFAULT_URL,
    token: Token = None,
    as_json: AsJson = False,
) -> None:
    """Send an event and print the response; exit 1 if it did not succeed."""
    event = {
        "event_name": event_name,
        "source_id": source_id,
        "destination_id": destination_id,
        "payload": _json_option(payload, "--payload"),
        "tenant": tenant,
    }
    with _client(url, token) as client:
        response = client.send_event(event)
    if _as_json(as_json):
        typer.echo(json.dumps(response))
    else:
        state = "ok" if response["success"] else "failed"
        typer.echo(f"{state}: {response['message'] or event_name}")
        if response["data"]:
            typer.echo(json.dumps(response["data"], indent=2))
    if not response["success"]:
        raise typer.Exit(1)


# -- mods ----------------------------------------------------------------------------


@mod_app.command("load")
def mod_load(
    mod_path: str,
    config: Annotated[str | None, typer.Option(help="The mod's config, a JSON object.")] = None,
    mod_id: ModId = None,
    tenant: TenantOption = None,
    url: Url = DEFAULT_URL,
    token: Token = None,
    as_json: AsJson = False,
) -> None:
    """Load a mod into the running network."""
    with _client(url, token) as client:
        loaded = client.load_mod(
            mod_path, _json_option(config, "--config"), mod_id=mod_id, tenant=tenant
        )
    if _as_json(as_json):
        typer.echo(json.dumps(loaded))
    else:
        typer.echo(f"loaded {loaded['key']} from {mod_path}")


@mod_app.command("unload")
def mod_unload(
    mod_path_or_id: str,
    tenant: TenantOption = None,
    url: Url = DEFAULT_URL,
    token: Token = None,
    as_json: AsJson = False,
) -> None:
    """Unload a mod by id (or by its mod_path's last segment)."""
    mod_id = mod_path_or_id.rsplit(".", 1)[-1] if "/" not in mod_path_or_id else mod_path_or_id
    with _client(url, token) as client:
        report = client.unload_mod(mod_id, tenant=tenant)
    typer.echo(json.dumps(report) if _as_json(as_json) else report["message"])


# -- tenants -------------------------------------------------------------------------


@tenant_app.command("deploy")
def tenant_deploy(
    tenant: str,
    path: Path,
    placement: Annotated[
        str | None,
        typer.Option(help="inprocess, process, sandbox or ray (default: the bundle's choice)."),
    ] = None,
    settings: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            help="INSTANCE.KEY=VALUE, laid over the instance's config (VALUE as JSON, else "
            "text); repeat it. Without any, a redeploy keeps the config it had.",
        ),
    ] = None,
    url: Url = DEFAULT_URL,
    token: Token = None,
    as_json: AsJson = False,
) -> None:
    """Deploy a folder (zipped on the fly), a .zip, a .tar.gz or a .json bundle."""
    config = _instance_settings(settings) if settings else None
    quiet = _as_json(as_json)
    with (
        _client(url, token) as client,
        _client(url, token) as watcher,
        Progress(transient=True, disable=quiet) as bar,
    ):
        task = bar.add_task(f"uploading {path.name}", total=None)
        outcome: dict[str, Any] = {}

        def deploy() -> None:
            try:
                outcome["deployment"] = client.deploy(
                    tenant,
                    path,
                    progress=lambda done, total: bar.update(task, completed=done, total=total),
                    placement=placement,
                    config=config,
                )
            except Exception as exc:  # raised again below, where the command reports it
                outcome["error"] = exc

        # The deploy runs in a thread; meanwhile what the server's installer says shows.
        earlier = _progress_lines(watcher, tenant)
        running = threading.Thread(target=deploy, daemon=True)
        running.start()
        shown = 0
        while True:
            finished = not running.is_alive()
            running.join(0.25)
            lines = _progress_lines(watcher, tenant)
            if lines is not None and lines != earlier:  # else the last deploy's, or none yet
                earlier = None
                for line in lines[shown:]:
                    if not quiet:
                        bar.console.print(f"[dim]{escape(line)}[/dim]")
                    bar.update(task, description="installing dependencies")
                shown = len(lines)
            if finished:  # once more after the deploy ended: a quick install says it all then
                break
        if "error" in outcome:
            raise outcome["error"]
        deployment = outcome["deployment"]
    if _as_json(as_json):
        typer.echo(json.dumps(deployment))
        return
    typer.echo(
        f"deployed {tenant} version {deployment['version']} "
        f"({len(deployment['files'])} files; agents: {', '.join(deployment['agents']) or '-'})"
    )
    if deployment.get("token"):
        typer.echo(f"tenant token (shown once): {deployment['token']}")


def _progress_lines(client: Client, tenant: str) -> list[str] | None:
    try:
        return client.deploy_progress(tenant)
    except ClientError:  # a tenant not yet deployed, or a server without the route
        return None


def _instance_settings(settings: list[str]) -> dict[str, dict[str, Any]]:
    config: dict[str, dict[str, Any]] = {}
    for setting in settings:
        name, equals, value = setting.partition("=")
        instance, dot, key = name.partition(".")
        if not (equals and dot and instance and key):
            typer.echo(f"error: --set {setting!r}: expected INSTANCE.KEY=VALUE", err=True)
            raise typer.Exit(1)
        try:
            parsed = json.loads(value)
        except ValueError:
            parsed = value  # plain text, as a shell user types it
        config.setdefault(instance, {})[key] = parsed
    return config


@tenant_app.command("list")
def tenant_list(url: Url = DEFAULT_URL, token: Token = None, as_json: AsJson = False) -> None:
    """List the tenants."""
    with _client(url, token) as client:
        tenants = client.list_tenants()
    rows = [
        [t["name"], t["version"], ", ".join(t["agents"]), ", ".join(t["snapshots"]) or "-"]
        for t in tenants
    ]
    _show(tenants, as_json, _table("tenants", ["tenant", "version", "agents", "snapshots"], rows))


@tenant_app.command("remove")
def tenant_remove(
    tenant: str,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
    url: Url = DEFAULT_URL,
    token: Token = None,
    as_json: AsJson = False,
) -> None:
    """Remove a tenant with its snapshots, its data and its files; asks first."""
    if not yes and not typer.confirm(
        f"remove tenant {tenant!r} with its snapshots and data?", err=True
    ):
        typer.echo("error: not removed (pass --yes to remove without asking)", err=True)
        raise typer.Exit(1)
    with _client(url, token) as client:
        removed = client.remove_tenant(tenant)
    typer.echo(json.dumps(removed) if _as_json(as_json) else f"removed {tenant}")


@tenant_app.command("seal")
def tenant_seal(
    tenant: str,
    trigger: Annotated[str, typer.Option(help="Why it is sealed.")] = "manual",
    url: Url = DEFAULT_URL,
    token: Token = None,
    as_json: AsJson = False,
) -> None:
    """Seal a tenant: no more redeploy, removal or state write; only the admin unseals."""
    with _client(url, token) as client:
        sealed = client.seal(tenant, trigger)
    typer.echo(json.dumps(sealed) if _as_json(as_json) else f"sealed {tenant}")


@tenant_app.command("show")
def tenant_show(
    tenant: str, url: Url = DEFAULT_URL, token: Token = None, as_json: AsJson = False
) -> None:
    """Show one tenant: its live version, placement, state, agents and snapshots."""
    with _client(url, token) as client:
        shown = client.describe_tenant(tenant)
        worker = client.health()["workers"].get(tenant)
    shown["state"] = worker["state"] if worker else "in process"
    rows = [
        ["version", shown["version"]],
        ["placement", shown["placement"]],
        ["state", shown["state"]],
        ["agents", ", ".join(shown["agents"]) or "-"],
        ["snapshots", ", ".join(shown["snapshots"]) or "-"],
        ["sealed", "yes" if shown["sealing"]["sealed"] else "no"],
        ["files", len(shown["files"])],
        ["digest", shown["digest"][:12]],
    ]
    _show(shown, as_json, _table(tenant, ["", ""], rows))


@app.command("agents")
def agents(
    tenant: str,
    snapshot: Annotated[str | None, typer.Option(help="A snapshot's agents.")] = None,
    url: Url = DEFAULT_URL,
    token: Token = None,
    as_json: AsJson = False,
) -> None:
    """List a tenant's agents with their descriptions."""
    with _client(url, token) as client:
        listed = client.list_agents(tenant, snapshot)
    rows = [[a["name"], a["description"] or "-"] for a in listed]
    _show(listed, as_json, _table(f"agents of {tenant}", ["agent", "description"], rows))


# -- snapshots -----------------------------------------------------------------------


@snapshot_app.command("create")
def snapshot_create(
    tenant: str, name: str, url: Url = DEFAULT_URL, token: Token = None, as_json: AsJson = False
) -> None:
    """Snapshot the tenant's live code as NAME."""
    with _client(url, token) as client:
        snapshot = client.create_snapshot(tenant, name)
    if _as_json(as_json):
        typer.echo(json.dumps(snapshot))
    else:
        typer.echo(f"snapshot {name!r} of {tenant} at version {snapshot['version']}")


@snapshot_app.command("list")
def snapshot_list(
    tenant: str, url: Url = DEFAULT_URL, token: Token = None, as_json: AsJson = False
) -> None:
    """List a tenant's snapshots."""
    with _client(url, token) as client:
        snapshots = client.list_snapshots(tenant)
    rows = [[s["name"], s["version"], s["digest"][:12], ", ".join(s["agents"])] for s in snapshots]
    _show(snapshots, as_json, _table(tenant, ["snapshot", "version", "digest", "agents"], rows))


@snapshot_app.command("delete")
def snapshot_delete(tenant: str, name: str, url: Url = DEFAULT_URL, token: Token = None) -> None:
    """Delete a snapshot."""
    with _client(url, token) as client:
        client.delete_snapshot(tenant, name)
    typer.echo(f"deleted snapshot {name!r} of {tenant}")


# -- instances -----------------------------------------------------------------------


@instance_app.command("list")
def instance_list(url: Url = DEFAULT_URL, token: Token = None, as_json: AsJson = False) -> None:
    """List the running mod instances."""
    with _client(url, token) as client:
        instances = client.list_instances()
    rows = [
        [i["rpc_name"], i["class"], i["mod_path"], i["origin"], i["placement"]] for i in instances
    ]
    columns = ["rpc name", "class", "mod_path", "origin", "placement"]
    _show(instances, as_json, _table("instances", columns, rows))


@instance_app.command("restart")
def instance_restart(
    rpc_name: str,
    reload: Annotated[bool, typer.Option("--reload/--no-reload", help="Load fresh code.")] = True,
    url: Url = DEFAULT_URL,
    token: Token = None,
    as_json: AsJson = False,
) -> None:
    """Restart one instance; the others keep running."""
    with _client(url, token) as client:
        instance = client.restart_instance(rpc_name, reload=reload)
    typer.echo(json.dumps(instance) if _as_json(as_json) else f"restarted {instance['rpc_name']}")


@instance_app.command("unload")
def instance_unload(
    rpc_name: str, url: Url = DEFAULT_URL, token: Token = None, as_json: AsJson = False
) -> None:
    """Unload one instance; the others keep running."""
    with _client(url, token) as client:
        report = client.unload_instance(rpc_name)
    typer.echo(json.dumps(report) if _as_json(as_json) else report["message"])


# -- calls ---------------------------------------------------------------------------


@app.command("call")
def call(
    tenant: str,
    agent: str,
    args: Annotated[str, typer.Option(help="The agent's arguments, a JSON object.")] = "{}",
    snapshot: Annotated[str | None, typer.Option(help="Call a snapshot's code.")] = None,
    user: Annotated[
        str | None, typer.Option(help="The user whose state the call runs with.")
    ] = None,
    url: Url = DEFAULT_URL,
    token: Token = None,
    as_json: AsJson = False,
) -> None:
    """Call an agent and print what it returned."""
    arguments = _json_option(args, "--args")
    if not isinstance(arguments, dict):
        typer.echo("error: --args must be a JSON object", err=True)
        raise typer.Exit(1)
    with _client(url, token) as client:
        output = client.call(tenant, agent, arguments, snapshot, user)
    if _as_json(as_json) or not isinstance(output, str):
        typer.echo(json.dumps(output))
    else:
        typer.echo(output)


def main() -> None:
    """Run the ``plughost`` command."""
    app()
