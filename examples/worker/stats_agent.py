import os

from agents.basic_agent import BasicAgent
from helpers import summarize


class StatsAgent(BasicAgent):
    name = "Stats"
    metadata = {
        "name": "Stats",
        "description": "Summarizes a list of numbers, in the tenant's worker process",
        "parameters": {
            "type": "object",
            "properties": {"numbers": {"type": "array", "items": {"type": "number"}}},
            "required": ["numbers"],
        },
    }

    def perform(self, **kwargs):
        return {**summarize(kwargs["numbers"]), "pid": os.getpid()}
