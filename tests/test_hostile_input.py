"""Hostile and bad input against a real uvicorn process: property-based fuzzing of the whole
OpenAPI document, hand-picked cases, then property tests that send every route what JSON and
HTTP can carry and Python mishandles, byte for byte. Every answer is a declared, well-formed
response; nothing is a 5xx; every log line is JSON; the service keeps serving."""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from http.client import HTTPConnection, HTTPResponse
from pathlib import Path
from urllib.parse import quote_from_bytes, urlsplit

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st
from schemathesis.checks import positive_data_acceptance
from temporalio.client import Client

from activities.builtin_agents import builtin_agents
from agent_runner.agent_registry import AgentRegistry
from agent_runner.settings import Settings
from api.main import create_app
from devtools.processes import free_port
from tests.helpers import USER_ID, JsonLines, LoggedProcess, assert_eventually, make_settings

API_KEY = "test-key-0123456789"


def start_api(settings: Settings, log_path: Path) -> Iterator[str]:
    """An API process and a worker process beside it (starts are decided on the workers), its
    agents working for ten minutes unless cancelled."""
    worker = LoggedProcess.worker(
        settings.model_copy(update={"agent_duration_seconds": 600.0}),
        log_path.with_name(f"{log_path.stem}-worker.log"),
    )
    process = LoggedProcess.api(settings, log_path)
    url = f"http://127.0.0.1:{settings.api_port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            httpx.get(f"{url}/healthz", timeout=1.0)
            break
        except httpx.TransportError:
            assert process.process.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, "the API did not start"
            time.sleep(0.2)
    yield url
    process.stop()
    worker.kill()


@pytest.fixture(scope="module")
def api_log(tmp_path_factory: pytest.TempPathFactory) -> JsonLines:
    return JsonLines(tmp_path_factory.mktemp("fuzz") / "api.log")


