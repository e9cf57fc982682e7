"""GMI Cloud's request queue: submit an image job under any path prefix ending in
``requestqueue[/apikey]/requests``, poll it until success or failed."""

from __future__ import annotations

import time

from model_adapters.simulator.calls import BadRequest, Call, Reply, job_png, json_reply, parse_size


def gmi_submit(call: Call) -> Reply:
    body = call.json()
    payload = body.get("payload")
    if not body.get("model") or not isinstance(payload, dict) or not payload.get("prompt"):
        raise BadRequest("model and payload.prompt are required")
    width, height = parse_size(payload.get("size") or {k: payload[k] for k in ("width", "height") if k in payload}, (1024, 1024))
    job = call.sim.new_job(call, job_png(call, str(payload["prompt"]), width, height, int(payload.get("seed") or 0)))
    return json_reply({"request_id": job.id, "status": "queued", "model": body["model"]})


def gmi_get(call: Call) -> Reply:
    job = call.sim.job(call.params["id"], "gmi")
    if not job.ready():
        queued = time.monotonic() < job.submitted_at + (job.ready_at - job.submitted_at) / 3
        return json_reply({"request_id": job.id, "status": "queued" if queued else "processing", "outcome": None})
    if job.outcome != "ok":
        error = "content policy violation: the prompt was flagged" if job.outcome == "policy" else "simulated worker failure"
        return json_reply({"request_id": job.id, "status": "failed", "outcome": None, "error": error})
    media = [{"id": m, "url": call.sim.media_url(m)} for m in job.media_ids]
    return json_reply({"request_id": job.id, "status": "success", "outcome": {"media_urls": media}})
