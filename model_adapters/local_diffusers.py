"""Local ``image`` and ``refine`` adapters on a diffusers pipeline (Stable Diffusion, SDXL, ...).

``DiffusersImageGenerator`` (text-to-image, the ``image`` task) and
``DiffusersRefiner`` (image-to-image, the ``refine`` task) run a pipeline whose
weights are already on this machine. Nothing is ever downloaded:

- ``model_path`` is a folder written by ``pipeline.save_pretrained(folder)`` (or
  by ``hf download <repo> --local-dir <folder>``): it holds ``model_index.json``
  and one sub-folder per component; or
- a Hugging Face repo id (``owner/name``) that is already in the local hub
  cache (``$HF_HUB_CACHE``, or the ``cache_dir`` option); it is resolved to its
  cached snapshot folder and never looked up online.

Every load passes ``local_files_only=True`` and runs with ``HF_HUB_OFFLINE=1``
(and huggingface_hub's offline flag) in force: set by :func:`hub_offline` for
the load only, restored after it, never at import. A folder or id that is not
there raises :class:`ModelWeightsNotFound` (a non-retryable ``AdapterError``, so
the router falls back to the route's next provider) naming ``model_path`` and
saying how to provide the weights (docs/diffusers.md).

The pipeline is loaded lazily on the first call, once per process for a given
(folder, device, dtype, variant): a generator and a refiner pointing at the same
weights share one copy (the image-to-image pipeline is made from the
text-to-image one with ``from_pipe``, or the other way round). ``aclose()`` of the
last adapter holding it releases it and empties the CUDA cache. Calls on one
pipeline are serialized (a scheduler has state), and every call holds the
device's compute slot (model_adapters/concurrency.py).

Device: :func:`model_adapters.devices.pick_device` (``$STUDIO_DEVICE``, else CUDA
when available, else CPU). ``dtype="auto"`` is float16 on CUDA and float32
elsewhere. Determinism: the initial noise comes from
``torch.Generator(device).manual_seed(request.seed)``, so an equal request gives
the same picture (byte-identical PNGs on the same machine and build; GPU kernels
may differ between GPU models).

Sizes: the pipeline renders at the requested size rounded to a multiple of the
VAE factor (8, or the pipeline's own factor when larger) and the result is resized
(Lanczos) to exactly the requested size.

Palette: diffusion models cannot take colours as numbers, so the brand palette is
written into the prompt: ``"<prompt>. colour palette: navy (#1b1f3b), coral
(#e07a5f)"``, each hex colour with the name of its nearest basic colour (CIE Lab
distance, :data:`COLOUR_NAMES`) since text encoders know names better than hex
codes. The prompt comes first, so a text encoder that truncates (CLIP: 77 tokens)
drops the palette before the subject.

Options (a routing config provider's ``options``; strings are accepted too,
since the router passes every option as a string):

=================  ==========  =====================================================
option             default     meaning
=================  ==========  =====================================================
model_path         (required)  folder saved with ``save_pretrained``, or a cached repo id
steps              25          ``num_inference_steps``
guidance_scale     7.0         classifier-free guidance (0 for distilled/turbo models)
dtype              auto        auto | float16 | bfloat16 | float32
variant            ""          weight file variant to load, e.g. ``fp16``
negative_prompt    ""          passed when not empty
prompt_suffix      ""          appended to every prompt, e.g. a house style
cache_dir          ""          hub cache to resolve repo ids in (default: $HF_HUB_CACHE)
model_version      ""          overrides the computed ``info.model_version``
strength           0.4         refiner only: how much img2img may change the draft (0..1]
work_short_side    0           refiner only: diffuse at this short side, then upscale (0: at the output size)
headline           true        refiner only: set the headline on the result, as the local refiner does
=================  ==========  =====================================================

``info.model_version``: for a folder, a hash of ``model_index.json``, every
component's JSON/text config and the names and sizes of the weight files
(weights are not hashed: too slow for gigabytes; replacing weights with a
same-sized fine-tune needs the ``model_version`` option); for a cached repo id,
the snapshot's commit hash. While the weights cannot be found it reads
``"missing"`` (the call then fails with :class:`ModelWeightsNotFound`).
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import io
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from model_adapters.concurrency import COMPUTE_SLOTS, PerLoopSemaphores
from model_adapters.devices import pick_device
from model_adapters.model_loading import MODEL_LOAD_LOCK, hub_offline
from model_adapters.palette import RGB, parse_hex, rgb_to_lab
from model_adapters.types import (
    AdapterInfo,
    ContentPolicyError,
    FatalProviderError,
    ImageRequest,
    ImageResult,
    Price,
    RefineRequest,
    UnsupportedInput,
)

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

PROVIDER = "local"
MISSING_VERSION = "missing"
MAX_PIXELS = 4096 * 4096  # larger requests are refused (UnsupportedInput: the route falls back)
VAE_MULTIPLE = 8
PNG_COMPRESS_LEVEL = 1
DTYPES: dict[str, torch.dtype] = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
_REPO_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".ckpt", ".pt", ".pth", ".gguf", ".onnx", ".msgpack")
_CONFIG_SUFFIXES = (".json", ".txt", ".model", ".yaml")
HOW_TO_PROVIDE = (
    "Nothing is downloaded at run time: on a connected machine download the pipeline once "
    "(`hf download <owner>/<name> --local-dir <folder>`, or `pipeline.save_pretrained(<folder>)`), "
    "copy the folder to this machine and set the provider's `options.model_path` to it, or put the repo "
    "in this machine's Hugging Face cache and use its id (see docs/diffusers.md)"
)

# Basic colour names for the prompt (sRGB). A diffusion model's text encoder reads "teal" far better than "#1d7874".
COLOUR_NAMES: dict[str, RGB] = {
    "black": (0, 0, 0),
    "charcoal": (54, 69, 79),
    "grey": (128, 128, 128),
    "silver": (192, 192, 192),
    "white": (255, 255, 255),
    "cream": (255, 248, 220),
    "beige": (222, 203, 164),
    "brown": (121, 68, 39),
    "maroon": (128, 0, 0),
    "red": (220, 30, 40),
    "coral": (240, 128, 100),
    "pink": (255, 170, 200),
    "magenta": (220, 0, 160),
    "purple": (110, 40, 150),
    "lavender": (190, 170, 230),
    "navy": (20, 30, 80),
    "blue": (30, 80, 220),
    "sky blue": (120, 190, 240),
    "teal": (0, 128, 128),
    "turquoise": (64, 224, 208),
    "green": (40, 150, 60),
    "olive": (110, 115, 40),
    "lime": (170, 230, 50),
    "yellow": (250, 220, 40),
    "mustard": (210, 170, 40),
    "gold": (212, 175, 55),
    "orange": (245, 130, 30),
    "peach": (255, 200, 160),
    "sand": (225, 200, 150),
}


class ModelWeightsNotFound(FatalProviderError):
    """The pipeline's weights are not on this machine (a configuration problem: not retried)."""