@pytest.fixture(scope="module")
def api_url(
    temporal_address: str, api_log: JsonLines, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A real API process, and a real worker whose agents work for an hour, so runs stay open
    and queues answer."""
    settings = make_settings(
        temporal_address,
        task_queue=f"fuzz-{uuid.uuid4()}",
        api_port=free_port(),
        agent_duration_seconds=3600,
    )
    worker = LoggedProcess.worker(settings, tmp_path_factory.mktemp("fuzz-worker") / "worker.log")
    try:
        yield from start_api(settings, api_log.path)
    finally:
        worker.stop()


def test_openapi_fuzzing_finds_no_server_error_and_no_schema_violation(api_url: str) -> None:
    # schemathesis' own pytest plugin does not run under pytest 9 yet; drive hypothesis directly.
    schema = schemathesis.openapi.from_url(f"{api_url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 8

    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(
            max_examples=25,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
        )
        def fuzz(case: schemathesis.Case) -> None:
            # page_token is opaque: any string fits the schema, only tokens this API issued are
            # valid, and a forged one is a clear 400, which this one check would count against.
            # So is a scope (the queue's, the limits' and a pause's): one schema for every
            # deployment, and only a scope of this one's kind (AGENT_SCOPE) names a scope; any
            # other text is a clear 422.
            opaque = ("/agents/runs", "/agents/queue", "/agents/limits/{scope}")
            opaque += ("/agents/scopes/{scope}/pause", "/agents/scopes/{scope}/resume")
            excluded = [positive_data_acceptance] if case.path in opaque else []
            # A key used again with another body is a clear 422 by design (tested on its own);
            # here each generated request gets a key of its own.
            headers = case.headers or {}
            for name in [name for name in headers if name.lower() == "idempotency-key"]:
                headers[name] = f"fuzz-{uuid.uuid4()}"
            case.call_and_validate(excluded_checks=excluded)

        fuzz()


@pytest.fixture
def http(api_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=api_url, timeout=15.0) as client:
        yield client


def assert_clear_4xx(response: httpx.Response, *codes: int) -> None:
    assert response.status_code in codes, (response.status_code, response.text)
    body = response.json()
    assert "detail" in body
    assert "Traceback" not in response.text
    assert "temporalio" not in response.text


@pytest.mark.parametrize(
    ("content", "content_type", "codes"),
    [
        (b"not json", "application/json", (422,)),
        (
            b'{"agent_type": "policy-checker", "user_id": "' + USER_ID.encode() + b'"}',
            "text/plain",
            (415,),
        ),
        (b"[" * 5000 + b"]" * 5000, "application/json", (422,)),
        (
            b'{"agent_type": "policy-checker\\u0000\\u202e", "user_id": "'
            + USER_ID.encode()
            + b'"}',
            "application/json",
            (400,),
        ),
        ('{"agent_type": "政策", "user_id": "✓"}'.encode(), "application/json", (422,)),
        (
            b'{"agent_type": "Policy-Checker", "user_id": "' + USER_ID.encode() + b'"}',
            "application/json",
            (400,),
        ),
        (b"\xff\xfe\x00garbage", "application/json", (422,)),
        (b"\x80 not UTF-8", "application/json", (422,)),
        (b"", "application/json", (422,)),
    ],
)
def test_bad_bodies_get_a_clear_4xx(
    http: httpx.Client, content: bytes, content_type: str, codes: tuple[int, ...]
) -> None:
    response = http.post("/agents/run", content=content, headers={"content-type": content_type})
    assert_clear_4xx(response, *codes)


def test_a_body_of_several_megabytes_is_413(http: httpx.Client) -> None:
    response = http.post(
        "/agents/run",
        content=b'{"agent_type": "' + b"x" * (5 * 1024 * 1024) + b'"}',
        headers={"content-type": "application/json"},
    )
    assert_clear_4xx(response, 413)


def test_a_streamed_body_over_the_limit_is_413(http: httpx.Client) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(100):
            yield b" " * 4096

    response = http.post(
        "/agents/run", content=chunks(), headers={"content-type": "application/json"}
    )
    assert_clear_4xx(response, 413)


FIVE_MB_BODY = b'{"agent_type": "' + b"x" * (5 * 1024 * 1024) + b'"}'


def test_a_413_is_readable_by_urllib(api_url: str) -> None:
    """urllib sends the whole body before it reads (no Expect: 100-continue) and always says
    Connection: close."""
    request = urllib.request.Request(  # noqa: S310 (our own local URL)
        f"{api_url}/agents/run", data=FIVE_MB_BODY, headers={"content-type": "application/json"}
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=30)  # noqa: S310 (our own local URL)

    assert refused.value.code == 413
    assert "Request body too large" in json.loads(refused.value.read())["detail"]


@pytest.mark.parametrize("connection", ["close", "keep-alive"])
def test_a_413_is_readable_by_http_client(api_url: str, connection: str) -> None:
    split = urlsplit(api_url)
    client = HTTPConnection(split.hostname or "", split.port, timeout=30)
    try:
        client.request(
            "POST",
            "/agents/run",
            body=FIVE_MB_BODY,
            headers={"content-type": "application/json", "Connection": connection},
        )
        response = client.getresponse()
        assert response.status == 413
        assert "Request body too large" in json.loads(response.read())["detail"]
        assert response.getheader("connection") == "close"
    finally:
        client.close()


def test_a_413_with_expect_100_continue_is_answered_before_the_body(api_url: str) -> None:
    """A client that asks first (curl does, for large bodies) is refused without sending it."""
    split = urlsplit(api_url)
    with socket.create_connection((split.hostname or "", split.port or 80), timeout=30) as sock:
        sock.sendall(
            b"POST /agents/run HTTP/1.1\r\nHost: api\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\nExpect: 100-continue\r\n\r\n" % len(FIVE_MB_BODY)
        )
        answer = HTTPResponse(sock)
        answer.begin()
        assert answer.status == 413
        assert "Request body too large" in json.loads(answer.read())["detail"]


def test_extra_fields_are_refused_by_name(http: httpx.Client) -> None:
    response = http.post(
        "/agents/run",
        json={"agent_type": "nope", "user_id": USER_ID, "admin": True, "__proto__": {}},
    )
    assert_clear_4xx(response, 422)
    assert [problem["loc"] for problem in response.json()["detail"]] == [
        ["body", "admin"],
        ["body", "__proto__"],
    ]


@pytest.mark.parametrize(
    "path",
    [
        "/agents/status/" + "a" * 5000,
        "/agents/status/..%2F..%2Fetc%2Fpasswd",
        "/agents/status/%E2%80%AE%00",
        "/agents/status/01a21269-664b-7e42-949e-644fecafa2cb",
        "/agents/runs/" + "b" * 3000 + "/cancel",
    ],
)
def test_garbage_run_ids_are_404(http: httpx.Client, path: str) -> None:
    response = http.request("POST" if path.endswith("/cancel") else "GET", path)
    assert_clear_4xx(response, 404)


def test_a_run_id_of_another_workflow_is_404(
    http: httpx.Client, temporal_address: str, tmp_path: Path
) -> None:
    # A run of another workflow id (another deployment, or any other workflow).
    other = make_settings(
        temporal_address, task_queue=f"fuzz-other-{uuid.uuid4()}", api_port=free_port()
    )
    for other_url in start_api(other, tmp_path / "other.log"):
        started = httpx.post(
            f"{other_url}/agents/run", json={"agent_type": "policy-checker", "user_id": USER_ID}
        )
        assert started.status_code == 202
        response = http.get(f"/agents/status/{started.json()['run_id']}")
        assert_clear_4xx(response, 404)


def test_the_service_keeps_serving_after_all_that(http: httpx.Client) -> None:
    assert http.get("/healthz").json() == {"status": "ok"}
    assert http.get("/readyz").status_code == 200
    assert http.get("/agents/runs").status_code == 200


# --- API keys -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def secured_log(tmp_path_factory: pytest.TempPathFactory) -> JsonLines:
    return JsonLines(tmp_path_factory.mktemp("secured-log") / "api.log")


@pytest.fixture(scope="module")
def secured_url(
    temporal_address: str, tmp_path_factory: pytest.TempPathFactory, secured_log: JsonLines
) -> Iterator[str]:
    directory = tmp_path_factory.mktemp("secured")
    keys_file = directory / "keys"
    keys_file.write_text("file-key-abcdef\n\n")
    settings = make_settings(
        temporal_address,
        task_queue=f"secured-{uuid.uuid4()}",
        api_port=free_port(),
        api_keys=f"{API_KEY}, other-key",
        api_keys_file=keys_file,
    )
    log_path = secured_log.path
    yield from start_api(settings, log_path)
    assert API_KEY not in log_path.read_text(), "API keys must never be logged"
    assert "file-key-abcdef" not in log_path.read_text()


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/agents/status/x"),
        ("GET", "/agents/current"),
        ("GET", "/agents/runs"),
        ("POST", "/agents/run"),
        ("POST", "/agents/runs/x/cancel"),
        ("GET", "/agents/limits"),
        ("PUT", "/agents/limits"),
    ],
)
def test_agents_endpoints_need_a_valid_key(secured_url: str, method: str, path: str) -> None:
    body = {"agent_type": "policy-checker", "user_id": USER_ID}
    missing = httpx.request(method, secured_url + path, json=body)
    wrong = httpx.request(
        method, secured_url + path, json=body, headers={"Authorization": "Bearer wrong"}
    )
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"] == "Bearer"
    assert wrong.status_code == 403
    assert wrong.json() == {"detail": "Invalid API key"}


def test_valid_keys_from_the_list_and_the_file_are_accepted(secured_url: str) -> None:
    for key in (API_KEY, "other-key", "file-key-abcdef"):
        response = httpx.get(
            f"{secured_url}/agents/runs", headers={"Authorization": f"Bearer {key}"}
        )
        assert response.status_code == 200, response.text


def test_probes_and_metrics_stay_open_by_default(secured_url: str) -> None:
    assert httpx.get(f"{secured_url}/healthz").status_code == 200
    assert httpx.head(f"{secured_url}/healthz").status_code == 200
    assert httpx.get(f"{secured_url}/readyz").status_code == 200
    assert httpx.get(f"{secured_url}/metrics").status_code == 200


@pytest.mark.parametrize("path", ["/openapi.json", "/docs", "/redoc"])
def test_the_docs_need_a_key_like_the_api(secured_url: str, path: str) -> None:
    missing = httpx.get(secured_url + path)
    wrong = httpx.get(secured_url + path, headers={"Authorization": "Bearer wrong"})
    valid = httpx.get(secured_url + path, headers={"Authorization": f"Bearer {API_KEY}"})

    assert missing.status_code == 401
    assert wrong.status_code == 403
    assert valid.status_code == 200
    if path == "/openapi.json":
        assert "HTTPBearer" in valid.json()["components"]["securitySchemes"]


async def test_a_key_in_the_query_string_is_never_logged(
    secured_url: str, secured_log: JsonLines
) -> None:
    auth = {"Authorization": f"Bearer {API_KEY}"}
    marker = f"marker-{uuid.uuid4()}"
    async with httpx.AsyncClient(base_url=secured_url, headers=auth) as http:
        for query in (f"api_key={API_KEY}&limit=5", f"limit=5&{API_KEY}", f"token={API_KEY}"):
            response = await http.get(f"/agents/runs?{query}&page_size={marker}")
            assert response.status_code == 200

    async def access_lines() -> list[str]:
        lines = [line["event"] for line in secured_log.read() if "/agents/runs?" in line["event"]]
        assert len(lines) == 3, lines
        assert len([line for line in lines if "limit=5" in line]) == 2, lines
        return lines

    lines = await assert_eventually(access_lines)
    assert API_KEY not in secured_log.path.read_text()
    assert marker not in secured_log.path.read_text(), "undeclared parameters are redacted"
    assert all("GET /agents/runs?" in line for line in lines)


async def test_cached_finished_statuses_still_need_a_valid_key(
    secured_url: str, temporal_client: Client
) -> None:
    auth = {"Authorization": f"Bearer {API_KEY}"}
    async with httpx.AsyncClient(base_url=secured_url) as http:
        started = await http.post(
            "/agents/run", json={"agent_type": "policy-checker", "user_id": USER_ID}, headers=auth
        )
        assert started.status_code == 202
        run_id = started.json()["run_id"]
        cancelled = await http.post(f"/agents/runs/{run_id}/cancel", headers=auth)
        # 202 if its agent was still stopping after the API's few seconds (a starved machine).
        assert cancelled.status_code in (200, 202), cancelled.text
        url = f"/agents/status/{run_id}"

        async def ended() -> None:
            response = await http.get(f"{url}?wait=5", headers=auth)
            assert response.json()["state"] == "ERROR", response.text

        await assert_eventually(ended, timeout=60)

        first = await http.get(url, headers=auth)  # reads Temporal, fills the cache
        second = await http.get(url, headers=auth)  # answered from the cache
        missing = await http.get(url)
        wrong = await http.get(url, headers={"Authorization": "Bearer wrong"})
        basic = await http.get(url, headers={"Authorization": f"Basic {API_KEY}"})

    assert first.status_code == second.status_code == 200
    assert first.json() == second.json()
    assert second.json()["state"] == "ERROR"
    assert missing.status_code == 401
    assert wrong.status_code == 403
    assert basic.status_code in (401, 403)


# --- Every input a clear answer: property tests over raw HTTP -----------------------------------
#
# schemathesis generates what the OpenAPI document describes. These generate what JSON and HTTP
# can carry and Python mishandles (lone surrogates, non-finite and huge numbers, deep nesting,
# bytes that are not UTF-8) at every route, in the path, the query, the headers and the body,
# sent byte for byte with http.client.

ROUTES = [
    ("POST", "/agents/run"),
    ("GET", "/agents/status/{run_id}"),
    ("GET", "/agents/current"),
    ("GET", "/agents/runs"),
    ("POST", "/agents/runs/{run_id}/cancel"),
    ("GET", "/agents/queue"),
    ("GET", "/agents/types"),
    ("GET", "/agents/limits"),
    ("PUT", "/agents/limits"),
    ("GET", "/agents/limits/{scope}"),
    ("PUT", "/agents/limits/{scope}"),
    ("DELETE", "/agents/limits/{scope}"),
    ("POST", "/agents/scopes/{scope}/pause"),
    ("POST", "/agents/scopes/{scope}/resume"),
    ("GET", "/agents/runs/{run_id}/events"),
    ("GET", "/healthz"),
    ("HEAD", "/healthz"),
    ("GET", "/readyz"),
    ("HEAD", "/readyz"),
    ("GET", "/metrics"),
    ("GET", "/openapi.json"),
    ("GET", "/docs"),
    ("GET", "/redoc"),
    ("GET", "/{run_id}"),  # no such route
]
QUERY_NAMES = ["wait", "limit", "agent_type", "user_id", "state", "page_token", "api_key"]
ODD_TEXT = [
    *("NaN", "nan", "Infinity", "-Infinity", "inf", "1e309", "-1e309", "1e-400", "-0", "0x10"),
    *("9" * 5000, "-" + "9" * 4400, "", " ", "null", "true", "[]", "{}", "\x00", "\u202e"),
    *("\U0001f642", "\ud83d", "\udfff\ud83d", "../../etc/passwd", "%", "'", '"', "\\", "a" * 5000),
]
# Lone surrogates included: st.text() leaves them out unless asked.
any_text = st.text(st.characters(exclude_categories=()), max_size=30)


def one_of_list(values: list[str]) -> st.SearchStrategy[str]:
    """``sampled_from`` without a repr of every (long) value in hypothesis' reports."""
    return st.integers(0, len(values) - 1).map(values.__getitem__)


odd_text = one_of_list(ODD_TEXT) | any_text
# Bytes: UTF-8 with surrogates passed through (what a CESU-8 client sends), or any bytes at all.
odd_bytes = odd_text.map(lambda text: text.encode("utf-8", "surrogatepass")) | st.binary(
    max_size=30
)
# Any header value HTTP allows: visible ASCII, space, tab and any byte over 0x7f. (Control
# characters are not HTTP: uvicorn's parser refuses them before the app sees the request.)
HEADER_BYTES = bytes([9, *range(32, 127), *range(128, 256)])
header_values = odd_bytes.map(lambda raw: bytes(byte for byte in raw if byte in HEADER_BYTES))


class Raw(str):
    """A JSON token written as is: the numbers json.dumps never writes."""


NUMBER_TOKENS = ["1e309", "-1e309", "1e-400", "-0", "1" + "0" * 5000, "-" + "9" * 4400, "9" * 4000]
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()  # NaN and +-Infinity included, written as JSON's NaN / Infinity tokens
    | any_text
    | one_of_list(NUMBER_TOKENS).map(Raw)
    | st.sampled_from(["policy-checker", "document-extractor", USER_ID])
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(any_text, inner, max_size=3),
    max_leaves=8,
)
run_bodies = st.fixed_dictionaries(
    {}, optional={"agent_type": json_values, "user_id": json_values, "extra": json_values}
)


