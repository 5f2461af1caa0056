from agents.basic_agent import BasicAgent


class NotifierAgent(BasicAgent):
    name = "Notifier"

    def perform(self, **kwargs):
        import json  # an import at call time, after hijack.py has run

        return json.dumps({"still": "importing"})
