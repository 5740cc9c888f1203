"""structlog set up once per process, so every line on stdout is one JSON object.

Our own events, uvicorn's and temporalio's (including the SDK core's Rust logs, forwarded
through :data:`CORE_LOGGER_NAME`) all pass through the same processors and renderer.
"""

from __future__ import annotations

import logging
import sys
from typing import Literal

import structlog
from structlog.typing import EventDict, Processor

CORE_LOGGER_NAME = "temporalio.core"
HANDLER_NAME = "agent-runner-stdout"
# The keys every line about a run carries; bound once with ``bind_run_context``.
RUN_KEYS = ("agent_type", "user_id", "run_id")


def _drop_color_message(_logger: object, _name: str, event: EventDict) -> EventDict:
    """uvicorn adds an ANSI-coloured copy of each message; the JSON needs only one."""
    event.pop("color_message", None)
    return event


def configure_logging(level: str = "INFO", fmt: Literal["json", "console"] = "json") -> None:
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.ExtraAdder(),
        _drop_color_message,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: list[Processor] = (
        [structlog.processors.dict_tracebacks, structlog.processors.JSONRenderer()]
        if fmt == "json"
        else [structlog.dev.ConsoleRenderer()]
    )
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *renderer],
        )
    )
    handler.set_name(HANDLER_NAME)
    root = logging.getLogger()
    # Replace our own handler when called again; leave handlers others installed alone.
    root.handlers = [h for h in root.handlers if h.get_name() != HANDLER_NAME] + [handler]
    root.setLevel(level)
    # uvicorn installs its own plain-text handlers; route its loggers through ours instead.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        uvicorn_logger = logging.getLogger(name)
        uvicorn_logger.handlers = []
        uvicorn_logger.propagate = True


def bind_run_context(*, agent_type: str | None, user_id: str | None, run_id: str | None) -> None:
    structlog.contextvars.bind_contextvars(agent_type=agent_type, user_id=user_id, run_id=run_id)
