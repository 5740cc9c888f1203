"""``python -m chaos --minutes M --seed S``: one randomized fault run against a real stack;
exit code 0 when every property held, 1 when one did not."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from agent_runner.ids import ScopeKind
from chaos.options import ChaosOptions
from chaos.recheck import checker_arguments, checker_options
from chaos.run import run_chaos


def parse(argv: list[str]) -> tuple[argparse.Namespace, ChaosOptions]:
    parser = argparse.ArgumentParser(prog="python -m chaos", description=__doc__)
    parser.add_argument("--minutes", type=float, required=True, help="how long faults go on")
    parser.add_argument("--seed", type=int, required=True, help="the seed of every choice")
    parser.add_argument("--slots", type=int, default=1, help="AGENT_SLOTS")
    parser.add_argument(
        "--scope", choices=[kind.value for kind in ScopeKind], default="global", help="AGENT_SCOPE"
    )
    parser.add_argument("--users", type=int, default=3, help="distinct user ids the clients use")
    parser.add_argument("--clients", type=int, default=4, help="concurrent clients")
    parser.add_argument(
        "--kinds", default="", help='fault kinds, comma-separated (default: all; "none": no faults)'
    )
    parser.add_argument(
        "--dir", type=Path, default=None, help="the run's directory (.data/chaos/<seed>-<time>)"
    )
    checker_arguments(parser)
    args = parser.parse_args(argv)
    return args, ChaosOptions(
        minutes=args.minutes,
        seed=args.seed,
        slots=args.slots,
        scope=ScopeKind(args.scope),
        users=args.users,
        clients=args.clients,
        directory=args.dir,
        kinds=tuple(kind for kind in args.kinds.split(",") if kind),
    )


def main(argv: list[str] | None = None) -> int:
    args, options = parse(sys.argv[1:] if argv is None else argv)
    verdict, directory = asyncio.run(run_chaos(options, checker_options(args)))
    print(f"history and verdict: {directory}")
    return 0 if verdict.passed else 1


if __name__ == "__main__":
    sys.exit(main())
