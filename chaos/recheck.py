"""``python -m chaos.recheck DIR``: the checker again, on a run's saved history and its
processes' logs (after a change to the checker, or to read a run's verdict again); rewrites
``verdict.json`` and exits as the run would have."""

from __future__ import annotations

import sys
from pathlib import Path

from chaos.checker import check
from chaos.history import read_history
from chaos.logs import read_process_logs
from chaos.report import table, write_verdict


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m chaos.recheck <run directory>", file=sys.stderr)
        return 2
    directory = Path(args[0])
    history = read_history(directory / "history.json")
    verdict = check(history, read_process_logs(history.processes, directory))
    write_verdict(verdict, history, directory / "verdict.json")
    print(table(verdict))
    return 0 if verdict.passed else 1


if __name__ == "__main__":
    sys.exit(main())
