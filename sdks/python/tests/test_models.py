"""The models against the OpenAPI document the server serves, field by field:
a field the server adds, renames or drops fails here."""

from __future__ import annotations

import dataclasses
import json
import typing
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Dict

import pytest

from steadfast import _codec, models

DOCUMENT = json.loads((Path(__file__).parents[3] / "docs" / "openapi.json").read_text())
SCHEMAS: Dict[str, Any] = DOCUMENT["components"]["schemas"]
CLASSES: Dict[str, type] = {
    name: cls
    for name, cls in vars(models).items()
    if isinstance(cls, type) and dataclasses.is_dataclass(cls) and cls.__module__ == models.__name__
}


@pytest.mark.parametrize("name", sorted(CLASSES))
def test_each_model_has_exactly_its_schemas_fields(name: str) -> None:
    cls = CLASSES[name]
    schema = SCHEMAS.get(name) or SCHEMAS[cls.__mro__[1].__name__]
    own = {f.name for f in dataclasses.fields(cls)}
    if name == "EnqueuedJob":  # a Job, plus how the enqueue was taken
        own -= {"replayed", "singleton"}
    assert own == set(schema["properties"])
    required = {
        f.name
        for f in dataclasses.fields(cls)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    }
    assert required == set(schema.get("required", []))


@pytest.mark.parametrize(
    "name", sorted(n for n, s in SCHEMAS.items() if "enum" in s and s.get("type") == "string")
)
def test_each_enumeration_lists_the_schemas_values(name: str) -> None:
    assert set(typing.get_args(getattr(models, name))) == set(SCHEMAS[name]["enum"])


def test_every_response_schema_has_a_model() -> None:
    answered = set()
    for path in DOCUMENT["paths"].values():
        for operation in path.values():
            for response in operation.get("responses", {}).values():
                schema = response.get("content", {}).get("application/json", {}).get("schema", {})
                if "$ref" in schema:
                    answered.add(schema["$ref"].rsplit("/", 1)[1])
    wrappers = {
        "ErrorBody",  # raised as exceptions
        "LeaseResponse",  # the calls answer the lists inside these
        "BatchEnqueueResponse",
        "BatchCompleteResponse",
        "BatchStepsResponse",
        "QueueList",
        "ResourceList",
        "SloList",
        "SourceList",
    }
    assert answered - wrappers <= set(CLASSES)


def test_times_read_with_nanoseconds_and_offsets() -> None:
    parsed = _codec.parse_time("2026-12-01T21:20:15.123456789Z")
    assert parsed == datetime(2026, 12, 1, 21, 20, 15, 123456, tzinfo=timezone.utc)
    assert _codec.parse_time("2026-12-01T21:20:15Z").microsecond == 0
    shifted = _codec.parse_time("2026-12-01T23:20:15.5+02:00")
    assert shifted.utcoffset() == timedelta(hours=2)
    assert shifted.microsecond == 500000


def test_unknown_fields_are_ignored_and_missing_optionals_are_none() -> None:
    step = _codec.decode(
        models.StepInfo,
        {
            "attempt": 1,
            "idempotency_key": "j/s",
            "name": "s",
            "started_at": "2026-12-01T00:00:00Z",
            "state": "started",
            "a_field_from_a_newer_server": True,
        },
    )
    assert step.completed_at is None
    assert step.output is None
    assert step.started_at.tzinfo is not None
