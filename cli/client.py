"""The REST API, as the command line calls it: one method per endpoint, and every failure
turned into a :class:`CliError` with a message for people and an exit code."""

from __future__ import annotations

from dataclasses import dataclass
from importlib.metadata import version
from typing import Any, Self
from urllib.parse import quote

import httpx

from cli.errors import CliError, ExitCode

URL_ENV = "AGENT_RUNNER_URL"
API_KEY_ENV = "AGENT_RUNNER_API_KEY"
DEFAULT_URL = "http://localhost:8000"
# Cancel answers after a few seconds at most; starts and reads much sooner.
REQUEST_TIMEOUT = httpx.Timeout(30.0, connect=5.0)
# A long poll answers within its `wait`; this is what the network may add.
LONG_POLL_MARGIN_SECONDS = 15.0


@dataclass(frozen=True)
class Connection:
    """Where the API is and the key it wants (None: an API without keys)."""

    url: str
    api_key: str | None = None

    def __post_init__(self) -> None:
        if not self.url.startswith(("http://", "https://")):
            raise CliError(
                f"the API URL must start with http:// or https://, not {self.url!r} "
                f"(set {URL_ENV} or --url)",
                ExitCode.USAGE,
            )


def api_key_to_send(given: str | None) -> str | None:
    """The key as ``--api-key`` or AGENT_RUNNER_API_KEY gave it, without the whitespace around
    it: the API strips its own keys, so that is never part of one (``$(cat keyfile)`` with a
    trailing space, a ``.env`` with Windows line ends). A key with anything else than printable
    ASCII (a control character, a line break inside it) cannot be sent in a header: a usage
    error, which never shows the key."""
    if given is None:
        return None
    key = given.strip()
    if not all(" " <= char <= "~" for char in key):
        raise CliError(
            f"the API key has a control character or a character that is not ASCII: check "
            f"{API_KEY_ENV} (or --api-key); the key is not shown",
            ExitCode.USAGE,
        )
    return key


def run_path(run_id: str, *suffix: str) -> str:
    """``/agents/runs/<id>/...``, the id quoted so that it stays one path segment."""
    return "/".join(["/agents/runs", quote(run_id, safe=""), *suffix])


def status_path(run_id: str) -> str:
    return f"/agents/status/{quote(run_id, safe='')}"


