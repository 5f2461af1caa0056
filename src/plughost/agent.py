"""Agents: named, described, callable units of tenant code, and a namespace's loaded agents."""

from __future__ import annotations

import abc
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar

from .errors import DuplicateAgentError, PlughostError
from .events import handlers_of, is_topic_pattern
from .loader import LoadedBundle, load_bundle, load_error
from .naming import Namespace


class Agent(abc.ABC):
    """An agent: a class in a bundle with ``name``, ``metadata`` and ``perform``.

    ``metadata`` follows the common tool shape: ``{"name", "description",
    "parameters": <JSON schema of the keyword arguments>}``. ``perform`` may be
    sync or async and returns a string or JSON-able data.

    Bundles written for other agent hosts call ``super().__init__(name=...,
    metadata=...)``; both keywords are accepted and override the class values.
    """

    name: ClassVar[str] = ""
    metadata: ClassVar[dict[str, Any]] = {}

    def __init__(self, name: str | None = None, metadata: dict[str, Any] | None = None) -> None:
        if name is not None:
            self.name = name  # type: ignore[misc]
        if metadata is not None:
            self.metadata = metadata  # type: ignore[misc]

    @abc.abstractmethod
    def perform(self, **kwargs: Any) -> Any:
        """Run the agent with the keyword arguments its ``parameters`` describe."""

    def to_tool(self) -> dict[str, Any]:
        """Return the OpenAI-style tool description of this agent."""
        parameters = self.metadata.get("parameters") or {"type": "object", "properties": {}}
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.metadata.get("description", ""),
                "parameters": parameters,
            },
        }


BasicAgent = Agent
"""The name existing agent files import (``from agents.basic_agent import BasicAgent``)."""


def agent_name(cls: type[Agent]) -> str:
    """Return the name an agent class is called by: ``name``, else ``metadata["name"]``, else
    the class name."""
    return cls.name or str(cls.metadata.get("name") or "") or cls.__name__


def find_agents(modules: Mapping[str, ModuleType]) -> dict[str, type[Agent]]:
    """Return the agent classes that ``modules`` define, by agent name.

    A class counts in the module that defines it, not in modules that import
    it; abstract classes (``Agent`` itself, ``BasicAgent``) do not count.

    Raises:
        DuplicateAgentError: two classes share an agent name; both modules are named.
    """
    found: dict[str, type[Agent]] = {}
    where: dict[str, str] = {}
    for stem, module in modules.items():
        for value in vars(module).values():
            if not (
                isinstance(value, type)
                and issubclass(value, Agent)
                and value.__module__ == module.__name__
                and not inspect.isabstract(value)
            ):
                continue
            name = agent_name(value)
            if name in found:
                raise DuplicateAgentError(name, [where[name], stem])
            found[name] = value
            where[name] = stem
    return found


@dataclass(frozen=True)
class AgentInfo:
    """An agent as listed: its name, description and OpenAI-style tool description."""

    name: str
    description: str
    tool: dict[str, Any]


@dataclass(frozen=True)
class AgentInstance:
    """An agent of a loaded namespace, instantiated once and reused by every call.

    ``handlers`` are its ``@on`` event handlers, as ``(pattern, bound method)``.
    """

    name: str
    instance: Agent
    is_async: bool
    handlers: list[tuple[str, Callable[..., Any]]]


@dataclass(eq=False)
class LoadedNamespace:
    """A bundle loaded into a namespace, with its agents instantiated."""

    namespace: Namespace
    bundle: LoadedBundle
    agents: dict[str, AgentInstance]

    def describe(self) -> list[AgentInfo]:
        """The agents, by name, as listed."""
        return [
            AgentInfo(
                name, str(slot.instance.metadata.get("description", "")), slot.instance.to_tool()
            )
            for name, slot in sorted(self.agents.items())
        ]

    def unload(self) -> None:
        """Drop the agents and unload the code (not waiting for the garbage check)."""
        self.agents.clear()
        self.bundle.unload(verify=False)


def load_namespace(namespace: Namespace, folder: Path) -> LoadedNamespace:
    """Load the bundle in ``folder`` into ``namespace`` and instantiate its agents.

    Raises:
        BundleRejectedError, BundleLoadError: as :func:`plughost.loader.load_bundle`.
        DuplicateAgentError: two agents share a name (the namespace is unloaded again).
        BundleLoadError: also when an agent's constructor or class attributes fail.
    """
    bundle = load_bundle(namespace, folder)
    try:
        agents: dict[str, AgentInstance] = {}
        for name, cls in find_agents(bundle.modules).items():
            instance = cls()
            agents[name] = AgentInstance(
                name,
                instance,
                inspect.iscoroutinefunction(instance.perform),
                [h for h in handlers_of(instance) if not is_topic_pattern(h[0])],
            )
    except PlughostError:
        bundle.unload(verify=False)
        raise
    except Exception as exc:  # an agent's constructor or class attributes
        bundle.unload(verify=False)
        raise load_error(namespace, folder.resolve(), exc) from exc
    return LoadedNamespace(namespace, bundle, agents)
