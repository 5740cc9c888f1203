"""Deterministic workflow code only."""

from workflows.agent_run import AgentRunWorkflow

__all__ = ["AgentRunWorkflow"]
