"""Hypothesis strategies for valid events, built from each model's JSON Schema.

The schema is what the Worker validates against too, so generating from it also checks
that the schema says everything the Python models accept.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from hypothesis import strategies as st

from edgemetrics.currencies import ISO_4217
from edgemetrics.events import EVENT_TYPES
from edgemetrics.pii import find as find_pii

MIN_TIME = datetime(2020, 1, 1)
MAX_TIME = datetime(2035, 1, 1)


def _string(schema: dict[str, Any]) -> st.SearchStrategy[str]:
    # Valid events hold no personal data: the PII guard refuses or strips it (test_pii).
    return _any_string(schema).filter(lambda s: find_pii(s) is None and "?" not in s)


def _any_string(schema: dict[str, Any]) -> st.SearchStrategy[str]:
    if schema.get("format") == "date-time":
        return st.datetimes(MIN_TIME, MAX_TIME, timezones=st.just(UTC)).map(lambda d: d.isoformat())
    if "pattern" in schema:
        strategy = st.from_regex(schema["pattern"], fullmatch=True)
        if "maxLength" in schema:
            strategy = strategy.filter(lambda s: len(s) <= schema["maxLength"])
        return strategy
    return st.text(min_size=schema.get("minLength", 0), max_size=schema.get("maxLength", 50))


def _for(schema: dict[str, Any], defs: dict[str, Any], name: str) -> st.SearchStrategy[Any]:
    if name == "currency":
        return st.sampled_from(sorted(ISO_4217))
    if "$ref" in schema:
        return _for(defs[schema["$ref"].rsplit("/", 1)[1]], defs, name)
    if "anyOf" in schema:
        return st.one_of([_for(option, defs, name) for option in schema["anyOf"]])
    if "const" in schema:
        return st.just(schema["const"])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    kind = schema.get("type")
    if kind == "null":
        return st.none()
    if kind == "boolean":
        return st.booleans()
    if kind == "integer":
        return st.integers(schema.get("minimum", -(2**53)), schema.get("maximum", 2**53))
    if kind == "number":
        return st.floats(schema.get("minimum", -1e15), schema.get("maximum", 1e15), allow_nan=False)
    if kind == "string":
        return _string(schema)
    raise AssertionError(f"{name}: schema not covered: {schema}")


def event_dicts(type_name: str) -> st.SearchStrategy[dict[str, Any]]:
    """Valid input mappings for one event type (optional fields sometimes left out)."""
    schema = EVENT_TYPES[type_name].model_json_schema()
    defs = schema.get("$defs", {})
    required = set(schema.get("required", [])) | {"type"}  # the wire format names the type
    fields = {name: _for(prop, defs, name) for name, prop in schema["properties"].items()}
    return st.fixed_dictionaries(
        {name: s for name, s in fields.items() if name in required},
        optional={name: s for name, s in fields.items() if name not in required},
    )


any_event_dict = st.sampled_from(sorted(EVENT_TYPES)).flatmap(event_dicts)