def to_json(value: object, *, ascii_only: bool = True) -> str:
    """JSON text that can hold NaN, Infinity, huge numbers and lone surrogates."""
    if isinstance(value, Raw):
        return str(value)
    if isinstance(value, list):
        return "[" + ",".join(to_json(item, ascii_only=ascii_only) for item in value) + "]"
    if isinstance(value, dict):
        items = (
            json.dumps(key, ensure_ascii=ascii_only) + ":" + to_json(item, ascii_only=ascii_only)
            for key, item in value.items()
        )
        return "{" + ",".join(items) + "}"
    return json.dumps(value, ensure_ascii=ascii_only)


def nested(depth: int) -> st.SearchStrategy[bytes]:
    return st.sampled_from(
        [b"[" * depth + b"]" * depth, b'{"a":' * depth + b"1" + b"}" * depth, b"[" * depth]
    )


bodies = st.one_of(
    (run_bodies | json_values).map(lambda value: to_json(value).encode()),
    # Raw surrogate bytes instead of their \u escapes: not UTF-8.
    run_bodies.map(lambda value: to_json(value, ascii_only=False).encode("utf-8", "surrogatepass")),
    run_bodies.map(lambda value: to_json(value).encode("utf-16")),
    st.integers(1, 6000).flatmap(nested),
    st.binary(max_size=200),
    st.integers(1, 200_000).map(lambda size: b" " * size),  # over API_MAX_BODY_BYTES, too
)
content_types = (
    st.sampled_from(
        [
            b"application/json",
            b"application/json; charset=utf-16",
            b"application/merge-patch+json",
            b"text/plain",
            b"application/x-www-form-urlencoded",
            b"multipart/form-data; boundary=x",
            b"application/json; charset=\xff",
        ]
    )
    | header_values
)
# Content-Length values a parser must refuse (sent with no body, so nothing waits for one).
bad_lengths = [b"abc", b"-1", b"1e309", b"NaN", b"", b"1.5", b"0x10", b"+5", b"9" * 26, b"5, 5"]
headers = st.fixed_dictionaries(
    {},
    optional={
        "Idempotency-Key": header_values | st.sampled_from([b"order-1", b"k" * 129]),
        "Authorization": header_values | header_values.map(lambda value: b"Bearer " + value),
        "Content-Type": content_types,
        "Content-Length": st.sampled_from(bad_lengths),
        "Accept": header_values,
        "Expect": st.just(b"100-continue") | header_values,
        "Cookie": header_values,
    },
)
queries = st.lists(
    st.tuples(st.sampled_from(QUERY_NAMES).map(str.encode) | odd_bytes, odd_bytes), max_size=4
).map(
    lambda pairs: "&".join(
        f"{quote_from_bytes(name, safe='')}={quote_from_bytes(value, safe='')}"
        for name, value in pairs
    )
)


