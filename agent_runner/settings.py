"""The one place that reads the environment and ``.env``."""

from __future__ import annotations

from datetime import timedelta
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from agent_runner.agents import AgentDefaults
from agent_runner.contract import RunPolicy, ScopeLimits
from agent_runner.ids import MAX_QUEUE, MAX_SLOTS, WORKFLOW_ID_PATTERN, RunTarget, ScopeKind
from agent_runner.lease import MIN_HEARTBEAT_TIMEOUT_SECONDS
from agent_runner.validation import (
    MAX_ATTEMPTS,
    MAX_HEARTBEAT_TIMEOUT_SECONDS,
    MAX_RETRY_INTERVAL_SECONDS,
    MAX_TIMEOUT_SECONDS,
    check_limits,
)

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]
# The run policy's defaults are RunPolicy's own: written once, in agent_runner/contract.py.
_POLICY = RunPolicy()


class Settings(BaseSettings):
    """Every setting of the API, the worker and ``make run``; ``.env.example`` documents each."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", frozen=True)

    # Where Temporal is. Setting TEMPORAL_ADDRESS explicitly makes `make run` use that
    # server instead of starting its own dev server.
    temporal_address: str = "localhost:7233"
    temporal_namespace: str = "default"
    temporal_tls: bool = False
    temporal_tls_ca_path: Path | None = None
    temporal_tls_cert_path: Path | None = None
    temporal_tls_key_path: Path | None = None
    temporal_api_key: SecretStr | None = None
    temporal_rpc_timeout_seconds: float = Field(default=2.0, gt=0)

    # The base of every workflow id (coordinators, slots, the record) and the task queue.
    task_queue: str = Field(default="agent-runner", min_length=1, max_length=255)
    workflow_id: str = Field(default="agent-runner", pattern=WORKFLOW_ID_PATTERN)
    # How many agents may work at once per scope (each slot is one fixed workflow id), what a
    # scope is (one set of slots for everything, per user, or per agent type), and how many runs
    # may wait in a scope's queue. These only seed the deployment's record, which every replica
    # follows (agent_runner/deployment.py); change N with `agent-runner limits set`.
    agent_slots: int = Field(default=1, ge=1, le=MAX_SLOTS)
    agent_scope: ScopeKind = ScopeKind.GLOBAL
    agent_queue_max: int = Field(default=1000, ge=1, le=MAX_QUEUE)
    # The order of a queue (these seed the record too; change them with `agent-runner limits
    # set`): a run that waited this long is served as priority 1; fair shares grant the runs of
    # one priority to their fairness keys (default: the user) by weighted round-robin, with
    # these weights ({"key": 3}; 1 unless named).
    agent_queue_aging_seconds: float = Field(default=600.0, ge=0, le=MAX_TIMEOUT_SECONDS)
    agent_fair_shares: bool = False
    agent_fairness_weights: dict[str, int] = Field(default_factory=dict)

    # The agents.
    agent_duration_seconds: float = Field(default=5.0, ge=0)
    agent_max_attempts: int = Field(default=_POLICY.max_attempts, ge=1, le=MAX_ATTEMPTS)
    agent_timeout_seconds: float = Field(
        default=_POLICY.timeout_seconds, gt=0, le=MAX_TIMEOUT_SECONDS
    )
    # Also the agent's lease: see agent_runner/lease.py.
    agent_heartbeat_timeout_seconds: float = Field(
        default=_POLICY.heartbeat_timeout_seconds,
        ge=MIN_HEARTBEAT_TIMEOUT_SECONDS,
        le=MAX_HEARTBEAT_TIMEOUT_SECONDS,
    )
    agent_retry_initial_interval_seconds: float = Field(
        default=_POLICY.retry_initial_interval_seconds, gt=0, le=MAX_RETRY_INTERVAL_SECONDS
    )
    # A run still waiting in its queue this long after it entered ends ERROR "expired in
    # queue", never started; unset: it waits as long as it takes (an agent may set its own).
    agent_queue_timeout_seconds: float | None = Field(
        default=None, ge=0.001, le=MAX_TIMEOUT_SECONDS
    )
    worker_graceful_shutdown_seconds: float = Field(default=30.0, ge=0)
    # A worker runs agents only for the runs of its own deployment (WORKFLOW_ID): a deployment
    # another client made up on the same task queue (its own settings record, its own N) gets
    # no agent from it. True: any deployment's runs, for a test harness that runs many
    # deployments, each with its own WORKFLOW_ID, on one worker.
    worker_any_deployment: bool = False
    # The agents a worker serves, comma-separated; empty: every agent installed beside it. Heavy
    # agents can run on machines of their own: WORKER_AGENTS=claim-form-extractor there.
    worker_agents: str = Field(default="", max_length=4096)
    # host:port where a worker serves the SDK's Prometheus metrics; unset: not served.
    worker_metrics_address: str | None = None

    # OpenTelemetry tracing over OTLP/HTTP, e.g. http://localhost:4318; unset: off.
    otel_exporter_otlp_endpoint: str | None = None
    otel_service_name: str = "agent-runner"

    log_level: LogLevel = "INFO"
    log_format: Literal["json", "console"] = "json"

    api_host: str = "127.0.0.1"
    api_port: int = Field(default=8000, ge=1, le=65535)
    # Finished runs' statuses kept in each API process (they never change); 0 turns it off.
    api_status_cache_size: int = Field(default=4096, ge=0)
    # Larger request bodies are refused with 413 before they are read.
    api_max_body_bytes: int = Field(default=65536, ge=1024)
    # A client that sends a request's headers, or then its body, slower than this is
    # disconnected (api/connections.py); an idle kept-alive connection is not timed by these.
    api_header_timeout_seconds: float = Field(default=10.0, gt=0)
    api_body_timeout_seconds: float = Field(default=10.0, gt=0)
    # Connections one API process serves at once; a request on one more gets 503.
    api_max_connections: int = Field(default=1000, ge=1)
    # Bearer keys for /agents/*, comma-separated, and/or a file with one key a line.
    # Neither set: the API is open (local use).
    api_keys: SecretStr | None = None
    api_keys_file: Path | None = None
    # Whether /metrics needs a key too (when keys are set).
    metrics_require_api_key: bool = False
    # Signs the page tokens of GET /agents/runs. Set the same secret on every API replica so
    # a token from one works on the others; unset, each process uses a key of its own.
    api_page_token_secret: SecretStr | None = None

    # `make run`'s embedded dev server.
    data_dir: Path = Path(".data")
    temporal_dev_port: int = Field(default=7233, ge=1, le=65535)
    temporal_ui_port: int = Field(default=8233, ge=1, le=65535)

    def run_target(self, scope_kind: ScopeKind | None = None) -> RunTarget:
        """Where runs live: the base workflow id, the task queue, what a scope is (the
        deployment's record says; this replica's environment until it has read it), the RPC
        budget."""
        return RunTarget(
            workflow_id=self.workflow_id,
            task_queue=self.task_queue,
            rpc_timeout=timedelta(seconds=self.temporal_rpc_timeout_seconds),
            scope_kind=scope_kind or self.agent_scope,
        )

    def run_policy(self, defaults: AgentDefaults | None = None) -> RunPolicy:
        """How the workflow drives an agent. A setting given in the environment applies to every
        agent; one left unset takes the agent's own default (``defaults``), if it has one."""

        def pick(setting: str, agent_default: float | None) -> float:
            if agent_default is None or setting in self.model_fields_set:
                value: float = getattr(self, setting)
                return value
            return agent_default

        agent = defaults or AgentDefaults()
        return RunPolicy(
            max_attempts=int(pick("agent_max_attempts", agent.max_attempts)),
            timeout_seconds=pick("agent_timeout_seconds", agent.timeout_seconds),
            heartbeat_timeout_seconds=pick(
                "agent_heartbeat_timeout_seconds", agent.heartbeat_timeout_seconds
            ),
            retry_initial_interval_seconds=self.agent_retry_initial_interval_seconds,
            queue_timeout_seconds=(
                agent.queue_timeout_seconds
                if agent.queue_timeout_seconds is not None
                and "agent_queue_timeout_seconds" not in self.model_fields_set
                else self.agent_queue_timeout_seconds
            ),
        )

    @model_validator(mode="after")
    def _limits_in_bounds(self) -> Settings:
        check_limits(self.seeded_limits)
        return self

    @property
    def seeded_limits(self) -> ScopeLimits:
        """The limits this environment would give a new deployment's record."""
        return ScopeLimits(
            slots=self.agent_slots,
            queue_max=self.agent_queue_max,
            aging_seconds=self.agent_queue_aging_seconds,
            fair_shares=self.agent_fair_shares,
            weights=dict(self.agent_fairness_weights),
        )

    def load_api_keys(self) -> frozenset[str]:
        keys = self.api_keys.get_secret_value().split(",") if self.api_keys else []
        if self.api_keys_file is not None:
            keys += self.api_keys_file.read_text().splitlines()
        return frozenset(key.strip() for key in keys if key.strip())

    @property
    def uses_external_temporal(self) -> bool:
        """True when TEMPORAL_ADDRESS was given, so `make run` must not start a server."""
        return "temporal_address" in self.model_fields_set


@lru_cache
def get_settings() -> Settings:
    return Settings()
