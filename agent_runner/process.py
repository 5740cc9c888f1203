"""How our long-running processes (the API, the worker) leave."""

from __future__ import annotations

import logging
import os
import sys
from typing import NoReturn


def exit_now(code: int = 0) -> NoReturn:
    """Flush the logs and leave without interpreter teardown.

    The Temporal SDK's Rust threads can outlive the event loop; CPython's finalization then
    sometimes aborts the process (SIGABRT, "PyGILState_Release: thread state ... must be
    current") after a clean shutdown. Everything worth keeping is done by the time this is
    called, so skipping the teardown gives an honest exit code instead.
    """
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
