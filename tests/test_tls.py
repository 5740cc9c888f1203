"""The production connection proven, not just configured: ``TEMPORAL_TLS``, the mTLS paths and
``TEMPORAL_API_KEY`` against a real TLS endpoint (Debian's nginx with a CA made here,
``grpc_pass`` to the session's dev server). Configured right, the API and a worker work through
it; configured wrong, the API starts at once and names the cause in ``/readyz`` and its log."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from devtools.processes import free_port, wait_until_serving
from tests.helpers import (
    JsonLines,
    LoggedProcess,
    app_client,
    assert_eventually,
    make_settings,
    start_run,
    wait_for_state,
)
from tests.tls.certs import CertificateAuthority, KeyPair
from tests.tls.nginx import Endpoints, Nginx

API_KEY = "tls-test-key-0123456789"


@dataclass(frozen=True)
class Pki:
    ca: CertificateAuthority
    # Another CA: nginx neither serves nor trusts anything it signs.
    rogue_ca: CertificateAuthority
    server: KeyPair
    client: KeyPair
    rogue_client: KeyPair


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    directory = tmp_path_factory.mktemp("pki")
    ca = CertificateAuthority(directory, "ca")
    rogue_ca = CertificateAuthority(directory, "rogue-ca")
    return Pki(
        ca=ca,
        rogue_ca=rogue_ca,
        server=ca.issue("server", "serverAuth"),
        client=ca.issue("client", "clientAuth"),
        rogue_client=rogue_ca.issue("rogue-client", "clientAuth"),
    )


@pytest.fixture(scope="module")
def nginx(
    temporal_address: str, pki: Pki, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Endpoints]:
    proxy = Nginx(
        tmp_path_factory.mktemp("nginx"),
        temporal_address=temporal_address,
        ca=pki.ca,
        server=pki.server,
        api_key=API_KEY,
    )
    proxy.start()
    yield proxy.endpoints
    proxy.stop()


Connection = Callable[[Endpoints, Pki], dict[str, Any]]


def server_tls(nginx: Endpoints, pki: Pki) -> dict[str, Any]:
    return {
        "temporal_address": nginx.tls,
        "temporal_tls": True,
        "temporal_tls_ca_path": pki.ca.cert,
    }


def mtls(nginx: Endpoints, pki: Pki) -> dict[str, Any]:
    return {
        "temporal_address": nginx.mtls,
        "temporal_tls_ca_path": pki.ca.cert,
        "temporal_tls_cert_path": pki.client.cert,
        "temporal_tls_key_path": pki.client.key,
    }


def api_key(nginx: Endpoints, pki: Pki) -> dict[str, Any]:
    # No TEMPORAL_TLS: an API key implies it (api_key_alone below shows it). The CA path is
    # there because ours is private.
    return {
        "temporal_address": nginx.api_key,
        "temporal_tls_ca_path": pki.ca.cert,
        "temporal_api_key": API_KEY,
    }


@pytest.mark.parametrize(
    "connection",
    [
        pytest.param(server_tls, id="server-tls"),
        pytest.param(mtls, id="mtls"),
        pytest.param(api_key, id="api-key"),
    ],
)
async def test_api_and_worker_work_through_the_tls_endpoint(
    connection: Connection, nginx: Endpoints, pki: Pki, tmp_path: Path
) -> None:
    # A task queue of its own: only this worker, which reaches Temporal through nginx, serves it.
    settings = make_settings(**connection(nginx, pki), task_queue=f"tls-{uuid.uuid4()}")
    worker_log = JsonLines(tmp_path / "worker.log")
    worker = LoggedProcess.worker(settings, worker_log.path)
    try:
        async for api in app_client(settings):
            ready = await api.get("/readyz")
            assert ready.status_code == 200, ready.text

            run_id = await start_run(api)

            done = await wait_for_state(api, run_id, "DONE")
            assert done["result"] in ("approved", "rejected")
    finally:
        worker.stop()
    assert worker_log.events("worker_start"), worker_log.read()


def wrong_ca(nginx: Endpoints, pki: Pki) -> dict[str, Any]:
    return {**server_tls(nginx, pki), "temporal_tls_ca_path": pki.rogue_ca.cert}


def system_cas_only(nginx: Endpoints, pki: Pki) -> dict[str, Any]:
    """TEMPORAL_TLS alone trusts the system's CAs, which never signed a private CA's server."""
    return {"temporal_address": nginx.tls, "temporal_tls": True}


def api_key_alone(nginx: Endpoints, pki: Pki) -> dict[str, Any]:
    """Refused for the CA, so TLS was spoken: plaintext would fail the HTTP/2 preface."""
    return {"temporal_address": nginx.api_key, "temporal_api_key": API_KEY}


def no_client_certificate(nginx: Endpoints, pki: Pki) -> dict[str, Any]:
    return {"temporal_address": nginx.mtls, "temporal_tls_ca_path": pki.ca.cert}


def client_certificate_of_another_ca(nginx: Endpoints, pki: Pki) -> dict[str, Any]:
    return {
        **mtls(nginx, pki),
        "temporal_tls_cert_path": pki.rogue_client.cert,
        "temporal_tls_key_path": pki.rogue_client.key,
    }


def wrong_api_key(nginx: Endpoints, pki: Pki) -> dict[str, Any]:
    return {**api_key(nginx, pki), "temporal_api_key": "not-the-key"}


MISSING_CA = "/nonexistent/ca.pem"


def missing_ca_file(nginx: Endpoints, pki: Pki) -> dict[str, Any]:
    return {**server_tls(nginx, pki), "temporal_tls_ca_path": MISSING_CA}


UNKNOWN_CA = (
    "TLS handshake failed: the server's certificate is signed by an unknown authority "
    "(is TEMPORAL_TLS_CA_PATH its CA?) [InvalidCertificate(UnknownIssuer)]"
)


@pytest.mark.parametrize(
    ("connection", "cause"),
    [
        pytest.param(wrong_ca, UNKNOWN_CA, id="wrong-ca"),
        pytest.param(system_cas_only, UNKNOWN_CA, id="tls-without-the-private-ca"),
        pytest.param(api_key_alone, UNKNOWN_CA, id="api-key-implies-tls"),
        pytest.param(
            no_client_certificate,
            "UNAUTHENTICATED: client certificate required",
            id="no-client-certificate",
        ),
        pytest.param(
            client_certificate_of_another_ca,
            "UNAUTHENTICATED: client certificate not signed by a trusted CA",
            id="client-certificate-of-another-ca",
        ),
        pytest.param(
            wrong_api_key, "UNAUTHENTICATED: missing or wrong API key", id="wrong-api-key"
        ),
        pytest.param(
            missing_ca_file, f"No such file or directory: {MISSING_CA}", id="missing-ca-file"
        ),
    ],
)
async def test_a_misconfigured_connection_is_named_at_start_up(
    connection: Connection, cause: str, nginx: Endpoints, pki: Pki, tmp_path: Path
) -> None:
    overrides = connection(nginx, pki)
    settings = make_settings(**overrides, api_port=free_port())
    url = f"http://127.0.0.1:{settings.api_port}"
    api_log = JsonLines(tmp_path / "api.log")
    api = LoggedProcess.api(settings, api_log.path)
    try:
        # The first connect is made before the API serves: serving at all means it did not hang.
        await asyncio.to_thread(
            wait_until_serving, f"{url}/healthz", timeout=30, processes=[api.process]
        )
        async with httpx.AsyncClient(base_url=url, timeout=10) as http:
            ready = await http.get("/readyz")
            assert ready.status_code == 503
            assert ready.json() == {
                "detail": f"cannot connect to Temporal at {overrides['temporal_address']}: {cause}"
            }
            refused = await http.post(
                "/agents/run",
                json={"agent_type": "policy-checker", "user_id": str(uuid.uuid4())},
            )
            assert refused.status_code == 503, refused.text

        async def logged_and_retried() -> None:
            lines = api_log.events("temporal_unreachable")
            assert len(lines) >= 2, api_log.read()
            assert {line["error"] for line in lines} == {cause}
            assert lines[0]["level"] == "warning"
            assert lines[0]["temporal_address"] == overrides["temporal_address"]

        await assert_eventually(logged_and_retried, timeout=15)
        assert api.running()
        assert api_log.not_json() == []
    finally:
        api.stop()
