"""Every error code the SDK maps, each made by a real server where one can
be (all but ``unavailable`` and ``internal``, which a healthy server does
not answer on demand), and raised as its own exception class."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import socket
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Optional

import httpx
import pytest

import steadfast
from conftest import Server
from steadfast import _api, _transport, errors, models
from steadfast._api import Call, RawJson

ServerFactory = Callable[..., Server]


def _raw(client: steadfast.Client, method: str, path: str, body: Optional[str] = None) -> Any:
    """A request the typed calls would never make, through the same transport."""
    return client._send(
        Call(method, path, lambda body, _headers: body, RawJson(body) if body else None)
    )


def test_every_code_of_the_api_has_its_exception() -> None:
    document = json.loads((Path(__file__).parents[3] / "docs" / "openapi.json").read_text())
    codes = set(document["components"]["schemas"]["ErrorCode"]["enum"])
    assert set(errors.BY_CODE) == codes
    assert set(models.ErrorCode.__args__) == codes  # type: ignore[attr-defined]
    for code, cls in errors.BY_CODE.items():
        assert cls.__name__ in steadfast.__all__
        assert "".join(part.title() for part in code.split("_")) == cls.__name__


def test_malformed_json_validation_failed_and_routes(client: steadfast.Client, queue: str) -> None:
    with pytest.raises(steadfast.MalformedJson) as malformed:
        _raw(client, "POST", "v1/jobs", '{"queue": ')
    assert malformed.value.status == 400
    assert malformed.value.request_id
    with pytest.raises(steadfast.ValidationFailed, match="queue") as invalid:
        client.enqueue("not a queue name!", {})
    assert invalid.value.status == 422
    with pytest.raises(steadfast.RouteNotFound):
        _raw(client, "GET", "v1/no-such-route")
    with pytest.raises(steadfast.MethodNotAllowed):
        _raw(client, "DELETE", "v1/jobs")
    with pytest.raises(steadfast.NotFound):
        client.get(str(uuid.uuid4()))


def test_unsupported_media_type(server: Server) -> None:
    answer = httpx.post(
        f"{server.url}/v1/jobs",
        content=b"{}",
        headers={"authorization": f"Bearer {server.admin_key}", "content-type": "text/plain"},
    )
    with pytest.raises(steadfast.UnsupportedMediaType):
        _transport.answer(_api.health(), answer.status_code, answer.headers, answer.content)


def test_unauthorized_and_forbidden(server: Server, queue: str) -> None:
    with server.client("sfk_not_a_key") as stranger, pytest.raises(steadfast.Unauthorized):
        stranger.get(str(uuid.uuid4()))
    with server.client(server.key("reader")) as reader:
        with pytest.raises(steadfast.Forbidden):
            reader.enqueue(queue, {})
        assert reader.list_jobs(queue=queue).jobs == []


def test_lease_lost_invalid_state_and_reused_keys(client: steadfast.Client, queue: str) -> None:
    job = client.enqueue(queue, {"n": 1}, idempotency_key=f"{queue}-key")
    with pytest.raises(steadfast.IdempotencyKeyReused):
        client.enqueue(queue, {"n": 2}, idempotency_key=f"{queue}-key")
    with pytest.raises(steadfast.InvalidState):
        client.retry(job.id)
    [leased] = client.lease([queue], worker_id="errors")
    with pytest.raises(steadfast.LeaseLost) as lost:
        client.complete(leased.id, "not-the-token")
    assert lost.value.status == 409
    assert lost.value.code == "lease_lost"


def test_singleton_running(client: steadfast.Client, queue: str) -> None:
    client.enqueue(queue, {}, singleton={"key": "only"})
    client.lease([queue], worker_id="errors")
    with pytest.raises(steadfast.SingletonRunning):
        client.enqueue(queue, {"new": True}, singleton={"key": "only", "mode": "replace"})


def test_limits(client: steadfast.Client, queue: str) -> None:
    with pytest.raises(steadfast.BatchTooLarge):
        client.enqueue_batch([{"queue": queue, "payload": i} for i in range(1001)])
    with pytest.raises(steadfast.PayloadTooLarge):
        client.enqueue(queue, "x" * (1024 * 1024 + 1))
    job = client.enqueue(queue, {})
    for i in range(100):
        client.signal(job.id, f"s{i}")
    with pytest.raises(steadfast.LimitExceeded):
        client.signal(job.id, "one-too-many")


def test_quota_exceeded(start_server: ServerFactory) -> None:
    server = start_server("--max-unfinished-jobs", "2")
    client = server.client()
    client.enqueue("q", {})
    client.enqueue("q", {})
    with pytest.raises(steadfast.QuotaExceeded) as full:
        client.enqueue("q", {})
    assert full.value.status == 429


def test_rate_limited_is_waited_out_then_raised(start_server: ServerFactory) -> None:
    server = start_server("--key-rate-limit", "1", "--key-rate-burst", "1")
    patient = server.client()
    impatient = server.client(rate_limit_retries=0)
    patient.list_jobs()  # the burst
    started = time.monotonic()
    patient.list_jobs()  # 429 with Retry-After, waited out, sent again
    assert time.monotonic() - started >= 0.5
    with pytest.raises(steadfast.RateLimited) as limited:
        impatient.list_jobs()
    assert limited.value.retry_after is not None
    assert limited.value.retry_after >= 1


def test_request_timeout(start_server: ServerFactory) -> None:
    server = start_server("--body-read-timeout-secs", "1")
    with socket.create_connection(("127.0.0.1", server.port)) as conn:
        conn.sendall(
            b"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Authorization: Bearer " + server.admin_key.encode() + b"\r\n"
            b"Content-Length: 100\r\n\r\n{"
        )
        conn.settimeout(30)
        received = b""
        while b"\r\n\r\n" not in received or not received.rstrip().endswith(b"}"):
            chunk = conn.recv(4096)
            if not chunk:
                break
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    status = int(head.split()[1])
    with pytest.raises(steadfast.RequestTimeout):
        _transport.answer(_api.health(), status, {}, body)


def _github_source(client: steadfast.Client, queue: str) -> models.Source:
    return client.create_source("github", f"{queue}-gh", queue)


def test_webhook_refusals(client: steadfast.Client, queue: str) -> None:
    github = _github_source(client, queue)
    body = '{"a": 1}'
    with pytest.raises(steadfast.SignatureInvalid):
        client._send(Call("POST", github.ingest_path.lstrip("/"), lambda b, h: b, RawJson(body)))
    secret = base64.b64encode(os.urandom(24)).decode()
    standard = client.create_source("standard", f"{queue}-std", queue, secret=f"whsec_{secret}")
    stale = str(int(time.time()) - 3600)
    signed = f"msg_1.{stale}.{body}".encode()
    signature = base64.b64encode(
        hmac.new(base64.b64decode(secret), signed, hashlib.sha256).digest()
    )
    answer = httpx.post(
        client.config.url + standard.ingest_path.lstrip("/"),
        content=body,
        headers={
            "content-type": "application/json",
            "webhook-id": "msg_1",
            "webhook-timestamp": stale,
            "webhook-signature": f"v1,{signature.decode()}",
        },
    )
    with pytest.raises(steadfast.TimestampOutOfTolerance):
        _transport.answer(_api.health(), answer.status_code, answer.headers, answer.content)


def test_storage_full(start_server: ServerFactory) -> None:
    small = os.environ.get("STEADFAST_TEST_SMALL_FS")
    if not small:
        pytest.skip("STEADFAST_TEST_SMALL_FS is not set: scripts/test.sh mounts a 6 MiB tmpfs")
    data = Path(small) / f"python-{uuid.uuid4().hex}"
    server = Server(data, ["--key-rate-limit", "1000000", "--key-rate-burst", "1000000"])
    try:
        client = server.client()
        with pytest.raises(steadfast.StorageFull) as full:  # noqa: PT012 (fill until full)
            for i in range(10_000):
                client.enqueue("fill", {"pad": "x" * 2000}, idempotency_key=f"fill-{i}")
        assert full.value.status == 503
        assert client.list_jobs(queue="fill", limit=1).jobs, "reads keep working"
    finally:
        server.stop()
        for path in sorted(data.rglob("*"), reverse=True):
            path.rmdir() if path.is_dir() else path.unlink()
        data.rmdir()


@pytest.mark.parametrize(
    ("status", "code", "cls"),
    [(503, "unavailable", steadfast.Unavailable), (500, "internal", steadfast.Internal)],
)
def test_codes_a_healthy_server_does_not_answer(
    status: int, code: str, cls: type[steadfast.ApiError]
) -> None:
    body = json.dumps({"error": {"code": code, "message": "m"}}).encode()
    with pytest.raises(cls) as raised:
        _transport.answer(_api.health(), status, {"x-request-id": "r1"}, body)
    assert raised.value.request_id == "r1"


def test_an_answer_that_is_not_an_api_error_keeps_its_text() -> None:
    with pytest.raises(steadfast.ApiError) as raised:
        _transport.answer(_api.health(), 502, {}, b"<html>bad gateway</html>")
    assert type(raised.value) is steadfast.ApiError
    assert raised.value.code == "unknown"
    assert "bad gateway" in raised.value.message


def test_no_answer_is_a_transport_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with (
        steadfast.Client(f"http://127.0.0.1:{port}", "k") as client,
        pytest.raises(steadfast.TransportError),
    ):
        client.health()
