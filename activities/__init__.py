"""Side effects only: the agents and the activity that runs one of them."""

from activities.agents import AGENTS, Agent, AgentContext
from activities.run_agent import AgentActivities

__all__ = ["AGENTS", "Agent", "AgentActivities", "AgentContext"]
