"""Placeholder until the command line lands."""


def main() -> None:
    raise SystemExit("agent-runner: not built yet")
