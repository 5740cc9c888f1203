"""Deterministic workflow code only: a run on its slot, a scope's coordinator, the deployment's
settings record, and the pure decision code they use."""

from workflows.agent_run import AgentRunWorkflow
from workflows.scope import AgentScopeWorkflow
from workflows.settings import AgentRunnerSettingsWorkflow

__all__ = ["AgentRunWorkflow", "AgentRunnerSettingsWorkflow", "AgentScopeWorkflow"]
