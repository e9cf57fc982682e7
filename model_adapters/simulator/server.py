"""The provider simulator's HTTP server (stdlib `ThreadingHTTPServer` in a background thread):
routing a request to its endpoint group, the API key check, the concurrency cap, latency and
fault injection, stored media and queued jobs, and the bookkeeping `stats()` reports.

Request flow: route -> count the call and which auth headers were present ->
``down: "503"`` -> API key check (401) -> concurrency cap per endpoint group
(429) -> latency -> the drawn fault (5xx, 429 with Retry-After, a stall past
the client's timeout, a malformed body, a content-policy refusal, a failed
job) -> the endpoint's answer. Queue jobs (Replicate, fal, GMI, ComfyUI)
complete after the group's ``job_latency``; polls answer "in progress" until
then.

The provider formats live beside it, one module each (`openai_compat`, `elevenlabs`,
`replicate`, `fal` with `fal_compose`, `gmi`, `comfyui`), `routes` maps paths
to them, `calls` holds what a handler sees and answers, and `media` the
synthesised PNGs, speech and MP4s (and `concepts` the chat copy).
"""

from __future__ import annotations

import hashlib
import itertools
import math
import random
import socket
import threading
import time
import uuid
from collections import OrderedDict, defaultdict
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from model_adapters.simulator import FAULT_RATES, Latency, SimulatorSettings
from model_adapters.simulator.calls import (
    BadRequest,
    Call,
    Handler,
    Job,
    Reply,
    error_reply,
    json_reply,
)
from model_adapters.simulator.media import (
    Speech,
    bad_wav,
    broken_mp4,
    broken_png,
    encode_wav16,
    render_png,
    spoken_speech,
    synth_speech,
)
from model_adapters.simulator.routes import CONTENT_POLICY_REPLIES, QUEUE_GROUPS, ROUTES, route

# Request headers whose presence (never value) is counted per group.
WATCHED_HEADERS = ("authorization", "xi-api-key", "content-type", "user-agent", "accept")
MAX_BODY_BYTES = 64 * 1024 * 1024
MAX_STORED_MEDIA = 512


class _Stats:
    """The counters `ProviderSimulator.stats()` reports (guarded by the simulator's lock)."""

    def __init__(self) -> None:
        self.calls: dict[str, int] = defaultdict(int)
        self.calls_by_group: dict[str, int] = defaultdict(int)
        self.in_flight: dict[str, int] = defaultdict(int)
        self.max_in_flight: dict[str, int] = defaultdict(int)
        self.starts: dict[str, list[float]] = defaultdict(list)  # when each request was let in (wall clock): rates
        # (start, end) of each answered request and of each job's work (wall clock): how busy a provider was.
        self.spans: dict[str, list[tuple[float, float]]] = defaultdict(list)
        self.job_spans: dict[str, list[tuple[float, float]]] = defaultdict(list)
        self.rejected_over_cap: dict[str, int] = defaultdict(int)
        self.faults: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        self.statuses: dict[str, int] = defaultdict(int)
        self.bytes_sent = 0
        self.bytes_sent_by_group: dict[str, int] = defaultdict(int)
        self.headers_seen: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        self.auth_failures = 0
        self.jobs_submitted = 0

    def snapshot(self) -> dict[str, Any]:
        def plain(value: Any) -> Any:
            return {k: plain(v) for k, v in value.items()} if isinstance(value, dict) else value

        return {
            "calls": plain(self.calls),
            "calls_by_group": plain(self.calls_by_group),
            "in_flight": plain(self.in_flight),
            "max_in_flight": plain(self.max_in_flight),
            "starts": {group: list(times) for group, times in self.starts.items()},
            "spans": {group: [list(span) for span in spans] for group, spans in self.spans.items()},
            "job_spans": {group: [list(span) for span in spans] for group, spans in self.job_spans.items()},
            "rejected_over_cap": plain(self.rejected_over_cap),
            "faults": plain(self.faults),
            "statuses": plain(self.statuses),
            "bytes_sent": self.bytes_sent,
            "bytes_sent_by_group": plain(self.bytes_sent_by_group),
            "headers_seen": plain(self.headers_seen),
            "auth_failures": self.auth_failures,
            "jobs_submitted": self.jobs_submitted,
        }


