"""The base class of agents: named, described, callable units of tenant code."""

from __future__ import annotations

import abc
from typing import Any, ClassVar


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
