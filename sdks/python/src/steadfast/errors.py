"""Exceptions, one per stable API error code (docs/errors.md).

Every error the server answers is ``{"error": {"code": ..., "message": ...}}``.
The client raises the subclass of :class:`ApiError` named after its code, so
callers catch what they mean::

    try:
        client.enqueue("emails", payload, idempotency_key="signup-42")
    except steadfast.IdempotencyKeyReused:
        ...  # the same key was used for a different request

A code this version does not know raises :class:`ApiError` itself, with
``code`` set to the code's text. A request that got no answer at all
raises :class:`TransportError`: its outcome is unknown, so retry writes
with the same idempotency key.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Type

from .models import Violation

__all__ = [
    "BY_CODE",
    "ApiError",
    "BatchTooLarge",
    "ConfigError",
    "Forbidden",
    "IdempotencyKeyReused",
    "Internal",
    "InvalidState",
    "LeaseLost",
    "LimitExceeded",
    "MalformedJson",
    "MethodNotAllowed",
    "NotFound",
    "OutputInvalid",
    "PayloadInvalid",
    "PayloadTooLarge",
    "QuotaExceeded",
    "RateLimited",
    "RequestTimeout",
    "RouteNotFound",
    "SchemaIncompatible",
    "SignatureInvalid",
    "SingletonRunning",
    "SteadfastError",
    "StorageFull",
    "TimestampOutOfTolerance",
    "TransportError",
    "Unauthorized",
    "Unavailable",
    "UnsupportedMediaType",
    "ValidationFailed",
    "from_response",
]


class SteadfastError(Exception):
    """The base of every error this package raises."""


class ConfigError(SteadfastError):
    """The client was set up wrongly (no URL, no key, a malformed URL)."""


class TransportError(SteadfastError):
    """The request got no answer (connection refused or reset, a timeout):
    whether it took effect is unknown. Retry writes with an idempotency key."""


class ApiError(SteadfastError):
    """The server answered with an error.

    ``code`` is stable and meant for programs; ``message`` is for people.
    ``request_id`` is the server's ``x-request-id``, worth quoting in a report.
    ``violations`` lists what a payload, an output or a schema broke
    (``payload_invalid``, ``output_invalid``, ``schema_incompatible``).
    """

    #: The code subclasses stand for; ``None`` for the base class.
    CODE: Optional[str] = None
    #: The HTTP status the server answers the code with (docs/errors.md).
    STATUS: int = 0

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        request_id: Optional[str] = None,
        violations: Optional[List[Violation]] = None,
    ) -> None:
        super().__init__(f"{status} {code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.request_id = request_id
        self.violations: List[Violation] = violations or []


class MalformedJson(ApiError):
    """400: the body is not valid JSON."""

    CODE = "malformed_json"
    STATUS = 400


class ValidationFailed(ApiError):
    """422: a field is missing, has the wrong type or is out of bounds; the
    message names it."""

    CODE = "validation_failed"
    STATUS = 422


class Unauthorized(ApiError):
    """401: the API key is missing, unknown or revoked."""

    CODE = "unauthorized"
    STATUS = 401


class SignatureInvalid(ApiError):
    """401: a webhook delivery's signature matched none of its source's secrets."""

    CODE = "signature_invalid"
    STATUS = 401


class TimestampOutOfTolerance(ApiError):
    """401: a webhook delivery's signed timestamp is too far from the server's clock."""

    CODE = "timestamp_out_of_tolerance"
    STATUS = 401


class Forbidden(ApiError):
    """403: the key's role may not do this."""

    CODE = "forbidden"
    STATUS = 403


class NotFound(ApiError):
    """404: no such object in this tenant."""

    CODE = "not_found"
    STATUS = 404


class RouteNotFound(ApiError):
    """404: no such route (a server older than this client?)."""

    CODE = "route_not_found"
    STATUS = 404


class MethodNotAllowed(ApiError):
    """405: the route exists, but not with this method."""

    CODE = "method_not_allowed"
    STATUS = 405


class LeaseLost(ApiError):
    """409: the lease token is not the job's current one (expired, superseded,
    cancelled). Nothing changed: stop working on the job."""

    CODE = "lease_lost"
    STATUS = 409


