"""Replicate's predictions: submit an image job, poll it (starting, processing, then succeeded or
failed); the output is a list of media URLs or one URL (``replicate_output``)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from model_adapters.simulator.calls import BadRequest, Call, Job, Reply, job_png, json_reply

if TYPE_CHECKING:
    from model_adapters.simulator.server import ProviderSimulator


def replicate_submit(call: Call) -> Reply:
    body = call.json()
    model_input = body.get("input")
    if not (body.get("version") or body.get("model")) or not isinstance(model_input, dict) or not model_input.get("prompt"):
        raise BadRequest("version (or model) and input.prompt are required", status=422)
    width, height = int(model_input.get("width", 1024)), int(model_input.get("height", 1024))
    job = call.sim.new_job(call, job_png(call, str(model_input["prompt"]), width, height, int(model_input.get("seed") or 0)))
    job.info["version"] = str(body.get("version") or body.get("model"))
    return json_reply(_prediction(call.sim, job), 201)


def _prediction(sim: ProviderSimulator, job: Job) -> dict[str, Any]:
    status, output, error = "processing", None, None
    if time.monotonic() < job.submitted_at + (job.ready_at - job.submitted_at) / 3:
        status = "starting"
    if job.ready():
        if job.outcome == "ok":
            urls = [sim.media_url(m) for m in job.media_ids]
            status, output = "succeeded", urls if sim.settings.replicate_output == "list" else urls[0]
        else:
            status = "failed"
            error = "NSFW content detected. Try a different prompt." if job.outcome == "policy" else "CUDA error: simulated failure"
    return {
        "id": job.id,
        "version": job.info.get("version"),
        "status": status,
        "output": output,
        "error": error,
        "urls": {
            "get": f"{sim.base_url}/v1/predictions/{job.id}",
            "cancel": f"{sim.base_url}/v1/predictions/{job.id}/cancel",
        },
    }


def replicate_get(call: Call) -> Reply:
    return json_reply(_prediction(call.sim, call.sim.job(call.params["id"], "replicate")))
