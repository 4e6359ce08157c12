"""Trace propagation: while a handler runs, its job's W3C traceparent is the
current OpenTelemetry context, if ``opentelemetry-api`` is installed (the
``otel`` extra). Without it, this does nothing."""

from __future__ import annotations

import contextlib
from typing import Iterator, Optional

try:
    from opentelemetry import context as _context
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    _propagator: Optional[TraceContextTextMapPropagator] = TraceContextTextMapPropagator()
except ImportError:  # the extra is not installed
    _propagator = None


@contextlib.contextmanager
def attached(traceparent: Optional[str]) -> Iterator[None]:
    """Makes ``traceparent`` the current trace context for the block."""
    if _propagator is None or not traceparent:
        yield
        return
    token = _context.attach(_propagator.extract({"traceparent": traceparent}))
    try:
        yield
    finally:
        _context.detach(token)