class PipelineLoadError(FatalProviderError):
    """The weights are there but do not make a pipeline for this task (not retried)."""


# --- options -----------------------------------------------------------------------------------


def _as_bool(name: str, value: bool | str | int) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"option {name}={value!r} is not a boolean (true/false)")


def _as_int(name: str, value: int | str, minimum: int) -> int:
    if isinstance(value, bool):
        raise ValueError(f"option {name}={value!r} is not an integer")
    try:
        number = value if isinstance(value, int) else int(str(value).strip())
    except ValueError:
        raise ValueError(f"option {name}={value!r} is not an integer") from None
    if number < minimum:
        raise ValueError(f"option {name}={value!r} must be an integer >= {minimum}")
    return number


def _as_float(name: str, value: float | int | str, minimum: float, maximum: float | None = None) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"option {name}={value!r} is not a number") from None
    if isinstance(value, bool) or not (number >= minimum and (maximum is None or number <= maximum)):
        bound = f"between {minimum} and {maximum}" if maximum is not None else f">= {minimum}"
        raise ValueError(f"option {name}={value!r} must be {bound}")
    return number


# --- prompts -----------------------------------------------------------------------------------


def colour_name(rgb: RGB) -> str:
    """The basic colour name nearest to ``rgb`` (CIE Lab distance)."""
    names = list(COLOUR_NAMES)
    refs = rgb_to_lab(torch.tensor([COLOUR_NAMES[n] for n in names], dtype=torch.float32) / 255.0)
    lab = rgb_to_lab(torch.tensor([rgb], dtype=torch.float32) / 255.0)
    return names[int(torch.linalg.vector_norm(refs - lab, dim=-1).argmin())]


