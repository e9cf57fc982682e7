"""What every HTTP adapter shares.

- `HttpAdapter`: one `httpx.AsyncClient` per adapter instance, created lazily
  inside the running event loop (a client is bound to the loop it was made
  in; a new loop gets a new client), with an explicit `httpx.Timeout` from
  `timeout_s`, `httpx.Limits(max_connections=max_concurrency)` and no
  automatic redirects. A whole task call also runs under one deadline of
  `timeout_s` (`_deadline`), which covers every request and poll it makes.
- The API key is read from ``os.environ[api_key_env]`` at call time, sent only
  to base_url's origin, never stored on the adapter, never logged, and
  scrubbed from every error message this module builds.
- HTTP status -> typed `AdapterError` (`status_error`): 408/409/5xx ->
  RetryableError, 429 -> RateLimited (retry_after_s from ``retry-after-ms`` or
  ``Retry-After``, seconds or an HTTP date), 401/403 -> AuthError, content
  policy refusals -> ContentPolicyError, 413/415/422 or an "unsupported" code
  -> UnsupportedInput, any other 4xx -> FatalProviderError. httpx timeouts ->
  ProviderTimeout, connection errors -> RetryableError.
- Status polls, job results and media downloads (reads of work already
  submitted and paid for) retry transient failures a few times within the
  call's deadline instead of failing the whole call (`_poll`, `_read_retrying`).
- `fetch_media`: downloads only from base_url's origin or `allowed_hosts`
  (scheme, host and port compared exactly), follows redirects only to allowed
  origins, and caps the size. A refused URL raises `MediaURLRefused` (an
  `UnsupportedInput`: not retried, the route falls back) before anything is
  fetched.
- Media decoders: images (verified with Pillow, fitted to the requested size)
  and WAV (header parsed strictly); whatever does not decode raises
  MalformedResponse. `finish_voice` normalises loudness like the local voice.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import json
import math
import os
import re
import struct
import time
import wave
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any, ClassVar, TypeVar

import httpx
import numpy as np
from PIL import Image
from pydantic import BaseModel, ValidationError

from model_adapters import loudness
from model_adapters.pcm import PCM16_SCALE, encode_wav, to_pcm16
from model_adapters.received import describe_received, error_text
from model_adapters.types import (
    AdapterError,
    AdapterInfo,
    AuthError,
    ContentPolicyError,
    FatalProviderError,
    ImageResult,
    MalformedResponse,
    Price,
    ProviderTimeout,
    RateLimited,
    RetryableError,
    Task,
    UnsupportedInput,
    VoiceRequest,
    VoiceResult,
    WordTiming,
)

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)

DEFAULT_MAX_BYTES = 64 * 1024 * 1024
MAX_REDIRECTS = 3
MAX_IMAGE_PIXELS = 8192 * 8192
USER_AGENT = "campaign-studio/0.1"
REDACTED = "[redacted]"
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_DEFAULT_PORTS = {"http": 80, "https": 443}
_DETAIL_CHARS = 300
# Reads of work already submitted (status polls, results, media downloads)
# retry transient failures this many times in a row, within the call's deadline.
TRANSIENT_READ_RETRIES = 3
MAX_TRANSIENT_WAIT_S = 5.0

# Options every HTTP adapter understands (adapters add their own).
COMMON_OPTIONS = frozenset({"model_version", "max_media_bytes", "connect_timeout_s", "trust_env"})
# Options of the adapters that poll (queues, ComfyUI).
POLL_OPTIONS = frozenset({"poll_interval_s", "poll_backoff", "poll_max_interval_s"})
_BEARER = re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9._~+/=-]{8,}")
_SAFE_ID = re.compile(r"^(?!.*\.\.)[A-Za-z0-9._:-]{1,200}$")


class MediaURLRefused(UnsupportedInput):
    """A provider pointed at media on an origin that is not allowed. Nothing was fetched."""


class MediaError(ValueError):
    """Media bytes that do not decode (converted to MalformedResponse by adapters)."""


# --- options -------------------------------------------------------------------------


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


# --- origins -------------------------------------------------------------------------

Origin = tuple[str, str, int]  # (scheme, host, port)


def origin_of(url: httpx.URL) -> Origin:
    scheme = url.scheme.lower()
    port = url.port if url.port is not None else _DEFAULT_PORTS.get(scheme, -1)
    return scheme, url.host.lower(), port


def parse_allowed_host(entry: str) -> Origin:
    """An `allowed_hosts` entry as an origin.

    ``"https://cdn.example.com"`` or ``"http://127.0.0.1:8199"`` allow exactly
    that origin; a bare ``"cdn.example.com"`` or ``"cdn.example.com:8443"``
    allows it over https only.
    """
    text = entry.strip()
    if not text:
        raise ValueError("empty entry in allowed_hosts")
    url = httpx.URL(text if "://" in text else f"https://{text}")
    if url.scheme not in _DEFAULT_PORTS or not url.host or url.userinfo or url.path not in ("", "/"):
        raise ValueError(f"allowed_hosts entry {entry!r} must be a host, host:port or scheme://host[:port]")
    return origin_of(url)


def format_origin(origin: Origin) -> str:
    scheme, host, port = origin
    host_text = f"[{host}]" if ":" in host else host
    return f"{scheme}://{host_text}:{port}"


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

_POLICY = re.compile(
    r"content[\s_-]?(policy|filter|moderation|violation)|moderation[\s_-]?blocked|safety[\s_-]?system"
    r"|nsfw|unsafe[\s_-]content|flagged",
    re.IGNORECASE,
)
_UNSUPPORTED = re.compile(r"unsupported|not[\s_-]supported", re.IGNORECASE)


def error_detail(content: bytes) -> tuple[str, str]:
    """(code, message) from the common error body shapes; ("", text) if not JSON."""
    try:
        body = json.loads(content)
    except (ValueError, UnicodeDecodeError):
        return "", content[:_DETAIL_CHARS].decode("utf-8", "replace").strip()
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


# --- media: images --------------------------------------------------------------------


def open_image(data: bytes) -> Image.Image:
    """Decode image bytes fully (verify, then load); MediaError if they do not."""
    if not data:
        raise MediaError("empty image body")
    try:
        with Image.open(io.BytesIO(data)) as probe:
            if probe.width * probe.height > MAX_IMAGE_PIXELS:
                raise MediaError(f"image of {probe.width}x{probe.height} is over {MAX_IMAGE_PIXELS} pixels")
            probe.verify()
        image = Image.open(io.BytesIO(data))
        image.load()
    except MediaError:
        raise
    except (OSError, SyntaxError, ValueError, EOFError, struct.error, Image.DecompressionBombError) as exc:
        raise MediaError(f"image does not decode ({error_text(exc)}); {describe_received(data)}") from None
    return image


def fit_png(data: bytes, width: int, height: int) -> ImageResult:
    """The image as a PNG of exactly width x height.

    A PNG of the right size is returned byte for byte. Anything else (another
    size, JPEG or WebP) is scaled to cover the target (Lanczos), centre
    cropped to it, and re-encoded as PNG.
    """
    image = open_image(data)
    if image.format == "PNG" and image.size == (width, height):
        return ImageResult(png=data, width=width, height=height)
    has_alpha = image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info
    image = image.convert("RGBA" if has_alpha else "RGB")
    if image.size != (width, height):
        scale = max(width / image.width, height / image.height)
        scaled = (max(width, math.ceil(image.width * scale)), max(height, math.ceil(image.height * scale)))
        image = image.resize(scaled, Image.Resampling.LANCZOS)
        left, top = (scaled[0] - width) // 2, (scaled[1] - height) // 2
        image = image.crop((left, top, left + width, top + height))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return ImageResult(png=buffer.getvalue(), width=width, height=height)


def decode_base64(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise MediaError(f"{what} is not valid base64") from None


def decode_data_uri(uri: str) -> bytes:
    header, sep, payload = uri.partition(",")
    if not sep or not header.startswith("data:"):
        raise MediaError("malformed data: URI")
    if header.endswith(";base64"):
        return decode_base64(payload, "data: URI payload")
    from urllib.parse import unquote_to_bytes

    return unquote_to_bytes(payload)


# --- media: audio ---------------------------------------------------------------------

_WAVE_FORMAT_PCM, _WAVE_FORMAT_FLOAT, _WAVE_FORMAT_EXTENSIBLE = 1, 3, 0xFFFE


def decode_wav(data: bytes) -> tuple[np.ndarray, int]:
    """(float64 mono samples in [-1, 1], sample rate) from a RIFF/WAVE file.

    Accepts PCM 8/16/24/32-bit and float 32/64, any channel count (averaged to
    mono). A data chunk whose size runs past the end (streamed WAVs write a
    placeholder size) is read to the end. MediaError on anything else.
    """
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise MediaError(f"not a RIFF/WAVE file (bad header); {describe_received(data)}")
    fmt: tuple[int, int, int, int] | None = None
    offset = 12
    while offset + 8 <= len(data):
        chunk_id = data[offset : offset + 4]
        (size,) = struct.unpack("<I", data[offset + 4 : offset + 8])
        body_start = offset + 8
        if chunk_id == b"fmt ":
            if size < 16 or body_start + 16 > len(data):
                raise MediaError("WAV fmt chunk is truncated")
            tag, channels, rate, _, _, bits = struct.unpack("<HHIIHH", data[body_start : body_start + 16])
            if tag == _WAVE_FORMAT_EXTENSIBLE and size >= 40:
                (tag,) = struct.unpack("<H", data[body_start + 24 : body_start + 26])
            fmt = (tag, channels, rate, bits)
        elif chunk_id == b"data":
            if fmt is None:
                raise MediaError("WAV data chunk comes before its fmt chunk")
            payload = data[body_start : min(len(data), body_start + size)]
            return _wav_samples(payload, *fmt)
        offset = body_start + size + (size & 1)
    raise MediaError("WAV has no data chunk" if fmt else "WAV has no fmt chunk")


def _wav_samples(payload: bytes, tag: int, channels: int, rate: int, bits: int) -> tuple[np.ndarray, int]:
    if channels < 1 or not 4000 <= rate <= 384000:
        raise MediaError(f"WAV header says {channels} channels at {rate} Hz")
    width = bits // 8
    if tag == _WAVE_FORMAT_PCM and bits in (8, 16, 24, 32):
        frame = width * channels
        raw = payload[: len(payload) - len(payload) % frame]
        if bits == 8:
            samples = (np.frombuffer(raw, dtype=np.uint8).astype(np.float64) - 128.0) / 128.0
        elif bits == 24:
            bytes3 = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
            ints = bytes3[:, 0] | (bytes3[:, 1] << 8) | (bytes3[:, 2] << 16)
            ints = np.where(ints >= 1 << 23, ints - (1 << 24), ints)
            samples = ints.astype(np.float64) / float(1 << 23)
        else:
            dtype = "<i2" if bits == 16 else "<i4"
            samples = np.frombuffer(raw, dtype=dtype).astype(np.float64) / float(1 << (bits - 1))
    elif tag == _WAVE_FORMAT_FLOAT and bits in (32, 64):
        frame = width * channels
        raw = payload[: len(payload) - len(payload) % frame]
        samples = np.frombuffer(raw, dtype="<f4" if bits == 32 else "<f8").astype(np.float64)
    else:
        raise MediaError(f"unsupported WAV encoding (format tag {tag}, {bits} bits)")
    if len(samples) < channels:
        raise MediaError("WAV has no audio samples")
    if not np.all(np.isfinite(samples)):
        raise MediaError("WAV has non-finite samples")
    return samples.reshape(-1, channels).mean(axis=1), rate


def pcm16_to_float(raw: bytes) -> np.ndarray:
    """Headerless little-endian 16-bit mono PCM -> float64 samples."""
    return np.frombuffer(raw[: len(raw) - len(raw) % 2], dtype="<i2").astype(np.float64) / PCM16_SCALE






def finish_voice(
    samples: np.ndarray, sample_rate: int, words: tuple[WordTiming, ...], request: VoiceRequest
) -> VoiceResult:
    """Normalise to the request's loudness and true-peak ceiling, encode 16-bit WAV,
    and report what the delivered samples measure (as the local voice does)."""
    normalized, _, _ = loudness.normalize(
        samples, sample_rate, target_lufs=request.target_lufs, true_peak_dbtp=request.true_peak_dbtp
    )
    pcm16 = to_pcm16(normalized)
    lufs, peak_dbtp = loudness.measure(pcm16.astype(np.float64) / PCM16_SCALE, sample_rate)
    return VoiceResult(
        wav=encode_wav(pcm16, sample_rate),
        sample_rate=sample_rate,
        duration_s=len(pcm16) / sample_rate,
        words=words,
        loudness_lufs=lufs,
        true_peak_dbtp=peak_dbtp,
        characters=len(request.text),
    )


# --- the adapter base -----------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    """A finished HTTP exchange: status, headers and the whole (size-capped) body."""

    status: int
    headers: httpx.Headers
    content: bytes
    url: httpx.URL
    endpoint: str  # "POST /v1/images/generations": method and path, never the query


@dataclass(frozen=True)
class PollSchedule:
    initial_s: float = 0.5
    factor: float = 1.5
    maximum_s: float = 5.0

    def intervals(self) -> Iterator[float]:
        interval = self.initial_s
        while True:
            yield interval
            interval = min(self.maximum_s, interval * self.factor)


class HttpAdapter:
    """Base of every HTTP adapter; subclasses set the class attributes and the task coroutine."""

    provider: ClassVar[str]
    task: ClassVar[Task]
    default_base_url: ClassVar[str | None] = None
    default_model: ClassVar[str | None] = None
    # How the key travels: header name and value template.
    auth_header: ClassVar[str] = "authorization"
    auth_template: ClassVar[str] = "Bearer {key}"
    capabilities: ClassVar[frozenset[str]] = frozenset()
    adapter_options: ClassVar[frozenset[str]] = frozenset()
    option_prefixes: ClassVar[tuple[str, ...]] = ()

    def __init__(
        self,
        *,
        adapter_id: str,
        max_concurrency: int = 1,
        model: str | None = None,
        base_url: str | None = None,
        api_key_env: str | None = None,
        timeout_s: float = 120.0,
        allowed_hosts: Sequence[str] = (),
        options: Mapping[str, Any] | None = None,
        price: Price | Mapping[str, float] | None = None,
    ):
        name = type(self).__name__
        if max_concurrency < 1:
            raise ValueError(f"{name} {adapter_id!r}: max_concurrency must be >= 1, got {max_concurrency}")
        if not timeout_s > 0:
            raise ValueError(f"{name} {adapter_id!r}: timeout_s must be > 0, got {timeout_s}")
        base = base_url or self.default_base_url
        if not base:
            raise ValueError(f"{name} {adapter_id!r}: base_url is required")
        self._base = httpx.URL(base.rstrip("/"))
        if self._base.scheme not in _DEFAULT_PORTS or not self._base.host or self._base.userinfo:
            raise ValueError(
                f"{name} {adapter_id!r}: base_url must be http(s)://host[:port][/path] without credentials"
            )
        model = model or self.default_model
        if not model:
            raise ValueError(f"{name} {adapter_id!r}: model is required")
        self.adapter_id = adapter_id
        self.model = model
        self.timeout_s = float(timeout_s)
        self.api_key_env = api_key_env
        self.options = Options(options, f"{name} {adapter_id!r}")
        self._check_option_names()
        self.max_media_bytes = self.options.integer("max_media_bytes", DEFAULT_MAX_BYTES)
        self._trust_env = self.options.flag("trust_env", True)
        connect_s = min(self.timeout_s, self.options.number("connect_timeout_s", 10.0))
        self._timeout = httpx.Timeout(self.timeout_s, connect=connect_s)
        self._limits = httpx.Limits(max_connections=max_concurrency, max_keepalive_connections=max_concurrency)
        self._allowed = frozenset({origin_of(self._base), *(parse_allowed_host(h) for h in allowed_hosts)})
        self._http: httpx.AsyncClient | None = None
        self._http_loop: asyncio.AbstractEventLoop | None = None
        if isinstance(price, Mapping):
            price = Price(**price)
        self.info = AdapterInfo(
            adapter_id=adapter_id,
            task=self.task,
            provider=self.provider,
            model=model,
            model_version=self.options.text("model_version") or self._model_version(),
            price=price or Price(),
            capabilities=self.capabilities | self._extra_capabilities(),
            max_concurrency=max_concurrency,
        )

    # -- hooks for subclasses --

    def _model_version(self) -> str:
        return self.model

    def _extra_capabilities(self) -> frozenset[str]:
        return frozenset()

    def _check_option_names(self) -> None:
        known = COMMON_OPTIONS | self.adapter_options
        for key in self.options.keys():
            if key in known or any(key.startswith(p) for p in self.option_prefixes):
                continue
            hint = ", ".join(sorted(known) + [f"{p}<...>" for p in self.option_prefixes])
            raise ValueError(f"{type(self).__name__} {self.adapter_id!r}: unknown option {key!r}; known: {hint}")

    # -- representation: never the key --

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(adapter_id={self.adapter_id!r}, model={self.model!r}, "
            f"base_url={str(self._base)!r}, api_key_env={self.api_key_env!r})"
        )

    # -- the client --

    def _client(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        if self._http is None or self._http_loop is not loop or self._http.is_closed:
            # A client from another (finished) loop cannot be closed from this
            # one; its connections go with the old loop.
            self._http = httpx.AsyncClient(
                timeout=self._timeout,
                limits=self._limits,
                follow_redirects=False,
                trust_env=self._trust_env,
                headers={"user-agent": USER_AGENT},
            )
            self._http_loop = loop
        return self._http

    async def aclose(self) -> None:
        client, loop = self._http, self._http_loop
        self._http = self._http_loop = None
        if client is None:
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            return
        if loop is running:
            await client.aclose()

    # -- secrets --

    def _api_key(self) -> str | None:
        if not self.api_key_env:
            return None
        key = os.environ.get(self.api_key_env, "").strip()
        if not key:
            raise self._error(AuthError, f"no API key: environment variable {self.api_key_env} is not set or empty")
        return key

    def _scrub(self, text: str) -> str:
        """The message without the key (however a provider echoed it) or any bearer token."""
        key = os.environ.get(self.api_key_env, "").strip() if self.api_key_env else ""
        if len(key) >= 4:
            text = text.replace(key, REDACTED)
        return _BEARER.sub(rf"\1 {REDACTED}", text)

    def _error(self, cls: type[AdapterError], message: str, **fields: Any) -> AdapterError:
        return cls(f"{self.adapter_id} [{self.provider}] {self._scrub(message)}", provider=self.provider, **fields)

    def _malformed(self, endpoint: str, what: str) -> AdapterError:
        return self._error(MalformedResponse, f"{endpoint}: {what}")

    # -- URLs --

    def _url(self, path: str) -> httpx.URL:
        """base_url joined with a path (base_url's own path is kept)."""
        return httpx.URL(f"{self._base}/{path.lstrip('/')}")

    def _is_allowed(self, url: httpx.URL) -> bool:
        return url.scheme in _DEFAULT_PORTS and not url.userinfo and origin_of(url) in self._allowed

    def _same_origin(self, url: httpx.URL) -> bool:
        return origin_of(url) == origin_of(self._base)

    def _checked_url(self, raw: str, what: str) -> httpx.URL:
        """A provider-supplied URL, refused (MediaURLRefused) unless on an allowed origin."""
        try:
            url = self._base.join(raw)
        except (httpx.InvalidURL, ValueError, TypeError):
            raise self._error(MediaURLRefused, f"{what}: unparseable URL {str(raw)[:120]!r}") from None
        if not self._is_allowed(url):
            allowed = ", ".join(sorted(format_origin(o) for o in self._allowed))
            shown = f"{url.scheme}://{url.netloc.decode('ascii', 'replace')}{url.path}"[:160]
            raise self._error(MediaURLRefused, f"{what}: refused to fetch {shown}: origin not allowed ({allowed})")
        return url

    # -- requests --

    async def _request(
        self,
        method: str,
        url: httpx.URL | str,
        *,
        json_body: Any = None,
        files: Any = None,
        data: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        max_bytes: int | None = None,
        redirects_ok: bool = False,
    ) -> Reply:
        """One HTTP exchange. Non-2xx raises the mapped AdapterError (a 3xx is
        returned instead when `redirects_ok`). The key goes only to base_url's origin."""
        target = httpx.URL(url)
        endpoint = f"{method} {target.path}"
        request_headers = {"accept": "application/json", **(headers or {})}
        if self._same_origin(target):
            key = self._api_key()
            if key is not None:
                request_headers[self.auth_header] = self.auth_template.format(key=key)
        client = self._client()
        try:
            request = client.build_request(
                method, target, json=json_body, files=files, data=data, params=params, headers=request_headers
            )
            response = await client.send(request, stream=True)
            try:
                content = await self._read_capped(response, endpoint, max_bytes or self.max_media_bytes)
            finally:
                await response.aclose()
        except httpx.TimeoutException as exc:
            raise self._error(
                ProviderTimeout, f"{endpoint}: {type(exc).__name__} (timeout {self.timeout_s:g} s)"
            ) from None
        except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
            raise self._error(FatalProviderError, f"{endpoint}: {type(exc).__name__}: {exc}") from None
        except httpx.TransportError as exc:
            raise self._error(RetryableError, f"{endpoint}: {type(exc).__name__}: {exc}") from None
        except httpx.DecodingError as exc:
            raise self._error(MalformedResponse, f"{endpoint}: body does not decode: {exc}") from None
        reply = Reply(response.status_code, response.headers, content, target, endpoint)
        if 200 <= reply.status < 300 or (redirects_ok and reply.status in _REDIRECT_STATUSES):
            return reply
        raise self.status_error(reply)

    async def _read_capped(self, response: httpx.Response, endpoint: str, max_bytes: int) -> bytes:
        declared = response.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > max_bytes:
            raise self._error(FatalProviderError, f"{endpoint}: body of {declared} bytes is over {max_bytes}")
        chunks: list[bytes] = []
        total = 0
        async for chunk in response.aiter_bytes():
            total += len(chunk)
            if total > max_bytes:
                raise self._error(FatalProviderError, f"{endpoint}: body is over {max_bytes} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    def status_error(self, reply: Reply) -> AdapterError:
        """The typed error for a non-2xx reply (see the module docstring)."""
        status = reply.status
        code, message = error_detail(reply.content)
        try:
            reason = httpx.codes(status).phrase
        except ValueError:
            reason = ""
        detail = f"{reply.endpoint}: HTTP {status} {reason}".rstrip()
        if code or message:
            detail += f": {' '.join(filter(None, [code and f'[{code}]', message]))[:_DETAIL_CHARS]}"
        if status == 429:
            retry_after = parse_retry_after(reply.headers)
            if retry_after is not None:
                detail += f" (retry after {retry_after:g} s)"
            return self._error(RateLimited, detail, status=status, retry_after_s=retry_after)
        if status in (401, 403):
            return self._error(AuthError, detail, status=status)
        if status in (408, 409) or 500 <= status < 600:
            retry_after = parse_retry_after(reply.headers) if status == 503 else None
            return self._error(RetryableError, detail, status=status, retry_after_s=retry_after)
        if 400 <= status < 500:
            if is_content_policy(code, message):
                return self._error(ContentPolicyError, detail, status=status)
            if status in (413, 415, 422) or _UNSUPPORTED.search(code):
                return self._error(UnsupportedInput, detail, status=status)
            return self._error(FatalProviderError, detail, status=status)
        return self._error(FatalProviderError, f"{detail} (unexpected status)", status=status)

    # -- bodies --

    def _json(self, reply: Reply) -> Any:
        try:
            return json.loads(reply.content)
        except (ValueError, UnicodeDecodeError) as exc:
            raise self._malformed(
                reply.endpoint, f"body is not valid JSON ({exc}); {describe_received(reply.content, reply.headers.get('content-type'))}"
            ) from None

    def _parse(self, model: type[M], data: Any, endpoint: str) -> M:
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or '(body)'}: {e['msg']}" for e in exc.errors()[:5]
            )
            raise self._malformed(endpoint, f"unexpected response shape: {problems}") from None

    def _fit_png(self, data: bytes, width: int, height: int, endpoint: str) -> ImageResult:
        try:
            return fit_png(data, width, height)
        except MediaError as exc:
            raise self._malformed(endpoint, str(exc)) from None

    def _b64(self, text: str, endpoint: str, what: str) -> bytes:
        try:
            return decode_base64(text, what)
        except MediaError as exc:
            raise self._malformed(endpoint, str(exc)) from None

    def _job_id(self, value: str, endpoint: str, what: str) -> str:
        """A provider-issued id that goes into a URL path: refuse anything but a plain token."""
        if not _SAFE_ID.match(value):
            raise self._malformed(endpoint, f"{what} {value[:60]!r} is not a plain identifier")
        return value

    # -- media --

    async def fetch_media(self, url: str) -> bytes:
        """Download provider media from an allowed origin (see the module docstring)."""
        target = self._checked_url(url, "media URL")
        for _ in range(MAX_REDIRECTS + 1):
            reply = await self._read_retrying(
                lambda target=target: self._request(
                    "GET", target, headers={"accept": "*/*"}, max_bytes=self.max_media_bytes, redirects_ok=True
                )
            )
            if reply.status not in _REDIRECT_STATUSES:
                return reply.content
            location = reply.headers.get("location")
            if not location:
                raise self._error(FatalProviderError, f"{reply.endpoint}: HTTP {reply.status} without a Location")
            target = self._checked_url(str(target.join(location)), f"{reply.endpoint} redirect")
        raise self._error(FatalProviderError, f"media URL: more than {MAX_REDIRECTS} redirects")

    async def load_media(self, url: str) -> bytes:
        """`fetch_media`, or the inline bytes of a ``data:`` URI."""
        if url.startswith("data:"):
            try:
                data = decode_data_uri(url)
            except MediaError as exc:
                raise self._malformed("media data: URI", str(exc)) from None
            if len(data) > self.max_media_bytes:
                raise self._error(FatalProviderError, f"inline media is over {self.max_media_bytes} bytes")
            return data
        return await self.fetch_media(url)

    # -- deadlines and polling --

    @asynccontextmanager
    async def _deadline(self, what: str) -> AsyncIterator[None]:
        """The whole task call (requests, polls, downloads) within timeout_s."""
        try:
            async with asyncio.timeout(self.timeout_s):
                yield
        except TimeoutError:
            raise self._error(ProviderTimeout, f"{what}: no result within {self.timeout_s:g} s") from None

    def _poll_schedule(self) -> PollSchedule:
        return PollSchedule(
            initial_s=self.options.number("poll_interval_s", 0.5),
            factor=max(1.0, self.options.number("poll_backoff", 1.5)),
            maximum_s=self.options.number("poll_max_interval_s", 5.0),
        )

    async def _poll(self, check: Callable[[], Awaitable[T | None]]) -> T:
        """Sleep, call `check`; again, with backoff, until it returns a value.
        A transient failure of a status read (5xx, 429, a malformed body) is
        polled again, up to `TRANSIENT_READ_RETRIES` in a row: the job is already
        submitted (and paid for), so one bad poll must not make the router submit
        it again. The caller's `_deadline` bounds the total time."""
        failures = 0
        for interval in self._poll_schedule().intervals():
            await asyncio.sleep(interval)
            try:
                result = await check()
            except RetryableError as exc:
                failures += 1
                if failures > TRANSIENT_READ_RETRIES:
                    raise
                await asyncio.sleep(self._transient_delay_s(exc, failures))
                continue
            failures = 0
            if result is not None:
                return result
        raise AssertionError("unreachable")  # pragma: no cover

    def _transient_delay_s(self, error: AdapterError, failures: int) -> float:
        if error.retry_after_s is not None:
            return min(error.retry_after_s, MAX_TRANSIENT_WAIT_S)
        return min(self._poll_schedule().initial_s * 2 ** (failures - 1), MAX_TRANSIENT_WAIT_S)

    async def _read_retrying(self, read: Callable[[], Awaitable[T]]) -> T:
        """An idempotent read (a job's result, a media download) that retries
        transient failures a few times within the call's deadline, for the
        same reason as `_poll`: the work is done, only the read failed."""
        failures = 0
        while True:
            try:
                return await read()
            except RetryableError as exc:
                failures += 1
                if failures > TRANSIENT_READ_RETRIES:
                    raise
                await asyncio.sleep(self._transient_delay_s(exc, failures))
