"""Request and response bodies, declared so the OpenAPI document is exact."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator
from pydantic.json_schema import SkipJsonSchema

from agent_runner.contract import (
    FAIRNESS_KEY_PATTERN,
    MAX_WEIGHT,
    MAX_WEIGHTS,
    PRIORITY_DEFAULT,
    PRIORITY_FIRST,
    PRIORITY_LAST,
)
from agent_runner.ids import MAX_QUEUE, MAX_SLOTS
from agent_runner.runs import OnBusy, RunState
from agent_runner.validation import MAX_TIMEOUT_SECONDS

# What an Idempotency-Key may contain: it is quoted into visibility queries as it is.
SAFE_KEY_PATTERN = FAIRNESS_KEY_PATTERN


def _json_number(value: object) -> object:
    """A JSON number, as the schema's integer means it (2.0 is 2): true and "2" are not."""
    if isinstance(value, bool | str):
        raise ValueError("must be a whole number, not a string or a boolean")
    return value


def _json_float(value: object) -> object:
    """A JSON number: true and "2.5" are not (pydantic would take them for 1.0 and 2.5)."""
    if isinstance(value, bool | str):
        raise ValueError("must be a number, not a string or a boolean")
    return value


class RunRequest(BaseModel):
    # These fields are the whole contract: any other (a typo such as "on-busy") is a 422
    # naming it, not a request quietly taken for another.
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"agent_type": "policy-checker", "user_id": "9b64a3a7-f8e4-4f06-8e57-73b50b042f29"}
            ]
        },
    )

    # A plain string, not an enum, so an unknown type is the contract's 400, not a 422. The
    # OpenAPI document lists the installed agents (api/agent_docs.py).
    agent_type: str = Field(
        description="Which agent to run: see GET /agents/types.", max_length=100
    )
    user_id: UUID = Field(description="The user the agent works for.")
    params: dict[str, Any] | None = Field(
        default=None,
        description=(
            "The agent's parameters, checked against its model (GET /agents/types); unknown "
            "ones are refused. Omit for an agent that takes none."
        ),
    )
    on_busy: OnBusy = Field(
        default=OnBusy.REJECT,
        description=(
            "When every slot is taken: `reject` answers 409 (the default); `enqueue` accepts "
            "the run into the scope's queue and answers 202 with its `queue_position`; "
            "`attach` answers 200 with the `run_id` of an open run (working or queued) of the "
            "same `agent_type`, `user_id` and `params` in the scope, else enqueues; `replace` "
            "cancels the scope's oldest working run (its status says `replaced_by`) and takes "
            "its slot, once its agent has stopped, before any waiting run."
        ),
    )
    priority: Annotated[int, BeforeValidator(_json_number)] = Field(
        default=PRIORITY_DEFAULT,
        ge=PRIORITY_FIRST,
        le=PRIORITY_LAST,
        description=(
            "While the run waits: 1 is served first, 5 last; first come, first served within "
            "one priority. A run that has waited `aging_seconds` (GET /agents/limits) is "
            "served as priority 1, so none starves."
        ),
    )
    fairness_key: str | None = Field(
        default=None,
        pattern=SAFE_KEY_PATTERN,
        description=(
            "With fair shares on (GET /agents/limits): whose share of the slots the run is "
            "served from, by weighted round-robin among the keys that wait. Default: its "
            "`user_id`."
        ),
    )
    queue_timeout_seconds: Annotated[float | None, BeforeValidator(_json_float)] = Field(
        default=None,
        ge=0.001,
        le=MAX_TIMEOUT_SECONDS,
        description=(
            "A run still waiting this long after it was queued ends ERROR `expired in queue` "
            "and never starts. Default: the agent's, else AGENT_QUEUE_TIMEOUT_SECONDS, else "
            "it waits as long as it takes."
        ),
    )