def describe_palette(palette: tuple[str, ...] | list[str]) -> str:
    """``"colour palette: navy (#1b1f3b), coral (#e07a5f)"``; empty for an empty palette.

    Raises ValueError naming a colour that is not hex.
    """
    parts = []
    for colour in palette:
        rgb = parse_hex(colour)
        parts.append(f"{colour_name(rgb)} (#{rgb[0]:02x}{rgb[1]:02x}{rgb[2]:02x})")
    return f"colour palette: {', '.join(parts)}" if parts else ""


def build_prompt(subject: str, palette: tuple[str, ...] | list[str], suffix: str = "") -> str:
    """The subject first, then the palette, then the house style: what a truncating encoder keeps first."""
    pieces = [p.strip().rstrip(".") for p in (subject, describe_palette(palette), suffix) if p and p.strip()]
    return ". ".join(pieces)


def work_size(width: int, height: int, multiple: int = VAE_MULTIPLE) -> tuple[int, int]:
    """(width, height) rounded to the nearest multiple of ``multiple`` (at least one multiple)."""
    return tuple(max(multiple, round(side / multiple) * multiple) for side in (width, height))  # type: ignore[return-value]


# --- resolving weights (never online) ----------------------------------------------------------


@dataclass(frozen=True)
class ResolvedModel:
    folder: Path
    name: str  # info.model
    version: str  # info.model_version