class _RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "campaign-studio-simulator/1"
    timeout = 60  # idle keep-alive connections close after this
    sim: ProviderSimulator  # set on the subclass made per simulator

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        return

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def _read_body(self) -> bytes:
        if self.headers.get("transfer-encoding", "").lower() == "chunked":
            chunks: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("content-length") or 0)
        if length > MAX_BODY_BYTES:
            raise BadRequest(f"body of {length} bytes is too large", status=413)
        return self.rfile.read(length) if length else b""

    def _dispatch(self, method: str) -> None:
        url = urlsplit(self.path)
        try:
            body = self._read_body()
        except BadRequest as exc:
            self._send(error_reply(exc.status, str(exc), exc.code), group=None)
            return
        if method == "GET" and url.path == "/_sim/stats":
            self._send(json_reply(self.sim.stats()), group=None, count=False)  # stats never count themselves
            return
        found = route(method, url.path)
        if found is None:
            self._send(error_reply(404, f"no simulated endpoint for {method} {url.path}", "not_found"), group=None)
            return
        group, name, handler, submit, params = found
        headers = {k.lower(): v for k, v in self.headers.items()}
        reply = self.sim.handle(group, name, handler, submit, params, parse_qs(url.query), headers, body)
        self._send(reply, group)

    def _send(self, reply: Reply, group: str | None, count: bool = True) -> None:
        try:
            self.send_response(reply.status)
            self.send_header("content-type", reply.content_type)
            self.send_header("content-length", str(len(reply.body)))
            for key, value in reply.headers.items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(reply.body)
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
            return
        if count:
            self.sim.count_sent(group, reply.status, len(reply.body))