@dataclass
class Answer:
    status: int
    content_type: str
    body: bytes


def send(
    url: str,
    method: str,
    target: str,
    headers: dict[str, bytes],
    body: bytes | None,
    *,
    chunked: bool = False,
) -> Answer:
    """One request, byte for byte as given (framing headers included), on its own connection;
    with ``chunked``, the body is sent in chunked transfer encoding."""
    split = urlsplit(url)
    connection = HTTPConnection(split.hostname or "", split.port, timeout=30)
    try:
        connection.putrequest(method, target, skip_accept_encoding=True)
        for name, value in headers.items():
            connection.putheader(name, value)
        connection.endheaders(body, encode_chunked=chunked)
        response = connection.getresponse()
        return Answer(response.status, response.getheader("content-type") or "", response.read())
    finally:
        connection.close()


# What uvicorn itself answers to a request its HTTP parser refuses (before the app sees it).
UVICORN_REFUSAL = (400, b"Invalid HTTP request received.")


def assert_clear_answer(answer: Answer, method: str) -> None:
    assert answer.status < 500, answer
    assert b"Traceback" not in answer.body, answer
    if answer.status < 400 or method == "HEAD":
        return
    if answer.content_type == "application/json":
        assert "detail" in json.loads(answer.body), answer
    else:
        assert (answer.status, answer.body) == UVICORN_REFUSAL, answer


