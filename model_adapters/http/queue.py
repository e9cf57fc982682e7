"""Submit-then-poll image queues: Replicate, fal, GMI Cloud's request queue.

Each adapter submits one job, polls its status with backoff (options
``poll_interval_s``, default 0.5; ``poll_backoff``, 1.5; ``poll_max_interval_s``,
5) until it is terminal, then downloads the first output image with
`fetch_media` (allow-list applied) and fits it to the requested size (scale to
cover, centre crop; see `fit_png`). Submit, polls and download all run under
one deadline of ``timeout_s``: past it, ProviderTimeout. A job the provider
reports as failed raises ContentPolicyError when its error says the content
was refused, FatalProviderError otherwise. Status and result URLs that a
provider returns are followed only on allowed origins.

Options shared by the three: ``extra_input`` (a JSON object merged into the
model input), ``palette_in_prompt`` (default true), and the poll options.

`FalQueue` is fal's submit/status/result protocol on its own; `FalImages`
and the hosted video adapter (`model_adapters.http.video.FalVideoCompose`)
both speak it.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from model_adapters.http.base import HttpAdapter, Reply
from model_adapters.http.errors import is_content_policy
from model_adapters.http.options import POLL_OPTIONS
from model_adapters.types import AdapterError, ContentPolicyError, FatalProviderError, ImageRequest, ImageResult


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore")


def job_failed(adapter: HttpAdapter, endpoint: str, job: str, status: str, error: str | None) -> AdapterError:
    """A job the provider reports as failed: ContentPolicyError when its error says
    the content was refused, FatalProviderError otherwise."""
    message = f"{endpoint}: job {job} {status}: {(error or 'no error message')[:300]}"
    cls = ContentPolicyError if is_content_policy(error or "") else FatalProviderError
    return adapter._error(cls, message)


class QueueImageAdapter(HttpAdapter):
    """The shared flow; subclasses implement `_run_job` (submit and poll) -> output URLs."""

    task = "image"
    capabilities = frozenset({"size:any", "fit:cover-crop", "seed"})
    adapter_options = POLL_OPTIONS | {"extra_input", "palette_in_prompt"}

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self.extra_input = self.options.json_object("extra_input")
        self._poll_schedule()  # validate the poll options now, not mid-run

    def _prompt(self, request: ImageRequest) -> str:
        if request.palette and self.options.flag("palette_in_prompt", True):
            return f"{request.prompt}. Colour palette: {', '.join(request.palette)}."
        return request.prompt

    async def generate(self, request: ImageRequest) -> ImageResult:
        async with self._deadline(f"{self.provider} image job"):
            urls = await self._run_job(request)
            if not urls:
                raise self._malformed(f"{self.provider} job", "the job succeeded without an output URL")
            data = await self.load_media(urls[0])
        return self._fit_png(data, request.width, request.height, "GET media")

    async def _run_job(self, request: ImageRequest) -> list[str]:
        raise NotImplementedError

    def _job_failed(self, endpoint: str, job: str, status: str, error: str | None) -> AdapterError:
        return job_failed(self, endpoint, job, status, error)


# --- Replicate --------------------------------------------------------------------------


class _PredictionUrls(_Lenient):
    get: str | None = None


class _Prediction(_Lenient):
    id: str
    status: str
    output: str | list[str] | None = None
    error: str | None = None
    urls: _PredictionUrls | None = None


_REPLICATE_TERMINAL = frozenset({"succeeded", "failed", "canceled", "aborted"})
_REPLICATE_RUNNING = frozenset({"starting", "processing"})


class ReplicateImages(QueueImageAdapter):
    """Replicate predictions: ``POST {base}/v1/predictions`` with
    ``{"version": <options.version or model>, "input": {prompt, width, height, seed}}``,
    then ``urls.get`` (or ``GET {base}/v1/predictions/{id}``) until succeeded,
    failed or canceled. The output is a URL or a list of URLs (``data:`` URIs
    too). Option ``version``: a version id (it is also the model_version).
    """

    provider = "replicate"
    default_base_url = "https://api.replicate.com"
    adapter_options = QueueImageAdapter.adapter_options | {"version"}

    def _model_version(self) -> str:
        return self.options.text("version") or self.model

    def request_body(self, request: ImageRequest) -> dict[str, Any]:
        model_input = {
            "prompt": self._prompt(request),
            "width": request.width,
            "height": request.height,
            "seed": request.seed,
        }
        return {"version": self.options.text("version") or self.model, "input": {**model_input, **self.extra_input}}

    async def _run_job(self, request: ImageRequest) -> list[str]:
        reply = await self._request("POST", self._url("v1/predictions"), json_body=self.request_body(request))
        prediction = self._parse(_Prediction, self._json(reply), reply.endpoint)
        job = self._job_id(prediction.id, reply.endpoint, "prediction id")
        get_url = (
            self._checked_url(prediction.urls.get, "urls.get")
            if prediction.urls and prediction.urls.get
            else self._url(f"v1/predictions/{job}")
        )

        async def check() -> _Prediction | None:
            status_reply = await self._request("GET", get_url)
            current = self._parse(_Prediction, self._json(status_reply), status_reply.endpoint)
            if current.status in _REPLICATE_TERMINAL:
                return current
            if current.status not in _REPLICATE_RUNNING:
                raise self._malformed(status_reply.endpoint, f"unknown prediction status {current.status!r}")
            return None

        if prediction.status not in _REPLICATE_TERMINAL:
            prediction = await self._poll(check)
        if prediction.status != "succeeded":
            raise self._job_failed("GET /v1/predictions", job, prediction.status, prediction.error)
        output = prediction.output
        return [output] if isinstance(output, str) else list(output or [])


# --- fal ----------------------------------------------------------------------------------


class _FalSubmit(_Lenient):
    request_id: str
    status_url: str | None = None
    response_url: str | None = None


class _FalStatus(_Lenient):
    status: str
    error: str | None = None


class _FalImage(_Lenient):
    url: str


class _FalResult(_Lenient):
    images: list[_FalImage] = Field(min_length=1)
    has_nsfw_concepts: list[bool] = Field(default_factory=list)


_FAL_RUNNING = frozenset({"IN_QUEUE", "IN_PROGRESS"})


class FalQueue(HttpAdapter):
    """fal's queue protocol, shared by `FalImages` and `model_adapters.http.video.FalVideoCompose`:
    ``POST {base}/{model}`` with the model input -> ``{request_id, status_url, response_url}``;
    poll ``status_url`` until COMPLETED (an ``error`` there fails the job), then
    ``GET response_url``. Without those URLs in the submit answer, the paths
    ``{model}/requests/{id}[/status]`` are used. The key travels as ``Authorization: Key ...``.
    """

    provider = "fal"
    default_base_url = "https://queue.fal.run"
    auth_template = "Key {key}"

    async def _fal_job(self, body: dict[str, Any]) -> tuple[Reply, str]:
        """Submit `body`, poll until COMPLETED; the result reply and the request id."""
        reply = await self._request("POST", self._url(self.model), json_body=body)
        submitted = self._parse(_FalSubmit, self._json(reply), reply.endpoint)
        job = self._job_id(submitted.request_id, reply.endpoint, "request_id")
        status_url = (
            self._checked_url(submitted.status_url, "status_url")
            if submitted.status_url
            else self._url(f"{self.model}/requests/{job}/status")
        )
        response_url = (
            self._checked_url(submitted.response_url, "response_url")
            if submitted.response_url
            else self._url(f"{self.model}/requests/{job}")
        )

        async def check() -> _FalStatus | None:
            status_reply = await self._request("GET", status_url)
            status = self._parse(_FalStatus, self._json(status_reply), status_reply.endpoint)
            if status.status == "COMPLETED":
                return status
            if status.status not in _FAL_RUNNING:
                raise self._malformed(status_reply.endpoint, f"unknown queue status {status.status!r}")
            return None

        final = await self._poll(check)
        if final.error:
            raise job_failed(self, "GET fal status", job, "failed", final.error)
        return await self._read_retrying(lambda: self._request("GET", response_url)), job


class FalImages(FalQueue, QueueImageAdapter):
    """fal's queue (`FalQueue`) with ``{prompt, image_size: {width, height}, seed,
    num_images: 1, output_format}`` -> ``images[0].url``. An image flagged in
    ``has_nsfw_concepts`` is a ContentPolicyError. Option ``output_format``
    (default "png").
    """

    adapter_options = QueueImageAdapter.adapter_options | {"output_format"}

    def request_body(self, request: ImageRequest) -> dict[str, Any]:
        body = {
            "prompt": self._prompt(request),
            "image_size": {"width": request.width, "height": request.height},
            "seed": request.seed,
            "num_images": 1,
            "output_format": self.options.text("output_format", "png"),
        }
        return {**body, **self.extra_input}

    async def _run_job(self, request: ImageRequest) -> list[str]:
        result_reply, job = await self._fal_job(self.request_body(request))
        result = self._parse(_FalResult, self._json(result_reply), result_reply.endpoint)
        if result.has_nsfw_concepts and result.has_nsfw_concepts[0]:
            raise self._error(ContentPolicyError, f"{result_reply.endpoint}: job {job}: image flagged as NSFW")
        return [image.url for image in result.images]


# --- GMI Cloud request queue ---------------------------------------------------------------


class _GmiSubmit(_Lenient):
    request_id: str
    status: str | None = None


class _GmiRequest(_Lenient):
    request_id: str | None = None
    status: str
    outcome: dict[str, Any] | None = None
    error: str | dict[str, Any] | None = None


_GMI_DONE = frozenset({"success", "succeeded", "completed"})
_GMI_FAILED = frozenset({"failed", "error", "cancelled", "canceled"})


def gmi_media_urls(outcome: dict[str, Any] | None) -> list[str]:
    """Media URLs from a GMI outcome: ``media_urls`` ([{url}] or [str]), or
    ``image_urls`` / ``images`` / ``url`` / ``image_url``."""
    if not outcome:
        return []
    urls: list[str] = []
    for key in ("media_urls", "image_urls", "images"):
        for item in outcome.get(key) or []:
            if isinstance(item, str):
                urls.append(item)
            elif isinstance(item, dict) and isinstance(item.get("url"), str):
                urls.append(item["url"])
    for key in ("url", "image_url"):
        if isinstance(outcome.get(key), str):
            urls.append(outcome[key])
    return urls


class GmiImages(QueueImageAdapter):
    """GMI Cloud's request queue: ``POST {base}/{requests_path}`` with
    ``{"model", "payload": {prompt, size: "WxH", seed}}`` -> ``{request_id}``;
    poll ``GET {base}/{requests_path}/{request_id}`` until success or failed;
    the image is the outcome's first media URL. Option ``requests_path``
    (default "requestqueue/apikey/requests", GMI's path under
    https://console.gmicloud.ai/api/v1/ie).
    """

    provider = "gmi-cloud"
    default_base_url = "https://console.gmicloud.ai/api/v1/ie"
    adapter_options = QueueImageAdapter.adapter_options | {"requests_path"}

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self.requests_path = (self.options.text("requests_path") or "requestqueue/apikey/requests").strip("/")

    def request_body(self, request: ImageRequest) -> dict[str, Any]:
        payload = {"prompt": self._prompt(request), "size": f"{request.width}x{request.height}", "seed": request.seed}
        return {"model": self.model, "payload": {**payload, **self.extra_input}}

    async def _run_job(self, request: ImageRequest) -> list[str]:
        reply = await self._request("POST", self._url(self.requests_path), json_body=self.request_body(request))
        submitted = self._parse(_GmiSubmit, self._json(reply), reply.endpoint)
        job = self._job_id(submitted.request_id, reply.endpoint, "request_id")
        status_url = self._url(f"{self.requests_path}/{job}")

        async def check() -> _GmiRequest | None:
            status_reply = await self._request("GET", status_url)
            current = self._parse(_GmiRequest, self._json(status_reply), status_reply.endpoint)
            return current if current.status.lower() in _GMI_DONE | _GMI_FAILED else None

        final = await self._poll(check)
        if final.status.lower() in _GMI_FAILED:
            error = final.error if isinstance(final.error, str) else str(final.error or (final.outcome or {}).get("error") or "")
            raise self._job_failed(f"GET /{self.requests_path}", job, final.status, error)
        return gmi_media_urls(final.outcome)
