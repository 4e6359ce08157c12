"""JSON to models and back.

Decoding is driven by the models' type hints, compiled once per class into a
converter: a newer server's unknown fields are ignored, and missing optional
ones read as ``None``.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import enum
import json
import re
import sys
import typing
from typing import Any, Callable, Dict, Mapping, Type, TypeVar, Union

T = TypeVar("T")
Converter = Callable[[Any], Any]

_CONVERTERS: Dict[Any, Converter] = {}
_FRACTION = re.compile(r"\.(\d+)")


def parse_time(text: str) -> _dt.datetime:
    """An RFC 3339 timestamp as the server writes it (``Z``, up to nanoseconds),
    as an aware ``datetime``. Python 3.9's ``fromisoformat`` takes neither."""
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    # Microseconds are as fine as datetime goes: cut or pad to six digits.
    text = _FRACTION.sub(lambda m: "." + m.group(1)[:6].ljust(6, "0"), text, count=1)
    return _dt.datetime.fromisoformat(text)


def format_time(value: _dt.datetime) -> str:
    """An aware ``datetime`` as RFC 3339. A naive one is refused: which zone
    it meant cannot be known, and guessing moves a job by hours."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{value!r} has no time zone: pass an aware datetime")
    return value.isoformat()


def _dataclass(cls: type) -> Converter:
    hints = typing.get_type_hints(cls, vars(sys.modules[cls.__module__]))
    fields = [(f.name, converter(hints[f.name])) for f in dataclasses.fields(cls)]
    required = {
        f.name
        for f in dataclasses.fields(cls)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    }

    def convert(raw: Any) -> Any:
        values = {}
        for name, field_converter in fields:
            if name in raw:
                value = raw[name]
                values[name] = None if value is None else field_converter(value)
            elif name in required:
                values[name] = None
        return cls(**values)

    return convert


def _identity(raw: Any) -> Any:
    return raw


def converter(hint: Any) -> Converter:
    """The converter from JSON to values of type ``hint``."""
    cached = _CONVERTERS.get(hint)
    if cached is not None:
        return cached
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    result: Converter
    if origin is Union:
        # Optional[X]: None is handled by the caller.
        inner = [a for a in args if a is not type(None)]
        result = converter(inner[0]) if len(inner) == 1 else _identity
    elif origin in (list, typing.List):
        item = converter(args[0])
        result = _identity if item is _identity else lambda raw: [item(x) for x in raw]
    elif origin in (dict, typing.Dict):
        value = converter(args[1])
        result = (
            _identity if value is _identity else lambda raw: {k: value(v) for k, v in raw.items()}
        )
    elif hint is _dt.datetime:
        result = parse_time
    elif dataclasses.is_dataclass(hint):
        result = _dataclass(hint)  # type: ignore[arg-type]
    else:
        result = _identity
    _CONVERTERS[hint] = result
    return result


def decode(cls: Type[T], raw: Any) -> T:
    """``raw`` (parsed JSON) as a ``cls``."""
    result: T = converter(cls)(raw)
    return result


def dumps(value: Any, what: str = "the value") -> str:
    """``value`` as compact JSON the server will take. What is not JSON (a
    ``set``, NaN, a lone surrogate) is a ``TypeError`` here, before anything
    is sent, rather than a ``malformed_json`` answer or a failed batch."""
    try:
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        text.encode("utf-8")
    except (TypeError, ValueError) as error:  # UnicodeEncodeError is a ValueError
        raise TypeError(f"{what} is not JSON: {error}") from None
    return text


def encode(value: Any) -> Any:
    """A request value as JSON: dataclasses and mappings become objects
    without their ``None`` fields, enums their values, datetimes RFC 3339."""
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value.value if isinstance(value, enum.Enum) else value
    if isinstance(value, _dt.datetime):
        return format_time(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {
            f.name: encode(getattr(value, f.name))
            for f in dataclasses.fields(value)
            if getattr(value, f.name) is not None
        }
    if isinstance(value, Mapping):
        return {str(k): encode(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [encode(v) for v in value]
    return value