def test_the_property_tests_cover_every_route() -> None:
    document = create_app(Settings(_env_file=None), AgentRegistry.of(builtin_agents())).openapi()  # type: ignore[call-arg]
    documented = {
        (method.upper(), path)
        for path, operations in document["paths"].items()
        for method in operations
    }
    undocumented = {("GET", "/openapi.json"), ("GET", "/docs"), ("GET", "/redoc")}
    assert documented | undocumented <= set(ROUTES)


@pytest.mark.parametrize(("method", "template"), ROUTES)
@given(
    path_value=odd_bytes,
    query=queries,
    header_map=headers,
    body=bodies,
    chunked=st.booleans(),
)
@settings(max_examples=100, deadline=None, database=None, suppress_health_check=list(HealthCheck))
def test_no_input_anywhere_gets_a_server_error(
    api_url: str,
    method: str,
    template: str,
    path_value: bytes,
    query: str,
    header_map: dict[str, bytes],
    body: bytes,
    chunked: bool,
) -> None:
    value = quote_from_bytes(path_value, safe="")
    path = template.format(run_id=value, scope=value)
    target = f"{path}?{query}" if query else path
    header_map = dict(header_map)
    if "Content-Length" in header_map or method == "HEAD":
        body, chunked = b"", False  # refused for its length, or a HEAD: nothing to send
    elif chunked and body:
        header_map["Transfer-Encoding"] = b"chunked"
    else:
        chunked = False
        header_map["Content-Length"] = str(len(body)).encode()
    note(f"{method} {target[:300]} {header_map!r:.300} {body[:300]!r} chunked={chunked}")
    answer = send(api_url, method, target, header_map, body or None, chunked=chunked)
    assert_clear_answer(answer, method)


def test_every_api_log_line_is_json_and_no_request_failed(api_url: str, api_log: JsonLines) -> None:
    assert httpx.get(f"{api_url}/healthz").status_code == 200
    assert api_log.not_json() == []
    assert api_log.events("request_failed") == []
