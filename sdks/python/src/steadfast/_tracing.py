"""Trace propagation: while a handler runs, its job's W3C traceparent is the
current OpenTelemetry context, if ``opentelemetry-api`` is installed (the
``otel`` extra). Without it, this does nothing."""

from __future__ import annotations

import contextlib
from typing import ContextManager, Iterator, Optional

try:
    from opentelemetry import context as _context
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    _propagator: Optional[TraceContextTextMapPropagator] = TraceContextTextMapPropagator()
except ImportError:  # the extra is not installed
    _propagator = None


_NOTHING = contextlib.nullcontext()


def attached(traceparent: Optional[str]) -> ContextManager[None]:
    """Makes ``traceparent`` the current trace context for the block."""
    if _propagator is None or not traceparent:
        return _NOTHING
    return _attached(traceparent)


@contextlib.contextmanager
def _attached(traceparent: str) -> Iterator[None]:
    assert _propagator is not None
    token = _context.attach(_propagator.extract({"traceparent": traceparent}))
    try:
        yield
    finally:
        _context.detach(token)
