"""Certificate authorities and the certificates they issue, made with the ``openssl`` CLI (part
of every Debian machine), so the tests need no Python crypto package."""

from __future__ import annotations

import secrets
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

# EC keys: generated in milliseconds, and accepted by rustls (the SDK's TLS) and OpenSSL (nginx).
KEY_OPTIONS = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
# The names a server certificate is valid for: the tests dial 127.0.0.1.
SERVER_NAMES = "DNS:localhost,IP:127.0.0.1"


def openssl(*args: str | Path) -> None:
    result = subprocess.run(["openssl", *map(str, args)], capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"openssl {args[0]} failed: {result.stderr.strip()}")


@dataclass(frozen=True)
class KeyPair:
    cert: Path
    key: Path


class CertificateAuthority:
    """A self-signed CA in ``directory``, issuing short-lived server and client certificates."""

    def __init__(self, directory: Path, name: str) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.name = name
        self.cert = directory / f"{name}.pem"
        self.key = directory / f"{name}.key"
        openssl(
            "req", "-x509", *KEY_OPTIONS,
            "-keyout", self.key, "-out", self.cert, "-days", "2",
            "-subj", f"/CN=agent-runner tests {name}",
            "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        )  # fmt: skip

    def issue(self, name: str, usage: Literal["serverAuth", "clientAuth"]) -> KeyPair:
        pair = KeyPair(cert=self.directory / f"{name}.pem", key=self.directory / f"{name}.key")
        request = self.directory / f"{name}.csr"
        extensions = self.directory / f"{name}.ext"
        # rustls checks what browsers check: a leaf (not a CA), the usage, and the server's names.
        lines = [
            "basicConstraints=critical,CA:FALSE",
            "keyUsage=critical,digitalSignature",
            f"extendedKeyUsage={usage}",
            "subjectKeyIdentifier=hash",
            "authorityKeyIdentifier=keyid",
        ]
        if usage == "serverAuth":
            lines.append(f"subjectAltName={SERVER_NAMES}")
        extensions.write_text("\n".join(lines) + "\n")
        openssl(
            "req", "-new", *KEY_OPTIONS,
            "-keyout", pair.key, "-out", request, "-subj", f"/CN=agent-runner tests {name}",
        )  # fmt: skip
        openssl(
            "x509", "-req", "-in", request, "-CA", self.cert, "-CAkey", self.key,
            "-set_serial", str(secrets.randbits(63)),
            "-days", "1", "-extfile", extensions, "-out", pair.cert,
        )  # fmt: skip
        return pair
