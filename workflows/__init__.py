"""Deterministic workflow code only."""

from workflows.agent_run import AgentRunWorkflow
from workflows.queue import AgentQueueWorkflow

__all__ = ["AgentQueueWorkflow", "AgentRunWorkflow"]
