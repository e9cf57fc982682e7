"""What an endpoint handler sees and answers: `Call` (one request, with the fault drawn for it),
`Reply`, `BadRequest` (a 4xx naming the field), queued `Job`s, and the request checks several
provider formats share (sizes, speech speed, the speech and PNGs a call answers with)."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from model_adapters.simulator.media import Speech, broken_png, render_png, spoken_speech, synth_speech

if TYPE_CHECKING:
    from model_adapters.simulator.server import ProviderSimulator

JSON_TYPE = "application/json"


@dataclass
class Reply:
    status: int
    body: bytes = b""
    content_type: str = JSON_TYPE
    headers: dict[str, str] = field(default_factory=dict)


def json_reply(data: Any, status: int = 200) -> Reply:
    return Reply(status, json.dumps(data).encode(), JSON_TYPE)


def error_reply(status: int, message: str, code: str = "error", shape: str = "openai") -> Reply:
    if shape == "detail":
        return json_reply({"detail": {"status": code, "message": message}}, status)
    kind = "server_error" if status >= 500 else "rate_limit_error" if status == 429 else "invalid_request_error"
    return json_reply({"error": {"message": message, "type": kind, "code": code}}, status)


class BadRequest(Exception):
    def __init__(self, message: str, status: int = 400, code: str = "invalid_request"):
        super().__init__(message)
        self.status = status
        self.code = code


@dataclass
class Call:
    """What a handler sees of one request."""

    sim: ProviderSimulator
    group: str
    params: dict[str, str]
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes
    fault: str
    corrupted: bool = False  # a handler already made the media malformed

    def json(self) -> dict[str, Any]:
        try:
            data = json.loads(self.body or b"null")
        except (ValueError, UnicodeDecodeError):
            raise BadRequest("request body is not valid JSON") from None
        if not isinstance(data, dict):
            raise BadRequest("request body must be a JSON object")
        return data

    def corrupt_media(self) -> bool:
        """Whether this answer's media must be malformed (a broken PNG, a bad WAV
        header) instead of its JSON being truncated; marks the call as done."""
        kind = self.sim.settings.for_group(self.group).faults.malformed_kind
        if self.fault == "malformed" and kind in ("auto", "broken_png", "bad_wav", "broken_mp4"):
            self.corrupted = True
        return self.corrupted

    def png(self, prompt: str, width: int, height: int, seed: int) -> bytes:
        override = self.sim.settings.image_size_override
        width, height = override if override else (width, height)
        if self.corrupt_media():
            return broken_png(width, height)
        return render_png(prompt, width, height, seed)


@dataclass
class Job:
    id: str
    group: str
    submitted_at: float
    ready_at: float
    outcome: str  # "ok", "failed", "policy"
    media_ids: list[str]
    info: dict[str, Any] = field(default_factory=dict)

    def ready(self) -> bool:
        return time.monotonic() >= self.ready_at


def parse_size(value: Any, default: tuple[int, int]) -> tuple[int, int]:
    """A requested size: ``"WxH"``, ``{"width", "height"}``, or `default` when absent."""
    if isinstance(value, str):
        match = re.fullmatch(r"(\d+)x(\d+)", value.strip())
        if not match:
            raise BadRequest(f"invalid size {value!r}; expected WxH", code="invalid_size")
        return int(match.group(1)), int(match.group(2))
    if isinstance(value, dict):
        return int(value.get("width", default[0])), int(value.get("height", default[1]))
    return default


def check_size(width: int, height: int) -> tuple[int, int]:
    """The size, refused (422) outside what the simulator draws."""
    if not (16 <= width <= 4096 and 16 <= height <= 4096):
        raise BadRequest(f"size {width}x{height} is outside 16..4096", status=422, code="unsupported_size")
    return width, height


def speech_speed(value: object, low: float, high: float) -> float:
    """A speech request's `speed`, refused outside the provider's documented range."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
        raise BadRequest(f"speed must be a number in [{low}, {high}], got {value!r}", status=422 if low == 0.7 else 400)
    return float(value)


def simulated_speech(call: Call, text: str, sample_rate: int, speed: float) -> Speech:
    """The speech a call answers with: tone bursts or the spoken voice, as ``settings.speech`` says."""
    if call.sim.settings.speech == "tones":
        return synth_speech(text, sample_rate, call.sim.settings.seconds_per_letter / speed)
    return spoken_speech(text, sample_rate, speed)


def job_png(call: Call, prompt: str, width: int, height: int, seed: int) -> list[str]:
    """A queued image job's output: the PNG stored for download, as a one-item list of media ids."""
    check_size(width, height)
    return [call.sim.store_media(call.png(prompt, width, height, seed), "image/png", key=True)]


# An endpoint: one request in, one answer out.
Handler = Callable[[Call], Reply]
