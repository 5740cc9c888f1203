"""Exit codes, and the one exception a command raises to end with a message and a code."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """What ``agent-runner`` exits with; ``agent-runner --help`` lists the same table."""

    OK = 0
    #: The run ended ERROR (``run --wait``, ``status --wait``).
    RUN_FAILED = 1
    #: A usage error: caught by the command line itself, or refused by the API (400, 413, 422).
    USAGE = 2
    #: The API cannot be reached, answered 5xx, or answered something that is not its API.
    UNAVAILABLE = 3
    #: 409: every slot is taken (or the queue is full), or the run has already finished.
    CONFLICT = 4
    #: 404: no such run.
    NOT_FOUND = 5
    #: 401 or 403: the API key is missing or wrong.
    AUTH = 6
    #: Ctrl-C.
    INTERRUPTED = 130


EXIT_CODES_HELP = (
    "Exit codes: 0 success (a followed run ended DONE), 1 the run ended ERROR, 2 usage error "
    "(also input the API refused: 400, 413, 422), 3 API unreachable or failing (5xx), "
    "4 conflict (409: busy, queue full, run already finished), 5 no such run (404), "
    "6 API key missing or refused (401, 403), 130 interrupted (Ctrl-C)."
)


class CliError(Exception):
    """Ends the command: ``message`` (one line, or one per problem) on stderr, then ``code``."""

    def __init__(self, message: str, code: ExitCode) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
