"""The ``agent-runner`` console script.

Ctrl-C ends it with one line and exit code 130, never a traceback, at any moment: while Python
still imports the command line (a few hundred milliseconds, before any command code runs), and
until a command takes the interrupt over as it reaches the API (it then says what the interrupt
left: a followed run goes on). So this module imports only the standard library before it sets
that up, and imports the commands after.
"""

from __future__ import annotations

import os
import signal
import sys
from types import FrameType
from typing import NoReturn

from cli.errors import ExitCode


def main() -> None:
    signal.signal(signal.SIGINT, _interrupted)
    try:
        from cli.commands import app

        app()
    except BrokenPipeError:
        # Output piped into `head`, say: stop quietly, as well-behaved CLIs do.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        sys.exit(ExitCode.OK)


def _interrupted(signum: int, frame: FrameType | None) -> NoReturn:
    sys.stderr.write("interrupted\n")
    sys.stderr.flush()
    # SystemExit, not KeyboardInterrupt: nothing on the way (typer turns a KeyboardInterrupt
    # into a silent exit) mistakes it for an interrupt it handles.
    raise SystemExit(ExitCode.INTERRUPTED)
