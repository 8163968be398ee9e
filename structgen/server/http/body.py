"""Reading a JSON request body field by field, so every refusal names the field the client sent."""

from __future__ import annotations

import math

from ..wire import RequestError, invalid

_TYPE_NAMES = {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "an array",
               dict: "an object"}


class Body:
    """A JSON object of a request; `prefix` is its path in the request ("" for the top level)."""

    def __init__(self, data, prefix: str = ""):
        if not isinstance(data, dict):
            raise invalid(f"{prefix or 'the request body'} must be a JSON object, got {_json_type(data)}")
        self.data = data
        self.prefix = prefix

    def path(self, name: str) -> str:
        return f"{self.prefix}.{name}" if self.prefix else name

    def has(self, name: str) -> bool:
        return self.data.get(name) is not None

    def get(self, name: str, kinds, default=None):
        """The field's value if present and not null (else `default`); `kinds` is a type or tuple of types.
        int is accepted where float is, bool never where a number is."""
        value = self.data.get(name)
        if value is None:
            return default
        kinds = kinds if isinstance(kinds, tuple) else (kinds,)
        if isinstance(value, bool) and bool not in kinds:
            raise self.error(name, f"must be {_names(kinds)}, got a boolean")
        if float in kinds and isinstance(value, int) and not isinstance(value, bool):
            value = float(value) if int not in kinds else value
        if not isinstance(value, kinds):
            raise self.error(name, f"must be {_names(kinds)}, got {_json_type(value)}")
        if isinstance(value, float) and not math.isfinite(value):
            raise self.error(name, "must be a finite number")
        return value

    def number(self, name: str, default=None, lo: float | None = None, hi: float | None = None):
        value = self.get(name, (int, float), default)
        if value is not None and ((lo is not None and value < lo) or (hi is not None and value > hi)):
            raise self.error(name, f"must be in [{lo}, {hi}], got {value}")
        return value

    def integer(self, name: str, default=None, lo: int | None = None, hi: int | None = None):
        value = self.get(name, int, default)
        if value is not None and ((lo is not None and value < lo) or (hi is not None and value > hi)):
            bounds = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
            raise self.error(name, f"must be an integer {bounds}, got {value}")
        return value

    def object(self, name: str) -> "Body | None":
        value = self.get(name, dict)
        return None if value is None else Body(value, self.path(name))

    def strings(self, name: str, *, allow_one: bool = True) -> list[str] | None:
        """A list of strings (or, with allow_one, a single string as a list of one)."""
        value = self.get(name, (str, list))
        if value is None:
            return None
        if isinstance(value, str):
            if not allow_one:
                raise self.error(name, "must be an array of strings")
            return [value]
        for i, v in enumerate(value):
            if not isinstance(v, str):
                raise self.error(f"{name}[{i}]", f"must be a string, got {_json_type(v)}")
        return value

    def error(self, name: str, message: str) -> RequestError:
        e = invalid(f"{self.path(name)} {message}")
        e.param = self.path(name)
        return e


def _names(kinds) -> str:
    return " or ".join(_TYPE_NAMES.get(k, k.__name__) for k in kinds)


def _json_type(value) -> str:
    if value is None:
        return "null"
    return {bool: "a boolean", int: "a number", float: "a number", str: "a string", list: "an array",
            dict: "an object"}.get(type(value), type(value).__name__)
