"""ComfyUI's API: queue a workflow (``/prompt``; text-to-image, or img2img from an uploaded
``LoadImage``), read its ``/history``, download with ``/view``, upload with ``/upload/image``."""

from __future__ import annotations

import email.parser
import email.policy
import re
from typing import Any

from model_adapters.simulator.calls import BadRequest, Call, Reply, check_size, job_png, json_reply
from model_adapters.simulator.media import broken_png, refined_png


def _node_input(workflow: dict[str, Any], class_types: tuple[str, ...], key: str) -> Any:
    for node_id in sorted(workflow, key=lambda n: (len(n), n)):
        node = workflow[node_id]
        if isinstance(node, dict) and node.get("class_type") in class_types and key in node.get("inputs", {}):
            return node["inputs"][key]
    return None


def comfy_prompt(call: Call) -> Reply:
    body = call.json()
    workflow = body.get("prompt")
    if not isinstance(workflow, dict) or not all(isinstance(n, dict) and "class_type" in n for n in workflow.values()):
        return json_reply(
            {
                "error": {"type": "invalid_prompt", "message": "Cannot execute because the prompt is invalid"},
                "node_errors": [],
            },
            400,
        )
    outputs = [n for n, node in workflow.items() if node["class_type"] == "SaveImage"]
    if not outputs:
        return json_reply({"error": {"type": "prompt_no_outputs", "message": "Prompt has no outputs"}, "node_errors": []}, 400)
    source_name = _node_input(workflow, ("LoadImage",), "image")
    source = call.sim.uploads.get(str(source_name)) if source_name is not None else None
    if source_name is not None and source is None:
        errors = {"errors": [{"type": "value_not_in_list", "message": "Value not in list", "details": f"image: {source_name!r}"}]}
        return json_reply(
            {
                "error": {"type": "prompt_outputs_failed_validation", "message": "Prompt outputs failed validation"},
                "node_errors": {"LoadImage": errors},
            },
            400,
        )
    size_node = ("ImageScale",) if source is not None else ("EmptyLatentImage",)
    width = int(_node_input(workflow, size_node, "width") or 512)
    height = int(_node_input(workflow, size_node, "height") or 512)
    sampler: dict[str, Any] = next((n for n in workflow.values() if n["class_type"] == "KSampler"), {"inputs": {}})
    positive = sampler["inputs"].get("positive")
    text_node = workflow.get(positive[0]) if isinstance(positive, list) and positive else None
    prompt = str((text_node or {}).get("inputs", {}).get("text") or _node_input(workflow, ("CLIPTextEncode",), "text") or "")
    seed = int(sampler["inputs"].get("seed") or 0)
    check_size(width, height)
    if source is not None:
        png = broken_png(width, height) if call.corrupt_media() else refined_png(source, width, height)
        media = [call.sim.store_media(png, "image/png", key=True)]
    else:
        media = job_png(call, prompt, width, height, seed)
    job = call.sim.new_job(call, media)
    job.info.update(workflow=workflow, outputs=outputs)
    return json_reply({"prompt_id": job.id, "number": len(call.sim.jobs), "node_errors": {}})


def comfy_history(call: Call) -> Reply:
    job = call.sim.jobs.get(call.params["id"])
    if job is None or job.group != "comfyui" or not job.ready():
        return json_reply({})
    entry: dict[str, Any] = {"prompt": [0, job.id, job.info["workflow"], {}, job.info["outputs"]]}
    if job.outcome == "ok":
        images = [{"filename": f"{m}.png", "subfolder": "", "type": "output"} for m in job.media_ids]
        entry["outputs"] = {job.info["outputs"][0]: {"images": images}}
        entry["status"] = {
            "status_str": "success",
            "completed": True,
            "messages": [["execution_success", {"prompt_id": job.id}]],
        }
    else:
        message = "content policy: simulated refusal" if job.outcome == "policy" else "CUDA out of memory (simulated)"
        error = {"prompt_id": job.id, "node_id": "3", "node_type": "KSampler", "exception_message": message}
        entry["outputs"] = {}
        entry["status"] = {"status_str": "error", "completed": False, "messages": [["execution_error", error]]}
    return json_reply({job.id: entry})


def comfy_view(call: Call) -> Reply:
    filename = (call.query.get("filename") or [""])[0]
    media_id = filename.removesuffix(".png")
    stored = call.sim.media_item(media_id)
    if stored is None:
        return Reply(404, b"file not found", "text/plain")
    return Reply(200, stored[0], stored[1])


def comfy_upload(call: Call) -> Reply:
    content_type = call.headers.get("content-type", "")
    if not content_type.startswith("multipart/form-data"):
        raise BadRequest("expected multipart/form-data")
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(f"Content-Type: {content_type}\r\n\r\n".encode() + call.body)
    fields: dict[str, Any] = {}
    filename = None
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if name == "image":
            filename = part.get_filename()
            fields["image"] = part.get_payload(decode=True)
        elif isinstance(name, str) and name:  # an RFC 2231 name comes as a tuple: no field read here
            fields[name] = part.get_content().strip()
    if not fields.get("image") or not filename:
        raise BadRequest("multipart field 'image' with a filename is required")
    name = re.sub(r"[^A-Za-z0-9._-]", "_", filename)
    call.sim.uploads[name] = fields["image"]
    return json_reply({"name": name, "subfolder": fields.get("subfolder", ""), "type": fields.get("type", "input")})