class SingletonRunning(ApiError):
    """409: a replacing singleton (or debounced) enqueue found its key's job
    already started. Nothing was created."""

    CODE = "singleton_running"
    STATUS = 409


class InvalidState(ApiError):
    """409: the job's state does not allow this action."""

    CODE = "invalid_state"
    STATUS = 409


class PayloadTooLarge(ApiError):
    """413: the body exceeds the server's limit."""

    CODE = "payload_too_large"
    STATUS = 413


class UnsupportedMediaType(ApiError):
    """415: the body was not sent as JSON."""

    CODE = "unsupported_media_type"
    STATUS = 415


class SchemaIncompatible(ApiError):
    """409: the new schema version would refuse payloads the previous one
    accepted; ``violations`` lists each change. Register it with
    ``force=True`` and a reason, or make it compatible."""

    CODE = "schema_incompatible"
    STATUS = 409


class PayloadInvalid(ApiError):
    """422: the payload fails its queue's schema; ``violations`` gives the
    JSON Pointer of each violation and the rule it broke. Nothing was created."""

    CODE = "payload_invalid"
    STATUS = 422


class OutputInvalid(ApiError):
    """422: the output fails the output schema of the version the job's
    payload passed. Nothing changed; the lease is still held."""

    CODE = "output_invalid"
    STATUS = 422


class IdempotencyKeyReused(ApiError):
    """422: the idempotency key was used for a request with different content."""

    CODE = "idempotency_key_reused"
    STATUS = 422


class LimitExceeded(ApiError):
    """422: a per-job bound (steps, pending signals, children) would be exceeded."""

    CODE = "limit_exceeded"
    STATUS = 422


class BatchTooLarge(ApiError):
    """422: more items in one batch than the server takes."""

    CODE = "batch_too_large"
    STATUS = 422


class RequestTimeout(ApiError):
    """408: the request's body did not arrive in time. Nothing changed."""

    CODE = "request_timeout"
    STATUS = 408


class RateLimited(ApiError):
    """429: the key made more requests than its rate. Nothing changed.

    ``retry_after`` is the server's ``Retry-After`` in seconds, if it gave one.
    The client already waited and retried up to three times before raising.
    """

    CODE = "rate_limited"
    STATUS = 429

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        request_id: Optional[str] = None,
        retry_after: Optional[float] = None,
    ) -> None:
        super().__init__(status, code, message, request_id)
        self.retry_after = retry_after


class QuotaExceeded(ApiError):
    """429: the tenant holds as many unfinished jobs as it may. Nothing was created."""

    CODE = "quota_exceeded"
    STATUS = 429


class Unavailable(ApiError):
    """503: storage could not read or durably write. Retry with the same idempotency key."""

    CODE = "unavailable"
    STATUS = 503


class StorageFull(ApiError):
    """503: the server's disk is full. Nothing changed; retry once there is room."""

    CODE = "storage_full"
    STATUS = 503


class Internal(ApiError):
    """500: a bug in the server; quote ``request_id`` when reporting it."""

    CODE = "internal"
    STATUS = 500


def _by_code() -> Dict[str, Type[ApiError]]:
    table: Dict[str, Type[ApiError]] = {}
    for cls in ApiError.__subclasses__():
        assert cls.CODE is not None, cls
        assert cls.CODE not in table, cls
        table[cls.CODE] = cls
    return table


#: Every code this version maps, to its exception class.
BY_CODE: Dict[str, Type[ApiError]] = _by_code()


def for_item(code: str, message: str, violations: Optional[List[Violation]] = None) -> ApiError:
    """The exception for one refused item of a batch (which answers 200 as a
    whole): the status is the one the code has on its own route."""
    cls = BY_CODE.get(code, ApiError)
    return from_response(cls.STATUS, code, message, violations=violations)


def from_response(
    status: int,
    code: str,
    message: str,
    request_id: Optional[str] = None,
    retry_after: Optional[float] = None,
    violations: Optional[List[Violation]] = None,
) -> ApiError:
    """The exception for an error answer."""
    cls = BY_CODE.get(code, ApiError)
    if cls is RateLimited:
        return RateLimited(status, code, message, request_id, retry_after)
    return cls(status, code, message, request_id, violations)