class ApiClient:
    """One HTTP client for one command; use it in a ``with`` block."""

    def __init__(self, connection: Connection) -> None:
        self.url = connection.url.rstrip("/")
        headers = {"User-Agent": f"agent-runner-cli/{version('agent-runner')}"}
        if connection.api_key:
            headers["Authorization"] = f"Bearer {connection.api_key}"
        self.http = httpx.Client(base_url=self.url, headers=headers, timeout=REQUEST_TIMEOUT)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.http.close()

    def request(
        self,
        method: str,
        path: str,
        *,
        not_found: str | None = None,
        ok: tuple[int, ...] = (200,),
        **options: Any,
    ) -> httpx.Response:
        """The answer when its status is in ``ok``; anything else raises :class:`CliError`.
        ``not_found`` is the message for a 404 (default: the API's own)."""
        try:
            response = self.http.request(method, path, **options)
        except httpx.TransportError as err:
            raise self.unreachable(err) from None
        if response.status_code not in ok:
            raise self.refusal(response, not_found=not_found)
        return response

    def json(self, response: httpx.Response, *fields: str) -> Any:
        """The body of a successful answer: a JSON object with ``fields``, or it is not the
        API that answered."""
        try:
            body = response.json()
        except ValueError:
            raise self.not_our_api(response) from None
        if not isinstance(body, dict) or any(field not in body for field in fields):
            raise self.not_our_api(response)
        return body

    # The endpoints.

    def start_run(self, body: bytes, *, idempotency_key: str | None) -> httpx.Response:
        """202, or the 409 of a busy API (the caller words it: it knows about --enqueue).
        ``body``: the request's JSON, already written."""
        headers = {"Content-Type": "application/json"}
        if idempotency_key:
            headers["Idempotency-Key"] = idempotency_key
        return self.request(
            "POST", "/agents/run", content=body, headers=headers, ok=(200, 202, 409)
        )

    def status(self, run_id: str, *, wait: float = 0) -> Any:
        options: dict[str, Any] = {}
        if wait:
            options = {"params": {"wait": wait}, "timeout": wait + LONG_POLL_MARGIN_SECONDS}
        response = self.request(
            "GET", status_path(run_id), not_found=self.no_such_run(run_id), **options
        )
        return self.json(response, "run_id", "state")

    def runs(self, query: dict[str, str | int]) -> Any:
        return self.json(self.request("GET", "/agents/runs", params=query), "runs")

    def cancel(self, run_id: str) -> tuple[int, Any]:
        """200 once the run has ended cancelled; 202 while its agent stops."""
        try:
            response = self.request(
                "POST",
                run_path(run_id, "cancel"),
                not_found=self.no_such_run(run_id),
                ok=(200, 202),
            )
        except CliError as refused:
            if refused.code == ExitCode.CONFLICT:
                raise CliError(
                    f"cannot cancel run {run_id}: {refused.message}", refused.code
                ) from None
            raise
        return response.status_code, self.json(response, "run_id")

    def types(self) -> Any:
        return self.json(self.request("GET", "/agents/types"), "agents")

    def limits(self) -> Any:
        return self.json(self.request("GET", "/agents/limits"), "slots", "queue_max")

    def set_limits(self, change: dict[str, Any]) -> Any:
        response = self.request("PUT", "/agents/limits", json=change)
        return self.json(response, "slots", "queue_max")

    def scope_limits(self, scope: str) -> Any:
        response = self.request("GET", f"/agents/limits/{quote(scope, safe='')}")
        return self.json(response, "scope", "slots")

    def set_scope_limits(self, scope: str, change: dict[str, Any]) -> Any:
        response = self.request("PUT", f"/agents/limits/{quote(scope, safe='')}", json=change)
        return self.json(response, "scope", "slots")

    def pause(self, scope: str, *, paused: bool) -> Any:
        action = "pause" if paused else "resume"
        response = self.request("POST", f"/agents/scopes/{quote(scope, safe='')}/{action}")
        return self.json(response, "scope", "paused")

    # Failures, in words.

    def no_such_run(self, run_id: str) -> str:
        return f"no run {run_id} at {self.url}"

    def unreachable(self, err: httpx.TransportError) -> CliError:
        reason = str(err) or type(err).__name__
        return CliError(
            f"cannot reach the agent-runner API at {self.url}: {reason}; is it running? "
            f"set {URL_ENV}",
            ExitCode.UNAVAILABLE,
        )

    def not_our_api(self, response: httpx.Response) -> CliError:
        kind = response.headers.get("content-type", "no content type")
        return CliError(
            f"unexpected answer from {self.url}{response.request.url.path}: HTTP "
            f"{response.status_code} ({kind}); is {URL_ENV} the agent-runner API?",
            ExitCode.UNAVAILABLE,
        )

    def busy(self, response: httpx.Response, *, enqueue: bool) -> CliError:
        """The 409 of a start, in words: who holds the slot, when to retry, what else to do."""
        refusal = self.refusal(response)
        if refusal.code != ExitCode.CONFLICT:
            return refusal  # not the API's 409
        body: dict[str, Any] = response.json()
        retry = response.headers.get("retry-after")
        context = [f"running: {body['running_run_id']}"] if body.get("running_run_id") else []
        if retry:
            context.append(f"retry after {retry} s")
        message = refusal.message.rstrip(".")
        if context:
            message += f" ({', '.join(context)})"
        if not enqueue:
            message += "; add --enqueue to wait in the queue instead"
        return CliError(message, ExitCode.CONFLICT)

    def refusal(self, response: httpx.Response, *, not_found: str | None = None) -> CliError:
        """The error an answer outside the expected ones stands for."""
        code = response.status_code
        try:
            detail: Any = response.json().get("detail")
        except (ValueError, AttributeError):
            detail = None
        if code == 401:
            return CliError(
                f"the API at {self.url} requires an API key: set {API_KEY_ENV} (or --api-key)",
                ExitCode.AUTH,
            )
        if code == 403:
            return CliError(
                f"the API at {self.url} refused the API key: check {API_KEY_ENV} (or --api-key)",
                ExitCode.AUTH,
            )
        if code == 422 and isinstance(detail, list):
            return CliError("\n".join(problem_lines(detail)), ExitCode.USAGE)
        if detail is None or not isinstance(detail, str):
            return self.not_our_api(response)
        if code == 404:
            return CliError(not_found or detail, ExitCode.NOT_FOUND)
        if code == 409:
            return CliError(detail, ExitCode.CONFLICT)
        if code in (400, 413, 422):
            return CliError(detail, ExitCode.USAGE)
        retry = response.headers.get("retry-after")
        later = f"; retry in {retry} s" if retry else ""
        return CliError(
            f"the API at {self.url} answered {code}: {detail}{later}", ExitCode.UNAVAILABLE
        )


def problem_lines(problems: list[Any]) -> list[str]:
    """FastAPI's 422 list as ``params.document: Field required`` lines. Where the problem is
    (``body``, ``query``, ``header``) is left out: the field's name says it."""
    lines = []
    for problem in problems:
        if not isinstance(problem, dict):
            lines.append(str(problem))
            continue
        location = [str(part) for part in problem.get("loc", [])]
        field = ".".join(location[1:] if len(location) > 1 else location)
        message = problem.get("msg", "invalid")
        lines.append(f"{field}: {message}" if field else str(message))
    return lines
