"""Side effects only: the activity that runs an agent, the agents agent-runner ships, and what
the queue workflow asks of the outside world."""

from activities.run_agent import AgentActivities

__all__ = ["AgentActivities"]
