"""Custom property values as the spec's MetadataValue variants, and back.

The registry keeps typed values: `{"metadataType": "MetadataIntValue", "int_value": "7"}` etc.
Integers travel as strings and must fit the spec's pattern (at most nine digits), so larger ones
(byte counts) go as doubles, which hold every integer up to 2**53 exactly. Lists and mappings
are stored as JSON text: the struct variant wants base64 protobuf, which no reader expects here.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from typing import Any

MetadataValue = dict[str, Any]

_INT_PATTERN = re.compile(r"^-?([1-9][0-9]{0,8}|0)$")


def encode(value: Any) -> MetadataValue:
    """One Python value -> one MetadataValue (bool before int: bool is an int in Python)."""
    if isinstance(value, bool):
        return {"metadataType": "MetadataBoolValue", "bool_value": value}
    if isinstance(value, int):
        text = str(value)
        if _INT_PATTERN.match(text):
            return {"metadataType": "MetadataIntValue", "int_value": text}
        return {"metadataType": "MetadataDoubleValue", "double_value": float(value)}
    if isinstance(value, float):
        if not math.isfinite(value):
            return {"metadataType": "MetadataStringValue", "string_value": str(value)}
        return {"metadataType": "MetadataDoubleValue", "double_value": value}
    if isinstance(value, str):
        return {"metadataType": "MetadataStringValue", "string_value": value}
    if isinstance(value, Mapping | list | tuple):
        return {"metadataType": "MetadataStringValue", "string_value": json.dumps(value, sort_keys=True)}
    raise TypeError(f"no MetadataValue for a {type(value).__name__}")


def encode_all(values: Mapping[str, Any]) -> dict[str, MetadataValue]:
    """A mapping of plain values -> customProperties; None values are left out."""
    return {key: encode(value) for key, value in values.items() if value is not None}


def decode(value: Mapping[str, Any]) -> Any:
    """One MetadataValue -> a Python value (ints from their string form); unknown kinds as-is."""
    kind = value.get("metadataType")
    if kind == "MetadataIntValue":
        return int(value["int_value"])
    if kind == "MetadataDoubleValue":
        return float(value["double_value"])
    if kind == "MetadataStringValue":
        return value["string_value"]
    if kind == "MetadataBoolValue":
        return bool(value["bool_value"])
    return dict(value)


def same(a: Mapping[str, Any] | None, b: Mapping[str, Any] | None) -> bool:
    """Whether two MetadataValues hold the same typed value (ints compared as numbers)."""
    if a is None or b is None:
        return a is b
    if a.get("metadataType") != b.get("metadataType"):
        return False
    return decode(a) == decode(b)
