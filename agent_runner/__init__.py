"""Shared core of agent-runner: settings, logging, the Temporal connection and the run lifecycle.

Other Python systems start runs with :func:`agent_runner.runs.start_agent_run`, the same
function the REST API uses, so every start obeys the one singleton rule.
"""
