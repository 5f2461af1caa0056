"""The ``plughost`` command line."""

from __future__ import annotations

import tempfile
from pathlib import Path

import typer

from . import __version__
from .loader import load_bundle
from .naming import Namespace

app = typer.Typer(
    help="plughost: a multi-tenant plugin host for Python.",
    no_args_is_help=True,
    add_completion=False,
)

_DEMO_AGENT = """\
from agents.basic_agent import BasicAgent
from helpers import greeting


class NotifierAgent(BasicAgent):
    name = "Notifier"

    def perform(self, **kwargs):
        return greeting(kwargs.get("message", ""))
"""


def _version(value: bool) -> None:
    if value:
        typer.echo(f"plughost {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """plughost: a multi-tenant plugin host for Python."""


@app.command()
def demo() -> None:
    """Load two tenants that both ship notifier_agent.py and show each runs its own code."""
    with tempfile.TemporaryDirectory(prefix="plughost-demo-") as tmp:
        loaded = []
        for tenant, word in (("alice", "Hello"), ("bob", "Bonjour")):
            folder = Path(tmp, tenant)
            folder.mkdir()
            (folder / "notifier_agent.py").write_text(_DEMO_AGENT)
            (folder / "helpers.py").write_text(
                f"def greeting(message):\n    return {word!r} + ' from {tenant}: ' + message\n"
            )
            loaded.append(load_bundle(Namespace(tenant), folder))
        for bundle in loaded:
            module = bundle.modules["notifier_agent"]
            answer = module.NotifierAgent().perform(message="hi")
            typer.echo(f"{bundle.namespace.tenant:>6}  {module.__name__:<40} -> {answer}")
        del module  # the last module would otherwise outlive its unload
        for bundle in loaded:
            report = bundle.unload()
            state = "freed" if not report.leaked else f"leaked {report.leaked}"
            typer.echo(f"unloaded {bundle.namespace.tenant}: {len(report.modules)} modules {state}")


def main() -> None:
    """Run the ``plughost`` command."""
    app()
