"""The adapter base every HTTP adapter subclasses: the client, requests, deadlines, polling, media fetches.

- `HttpAdapter`: one `httpx.AsyncClient` per adapter instance, created lazily
  inside the running event loop (a client is bound to the loop it was made
  in; a new loop gets a new client), with an explicit `httpx.Timeout` from
  `timeout_s`, `httpx.Limits(max_connections=max_concurrency)` and no
  automatic redirects. The provider's part of a task call (every request,
  poll and download it makes) runs in `_deadline`: the caller's turn with
  the provider (`provider_turn`, whose slot is held only there, not while
  the adapter prepares the request or decodes the answer) under one
  deadline of `timeout_s`.
- The API key is read from ``os.environ[api_key_env]`` at call time, sent only
  to base_url's origin, never stored on the adapter, never logged, and
  scrubbed from every error message the adapter builds.
- A non-2xx reply or an httpx exception becomes a typed `AdapterError`
  (`errors.py` holds the mapping and draws the tree).
- Status polls, job results and media downloads (reads of work already
  submitted and paid for) retry transient failures a few times within the
  call's deadline instead of failing the whole call (`_poll`, `_read_retrying`).
- `fetch_media`: downloads only from base_url's origin or `allowed_hosts`
  (`origins.py`: scheme, host and port compared exactly), follows redirects
  only to allowed origins, and caps the size. A refused URL raises
  `MediaURLRefused` (an `UnsupportedInput`: not retried, the route falls
  back) before anything is fetched.

Options are parsed by `options.py`, media bytes decoded by `decoding.py`.
The names other modules import from here (the helpers of those modules
included) stay importable from here.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any, ClassVar, TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from model_adapters.concurrency import provider_turn
from model_adapters.http.decoding import (
    MAX_IMAGE_PIXELS,
    MediaError,
    decode_base64,
    decode_data_uri,
    decode_wav,
    finish_voice,
    fit_png,
    open_image,
    pcm16_to_float,
)
from model_adapters.http.errors import (
    HTTPX_ERRORS,
    REDACTED,
    MediaURLRefused,
    error_detail,
    error_for_httpx,
    error_for_status,
    is_content_policy,
    parse_retry_after,
    scrub,
)
from model_adapters.http.options import COMMON_OPTIONS, POLL_OPTIONS, Options
from model_adapters.http.origins import (
    DEFAULT_PORTS,
    Origin,
    format_origin,
    is_allowed,
    origin_of,
    parse_allowed_host,
)
from model_adapters.received import describe_received
from model_adapters.types import (
    AdapterError,
    AdapterInfo,
    AuthError,
    FatalProviderError,
    ImageResult,
    MalformedResponse,
    Price,
    ProviderTimeout,
    RetryableError,
    Task,
    UnsupportedInput,
)

__all__ = [
    "COMMON_OPTIONS",
    "DEFAULT_MAX_BYTES",
    "MAX_IMAGE_PIXELS",
    "MAX_REDIRECTS",
    "MAX_TRANSIENT_WAIT_S",
    "POLL_OPTIONS",
    "REDACTED",
    "TRANSIENT_READ_RETRIES",
    "USER_AGENT",
    "HttpAdapter",
    "MediaError",
    "MediaURLRefused",
    "Options",
    "Origin",
    "PollSchedule",
    "Reply",
    "decode_base64",
    "decode_data_uri",
    "decode_wav",
    "error_detail",
    "finish_voice",
    "fit_png",
    "format_origin",
    "is_content_policy",
    "open_image",
    "origin_of",
    "parse_allowed_host",
    "parse_retry_after",
    "pcm16_to_float",
]

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)

DEFAULT_MAX_BYTES = 64 * 1024 * 1024
MAX_REDIRECTS = 3
USER_AGENT = "campaign-studio/0.1"
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
# Reads of work already submitted (status polls, results, media downloads)
# retry transient failures this many times in a row, within the call's deadline.
TRANSIENT_READ_RETRIES = 3
MAX_TRANSIENT_WAIT_S = 5.0
_SAFE_ID = re.compile(r"^(?!.*\.\.)[A-Za-z0-9._:-]{1,200}$")


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
    # Every request, poll and download runs inside `_deadline`, the provider's turn: a caller
    # holds the provider's slot only there (model_adapters/concurrency.py).
    marks_provider_turn: ClassVar[bool] = True

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
        if self._base.scheme not in DEFAULT_PORTS or not self._base.host or self._base.userinfo:
            raise ValueError(f"{name} {adapter_id!r}: base_url must be http(s)://host[:port][/path] without credentials")
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
        return scrub(text, os.environ.get(self.api_key_env, "").strip() if self.api_key_env else "")

    def _error(self, cls: type[AdapterError], message: str, **fields: Any) -> AdapterError:
        return cls(f"{self.adapter_id} [{self.provider}] {self._scrub(message)}", provider=self.provider, **fields)

    def _malformed(self, endpoint: str, what: str) -> AdapterError:
        return self._error(MalformedResponse, f"{endpoint}: {what}")

    def _check_voice_text(self, text: str, max_input_chars: int) -> None:
        """Before a voice call: empty text is a bad request (ValueError); text over the provider's
        ``max_input_chars`` is `UnsupportedInput` (the route falls back to another voice)."""
        if not text.strip():
            raise ValueError("voice request text is empty")
        if len(text) > max_input_chars:
            raise self._error(UnsupportedInput, f"text of {len(text)} characters is over {max_input_chars}")

    # -- URLs --

    def _url(self, path: str) -> httpx.URL:
        """base_url joined with a path (base_url's own path is kept)."""
        return httpx.URL(f"{self._base}/{path.lstrip('/')}")

    def _is_allowed(self, url: httpx.URL) -> bool:
        return is_allowed(url, self._allowed)

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
            request = client.build_request(method, target, json=json_body, files=files, data=data, params=params, headers=request_headers)
            response = await client.send(request, stream=True)
            try:
                content = await self._read_capped(response, endpoint, max_bytes or self.max_media_bytes)
            finally:
                await response.aclose()
        except HTTPX_ERRORS as exc:
            raise error_for_httpx(exc, endpoint, self.timeout_s, self._error) from None
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
        """The typed error for a non-2xx reply (`errors.py` has the mapping)."""
        return error_for_status(reply.status, reply.headers, reply.content, reply.endpoint, self._error)

    # -- bodies --

    def _json(self, reply: Reply) -> Any:
        try:
            return json.loads(reply.content)
        except (ValueError, UnicodeDecodeError) as exc:
            received = describe_received(reply.content, reply.headers.get("content-type"))
            raise self._malformed(reply.endpoint, f"body is not valid JSON ({exc}); {received}") from None

    def _parse(self, model: type[M], data: Any, endpoint: str) -> M:
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '(body)'}: {e['msg']}" for e in exc.errors()[:5])
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
                partial(
                    self._request,
                    "GET",
                    target,
                    headers={"accept": "*/*"},
                    max_bytes=self.max_media_bytes,
                    redirects_ok=True,
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
        """The provider's part of the task call (requests, polls, downloads): the caller's turn
        with the provider (`provider_turn`: its slot is held only in here), within timeout_s
        from when the turn starts."""
        async with provider_turn():
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
        return min(self._poll_schedule().initial_s * 2.0 ** (failures - 1), MAX_TRANSIENT_WAIT_S)

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
