"""structlog set up once per process, so every line on stdout is one JSON object.

Our own events, uvicorn's and temporalio's (including the SDK core's Rust logs, forwarded
through :data:`CORE_LOGGER_NAME`) and Python's warnings all pass through the same processors
and renderer. Should rendering a line fail (a library's log call with arguments that do not
fit its message, say), it still comes out as JSON, with its message and why it could not be
rendered in full.
"""

from __future__ import annotations

import json
import logging
import sys
import traceback
from collections.abc import Iterable
from datetime import UTC, datetime
from types import TracebackType
from typing import Literal
from urllib.parse import unquote_plus

import structlog
from structlog.tracebacks import ExceptionDictTransformer
from structlog.typing import EventDict, Processor
from temporalio import activity, workflow

CORE_LOGGER_NAME = "temporalio.core"
HANDLER_NAME = "agent-runner-stdout"
ACCESS_LOGGER_NAME = "uvicorn.access"
# The keys every line about a run carries; bound once with ``bind_run_context``.
RUN_KEYS = ("agent_type", "user_id", "run_id")
REDACTED = "[redacted]"

# Stacks as structured frames, without local variables: their values may hold secrets (a key,
# a request's headers), and rendering them imports modules lazily (rich), which the workflow
# sandbox refuses when the SDK logs a workflow task failure from inside it.
_exceptions_as_dicts = structlog.processors.ExceptionRenderer(
    ExceptionDictTransformer(show_locals=False)
)


def _drop_color_message(_logger: object, _name: str, event: EventDict) -> EventDict:
    """uvicorn adds an ANSI-coloured copy of each message; the JSON needs only one."""
    event.pop("color_message", None)
    return event


def _core_entry_as_data(_logger: object, _name: str, event: EventDict) -> EventDict:
    """The SDK's core hands its lines over with its entry object (``temporal_log``), which JSON
    would show as ``<builtins.BufferedLogEntry object at 0x...>``: its target and fields."""
    entry = event.get("temporal_log")
    if entry is not None and not isinstance(entry, dict):
        event["temporal_log"] = {
            "target": getattr(entry, "target", None),
            "fields": getattr(entry, "fields", None),
        }
    return event


def configure_logging(level: str = "INFO", fmt: Literal["json", "console"] = "json") -> None:
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.ExtraAdder(),
        _core_entry_as_data,
        _drop_color_message,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: list[Processor] = (
        [_exceptions_as_dicts, structlog.processors.JSONRenderer()]
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
        _NeverFailingFormatter(
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
    for name in ("uvicorn", "uvicorn.error", ACCESS_LOGGER_NAME):
        uvicorn_logger = logging.getLogger(name)
        uvicorn_logger.handlers = []
        uvicorn_logger.propagate = True
    # An exception nothing caught (a crash at start, say) is a JSON line too, not a bare trace.
    sys.excepthook = _log_uncaught
    # warnings.warn() writes plain text to stderr otherwise.
    logging.captureWarnings(True)
    # Our lines carry a run's keys as fields: the SDK's workflow and activity loggers would
    # glue their context to the message, which is our event name.
    workflow.logger.workflow_info_on_message = False
    activity.logger.activity_info_on_message = False


def redact_access_log_queries(shown: Iterable[str]) -> None:
    """uvicorn's access line carries the query string, where a client may send a secret (say
    ``?api_key=...``). Keep the parameters named in ``shown`` (the ones the API declares) and
    replace every other one, name and value, with ``[redacted]``."""
    access = logging.getLogger(ACCESS_LOGGER_NAME)
    for earlier in [f for f in access.filters if isinstance(f, _RedactQueries)]:
        access.removeFilter(earlier)
    access.addFilter(_RedactQueries(frozenset(shown)))


def redact_query(target: str, shown: frozenset[str]) -> str:
    """``target`` (a path and query) with the parameters not in ``shown`` redacted."""
    path, has_query, query = target.partition("?")
    if not has_query:
        return target
    parts = []
    for part in query.split("&"):
        name, has_value, _ = part.partition("=")
        parts.append(part if not part or (has_value and unquote_plus(name) in shown) else REDACTED)
    return f"{path}?{'&'.join(parts)}"


class _RedactQueries(logging.Filter):
    def __init__(self, shown: frozenset[str]) -> None:
        super().__init__()
        self.shown = shown

    def filter(self, record: logging.LogRecord) -> bool:
        # uvicorn's arguments: client address, method, path with query, HTTP version, status.
        args = record.args
        if isinstance(args, tuple) and len(args) == 5:
            target = args[2]
            if isinstance(target, str) and "?" in target:
                record.args = (*args[:2], redact_query(target, self.shown), *args[3:])
        return True


class _NeverFailingFormatter(structlog.stdlib.ProcessorFormatter):
    """A line that cannot be rendered is still one JSON object, never a "--- Logging error ---"
    trace on stderr: its message, its exception in one line, and why it failed to render."""

    def format(self, record: logging.LogRecord) -> str:
        try:
            return super().format(record)
        except Exception as err:
            created = datetime.fromtimestamp(record.created, UTC)
            line = {
                "event": _message(record),
                "level": record.levelname.lower(),
                "logger": record.name,
                "timestamp": created.isoformat().replace("+00:00", "Z"),
                "log_error": _exception_text(err),
            }
            if record.exc_info and record.exc_info[1] is not None:
                line["exception"] = _exception_text(record.exc_info[1])
            try:  # with the fields of one of our own events, as far as they render
                return json.dumps({**_fields(record), **line}, default=repr)
            except Exception:
                return json.dumps(line)


def _fields(record: logging.LogRecord) -> dict[str, object]:
    if not isinstance(record.msg, dict):  # a foreign line: its message is all there is
        return {}
    return {
        str(key): value
        for key, value in record.msg.items()
        if not str(key).startswith("_") and key != "exc_info"
    }


def _message(record: logging.LogRecord) -> str:
    if isinstance(record.msg, dict):  # one of ours, wrapped by structlog
        return str(record.msg.get("event"))
    try:
        return record.getMessage()
    except Exception:
        return f"{record.msg} {record.args!r}"


def _exception_text(err: BaseException) -> str:
    try:
        return "".join(traceback.format_exception_only(err)).strip()
    except Exception:
        return type(err).__name__


def bind_run_context(*, agent_type: str | None, user_id: str | None, run_id: str | None) -> None:
    structlog.contextvars.bind_contextvars(agent_type=agent_type, user_id=user_id, run_id=run_id)


def _log_uncaught(
    kind: type[BaseException], error: BaseException, trace: TracebackType | None
) -> None:
    if issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, error, trace)
        return
    logging.getLogger("agent_runner").critical("uncaught_exception", exc_info=(kind, error, trace))