def folder_version(folder: Path) -> str:
    """A hash of the pipeline's configs and its weight files' names and sizes (not their bytes)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = path.relative_to(folder).as_posix()
        if any(part.startswith(".") for part in rel.split("/")):  # e.g. hf download's .cache/ bookkeeping
            continue
        if path.suffix in _WEIGHT_SUFFIXES:
            digest.update(f"weights {rel} {path.stat().st_size}\n".encode())
        elif path.suffix in _CONFIG_SUFFIXES:
            digest.update(f"config {rel}\n".encode())
            digest.update(path.read_bytes())
            digest.update(b"\n")
    return f"cfg-{digest.hexdigest()[:16]}"


def resolve_model(model_path: str, cache_dir: str = "") -> ResolvedModel:
    """The local folder holding the pipeline, its display name and version; never online.

    Raises ModelWeightsNotFound naming ``model_path`` when it is neither a folder
    with ``model_index.json`` nor a repo id in the local hub cache.
    """
    if not model_path or not model_path.strip():
        raise ModelWeightsNotFound(f"diffusers adapter: option model_path is empty. {HOW_TO_PROVIDE}", provider=PROVIDER)
    model_path = model_path.strip()
    path = Path(model_path).expanduser()
    if path.is_dir():
        if not (path / "model_index.json").is_file():
            raise ModelWeightsNotFound(
                f"diffusers weights not found: model_path={model_path!r} is a folder without model_index.json "
                f"(not a diffusers pipeline saved with save_pretrained). {HOW_TO_PROVIDE}",
                provider=PROVIDER,
            )
        return ResolvedModel(folder=path.resolve(), name=path.resolve().name, version=folder_version(path))
    if not _REPO_ID_RE.match(model_path):
        raise ModelWeightsNotFound(
            f"diffusers weights not found: model_path={model_path!r} is not an existing folder. {HOW_TO_PROVIDE}",
            provider=PROVIDER,
        )
    # owner/name: only the local hub cache is consulted.
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    where = cache_dir or _default_hub_cache()
    try:
        with hub_offline():
            snapshot = Path(snapshot_download(model_path, cache_dir=cache_dir or None, local_files_only=True))
    except (LocalEntryNotFoundError, FileNotFoundError, OSError, ValueError) as exc:
        raise ModelWeightsNotFound(
            f"diffusers weights not found: model_path={model_path!r} is neither a folder nor a repo id in the "
            f"local Hugging Face cache ({where}): {type(exc).__name__}. {HOW_TO_PROVIDE}",
            provider=PROVIDER,
        ) from exc
    if not (snapshot / "model_index.json").is_file():
        raise ModelWeightsNotFound(
            f"diffusers weights not found: the cached snapshot of model_path={model_path!r} ({snapshot}) has no "
            f"model_index.json (downloaded only in part, or not a diffusers pipeline). {HOW_TO_PROVIDE}",
            provider=PROVIDER,
        )
    return ResolvedModel(folder=snapshot, name=model_path, version=snapshot.name)


def _default_hub_cache() -> str:
    import huggingface_hub.constants as hub_constants

    return str(hub_constants.HF_HUB_CACHE)


# --- loaded pipelines, shared per process ------------------------------------------------------


@dataclass
class _Loaded:
    """One loaded set of weights: its pipelines (text-to-image, image-to-image) and who holds them."""

    pipelines: dict[str, Any] = field(default_factory=dict)  # "t2i" / "i2i" -> pipeline
    holders: set[int] = field(default_factory=set)
    run_lock: threading.Lock = field(default_factory=threading.Lock)  # one call at a time on these weights


_LOADED: dict[tuple[str, str, str, str], _Loaded] = {}
_LOAD_LOCK = threading.RLock()


def _load_pipeline(kind: str, folder: Path, device: torch.device, dtype: torch.dtype, variant: str) -> Any:
    """Load the ``kind`` pipeline ("t2i" or "i2i") of a folder onto the device: local files only, offline."""
    from diffusers import AutoPipelineForImage2Image, AutoPipelineForText2Image

    auto = AutoPipelineForText2Image if kind == "t2i" else AutoPipelineForImage2Image
    kwargs: dict[str, Any] = {"dtype": dtype, "local_files_only": True}
    if variant:
        kwargs["variant"] = variant
    with hub_offline():
        with MODEL_LOAD_LOCK:  # from_pretrained patches torch globally (model_adapters/model_loading.py)
            pipe = auto.from_pretrained(str(folder), **kwargs)  # type: ignore[no-untyped-call]  # unannotated in diffusers
    return pipe.to(device)


COMMON_OPTIONS = (
    "model_path",
    "steps",
    "guidance_scale",
    "dtype",
    "variant",
    "negative_prompt",
    "prompt_suffix",
    "cache_dir",
    "model_version",
)


def _merge_options(cls_name: str, options: Mapping[str, Any] | None, given: dict[str, Any], known: tuple[str, ...]) -> dict[str, Any]:
    """Keyword arguments plus an ``options`` mapping (how a routing config's options may arrive)."""
    merged = dict(options or {})
    unknown = sorted(set(merged) - set(known))
    if unknown:
        raise TypeError(f"{cls_name}: unknown option(s) {', '.join(unknown)}; known: {', '.join(known)}")
    clash = sorted(k for k in merged if k in given and given[k] is not None)
    if clash:
        raise TypeError(f"{cls_name}: option(s) {', '.join(clash)} given both as arguments and in options")
    return {**{k: v for k, v in given.items() if v is not None}, **merged}


class _DiffusersAdapter:
    task = ""
    holder = "local-diffusers"

    def _configure(
        self,
        adapter_id: str,
        max_concurrency: int | str = 1,
        model_path: str = "",
        steps: int | str = 25,
        guidance_scale: float | str = 7.0,
        dtype: str = "auto",
        variant: str = "",
        negative_prompt: str = "",
        prompt_suffix: str = "",
        cache_dir: str = "",
        model_version: str = "",
    ) -> None:
        self._adapter_id = adapter_id
        self._max_concurrency = _as_int("max_concurrency", max_concurrency, 1)
        self.model_path = str(model_path or "").strip()
        self.steps = _as_int("steps", steps, 1)
        self.guidance_scale = _as_float("guidance_scale", guidance_scale, 0.0)
        self.dtype_name = str(dtype or "auto").strip().lower()
        if self.dtype_name != "auto" and self.dtype_name not in DTYPES:
            raise ValueError(f"option dtype={dtype!r} must be auto or one of {', '.join(DTYPES)}")
        self.variant = str(variant or "")
        self.negative_prompt = str(negative_prompt or "")
        self.prompt_suffix = str(prompt_suffix or "")
        self.cache_dir = str(cache_dir or "")
        self._version_override = str(model_version or "")
        self._semaphores = PerLoopSemaphores(self._max_concurrency)
        self._resolved: ResolvedModel | None = None
        self._keys: set[tuple[str, str, str, str]] = set()
        self._state_lock = threading.Lock()
        self._info: AdapterInfo | None = None

    # -- description --

    def _try_resolve(self) -> ResolvedModel | None:
        try:
            return self._resolve()
        except ModelWeightsNotFound:
            return None

    def _resolve(self) -> ResolvedModel:
        with self._state_lock:
            if self._resolved is None:
                self._resolved = resolve_model(self.model_path, self.cache_dir)
            return self._resolved

    @property
    def info(self) -> AdapterInfo:
        """What the router records; ``model_version`` is ``"missing"`` until the weights are found."""
        if self._info is not None:
            return self._info
        resolved = self._try_resolve()
        if resolved is not None:
            name, version = resolved.name, resolved.version
        else:
            path = self.model_path
            hub_like = bool(_REPO_ID_RE.match(path)) and not Path(path).expanduser().exists()
            name = path if hub_like else (Path(path).name or "unconfigured")
            version = MISSING_VERSION
        info = AdapterInfo(
            adapter_id=self._adapter_id,
            task=self.task,
            provider=PROVIDER,
            model=name,
            model_version=self._version_override or version,
            price=Price(),
            capabilities=frozenset(),
            max_concurrency=self._max_concurrency,
        )
        if resolved is not None:
            self._info = info
        return info

    # -- loading --

    def _device_and_dtype(self) -> tuple[torch.device, torch.dtype]:
        device = pick_device()
        if self.dtype_name == "auto":
            return device, torch.float16 if device.type == "cuda" else torch.float32
        return device, DTYPES[self.dtype_name]

    def _pipeline(self, kind: str) -> tuple[Any, _Loaded, torch.device]:
        """The ``kind`` pipeline ("t2i" or "i2i"), loading the weights on first use (thread-safe)."""
        resolved = self._resolve()
        device, dtype = self._device_and_dtype()
        key = (str(resolved.folder), str(device), str(dtype), self.variant)
        with _LOAD_LOCK:
            entry = _LOADED.get(key)
            if entry is None:
                entry = _LOADED[key] = _Loaded()
            entry.holders.add(id(self))
            self._keys.add(key)
            pipe = entry.pipelines.get(kind)
            if pipe is None:
                try:
                    sibling = entry.pipelines.get("i2i" if kind == "t2i" else "t2i")
                    if sibling is not None:
                        from diffusers import AutoPipelineForImage2Image, AutoPipelineForText2Image

                        auto = AutoPipelineForText2Image if kind == "t2i" else AutoPipelineForImage2Image
                        pipe = auto.from_pipe(sibling)
                    else:
                        pipe = _load_pipeline(kind, resolved.folder, device, dtype, self.variant)
                except (OSError, ValueError, KeyError) as exc:
                    if not entry.pipelines:
                        _LOADED.pop(key, None)
                    task = "text-to-image" if kind == "t2i" else "image-to-image"
                    where = f"model_path={self.model_path!r} ({resolved.folder})"
                    if isinstance(exc, OSError):  # a component's files are missing: a partial download or copy
                        raise ModelWeightsNotFound(
                            f"diffusers weights incomplete: {where} could not be loaded for {task}: {exc}. {HOW_TO_PROVIDE}",
                            provider=PROVIDER,
                        ) from exc
                    raise PipelineLoadError(
                        f"diffusers pipeline at {where} could not be loaded for {task} "
                        f"(a pipeline class without a {task} variant?): {type(exc).__name__}: {exc}",
                        provider=PROVIDER,
                    ) from exc
                pipe.set_progress_bar_config(disable=True)
                entry.pipelines[kind] = pipe
            return pipe, entry, device

    def load(self) -> None:
        """Load the weights now (otherwise the first call does)."""
        self._pipeline("t2i" if self.task == "image" else "i2i")

    def _run(self, kind: str, **call_kwargs: Any) -> PILImage:
        """One pipeline call with a generator seeded for determinism; returns the first PIL image."""
        pipe, entry, device = self._pipeline(kind)
        seed = int(call_kwargs.pop("seed")) & 0xFFFF_FFFF_FFFF_FFFF
        if self.negative_prompt:
            call_kwargs["negative_prompt"] = self.negative_prompt
        with entry.run_lock, torch.inference_mode():
            generator = torch.Generator(device=device).manual_seed(seed)
            out = pipe(
                num_inference_steps=self.steps,
                guidance_scale=self.guidance_scale,
                generator=generator,
                output_type="pil",
                **call_kwargs,
            )
        nsfw = getattr(out, "nsfw_content_detected", None)
        if nsfw and any(nsfw):
            raise ContentPolicyError("the pipeline's safety checker flagged the image", provider=PROVIDER)
        image: PILImage = out.images[0].convert("RGB")
        return image

    def _multiple(self, kind: str) -> int:
        pipe, _, _ = self._pipeline(kind)
        factor = int(getattr(pipe, "vae_scale_factor", VAE_MULTIPLE) or VAE_MULTIPLE)
        return max(VAE_MULTIPLE, factor)

    # -- lifecycle --

    async def aclose(self) -> None:
        """Release this adapter's hold on the pipeline; the last holder frees it (and the CUDA cache)."""
        with _LOAD_LOCK:
            keys, self._keys = self._keys, set()
            released = []
            for key in keys:
                entry = _LOADED.get(key)
                if entry is None:
                    continue
                entry.holders.discard(id(self))
                if not entry.holders:
                    released.append(_LOADED.pop(key))
        if not released:
            return
        for entry in released:
            with entry.run_lock:
                entry.pipelines.clear()
        released.clear()
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def encode_png(image: PILImage) -> bytes:
    """PIL image -> PNG bytes with fixed settings and no metadata (equal pixels, equal bytes)."""
    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
    return buf.getvalue()


def _resize(image: PILImage, width: int, height: int) -> PILImage:
    from PIL import Image

    if image.size == (width, height):
        return image
    return image.resize((width, height), Image.Resampling.LANCZOS)


class DiffusersImageGenerator(_DiffusersAdapter):
    """Local ``image`` adapter: text-to-image with a diffusers pipeline from local weights."""

    task = "image"

    def __init__(
        self,
        adapter_id: str = "local-diffusers",
        max_concurrency: int | str = 1,
        model_path: str | None = None,
        steps: int | str | None = None,
        guidance_scale: float | str | None = None,
        dtype: str | None = None,
        variant: str | None = None,
        negative_prompt: str | None = None,
        prompt_suffix: str | None = None,
        cache_dir: str | None = None,
        model_version: str | None = None,
        options: Mapping[str, str | int | float | bool] | None = None,
    ) -> None:
        given = {k: v for k, v in locals().items() if k in COMMON_OPTIONS}
        self._configure(adapter_id, max_concurrency, **_merge_options(type(self).__name__, options, given, COMMON_OPTIONS))

    def generate_sync(self, request: ImageRequest) -> ImageResult:
        if request.width * request.height > MAX_PIXELS:
            raise UnsupportedInput(
                f"{request.width}x{request.height} is over the diffusers adapter's {MAX_PIXELS} pixels",
                provider=PROVIDER,
            )
        prompt = build_prompt(request.prompt, request.palette, self.prompt_suffix)
        w, h = work_size(request.width, request.height, self._multiple("t2i"))
        image = self._run("t2i", prompt=prompt, width=w, height=h, seed=request.seed)
        image = _resize(image, request.width, request.height)
        return ImageResult(png=encode_png(image), width=request.width, height=request.height)

    async def generate(self, request: ImageRequest) -> ImageResult:
        async with self._semaphores.get(), COMPUTE_SLOTS.hold(pick_device().type, self.holder):
            return await asyncio.to_thread(self.generate_sync, request)


REFINE_OPTIONS = (*COMMON_OPTIONS, "strength", "work_short_side", "headline")


class DiffusersRefiner(_DiffusersAdapter):
    """Local ``refine`` adapter: image-to-image over the draft with a diffusers pipeline from local weights.

    The draft (checked against ``request.source_sha256``) is centre-cropped to the
    aspect ratio; the output has the local refiner's size
    (:func:`model_adapters.local_refine.target_size`: the exact ratio, even sides,
    short side >= ``request.min_short_side``, never smaller than the draft). The
    pipeline works at that size (or at ``work_short_side``, then upscaled) with
    the prompt ``headline. colour palette: ...``; then, with ``headline=true``,
    the headline is set as the local refiner sets it (diffusion models do not
    spell reliably).
    """

    task = "refine"
    holder = "local-diffusers-refine"

    def __init__(
        self,
        adapter_id: str = "local-diffusers-refine",
        max_concurrency: int | str = 1,
        model_path: str | None = None,
        steps: int | str | None = None,
        guidance_scale: float | str | None = None,
        dtype: str | None = None,
        variant: str | None = None,
        negative_prompt: str | None = None,
        prompt_suffix: str | None = None,
        cache_dir: str | None = None,
        model_version: str | None = None,
        strength: float | str | None = None,
        work_short_side: int | str | None = None,
        headline: bool | str | None = None,
        options: Mapping[str, str | int | float | bool] | None = None,
    ) -> None:
        given = {k: v for k, v in locals().items() if k in REFINE_OPTIONS}
        merged = _merge_options(type(self).__name__, options, given, REFINE_OPTIONS)
        strength = merged.pop("strength", 0.4)
        work_short_side = merged.pop("work_short_side", 0)
        headline = merged.pop("headline", True)
        self._configure(adapter_id, max_concurrency, **merged)
        self.strength = _as_float("strength", strength, 0.0, 1.0)
        if self.strength <= 0.0:
            raise ValueError(f"option strength={strength!r} must be above 0 (and at most 1)")
        if int(self.steps * self.strength) < 1:
            raise ValueError(f"steps={self.steps} x strength={self.strength} leaves no denoising step; raise steps or strength")
        self.work_short_side = _as_int("work_short_side", work_short_side, 0)
        self.set_headline = _as_bool("headline", headline)

    def refine_sync(self, request: RefineRequest, source_png: bytes) -> ImageResult:
        from model_adapters.local_refine import (
            MAX_OUTPUT_PIXELS,
            _crop_size,
            decode_source,
            draw_headline,
            layout_headline,
            target_size,
        )
        from model_adapters.media.aspect import ratio_sides
        from model_adapters.palette import parse_palette

        palette = parse_palette(request.palette, default=())  # validates every colour
        source = decode_source(source_png, request.source_sha256)  # ValueError on a sha256 mismatch
        width, height = target_size(request.aspect_ratio, request.min_short_side, source.size)
        if width * height > MAX_OUTPUT_PIXELS:
            raise UnsupportedInput(f"refined size {width}x{height} is over {MAX_OUTPUT_PIXELS} pixels", provider=PROVIDER)
        a, b = ratio_sides(request.aspect_ratio)
        cw, ch = _crop_size(source.size, a, b)
        x0, y0 = (source.width - cw) // 2, (source.height - ch) // 2
        source = source.crop((x0, y0, x0 + cw, y0 + ch))
        short = min(width, height)
        if self.work_short_side and self.work_short_side < short:
            scale = self.work_short_side / short
            ww, wh = round(width * scale), round(height * scale)
        else:
            ww, wh = width, height
        ww, wh = work_size(ww, wh, self._multiple("i2i"))
        prompt = build_prompt(request.headline, request.palette, self.prompt_suffix)
        pipe = self._pipeline("i2i")[0]
        size = {"width": ww, "height": wh} if _takes_size(pipe) else {}  # Flux does; SD sizes from the image
        image = self._run("i2i", prompt=prompt, image=_resize(source, ww, wh), strength=self.strength, seed=request.seed, **size)
        image = _resize(image, width, height)
        if self.set_headline:
            image = draw_headline(image, layout_headline(request.headline, request.aspect_ratio, width, height), palette)
        return ImageResult(png=encode_png(image), width=width, height=height)

    async def refine(self, request: RefineRequest, source_png: bytes) -> ImageResult:
        async with self._semaphores.get(), COMPUTE_SLOTS.hold(pick_device().type, self.holder):
            return await asyncio.to_thread(self.refine_sync, request, source_png)


def _takes_size(pipe: Any) -> bool:
    """Whether a pipeline's call takes width and height (Flux img2img does; SD sizes from the image)."""
    import inspect

    params = inspect.signature(pipe.__call__).parameters
    return "width" in params and "height" in params
