"""Debian's nginx as a child process of the tests (never a system service), its whole state in
one directory: config, pid file, logs and temp paths."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from devtools.processes import free_port, stop_process
from tests.tls.certs import CertificateAuthority, KeyPair

NGINX = Path("/usr/sbin/nginx")
TEMPLATE = Path(__file__).with_name("nginx.conf")


def nginx_binary() -> Path:
    """Missing nginx is an error, not a skip: CI must run the TLS tests."""
    if NGINX.exists():
        return NGINX
    found = shutil.which("nginx")
    if found is None:
        raise FileNotFoundError(
            f"nginx is not installed ({NGINX} is missing); `make tools` installs Debian's package"
        )
    return Path(found)


def render(template: str, values: dict[str, str]) -> str:
    for name, value in values.items():
        template = template.replace(f"{{{{ {name} }}}}", value)
    assert "{{" not in template, f"a placeholder is left unfilled: {template}"
    return template


@dataclass(frozen=True)
class Endpoints:
    """host:port of each way in; all three lead to the same Temporal server."""

    tls: str
    mtls: str
    api_key: str


class Nginx:
    """nginx terminating TLS with ``server`` (issued by ``ca``) and ``grpc_pass``-ing to
    ``temporal_address``; the API key endpoint wants ``authorization: Bearer <api_key>``."""

    def __init__(
        self,
        directory: Path,
        *,
        temporal_address: str,
        ca: CertificateAuthority,
        server: KeyPair,
        api_key: str,
    ) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.ports = {
            "tls_port": free_port(),
            "mtls_port": free_port(),
            "api_key_port": free_port(),
        }
        self.endpoints = Endpoints(
            *(f"127.0.0.1:{self.ports[name]}" for name in ("tls_port", "mtls_port", "api_key_port"))
        )
        self.config = directory / "nginx.conf"
        values = {
            "dir": str(directory),
            "temporal": temporal_address,
            "ca_cert": str(ca.cert),
            "server_cert": str(server.cert),
            "server_key": str(server.key),
            "api_key": api_key,
            **{name: str(port) for name, port in self.ports.items()},
        }
        self.config.write_text(render(TEMPLATE.read_text(), values))
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def error_log(self) -> Path:
        return self.directory / "error.log"

    def start(self, timeout: float = 30.0) -> None:
        """Start, and return once every endpoint accepts connections; raise, naming nginx's own
        complaint, if it exits or does not listen in time."""
        with (self.directory / "nginx.out").open("ab") as out:
            self.process = subprocess.Popen(
                # -e: the error log before the config is read; the default is under /var/log.
                [nginx_binary(), "-p", self.directory, "-c", self.config, "-e", self.error_log],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        waiting = set(self.ports.values())
        while waiting:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"nginx exited with code {self.process.returncode}: {self.log()}"
                )
            for port in list(waiting):
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=1):
                        waiting.discard(port)
                except OSError:
                    pass
            if waiting and time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(
                    f"nginx did not listen on {sorted(waiting)} in time: {self.log()}"
                )
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process, timeout=10)

    def log(self) -> str:
        """nginx's own output and error log, for failure messages."""
        paths = (self.directory / "nginx.out", self.error_log)
        parts = [path.read_text() for path in paths if path.exists()]
        return "\n".join(part for part in parts if part.strip()) or "(nothing logged)"
