"""Which agents work on a worker right now, read from its log as it grows (the nemesis strikes a
worker while an agent works on it). Reads only what was appended since the last look, so a
long run's log is never parsed twice."""

from __future__ import annotations

from pathlib import Path

from chaos.logs import END_EVENTS, START_EVENT, parse_line


class WorkingAgents:
    def __init__(self, process: str, path: Path) -> None:
        self.process = process
        self.path = path
        self._offset = 0
        self._working: dict[tuple[str, int | None], None] = {}

    def now(self) -> list[tuple[str, int | None]]:
        """The (run id, attempt) of agents that started and logged no end yet."""
        if self.path.exists():
            with self.path.open("rb") as log:
                log.seek(self._offset)
                appended = log.read()
            complete = appended[: appended.rfind(b"\n") + 1]
            self._offset += len(complete)
            for text in complete.decode(errors="replace").splitlines():
                line = parse_line(self.process, text)
                if line is None:
                    continue
                if line.event == START_EVENT:
                    self._working[(line.run_id, line.attempt)] = None
                elif line.event in END_EVENTS:
                    self._working.pop((line.run_id, line.attempt), None)
        return list(self._working)
