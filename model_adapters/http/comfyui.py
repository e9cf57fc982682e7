"""A ComfyUI server: draft images and refinement through API-format workflows.

Flow: ``POST {base}/prompt`` with ``{"prompt": <workflow>, "client_id"}`` ->
``{"prompt_id"}``; poll ``GET {base}/history/{prompt_id}`` until the entry has
outputs (or an error status); fetch the output image with
``GET {base}/view?filename=&subfolder=&type=``. Refinement first uploads the
source with ``POST {base}/upload/image`` (multipart, field ``image``).

Workflows are ComfyUI's API format (Save (API Format) in the UI): a mapping of
node id -> ``{"class_type", "inputs"}``. Placeholders ``{{name}}`` in string
inputs are filled per call: a string that is exactly one placeholder becomes
the typed value (``"{{seed}}"`` -> 42), otherwise the placeholder is replaced
in the text. Placeholders: prompt, negative_prompt, seed, width, height,
checkpoint, steps, cfg, sampler, scheduler; refinement adds image (the
uploaded file) and denoise. The defaults below are the plain checkpoint ->
KSampler -> VAEDecode -> SaveImage graphs; option ``workflow_path`` names a
JSON file to use instead (read when the adapter is built).

Options: ``workflow_path``, ``output_node`` (node id whose images to take;
default the first node with images), ``negative_prompt``, ``steps`` (25),
``cfg`` (7.0), ``sampler`` ("euler"), ``scheduler`` ("normal"),
``palette_in_prompt`` (true); refine also ``denoise`` (0.35) and
``refine_prompt``. ``model`` is the checkpoint file name. The key, if
``api_key_env`` is set (a ComfyUI behind an authenticating proxy), travels as
``Authorization: Bearer``.

The refiner crops and scales to the exact output size inside the workflow
(ImageScale, crop center) and re-samples lightly; it does not typeset the
headline (the local refiner does): capability "headline:not-set".
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import re
import uuid
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from model_adapters.http.base import HttpAdapter
from model_adapters.http.decoding import MediaError, open_image
from model_adapters.http.errors import is_content_policy
from model_adapters.http.options import POLL_OPTIONS
from model_adapters.types import ContentPolicyError, FatalProviderError, ImageRequest, ImageResult, RefineRequest

_PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")

IMAGE_PLACEHOLDERS = frozenset(
    {"prompt", "negative_prompt", "seed", "width", "height", "checkpoint", "steps", "cfg", "sampler", "scheduler"}
)
REFINE_PLACEHOLDERS = IMAGE_PLACEHOLDERS | {"image", "denoise"}

DEFAULT_NEGATIVE_PROMPT = "text, letters, watermark, logo, blurry, low quality, deformed"
DEFAULT_REFINE_PROMPT = "high detail, crisp, clean commercial photography, balanced light"

_SAMPLER = {
    "seed": "{{seed}}",
    "steps": "{{steps}}",
    "cfg": "{{cfg}}",
    "sampler_name": "{{sampler}}",
    "scheduler": "{{scheduler}}",
    "model": ["4", 0],
    "positive": ["6", 0],
    "negative": ["7", 0],
}
_COMMON_NODES: dict[str, Any] = {
    "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "{{checkpoint}}"}},
    "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "{{prompt}}", "clip": ["4", 1]}},
    "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "{{negative_prompt}}", "clip": ["4", 1]}},
    "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
    "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "campaign-studio", "images": ["8", 0]}},
}

DEFAULT_IMAGE_WORKFLOW: dict[str, Any] = {
    "3": {"class_type": "KSampler", "inputs": {**_SAMPLER, "denoise": 1.0, "latent_image": ["5", 0]}},
    "5": {"class_type": "EmptyLatentImage", "inputs": {"width": "{{width}}", "height": "{{height}}", "batch_size": 1}},
    **_COMMON_NODES,
}

DEFAULT_REFINE_WORKFLOW: dict[str, Any] = {
    "10": {"class_type": "LoadImage", "inputs": {"image": "{{image}}"}},
    "11": {
        "class_type": "ImageScale",
        "inputs": {
            "image": ["10", 0],
            "upscale_method": "lanczos",
            "width": "{{width}}",
            "height": "{{height}}",
            "crop": "center",
        },
    },
    "12": {"class_type": "VAEEncode", "inputs": {"pixels": ["11", 0], "vae": ["4", 2]}},
    "3": {"class_type": "KSampler", "inputs": {**_SAMPLER, "denoise": "{{denoise}}", "latent_image": ["12", 0]}},
    **_COMMON_NODES,
}


def placeholders_in(node: Any) -> set[str]:
    if isinstance(node, str):
        return set(_PLACEHOLDER.findall(node))
    if isinstance(node, dict):
        return set().union(*(placeholders_in(v) for v in node.values())) if node else set()
    if isinstance(node, list):
        return set().union(*(placeholders_in(v) for v in node)) if node else set()
    return set()


def fill_workflow(node: Any, values: dict[str, Any]) -> Any:
    """A copy of the workflow with every ``{{name}}`` replaced (see the module docstring)."""
    if isinstance(node, str):
        whole = _PLACEHOLDER.fullmatch(node)
        if whole:
            return values[whole.group(1)]
        return _PLACEHOLDER.sub(lambda m: str(values[m.group(1)]), node)
    if isinstance(node, dict):
        return {k: fill_workflow(v, values) for k, v in node.items()}
    if isinstance(node, list):
        return [fill_workflow(v, values) for v in node]
    return copy.deepcopy(node)


def load_workflow(path: str, allowed: frozenset[str]) -> dict[str, Any]:
    """An API-format workflow from a JSON file, its placeholders checked."""
    try:
        workflow = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ValueError(f"cannot read ComfyUI workflow {path}: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"ComfyUI workflow {path} is not valid JSON: {exc}") from None
    if not isinstance(workflow, dict) or "nodes" in workflow:
        raise ValueError(f"ComfyUI workflow {path} is not in API format (export it with 'Save (API Format)')")
    for node_id, node in workflow.items():
        if not isinstance(node, dict) or "class_type" not in node or not isinstance(node.get("inputs"), dict):
            raise ValueError(f"ComfyUI workflow {path}: node {node_id!r} has no class_type and inputs")
    unknown = placeholders_in(workflow) - allowed
    if unknown:
        raise ValueError(f"ComfyUI workflow {path}: unknown placeholders {sorted(unknown)}; known: {sorted(allowed)}")
    return workflow


def refine_size(aspect_ratio: str, min_short_side: int, source_size: tuple[int, int]) -> tuple[int, int]:
    """(width, height) of a refined image, as the local refiner computes it: the
    exact ratio, even sides, short side >= min_short_side and >= the source's
    (cropped to the ratio), so a source is never downscaled."""
    a, b = (int(x) for x in aspect_ratio.split(":"))
    w, h = source_size
    crop = (max(1, round(h * a / b)), h) if w * b > h * a else (w, max(1, round(w * b / a)))
    k = math.ceil(max(min_short_side, min(crop)) / min(a, b))
    k += k % 2
    return a * k, b * k


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore")


class _Submitted(_Lenient):
    prompt_id: str
    node_errors: dict[str, Any] | list[Any] = Field(default_factory=dict)


class _OutputImage(_Lenient):
    filename: str
    subfolder: str = ""
    type: str = "output"


class _NodeOutput(_Lenient):
    images: list[_OutputImage] = Field(default_factory=list)


class _Status(_Lenient):
    status_str: str | None = None
    completed: bool | None = None
    messages: list[Any] = Field(default_factory=list)


class _HistoryEntry(_Lenient):
    outputs: dict[str, _NodeOutput] = Field(default_factory=dict)
    status: _Status | None = None


class _Uploaded(_Lenient):
    name: str
    subfolder: str = ""


def _execution_error(status: _Status) -> str:
    for message in status.messages:
        if isinstance(message, list) and len(message) == 2 and message[0] == "execution_error":
            data = message[1] if isinstance(message[1], dict) else {}
            return f"{data.get('node_type', 'node')}: {data.get('exception_message', 'execution error')}".strip()
    return status.status_str or "error"


class _ComfyUIAdapter(HttpAdapter):
    provider = "comfyui"
    default_base_url = "http://127.0.0.1:8188"
    default_model = "sd_xl_base_1.0.safetensors"
    adapter_options = POLL_OPTIONS | {
        "workflow_path",
        "output_node",
        "negative_prompt",
        "steps",
        "cfg",
        "sampler",
        "scheduler",
        "palette_in_prompt",
    }
    placeholders: frozenset[str] = IMAGE_PLACEHOLDERS
    default_workflow: dict[str, Any] = DEFAULT_IMAGE_WORKFLOW

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        path = self.options.text("workflow_path")
        self.workflow = load_workflow(path, self.placeholders) if path else self.default_workflow
        self._poll_schedule()

    def _extra_capabilities(self) -> frozenset[str]:
        path = self.options.text("workflow_path")
        return frozenset({f"workflow:{Path(path).name}" if path else "workflow:default"})

    def _values(self, prompt: str, seed: int, width: int, height: int, palette: tuple[str, ...]) -> dict[str, Any]:
        if palette and self.options.flag("palette_in_prompt", True):
            prompt = f"{prompt}, colour palette {', '.join(palette)}"
        return {
            "prompt": prompt,
            "negative_prompt": self.options.text("negative_prompt", DEFAULT_NEGATIVE_PROMPT),
            "seed": seed,
            "width": width,
            "height": height,
            "checkpoint": self.model,
            "steps": self.options.integer("steps", 25),
            "cfg": self.options.number("cfg", 7.0),
            "sampler": self.options.text("sampler", "euler"),
            "scheduler": self.options.text("scheduler", "normal"),
        }

    async def _run(self, workflow: dict[str, Any]) -> bytes:
        """Queue a workflow, wait for its history entry, download its first output image."""
        body = {"prompt": workflow, "client_id": uuid.uuid4().hex}
        reply = await self._request("POST", self._url("prompt"), json_body=body)
        submitted = self._parse(_Submitted, self._json(reply), reply.endpoint)
        if submitted.node_errors:
            detail = json.dumps(submitted.node_errors)[:300]
            raise self._error(FatalProviderError, f"{reply.endpoint}: the workflow has node errors: {detail}")
        prompt_id = self._job_id(submitted.prompt_id, reply.endpoint, "prompt_id")
        history_url = self._url(f"history/{prompt_id}")

        async def check() -> _HistoryEntry | None:
            history_reply = await self._request("GET", history_url)
            history = self._json(history_reply)
            if not isinstance(history, dict):
                raise self._malformed(history_reply.endpoint, "history is not a JSON object")
            if prompt_id not in history:
                return None
            entry = self._parse(_HistoryEntry, history[prompt_id], history_reply.endpoint)
            done = entry.outputs or (entry.status is not None and (entry.status.completed or entry.status.status_str == "error"))
            return entry if done else None

        entry = await self._poll(check)
        if entry.status is not None and entry.status.status_str == "error":
            error = _execution_error(entry.status)
            cls = ContentPolicyError if is_content_policy(error) else FatalProviderError
            raise self._error(cls, f"GET /history: prompt {prompt_id} failed: {error[:300]}")
        image = self._output_image(entry, prompt_id)
        params = {"filename": image.filename, "subfolder": image.subfolder, "type": image.type}
        return await self.fetch_media(str(self._url("view").copy_merge_params(params)))

    def _output_image(self, entry: _HistoryEntry, prompt_id: str) -> _OutputImage:
        wanted = self.options.text("output_node")
        nodes = [wanted] if wanted else sorted(entry.outputs, key=lambda n: (len(n), n))
        for node_id in nodes:
            output = entry.outputs.get(node_id)
            if output and output.images:
                return output.images[0]
        where = f"node {wanted}" if wanted else "any node"
        raise self._malformed("GET /history", f"prompt {prompt_id} finished without images from {where}")


class ComfyUIImages(_ComfyUIAdapter):
    """Draft images (task image); see the module docstring."""

    task = "image"
    capabilities = frozenset({"size:multiple-of-8", "fit:cover-crop", "seed"})

    async def generate(self, request: ImageRequest) -> ImageResult:
        values = self._values(request.prompt, request.seed, request.width, request.height, request.palette)
        async with self._deadline("ComfyUI image workflow"):
            data = await self._run(fill_workflow(self.workflow, values))
        return self._fit_png(data, request.width, request.height, "GET /view")


class ComfyUIRefine(_ComfyUIAdapter):
    """Refinement (task refine): upload the draft, run the img2img workflow at the
    target size (`refine_size`); see the module docstring."""

    task = "refine"
    capabilities = frozenset({"upscale", "fit:cover-crop", "headline:not-set"})
    adapter_options = _ComfyUIAdapter.adapter_options | {"denoise", "refine_prompt"}
    placeholders = REFINE_PLACEHOLDERS
    default_workflow = DEFAULT_REFINE_WORKFLOW

    async def refine(self, request: RefineRequest, source_png: bytes) -> ImageResult:
        digest = hashlib.sha256(source_png).hexdigest()
        if digest != request.source_sha256:
            raise ValueError(f"source bytes hash to {digest}, not the request's source_sha256 {request.source_sha256}")
        try:
            source_size = open_image(source_png).size
        except MediaError as exc:
            raise ValueError(f"source image: {exc}") from None
        width, height = refine_size(request.aspect_ratio, request.min_short_side, source_size)
        prompt = self.options.text("refine_prompt", DEFAULT_REFINE_PROMPT) or DEFAULT_REFINE_PROMPT
        async with self._deadline("ComfyUI refine workflow"):
            upload = await self._request(
                "POST",
                self._url("upload/image"),
                files={"image": (f"draft-{digest[:16]}.png", source_png, "image/png")},
                data={"overwrite": "true", "type": "input"},
            )
            uploaded = self._parse(_Uploaded, self._json(upload), upload.endpoint)
            values = {
                **self._values(prompt, request.seed, width, height, request.palette),
                "image": f"{uploaded.subfolder}/{uploaded.name}" if uploaded.subfolder else uploaded.name,
                "denoise": self.options.number("denoise", 0.35),
            }
            data = await self._run(fill_workflow(self.workflow, values))
        return self._fit_png(data, width, height, "GET /view")