class RunAccepted(BaseModel):
    run_id: str = Field(description="The run's id; opaque.")
    queue_position: int | None = Field(
        default=None,
        description="None when the run started at once; else its place in the queue, 1 next.",
    )
    attached: bool = Field(
        default=False,
        description="`on_busy=attach` found this run open: no run was started (answered 200).",
    )
    replaced_run_id: str | None = Field(
        default=None,
        description=(
            "`on_busy=replace`: the run it cancelled; this run takes that slot once its agent "
            "has stopped, before any waiting run."
        ),
    )


class ProgressResponse(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    fraction: float = Field(ge=0, le=1, description="0.0 to 1.0, as the agent reported it.")
    message: str = Field(description="What the agent does now.")
    attempt: int = Field(description="The attempt that reported it.")


class AttemptFailureResponse(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    attempt: int
    reason: str
    retrying: bool = Field(description="Whether another attempt follows.")


class RunStatusResponse(BaseModel):
    run_id: str
    agent_type: str | None = Field(
        description="None only for a run started elsewhere with bad input."
    )
    user_id: str | None
    state: RunState = Field(
        description=(
            "PENDING: accepted, no attempt started yet (e.g. no worker). RUNNING: an attempt "
            "is executing or waiting to retry. DONE: `result` holds the output. ERROR: `error` "
            "says why."
        )
    )
    result: Any = Field(
        description=(
            'policy-checker: "approved" or "rejected". document-extractor: an object with '
            "`document`, `pages` and the extracted `fields`. None until DONE."
        )
    )
    error: str | None = Field(description="Why the run ended in ERROR.")
    attempt: int = Field(description="The agent attempt running or that ended the run; 0 if none.")
    queue_position: int | None = Field(
        default=None, description="While the run waits in a queue: its place, 1 next; else None."
    )
    queued_at: datetime | None = Field(
        default=None, description="When the run entered a queue (UTC); None if it never waited."
    )
    started_at: datetime | None = Field(
        description="When the run got its slot (UTC); None while it waits in a queue."
    )
    finished_at: datetime | None = Field(description="When the run ended (UTC).")
    workflow_id: str | None = Field(
        default=None,
        description=(
            "The Temporal execution that holds the run (its slot's, or while queued its "
            "queue's): find it in the Web UI and the `temporal` CLI with this and "
            "`temporal_run_id`."
        ),
    )
    temporal_run_id: str | None = Field(
        default=None, description="That execution's Temporal run id."
    )
    progress: ProgressResponse | None = Field(
        default=None, description="How far the working attempt is, as its agent last reported."
    )
    last_failure: AttemptFailureResponse | None = Field(
        default=None,
        description="The last failed attempt of a run that goes on with another attempt.",
    )
    waiting_for: Literal["queue", "previous_agent", "worker", "paused"] | None = Field(
        default=None,
        description=(
            "Why the run is not working now: `queue` (its turn), `previous_agent` (an agent "
            "of an earlier attempt has not been seen to stop: its lease must run out first), "
            "`worker` (no worker that has its agent has taken it: see `workers_polling` in GET "
            "/agents/types), `paused` (its attempt was paused from outside)."
        ),
    )
    slot: int | None = Field(default=None, description="The slot it holds or held.")
    priority: int | None = Field(
        default=None, description="Its priority in the queue, 1 first (None: not known)."
    )
    fairness_key: str | None = Field(
        default=None, description="The fairness key it was given (None: its user's)."
    )
    queue_expires_at: datetime | None = Field(
        default=None,
        description="While it waits: when it ends `expired in queue` if still waiting (UTC).",
    )
    slot_holders: list[str] | None = Field(
        default=None, description="While it waits: the runs holding its scope's slots."
    )
    ahead: dict[str, int] | None = Field(
        default=None,
        description=(
            "While it waits: how many runs are served before it, by priority "
            '(`{"1": 0, "2": 0, "3": 4, "4": 0, "5": 0}`; a run aged past `aging_seconds` '
            "counts as 1)."
        ),
    )
    replaced_by: str | None = Field(
        default=None, description="The run that cancelled this one to take its slot (replace)."
    )
    scope_paused: bool = Field(
        default=False,
        description=(
            "While it waits: its scope is paused (POST /agents/scopes/{scope}/pause): it keeps "
            "its place and starts once the scope is resumed."
        ),
    )
    eta_seconds: float | None = Field(
        default=None,
        description=(
            "While it waits: about how many seconds until it gets a slot, from the median "
            "time on a slot of the last 20 runs of each agent type ahead of it; None when "
            "one is not known (or a slot is held by an execution we did not start)."
        ),
    )

    @field_validator("ahead", mode="before")
    @classmethod
    def _by_priority(cls, value: object) -> object:
        if isinstance(value, list):
            return {str(index + 1): count for index, count in enumerate(value)}
        return value


class ErrorResponse(BaseModel):
    detail: str


class BusyResponse(BaseModel):
    detail: str = Field(
        examples=[
            "An agent is already running, please retry later",
            "The queue is full, please retry later",
        ]
    )
    running_run_id: str | None = Field(
        default=None, description="A run holding a slot; its status is at `Location`."
    )


class QueueResponse(BaseModel):
    running: list[RunStatusResponse] = Field(
        description="Runs holding a slot, scope after scope, each scope's in slot order."
    )
    queued: list[RunStatusResponse] = Field(
        description="Runs waiting, scope after scope, each scope's next first."
    )
    next_page_token: str | None = Field(
        None,
        description=(
            "Pass as `page_token` for the next page; null at the end. A page may hold fewer "
            "runs than `limit`, even none, before the end."
        ),
    )


class RunSummaryResponse(BaseModel):
    run_id: str
    agent_type: str | None
    user_id: str | None
    state: RunState
    started_at: datetime | None = Field(description="When it got its slot, or was queued.")
    finished_at: datetime | None


class RunListResponse(BaseModel):
    runs: list[RunSummaryResponse] = Field(description="Newest first.")
    next_page_token: str | None = Field(
        description="Pass as `page_token` for the next page; null on the last page."
    )


class CancelResponse(BaseModel):
    run_id: str
    state: RunState = Field(
        description="ERROR once the run has ended; PENDING or RUNNING while its agent stops."
    )
    detail: str


class HealthResponse(BaseModel):
    status: str


class AgentDefaultsResponse(BaseModel):
    max_attempts: int
    timeout_seconds: float
    heartbeat_timeout_seconds: float


class AgentTypeResponse(BaseModel):
    name: str = Field(description="The `agent_type` to ask for.")
    description: str
    params_schema: dict[str, Any] = Field(
        description="The JSON Schema of `params` (unknown parameters are refused)."
    )
    defaults: AgentDefaultsResponse = Field(
        description="What a run of it gets from this API: the settings given in the "
        "environment, else the agent's own defaults."
    )
    workers_polling: int | None = Field(
        description=(
            "Workers seen polling this agent's task queue within the last minute; 0 means its "
            "runs wait PENDING until a worker that has it starts. None: Temporal did not say."
        )
    )


class AgentTypesResponse(BaseModel):
    agents: list[AgentTypeResponse] = Field(description="By name.")


class ScopeOwnLimits(BaseModel):
    """One scope's own limits (null: the deployment's), and whether it is paused."""

    model_config = ConfigDict(from_attributes=True)

    slots: int | None = None
    queue_max: int | None = None
    weights: dict[str, int] | None = None
    paused: bool = False


class ScopeLimitsResponse(BaseModel):
    """The limits one scope follows now: the deployment's, with its own over them."""

    scope: str = Field(description="The scope's name: `global`, a user id or an agent type.")
    slots: int
    queue_max: int
    aging_seconds: float
    fair_shares: bool
    weights: dict[str, int]
    paused: bool = Field(description="A paused scope queues runs and starts none.")
    own: ScopeOwnLimits | None = Field(
        description="What the scope sets itself (None: it follows the deployment)."
    )
    version: int
    changed_by: str
    changed_at: datetime | None


class LimitsResponse(BaseModel):
    """The deployment's bound, as every replica follows it."""

    scope_kind: str = Field(description="`global`, `user_id` or `agent_type`: one of each.")
    slots: int = Field(description="N: agents of one scope that may work at once.")
    queue_max: int = Field(description="Runs that may wait in one scope's queue.")
    aging_seconds: float = Field(
        description="A run that has waited this long is served as priority 1."
    )
    fair_shares: bool = Field(
        description=(
            "Whether the runs of one priority are granted to their fairness keys by weighted "
            "round-robin (else first come, first served)."
        )
    )
    weights: dict[str, int] = Field(description="Fairness keys' weights; 1 unless named.")
    paused: bool = Field(
        False,
        description=(
            "The whole deployment paused (`PUT /agents/limits` `paused`): every scope queues "
            "and starts nothing, whatever its own pause says."
        ),
    )
    scopes: dict[str, ScopeOwnLimits] = Field(
        default_factory=dict,
        description=(
            "Scopes with limits of their own or paused, by name (PUT /agents/limits/{scope}, "
            "POST /agents/scopes/{scope}/pause)."
        ),
    )
    version: int = Field(description="Counts the changes since the record was seeded.")
    changed_by: str = Field(description="Who made the last change (an API key's id).")
    changed_at: datetime | None


class ScopeLimitsChangeRequest(BaseModel):
    """One scope's own limits: given fields replace its own; `null` makes one follow the
    deployment's again."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"slots": 3}], "minProperties": 1}
    )
    slots: (
        Annotated[Annotated[int, Field(ge=1, le=MAX_SLOTS)], BeforeValidator(_json_number)] | None
    ) = None
    queue_max: (
        Annotated[Annotated[int, Field(ge=1, le=MAX_QUEUE)], BeforeValidator(_json_number)] | None
    ) = None
    weights: (
        Annotated[
            dict[
                Annotated[str, Field(pattern=SAFE_KEY_PATTERN)],
                Annotated[int, Field(ge=1, le=MAX_WEIGHT), BeforeValidator(_json_number)],
            ],
            Field(max_length=MAX_WEIGHTS, json_schema_extra={"additionalProperties": False}),
        ]
        | None
    ) = None


class LimitsChangeRequest(BaseModel):
    """The limits to change (one or both)."""

    model_config = ConfigDict(
        extra="forbid", json_schema_extra={"examples": [{"slots": 2}], "minProperties": 1}
    )
    # Left out, not null: the document asks for at least one of the two.
    slots: (
        Annotated[Annotated[int, Field(ge=1, le=MAX_SLOTS)], BeforeValidator(_json_number)]
        | SkipJsonSchema[None]
    ) = None
    queue_max: (
        Annotated[Annotated[int, Field(ge=1, le=MAX_QUEUE)], BeforeValidator(_json_number)]
        | SkipJsonSchema[None]
    ) = None
    aging_seconds: (
        Annotated[float, Field(ge=0, le=MAX_TIMEOUT_SECONDS), BeforeValidator(_json_float)]
        | SkipJsonSchema[None]
    ) = None
    fair_shares: Annotated[bool, Field(strict=True)] | SkipJsonSchema[None] = None
    # The whole map: keys left out get 1.
    weights: (
        Annotated[
            dict[
                Annotated[str, Field(pattern=SAFE_KEY_PATTERN)],
                Annotated[int, Field(ge=1, le=MAX_WEIGHT), BeforeValidator(_json_number)],
            ],
            # A key outside the pattern is refused (patternProperties alone would allow it).
            Field(max_length=MAX_WEIGHTS, json_schema_extra={"additionalProperties": False}),
        ]
        | SkipJsonSchema[None]
    ) = None
    # The whole deployment: every scope paused, whatever its own pause says.
    paused: Annotated[bool, Field(strict=True)] | SkipJsonSchema[None] = None
