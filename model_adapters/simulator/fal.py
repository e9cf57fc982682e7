"""fal's queue: submit, status, result; image models answer ``images``, the
``fal-ai/ffmpeg-api/compose`` model an MP4 and its thumbnail (encoded on the first result
request after the job completes)."""

from __future__ import annotations

import threading
import time

from model_adapters.simulator.calls import BadRequest, Call, Job, Reply, job_png, json_reply, parse_size
from model_adapters.simulator.fal_compose import FAL_COMPOSE_MODEL, compose_input
from model_adapters.simulator.media import ComposeInput, broken_mp4, encode_compose_mp4


def fal_submit(call: Call) -> Reply:
    if call.params["model"] == FAL_COMPOSE_MODEL:
        return fal_compose_submit(call)
    body = call.json()
    if not body.get("prompt"):
        raise BadRequest("prompt is required", status=422)
    width, height = parse_size(body.get("image_size"), (1024, 768))
    job = call.sim.new_job(call, job_png(call, str(body["prompt"]), width, height, int(body.get("seed") or 0)))
    job.info.update(width=width, height=height, seed=body.get("seed"))
    return _fal_submitted(call, job)


def _fal_submitted(call: Call, job: Job) -> Reply:
    base = f"{call.sim.base_url}/fal/{call.params['model']}/requests/{job.id}"
    return json_reply(
        {
            "request_id": job.id,
            "response_url": base,
            "status_url": f"{base}/status",
            "cancel_url": f"{base}/cancel",
            "queue_position": 0,
        }
    )


def fal_status(call: Call) -> Reply:
    job = call.sim.job(call.params["id"], "fal")
    if job.ready():
        status = {
            "status": "COMPLETED",
            "response_url": f"{call.sim.base_url}/fal/{call.params['model']}/requests/{job.id}",
        }
        if job.outcome == "failed":
            status.update(error="Internal error: simulated failure", error_type="runner_error")
        return json_reply(status)
    queued = time.monotonic() < job.submitted_at + (job.ready_at - job.submitted_at) / 3
    return json_reply({"status": "IN_QUEUE" if queued else "IN_PROGRESS", "queue_position": 0 if not queued else 1})


def fal_result(call: Call) -> Reply:
    job = call.sim.job(call.params["id"], "fal")
    if not job.ready():
        return json_reply({"detail": "Request is still in progress"}, 400)
    if job.outcome == "failed":
        return json_reply({"detail": "Internal error: simulated failure"}, 500)
    if job.info.get("model") == FAL_COMPOSE_MODEL:
        return fal_compose_result(call, job)
    flagged = job.outcome == "policy"
    images = [
        {
            "url": call.sim.media_url(m),
            "width": job.info["width"],
            "height": job.info["height"],
            "content_type": "image/png",
        }
        for m in job.media_ids
    ]
    return json_reply({"images": images, "seed": job.info.get("seed"), "has_nsfw_concepts": [flagged] * len(images)})


def fal_compose_submit(call: Call) -> Reply:
    spec = compose_input(call.json(), call.sim.settings.image_size_override)
    job = call.sim.new_job(call, [])
    job.info.update(model=FAL_COMPOSE_MODEL, compose=spec, corrupt=call.corrupt_media(), lock=threading.Lock())
    return _fal_submitted(call, job)


def fal_compose_result(call: Call, job: Job) -> Reply:
    if job.outcome == "policy":
        return json_reply(
            {"detail": [{"msg": "content policy violation: the media was flagged", "type": "content_policy_violation"}]},
            422,
        )
    with job.info["lock"]:  # encoded once, by the first result request after completion
        if "video_id" not in job.info:
            spec: ComposeInput = job.info["compose"]
            mp4 = encode_compose_mp4(spec)
            if job.info["corrupt"]:
                mp4 = broken_mp4(mp4)
            job.info["video_id"] = call.sim.store_media(mp4, "video/mp4", key=True)
            job.info["thumbnail_id"] = call.sim.store_media(spec.png, "image/png", key=True)
            job.info["compose"] = None  # the decoded inputs are not needed any more
    return json_reply(
        {
            "video_url": call.sim.media_url(job.info["video_id"], ".mp4"),
            "thumbnail_url": call.sim.media_url(job.info["thumbnail_id"]),
        }
    )
