"""What both clients share: configuration, the request's parts, reading an
answer, and the rate-limit rule. Only the sending differs between them."""

from __future__ import annotations

import json
import os
import ssl
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Tuple, TypeVar, Union

from . import errors
from . import models as m
from ._api import Call, RawJson
from ._codec import decode, dumps

T = TypeVar("T")

#: The variables read when the client is given no URL or key.
URL_VARIABLE = "STEADFAST_URL"
KEY_VARIABLE = "STEADFAST_KEY"

#: How many times a call answered ``429 rate_limited`` is sent again, each
#: after the ``Retry-After`` the server gave. A rate-limited call did
#: nothing, so sending it again is safe for every call.
RATE_LIMITED_RETRIES = 3
#: The longest ``Retry-After`` waited for; a longer one is the caller's.
MAX_RETRY_AFTER = 30.0

Verify = Union[bool, str, ssl.SSLContext]


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("steadfast")
    except Exception:  # not installed as a distribution (a source checkout)
        return "0"


USER_AGENT = f"steadfast-python/{_version()}"


@dataclass(frozen=True)
class Config:
    """Where the server is and how to reach it."""

    url: str
    key: str
    #: Seconds a call may take; above the longest lease long-poll (30 s).
    timeout: float = 60.0
    #: TLS trust: ``True`` (the system's and ``SSL_CERT_FILE``'s roots), a CA
    #: bundle's path, or an ``ssl.SSLContext``.
    verify: Verify = True
    #: Sent as the W3C ``traceparent`` header on every call, if set.
    traceparent: Optional[str] = None
    #: How many times a call answered ``429 rate_limited`` is sent again.
    rate_limit_retries: int = RATE_LIMITED_RETRIES

    @staticmethod
    def resolve(
        url: Optional[str],
        key: Optional[str],
        timeout: float,
        verify: Verify,
        traceparent: Optional[str],
        rate_limit_retries: int = RATE_LIMITED_RETRIES,
        environ: Mapping[str, str] = os.environ,
    ) -> Config:
        """The configuration from the arguments, else ``STEADFAST_URL`` and
        ``STEADFAST_KEY``."""
        url = url or environ.get(URL_VARIABLE)
        key = key or environ.get(KEY_VARIABLE)
        if not url:
            raise errors.ConfigError(f"no server URL: pass url= or set {URL_VARIABLE}")
        if not key:
            raise errors.ConfigError(f"no API key: pass key= or set {KEY_VARIABLE}")
        if not url.startswith(("http://", "https://")):
            raise errors.ConfigError(f"the server URL must start with http:// or https://: {url!r}")
        if timeout <= 0:
            raise errors.ConfigError("timeout must be positive")
        if rate_limit_retries < 0:
            raise errors.ConfigError("rate_limit_retries must not be negative")
        return Config(url.rstrip("/") + "/", key, timeout, verify, traceparent, rate_limit_retries)


@dataclass(frozen=True)
class Request:
    method: str
    url: str
    headers: Dict[str, str]
    content: Optional[bytes]
    params: Optional[Dict[str, str]]


def request(config: Config, call: Call[Any]) -> Request:
    """The HTTP request that makes ``call``."""
    headers = {"authorization": f"Bearer {config.key}", "user-agent": USER_AGENT}
    traceparent = call.traceparent or config.traceparent
    if traceparent:
        headers["traceparent"] = traceparent
    content = None
    if isinstance(call.body, RawJson):
        content = call.body.data.encode()
        headers["content-type"] = "application/json"
    elif call.body is not None:
        content = dumps(call.body, "the request body").encode()
        headers["content-type"] = "application/json"
    return Request(call.method, config.url + call.path, headers, content, call.query)


def _retry_after_header(headers: Mapping[str, str]) -> Optional[float]:
    """``Retry-After`` in seconds (the server sends whole seconds), if any."""
    try:
        wait = float(headers.get("retry-after", ""))
    except ValueError:
        return None
    return wait if wait >= 0 else None


def retry_after(status: int, headers: Mapping[str, str]) -> Optional[float]:
    """Seconds to wait before sending a rate-limited call again, if the
    server asked for a wait worth making (``429 quota_exceeded`` gives none:
    waiting would not help)."""
    if status != 429:
        return None
    wait = _retry_after_header(headers)
    return wait if wait is not None and wait <= MAX_RETRY_AFTER else None


def answer(call: Call[T], status: int, headers: Mapping[str, str], content: bytes) -> T:
    """The call's result, or the exception its error answer stands for."""
    if 200 <= status < 300:
        try:
            body = json.loads(content) if content else None
        except ValueError as error:
            raise errors.ApiError(
                status, "unknown", f"an answer that does not parse: {error}"
            ) from None
        return call.read(body, headers)
    code, message, violations = _error_of(status, content)
    raise errors.from_response(
        status,
        code,
        message,
        request_id=headers.get("x-request-id"),
        retry_after=_retry_after_header(headers),
        violations=violations,
    )


def violations_of(detail: Mapping[str, Any]) -> Optional[List[m.Violation]]:
    """The ``violations`` of an error detail, if it has any that read."""
    raw = detail.get("violations")
    if not isinstance(raw, list):
        return None
    try:
        return [decode(m.Violation, item) for item in raw]
    except (ValueError, KeyError, TypeError):
        return None


def _error_of(status: int, content: bytes) -> Tuple[str, str, Optional[List[m.Violation]]]:
    """The code, message and violations of an error answer; a body that is
    not an API error (a proxy's page) keeps its text as the message."""
    try:
        detail = json.loads(content)["error"]
        return str(detail["code"]), str(detail["message"]), violations_of(detail)
    except (ValueError, KeyError, TypeError, AttributeError):
        text = content.decode("utf-8", "replace")[:1000]
        return "unknown", text or f"HTTP {status}", None
