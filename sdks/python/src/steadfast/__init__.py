"""Steadfast for Python: a typed client and a worker runtime.

>>> import steadfast
>>> client = steadfast.Client()  # STEADFAST_URL, STEADFAST_KEY
>>> job = client.enqueue("emails", {"to": "a@example.com"}, idempotency_key="signup-42")

See docs/python.md for the worker, durable steps, sleeps and signals.
"""

from . import models
from ._api import UNSET
from .client import AsyncClient, Client
from .context import AsyncJobContext, JobContext, JobFailed, Suspended
from .errors import *  # noqa: F403 (the exceptions are the package's API)
from .errors import __all__ as _errors
from .models import EnqueuedJob, Job, JobState, LeasedJob, StepState
from .worker import Worker

__all__ = [
    "UNSET",
    "AsyncClient",
    "AsyncJobContext",
    "JobContext",
    "JobFailed",
    "Suspended",
    "Worker",
    "Client",
    "EnqueuedJob",
    "Job",
    "JobState",
    "LeasedJob",
    "StepState",
    "models",
    *_errors,
]
