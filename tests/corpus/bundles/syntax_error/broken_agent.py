from agents.basic_agent import BasicAgent


class BrokenAgent(BasicAgent):
    def perform(self, **kwargs)
        return "never"