class ProviderSimulator:
    """The simulator; use as ``with ProviderSimulator(settings) as sim: sim.base_url``."""

    def __init__(self, settings: SimulatorSettings | None = None):
        self.settings = settings or SimulatorSettings()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._rng = random.Random(self.settings.seed)
        # One fault stream per endpoint group: the k-th request to a group draws the same
        # fault whatever the other groups' requests interleaved with it (concurrent clients).
        self._fault_rngs: dict[str, random.Random] = {}
        self._sequence_pos: dict[str, int] = defaultdict(int)
        self._stats = _Stats()
        self._media: OrderedDict[str, tuple[bytes, str]] = OrderedDict()
        self._ids = itertools.count(1)
        self.jobs: dict[str, Job] = {}
        self.uploads: dict[str, bytes] = {}
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.base_url = ""

    # -- lifecycle --

    def start(self) -> ProviderSimulator:
        if self._server is not None or self.base_url:
            raise RuntimeError("the simulator is already started")
        self._stop.clear()
        if self.settings.down == "refuse":
            # Nothing listens: take a free port and let it go.
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
                probe.bind((self.settings.host, self.settings.port))
                port = probe.getsockname()[1]
            self.base_url = f"http://{self.settings.host}:{port}"
            return self
        if self.settings.speech == "spoken":
            # Load the voice (once per process, a few seconds) before serving, so the first speech
            # answer takes what the configured latency says, not the model's load.
            spoken_speech("Ready.", 16000)
        handler = type("SimulatorHandler", (_RequestHandler,), {"sim": self})
        self._server = ThreadingHTTPServer((self.settings.host, self.settings.port), handler)
        self._server.daemon_threads = True
        host, port = self._server.socket.getsockname()[:2]  # what server_address holds, typed as an address
        self.base_url = f"http://{host}:{port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="provider-simulator", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()  # wakes handlers stalled in latency or a "timeout" fault
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = self._thread = None
        self.base_url = ""

    def __enter__(self) -> ProviderSimulator:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def configure(self, settings: SimulatorSettings) -> None:
        """Swap settings while running (host, port and down keep their started values)."""
        with self._lock:
            self.settings = settings
            self._rng = random.Random(settings.seed)
            self._fault_rngs.clear()
            self._sequence_pos.clear()

    # -- stats --

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return self._stats.snapshot()

    def reset_stats(self) -> None:
        """Zero the counters (requests still in flight stay counted as such)."""
        with self._lock:
            in_flight = self._stats.in_flight
            self._stats = _Stats()
            self._stats.in_flight = in_flight

    def count_sent(self, group: str | None, status: int, size: int) -> None:
        with self._lock:
            self._stats.statuses[str(status)] += 1
            self._stats.bytes_sent += size
            if group:
                self._stats.bytes_sent_by_group[group] += size

    # -- media and jobs (used by the handlers) --

    def store_media(self, data: bytes, content_type: str, key: bool = False) -> str:
        """Keep media for download; returns its URL (or its id with ``key=True``)."""
        media_id = f"m{next(self._ids)}-{hashlib.sha256(data).hexdigest()[:12]}"
        with self._lock:
            self._media[media_id] = (data, content_type)
            while len(self._media) > MAX_STORED_MEDIA:
                self._media.popitem(last=False)
        return media_id if key else self.media_url(media_id)

    def media_url(self, media_id: str, extension: str = ".png") -> str:
        base = (self.settings.media_base_url or self.base_url).rstrip("/")
        return f"{base}/_sim/media/{media_id}{extension}"

    def media_item(self, media_id: str) -> tuple[bytes, str] | None:
        with self._lock:
            return self._media.get(media_id)

    def new_job(self, call: Call, media_ids: list[str]) -> Job:
        outcome = {"job_failure": "failed", "content_policy": "policy"}.get(call.fault, "ok")
        delay = self._sample(self.settings.for_group(call.group).job_latency)
        now = time.monotonic()
        job = Job(uuid.uuid4().hex, call.group, now, now + delay, outcome, media_ids)
        with self._lock:
            self.jobs[job.id] = job
            self._stats.jobs_submitted += 1
            submitted = time.time()
            self._stats.job_spans[call.group].append((submitted, submitted + delay))
        return job

    def job(self, job_id: str, group: str) -> Job:
        job = self.jobs.get(job_id)
        if job is None or job.group != group:
            raise BadRequest(f"no such request {job_id}", status=404, code="not_found")
        return job

    # -- the request pipeline --

    def _sample(self, latency: Latency) -> float:
        with self._lock:
            if latency.distribution == "uniform":
                ms = self._rng.uniform(latency.low_ms, latency.high_ms)
            elif latency.distribution == "lognormal":
                ms = latency.median_ms * math.exp(latency.sigma * self._rng.gauss(0.0, 1.0))
            else:
                ms = latency.ms
        if latency.max_ms is not None:
            ms = min(ms, latency.max_ms)
        return ms / 1000.0

    def _draw_fault(self, group: str) -> str:
        faults = self.settings.for_group(group).faults
        with self._lock:
            position = self._sequence_pos[group]
            if position < len(faults.sequence):
                self._sequence_pos[group] += 1
                return faults.sequence[position]
            if group not in self._fault_rngs:
                self._fault_rngs[group] = random.Random(f"{self.settings.seed}|{group}")
            roll = self._fault_rngs[group].random()
        for name in FAULT_RATES:
            rate = getattr(faults, name)
            if roll < rate:
                return name
            roll -= rate
        return "ok"

    def _authorized(self, headers: dict[str, str]) -> tuple[bool, str]:
        expected = self.settings.api_key.get_secret_value() if self.settings.api_key else None
        authorization = headers.get("authorization", "")
        presented = headers.get("xi-api-key") or authorization.partition(" ")[2].strip()
        return (expected is None or presented == expected), presented

    def handle(
        self,
        group: str,
        name: str,
        handler: Handler,
        submit: bool,
        params: dict[str, str],
        query: dict[str, list[str]],
        headers: dict[str, str],
        body: bytes,
    ) -> Reply:
        settings = self.settings
        with self._lock:
            self._stats.calls[name] += 1
            self._stats.calls_by_group[group] += 1
            for header in WATCHED_HEADERS:
                if header in headers:
                    self._stats.headers_seen[group][header] += 1
        if settings.down == "503":
            return error_reply(503, "the provider is down (simulated)", "service_unavailable")
        authorized, presented = self._authorized(headers)
        if not authorized and group != "media":  # media URLs are public, like a CDN's
            with self._lock:
                self._stats.auth_failures += 1
            # Like some real providers, the message echoes what was presented:
            # clients must keep it out of their own errors.
            shown = presented or "(none)"
            return error_reply(401, f"Incorrect API key provided: {shown}", "invalid_api_key")
        with self._lock:
            cap = settings.max_concurrency
            if cap is not None and self._stats.in_flight[group] >= cap:
                self._stats.rejected_over_cap[group] += 1
                over = True
            else:
                over = False
                self._stats.in_flight[group] += 1
                self._stats.max_in_flight[group] = max(self._stats.max_in_flight[group], self._stats.in_flight[group])
                let_in = time.time()
                self._stats.starts[group].append(let_in)
        if over:
            reply = error_reply(429, f"more than {cap} concurrent requests", "rate_limit_exceeded")
            reply.headers["retry-after"] = f"{settings.concurrency_retry_after_s:g}"
            return reply
        try:
            return self._answer(group, handler, submit, params, query, headers, body)
        finally:
            with self._lock:
                self._stats.in_flight[group] -= 1
                self._stats.spans[group].append((let_in, time.time()))

    def _answer(
        self,
        group: str,
        handler: Handler,
        submit: bool,
        params: dict[str, str],
        query: dict[str, list[str]],
        headers: dict[str, str],
        body: bytes,
    ) -> Reply:
        endpoint = self.settings.for_group(group)
        if self._stop.wait(self._sample(endpoint.latency)):
            return error_reply(503, "the simulator is stopping", "stopping")
        fault = self._draw_fault(group)
        # Job-level faults only mean something on a submit; elsewhere they answer normally.
        if fault == "job_failure" and not submit:
            fault = "ok"
        if fault == "content_policy" and not submit and group in QUEUE_GROUPS:
            fault = "ok"
        with self._lock:
            self._stats.faults[group][fault] += 1
        faults = endpoint.faults
        if fault == "server_error":
            return error_reply(faults.server_error_status, "simulated server error", "server_error")
        if fault == "rate_limit":
            reply = error_reply(429, "Rate limit reached (simulated)", "rate_limit_exceeded")
            reply.headers.update(_retry_after_headers(faults.retry_after_s, faults.retry_after_format))
            return reply
        if fault == "timeout" and self._stop.wait(faults.timeout_s):
            return error_reply(503, "the simulator is stopping", "stopping")
        if fault == "content_policy" and group not in QUEUE_GROUPS:
            make = CONTENT_POLICY_REPLIES.get(group)
            if make:
                return make()
            return error_reply(400, "Your request was rejected as a result of our safety system.", "content_policy_violation")
        call = Call(self, group, params, query, headers, body, fault)
        try:
            reply = handler(call)
        except BadRequest as exc:
            shape = "detail" if group in ("elevenlabs", "fal") else "openai"
            return error_reply(exc.status, str(exc), exc.code, shape)
        if fault == "malformed" and not call.corrupted:
            reply.body = reply.body[: max(1, len(reply.body) // 2)]  # e.g. truncated JSON
        return reply


def _retry_after_headers(seconds: float, fmt: str) -> dict[str, str]:
    if fmt == "ms":
        return {"retry-after-ms": f"{seconds * 1000:g}"}
    if fmt == "http-date":
        return {"retry-after": formatdate(time.time() + seconds, usegmt=True)}
    return {"retry-after": f"{seconds:g}"}


# Names tests and callers import from here since the simulator was one module.
__all__ = [
    "ROUTES",
    "BadRequest",
    "Call",
    "Job",
    "ProviderSimulator",
    "Reply",
    "Speech",
    "bad_wav",
    "broken_mp4",
    "broken_png",
    "encode_wav16",
    "error_reply",
    "json_reply",
    "render_png",
    "spoken_speech",
    "synth_speech",
]
