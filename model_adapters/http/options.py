"""Adapter options from the routing config: the typed getters and the option names every HTTP adapter knows."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

# Options every HTTP adapter understands (adapters add their own).
COMMON_OPTIONS = frozenset({"model_version", "max_media_bytes", "connect_timeout_s", "trust_env"})
# Options of the adapters that poll (queues, ComfyUI).
POLL_OPTIONS = frozenset({"poll_interval_s", "poll_backoff", "poll_max_interval_s"})


class Options:
    """Adapter options from the routing config.

    Values arrive as strings (the Dagster resource stringifies them) or typed
    (direct construction); each getter parses and names the option on error.
    """

    def __init__(self, values: Mapping[str, Any] | None, owner: str):
        self._values = dict(values or {})
        self._owner = owner

    def keys(self) -> list[str]:
        return list(self._values)

    def has(self, key: str) -> bool:
        return key in self._values

    def text(self, key: str, default: str | None = None) -> str | None:
        value = self._values.get(key)
        return default if value is None else str(value)

    def integer(self, key: str, default: int) -> int:
        value = self._values.get(key)
        if value is None:
            return default
        text = str(value).strip()
        try:
            return int(text)
        except ValueError:
            pass
        try:
            number = float(text)  # "25.0": the resource stringifies YAML floats
        except ValueError:
            number = math.nan
        if not number.is_integer():
            raise ValueError(f"{self._owner}: option {key!r} must be an integer, got {value!r}")
        return int(number)

    def number(self, key: str, default: float) -> float:
        value = self._values.get(key)
        if value is None:
            return default
        try:
            number = float(str(value).strip())
        except ValueError:
            raise ValueError(f"{self._owner}: option {key!r} must be a number, got {value!r}") from None
        if not math.isfinite(number):
            raise ValueError(f"{self._owner}: option {key!r} must be finite, got {value!r}")
        return number

    def flag(self, key: str, default: bool) -> bool:
        value = self._values.get(key)
        if value is None:
            return default
        if isinstance(value, bool):
            return value
        text = str(value).strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"{self._owner}: option {key!r} must be true or false, got {value!r}")

    def json_object(self, key: str) -> dict[str, Any]:
        """A JSON object given as a string (options are flat), e.g. extra request fields."""
        value = self._values.get(key)
        if value is None:
            return {}
        if isinstance(value, dict):
            return dict(value)
        try:
            parsed = json.loads(str(value))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{self._owner}: option {key!r} is not valid JSON: {exc.msg}") from None
        if not isinstance(parsed, dict):
            raise ValueError(f"{self._owner}: option {key!r} must be a JSON object")
        return parsed

    def by_locale(self, prefix: str, locale: str, default_key: str) -> str | None:
        """``{prefix}:{locale}``, then ``{prefix}:{language}``, then ``default_key``."""
        language = locale.replace("_", "-").split("-")[0]
        for key in (f"{prefix}:{locale}", f"{prefix}:{locale.replace('_', '-')}", f"{prefix}:{language}"):
            if key in self._values:
                return str(self._values[key])
        return self.text(default_key)
