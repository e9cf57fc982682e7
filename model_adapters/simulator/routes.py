"""Which handler answers which method and path, in which endpoint group; the groups whose jobs
are queued; per-group content-policy replies; and the simulator's own media download
(``GET /_sim/media/{id}``: public, like a CDN's)."""

from __future__ import annotations

import re
from collections.abc import Callable

from model_adapters.simulator.calls import Call, Handler, Reply, error_reply
from model_adapters.simulator.comfyui import comfy_history, comfy_prompt, comfy_upload, comfy_view
from model_adapters.simulator.elevenlabs import elevenlabs_speech
from model_adapters.simulator.fal import fal_result, fal_status, fal_submit
from model_adapters.simulator.gmi import gmi_get, gmi_submit
from model_adapters.simulator.media import broken_png
from model_adapters.simulator.openai_compat import openai_chat, openai_images, openai_speech
from model_adapters.simulator.replicate import replicate_get, replicate_submit


def media_get(call: Call) -> Reply:
    """A stored image or MP4 handed out by the other endpoints (or a 302 to ``media_redirect_to``)."""
    redirect = call.sim.settings.media_redirect_to
    if redirect:
        return Reply(302, b"", "text/plain", {"location": f"{redirect.rstrip('/')}/_sim/media/{call.params['id']}"})
    stored = call.sim.media_item(call.params["id"].split(".", 1)[0])  # m<n>-<hash>.png / .mp4
    if stored is None:
        return Reply(404, b"no such media", "text/plain")
    data, content_type = stored
    if content_type == "image/png" and call.corrupt_media():
        data = broken_png(64, 64)
    return Reply(200, data, content_type)


# (method, path pattern, group, endpoint name, handler, is a job submit)
ROUTES: tuple[tuple[str, re.Pattern[str], str, str, Handler, bool], ...] = tuple(
    (method, re.compile(pattern), group, name, handler, submit)
    for method, pattern, group, name, handler, submit in (
        ("POST", r"/v1/chat/completions", "openai_chat", "openai.chat.completions", openai_chat, False),
        ("POST", r"/v1/images/generations", "openai_images", "openai.images.generations", openai_images, False),
        ("POST", r"/v1/audio/speech", "openai_speech", "openai.audio.speech", openai_speech, False),
        ("POST", r"/v1/predictions", "replicate", "replicate.predictions.create", replicate_submit, True),
        ("GET", r"/v1/predictions/(?P<id>[\w-]+)", "replicate", "replicate.predictions.get", replicate_get, False),
        ("GET", r"/fal/(?P<model>.+)/requests/(?P<id>[\w-]+)/status", "fal", "fal.status", fal_status, False),
        ("GET", r"/fal/(?P<model>.+)/requests/(?P<id>[\w-]+)", "fal", "fal.result", fal_result, False),
        ("POST", r"/fal/(?P<model>.+)", "fal", "fal.submit", fal_submit, True),
        ("POST", r"(?:/[\w.-]+)*/requestqueue(?:/apikey)?/requests", "gmi", "gmi.requests.create", gmi_submit, True),
        (
            "GET",
            r"(?:/[\w.-]+)*/requestqueue(?:/apikey)?/requests/(?P<id>[\w-]+)",
            "gmi",
            "gmi.requests.get",
            gmi_get,
            False,
        ),
        ("POST", r"/prompt", "comfyui", "comfyui.prompt", comfy_prompt, True),
        ("GET", r"/history/(?P<id>[\w-]+)", "comfyui", "comfyui.history", comfy_history, False),
        ("GET", r"/view", "comfyui", "comfyui.view", comfy_view, False),
        ("POST", r"/upload/image", "comfyui", "comfyui.upload", comfy_upload, False),
        (
            "POST",
            r"/v1/text-to-speech/(?P<voice>[\w-]+)/with-timestamps",
            "elevenlabs",
            "elevenlabs.tts.with_timestamps",
            elevenlabs_speech,
            False,
        ),
        ("GET", r"/_sim/media/(?P<id>[\w.-]+)", "media", "media.get", media_get, False),
    )
)

QUEUE_GROUPS = frozenset({"replicate", "fal", "gmi", "comfyui"})

CONTENT_POLICY_REPLIES: dict[str, Callable[[], Reply]] = {
    "elevenlabs": lambda: error_reply(400, "The text was flagged by our content moderation.", "content_policy_violation", "detail"),
}


def route(method: str, path: str) -> tuple[str, str, Handler, bool, dict[str, str]] | None:
    """(group, endpoint name, handler, is a submit, path parameters) of the first matching route."""
    for route_method, pattern, group, name, handler, submit in ROUTES:
        if route_method == method:
            match = pattern.fullmatch(path)
            if match:
                return group, name, handler, submit, match.groupdict()
    return None
