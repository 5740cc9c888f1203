"""``python -m chaos.recheck DIR``: the checker again, on a run's saved history and its
processes' logs (after a change to the checker, or to read a run's verdict again, with other
options); rewrites ``verdict.json`` and exits as the run would have."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from chaos.checker import CheckerOptions, check
from chaos.history import read_history
from chaos.logs import read_process_logs
from chaos.report import table, write_verdict


def checker_arguments(parser: argparse.ArgumentParser) -> None:
    """The checker's options, for this command and ``python -m chaos``."""
    parser.add_argument(
        "--fifo-grants",
        choices=["started_at", "agent_start"],
        default="started_at",
        help="FIFO's grant times: each run's status started_at (the coordinator's grant), or "
        "the old approximation from each run's first agent_start",
    )
    parser.add_argument(
        "--excuse-one-worker-503",
        action="store_true",
        help="excuse a 503 while only one worker was down too (not a promise of the README)",
    )


def checker_options(args: argparse.Namespace) -> CheckerOptions:
    return CheckerOptions(
        fifo_grants=args.fifo_grants, excuse_one_worker_503=args.excuse_one_worker_503
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m chaos.recheck", description=__doc__)
    parser.add_argument("directory", type=Path, help="the run's directory")
    checker_arguments(parser)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    history = read_history(args.directory / "history.json")
    lines = read_process_logs(history.processes, args.directory)
    verdict = check(history, lines, checker_options(args))
    write_verdict(verdict, history, args.directory / "verdict.json")
    print(table(verdict))
    return 0 if verdict.passed else 1


if __name__ == "__main__":
    sys.exit(main())
