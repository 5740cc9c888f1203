"""How errors are answered: every body is ``{"detail": ...}`` and is valid JSON, whatever the
client sent; no stack trace, no 5xx for a client's mistake."""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any

import structlog
from fastapi import FastAPI, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.responses import Response
from temporalio.client import WorkflowUpdateRPCTimeoutOrCancelledError

from agent_runner.runs import StartsBusyError, TemporalUnavailableError
from agent_runner.runs.errors import NoWorkerError

UNAVAILABLE_DETAIL = "Temporal is unavailable, please retry later"
# An input or a message quoted in a 422 is cut to this many characters.
MAX_QUOTED_CHARS = 200
# A 422 lists at most this many problems, then one that counts the rest: 3,000 unknown
# parameters were 3,000 problems, an answer seven times the size of the request.
MAX_PROBLEMS = 20
logger = structlog.stdlib.get_logger(__name__)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _validation_failed)
    app.add_exception_handler(TemporalUnavailableError, _temporal_unavailable)
    app.add_exception_handler(StartsBusyError, _starts_busy)
    app.add_exception_handler(Exception, _unexpected_error)


async def _validation_failed(request: Request, exc: Exception) -> JSONResponse:
    """FastAPI's 422 list, rendered so that it is always JSON.

    FastAPI echoes each problem's ``input``; JSON carries what Python's JSON encoder then
    refuses (a lone surrogate such as ``"\\ud83d"``, ``NaN``, ``Infinity``, bytes that are not
    UTF-8), which would turn the client's mistake into a 500. Here text is made encodable and
    cut short, non-finite numbers are written as text, and an input that is a list or an object
    (the whole body, for a missing field) is left out: ``loc`` says where the problem is.
    """
    assert isinstance(exc, RequestValidationError)
    return JSONResponse(
        {"detail": json_safe_problems(exc.errors())},
        status.HTTP_422_UNPROCESSABLE_CONTENT,
    )


def json_safe_problems(problems: Sequence[Any]) -> list[dict[str, Any]]:
    safe = []
    for problem in problems[:MAX_PROBLEMS]:
        item: dict[str, Any] = {
            "type": _text(problem.get("type", "")),
            "loc": [part if isinstance(part, int) else _text(part) for part in problem["loc"]],
            "msg": _text(problem.get("msg", "")),
        }
        if "input" in problem and _is_scalar(problem["input"]):
            item["input"] = _scalar(problem["input"])
        context = problem.get("ctx")
        if isinstance(context, Mapping):
            item["ctx"] = {_text(key): _scalar(value) for key, value in context.items()}
        safe.append(item)
    if len(problems) > MAX_PROBLEMS:
        more = len(problems) - MAX_PROBLEMS
        safe.append(
            {
                "type": "too_many_problems",
                "loc": [],
                "msg": f"and {more} more problems of the same request",
            }
        )
    return safe


def _is_scalar(value: object) -> bool:
    return value is None or isinstance(value, str | bytes | int | float)


def _scalar(value: object) -> str | int | float | bool | None:
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        # A JSON integer of thousands of digits is valid; its echo need not be (and Python
        # refuses to write one of more than 4,300 digits).
        return value if value.bit_length() <= 64 else f"an integer of {value.bit_length()} bits"
    if isinstance(value, float):
        return value if math.isfinite(value) else json.dumps(value)  # NaN, Infinity, -Infinity
    if isinstance(value, bytes):
        return _text(value.decode("utf-8", "replace"))
    return _text(str(value))


def _text(value: object) -> str:
    """``value`` as text that encodes as UTF-8 (a lone surrogate becomes "?"), cut short."""
    text = str(value).encode("utf-8", "replace").decode("utf-8")
    return text if len(text) <= MAX_QUOTED_CHARS else f"{text[: MAX_QUOTED_CHARS - 3]}..."


# When to try again after a 503: a reconnect or a worker's restart takes about this long.
RETRY_AFTER_UNAVAILABLE_SECONDS = 2


async def _temporal_unavailable(request: Request, exc: Exception) -> JSONResponse:
    logger.warning("temporal_unavailable", path=request.url.path, error=str(exc))
    return retry_later(str(exc) if isinstance(exc, NoWorkerError) else UNAVAILABLE_DETAIL)


async def _starts_busy(request: Request, exc: Exception) -> JSONResponse:
    logger.warning("start_refused_busy", path=request.url.path, reason=str(exc))
    request.app.state.agent_runner.metrics.starts_refused_busy.inc()
    return retry_later(str(exc))


def retry_later(detail: str) -> JSONResponse:
    """A 503 saying why, with Retry-After."""
    return JSONResponse(
        {"detail": detail},
        status.HTTP_503_SERVICE_UNAVAILABLE,
        headers={"Retry-After": str(RETRY_AFTER_UNAVAILABLE_SECONDS)},
    )


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    if isinstance(exc, WorkflowUpdateRPCTimeoutOrCancelledError) and isinstance(
        exc.__cause__, asyncio.CancelledError
    ):
        # The API is stopping: past its graceful shutdown it cancelled the request's wait for
        # an update, which the SDK turns into this error (chaos seed 47129: a limits change
        # answered 500). Nothing the client sent is wrong; another replica can answer. (The
        # runs package leaves a cancelled wait as it is, so no retry loop outlives a cancel.)
        logger.warning("request_cut_short", path=request.url.path, reason="the API is stopping")
        return retry_later(UNAVAILABLE_DETAIL)
    logger.exception("request_failed", path=request.url.path)
    return JSONResponse({"detail": "Internal server error"}, status.HTTP_500_INTERNAL_SERVER_ERROR)


UNSUPPORTED_MEDIA_DETAIL = "The body must be JSON, sent with Content-Type: application/json"


class JsonBodyRoute(APIRoute):
    """A route whose body, when it is not JSON, is the 422 ``json_invalid`` FastAPI gives any
    text that is not JSON; and a ``415`` when its Content-Type says it is something else
    or gives none (FastAPI would validate the raw bytes, a 422 "Input should be a valid
    dictionary" that does not say what is wrong: ``curl -d`` sends a form's type).

    FastAPI answers 400 "There was an error parsing the body" when the body fails to decode
    for any other reason than a JSON syntax error: bytes that are not UTF-8 (or UTF-16/32),
    nesting deeper than the parser's recursion limit, an integer of more than 4,300 digits.
    """

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        takes_body = self.body_field is not None

        async def handle(request: Request) -> Response:
            if takes_body and not _json_type(request.headers.get("content-type")):
                return JSONResponse(
                    {"detail": UNSUPPORTED_MEDIA_DETAIL},
                    status.HTTP_415_UNSUPPORTED_MEDIA_TYPE,
                )
            return await handler(_JsonBodyRequest(request.scope, request.receive))

        return handle


def _json_type(content_type: str | None) -> bool:
    """Whether FastAPI reads a body of this Content-Type as JSON: ``application/json`` or
    ``application/<anything>+json``, with any parameters (none at all is not: FastAPI's
    strict content type)."""
    if not content_type:
        return False
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


class _JsonBodyRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            body = await self.body()
            try:
                self._json = json.loads(body)
            except json.JSONDecodeError:
                raise
            except UnicodeDecodeError:
                raise json.JSONDecodeError("Not UTF-8, UTF-16 or UTF-32 text", "", 0) from None
            except RecursionError:
                raise json.JSONDecodeError("Nested too deeply", "", 0) from None
            except ValueError as err:  # e.g. Python's limit on the digits of an integer
                raise json.JSONDecodeError(_text(err), "", 0) from None
        return self._json
