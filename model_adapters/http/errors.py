"""From what went wrong on the wire to the typed `AdapterError` the router acts on.

HTTP statuses, httpx exceptions, provider error bodies and Retry-After
headers map onto the adapter error tree (the classes are in
`model_adapters.types`, except `MediaURLRefused`, which is here):

* AdapterError
  x RetryableError ........ 408, 409, 5xx (503 with retry_after_s), connection errors
    + RateLimited ......... 429, retry_after_s from ``retry-after-ms`` or ``Retry-After``
    + ProviderTimeout ..... httpx timeouts, no result within the call's deadline
    + MalformedResponse ... a body or media that does not parse or decode
  x AuthError ............. 401, 403, no API key in the environment
  x ContentPolicyError .... a 4xx whose code or message is a content-policy refusal
  x UnsupportedInput ...... 413, 415, 422, or a 4xx whose code says "unsupported"
    + MediaURLRefused ..... a media URL off the allowed origins (nothing fetched)
  x FatalProviderError .... any other 4xx or unexpected status, an unsupported
                            protocol or invalid URL, a body over the size cap

Every message passes through `scrub` (`HttpAdapter._error` calls it): the API
key (however a provider echoed it) and any bearer token become ``[redacted]``.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Mapping
from email.utils import parsedate_to_datetime
from typing import Any, Protocol

import httpx

from model_adapters.types import (
    AdapterError,
    AuthError,
    ContentPolicyError,
    FatalProviderError,
    MalformedResponse,
    ProviderTimeout,
    RateLimited,
    RetryableError,
    UnsupportedInput,
)

REDACTED = "[redacted]"
DETAIL_CHARS = 300  # of a provider's error body quoted in a message
_BEARER = re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9._~+/=-]{8,}")
_POLICY = re.compile(
    r"content[\s_-]?(policy|filter|moderation|violation)|moderation[\s_-]?blocked|safety[\s_-]?system"
    r"|nsfw|unsafe[\s_-]content|flagged",
    re.IGNORECASE,
)
_UNSUPPORTED = re.compile(r"unsupported|not[\s_-]supported", re.IGNORECASE)


class MediaURLRefused(UnsupportedInput):
    """A provider pointed at media on an origin that is not allowed. Nothing was fetched."""


class MakeError(Protocol):
    """How an adapter builds its errors (`HttpAdapter._error`: names the adapter, scrubs the key)."""

    def __call__(self, cls: type[AdapterError], message: str, **fields: Any) -> AdapterError: ...


def scrub(text: str, key: str) -> str:
    """The message without the key (however a provider echoed it) or any bearer token."""
    if len(key) >= 4:
        text = text.replace(key, REDACTED)
    return _BEARER.sub(rf"\1 {REDACTED}", text)


# --- Retry-After ---------------------------------------------------------------------


def parse_retry_after(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``Retry-After`` (seconds or an HTTP date)."""
    millis = headers.get("retry-after-ms")
    if millis is not None:
        try:
            value = float(millis) / 1000.0
            if math.isfinite(value):
                return max(0.0, value)
        except ValueError:
            pass
    raw = headers.get("retry-after")
    if raw is None:
        return None
    raw = raw.strip()
    try:
        value = float(raw)
        return max(0.0, value) if math.isfinite(value) else None
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(raw)
    except (TypeError, ValueError, IndexError):
        return None
    if when is None:
        return None
    now = time.time() if now is None else now
    return max(0.0, when.timestamp() - now)


# --- error bodies -----------------------------------------------------------------------


def error_detail(content: bytes) -> tuple[str, str]:
    """(code, message) from the common error body shapes; ("", text) if not JSON."""
    try:
        body = json.loads(content)
    except (ValueError, UnicodeDecodeError):
        return "", content[:DETAIL_CHARS].decode("utf-8", "replace").strip()
    return _code_and_message(body)


def _code_and_message(body: Any) -> tuple[str, str]:
    if isinstance(body, str):
        return "", body
    if isinstance(body, list):
        parts = [_code_and_message(item) for item in body[:3]]
        return " ".join(p[0] for p in parts if p[0]), "; ".join(p[1] for p in parts if p[1])
    if not isinstance(body, dict):
        return "", str(body)
    for key in ("error", "detail"):
        if key in body and body[key]:
            inner_code, message = _code_and_message(body[key])
            return " ".join(filter(None, [_codes(body), inner_code])), message
    message = body.get("message") or body.get("msg") or body.get("error_message") or ""
    return _codes(body), str(message)


def _codes(body: dict[str, Any]) -> str:
    return " ".join(str(body[k]) for k in ("code", "type", "status", "error_type") if isinstance(body.get(k), str))


def is_content_policy(*texts: str) -> bool:
    return any(_POLICY.search(text) for text in texts if text)


# --- the mapping ------------------------------------------------------------------------


def error_for_status(status: int, headers: Mapping[str, str], content: bytes, endpoint: str, make: MakeError) -> AdapterError:
    """The typed error for a non-2xx reply (see the module docstring)."""
    code, message = error_detail(content)
    reason = httpx.codes.get_reason_phrase(status)  # "" for a status httpx does not know
    detail = f"{endpoint}: HTTP {status} {reason}".rstrip()
    if code or message:
        detail += f": {' '.join(filter(None, [code and f'[{code}]', message]))[:DETAIL_CHARS]}"
    if status == 429:
        retry_after = parse_retry_after(headers)
        if retry_after is not None:
            detail += f" (retry after {retry_after:g} s)"
        return make(RateLimited, detail, status=status, retry_after_s=retry_after)
    if status in (401, 403):
        return make(AuthError, detail, status=status)
    if status in (408, 409) or 500 <= status < 600:
        retry_after = parse_retry_after(headers) if status == 503 else None
        return make(RetryableError, detail, status=status, retry_after_s=retry_after)
    if 400 <= status < 500:
        if is_content_policy(code, message):
            return make(ContentPolicyError, detail, status=status)
        if status in (413, 415, 422) or _UNSUPPORTED.search(code):
            return make(UnsupportedInput, detail, status=status)
        return make(FatalProviderError, detail, status=status)
    return make(FatalProviderError, f"{detail} (unexpected status)", status=status)


# What one HTTP exchange may raise from httpx; `error_for_httpx` maps each.
HTTPX_ERRORS: tuple[type[Exception], ...] = (httpx.TransportError, httpx.InvalidURL, httpx.DecodingError)


def error_for_httpx(exc: Exception, endpoint: str, timeout_s: float, make: MakeError) -> AdapterError:
    """The typed error for an httpx exception (one of `HTTPX_ERRORS`) raised by an exchange."""
    if isinstance(exc, httpx.TimeoutException):
        return make(ProviderTimeout, f"{endpoint}: {type(exc).__name__} (timeout {timeout_s:g} s)")
    if isinstance(exc, (httpx.UnsupportedProtocol, httpx.InvalidURL)):
        return make(FatalProviderError, f"{endpoint}: {type(exc).__name__}: {exc}")
    if isinstance(exc, httpx.TransportError):
        return make(RetryableError, f"{endpoint}: {type(exc).__name__}: {exc}")
    if isinstance(exc, httpx.DecodingError):
        return make(MalformedResponse, f"{endpoint}: body does not decode: {exc}")
    raise TypeError(f"not an httpx exchange error: {type(exc).__name__}") from exc
