from agents.basic_agent import BasicAgent
from helpers import format_message


class NotifierAgent(BasicAgent):
    name = "Notifier"
    metadata = {
        "name": "Notifier",
        "description": "Posts a message to bob's channel",
        "parameters": {"type": "object", "properties": {"message": {"type": "string"}}},
    }

    def perform(self, **kwargs):
        return format_message(kwargs.get("message", ""))
