"""The diffusers adapters (model_adapters/local_diffusers.py) on a tiny, randomly initialized
Stable Diffusion pipeline saved in a tmp folder (as diffusers tests its own pipelines): no
download, no hub id, no network (every socket connect fails in this module)."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import shutil
import socket

import pytest

pytest.importorskip("diffusers")
pytest.importorskip("transformers")

import torch  # noqa: E402
from PIL import Image  # noqa: E402

from model_adapters import local_diffusers as ld  # noqa: E402
from model_adapters.types import FatalProviderError, ImageRequest, RefineRequest  # noqa: E402

PALETTE = ("#1b1f3b", "#e07a5f", "#f2cc8f")


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args[1:] if len(args) > 1 else args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setenv("STUDIO_DEVICE", "cpu")


def _tiny_tokenizer(folder):
    """A CLIP BPE tokenizer from a vocab.json + merges.txt written here (printable ASCII, a few merges)."""
    from transformers import CLIPTokenizer

    folder.mkdir()
    chars = [chr(c) for c in range(33, 127)]
    tokens = ["<|startoftext|>", "<|endoftext|>", *chars, *(c + "</w>" for c in chars)]
    merges = ["t h", "th e</w>", "a n", "i n", "e r</w>"]
    tokens += ["th", "the</w>", "an", "in", "er</w>"]
    (folder / "vocab.json").write_text(json.dumps({tok: i for i, tok in enumerate(tokens)}))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    return CLIPTokenizer(vocab=str(folder / "vocab.json"), merges=str(folder / "merges.txt"), model_max_length=77)


@pytest.fixture(scope="module")
def tiny_pipeline(tmp_path_factory):
    """A tiny random StableDiffusionPipeline saved with save_pretrained; returns its folder."""
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    root = tmp_path_factory.mktemp("tiny-sd")
    tokenizer = _tiny_tokenizer(root / "tokenizer-src")
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(4, 8),
        layers_per_block=1,
        sample_size=32,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
        norm_num_groups=2,
    )
    vae = AutoencoderKL(
        block_out_channels=[4, 8],
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D", "DownEncoderBlock2D"],
        up_block_types=["UpDecoderBlock2D", "UpDecoderBlock2D"],
        latent_channels=4,
        norm_num_groups=2,
    )
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            bos_token_id=0,
            eos_token_id=1,
            hidden_size=32,
            intermediate_size=37,
            layer_norm_eps=1e-05,
            num_attention_heads=4,
            num_hidden_layers=2,
            pad_token_id=1,
            vocab_size=len(tokenizer),
        )
    )
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    pipe = StableDiffusionPipeline(
        unet=unet,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    folder = root / "tiny-sd-pipe"
    pipe.save_pretrained(folder)
    return folder


def _run(coro):
    return asyncio.run(coro)


def _decode(png: bytes) -> Image.Image:
    with Image.open(io.BytesIO(png)) as im:
        assert im.format == "PNG"
        im.load()
        return im.copy()


def _image_request(seed: int = 7, width: int = 40, height: int = 24) -> ImageRequest:
    return ImageRequest(prompt="the red bicycle in the rain", width=width, height=height, palette=PALETTE, seed=seed)


def test_generator_makes_exact_size_deterministic_pngs(tiny_pipeline):
    gen = ld.DiffusersImageGenerator(model_path=str(tiny_pipeline), steps=2, guidance_scale=7.0)
    try:
        first = _run(gen.generate(_image_request(seed=7)))  # 40x24: worked at 40x24, a multiple of 8
        again = _run(gen.generate(_image_request(seed=7)))
        other = _run(gen.generate(_image_request(seed=8)))
    finally:
        _run(gen.aclose())
    for result, size in ((first, (40, 24)), (other, (40, 24))):
        im = _decode(result.png)
        assert (im.mode, im.size) == ("RGB", size)
        assert (result.width, result.height) == size
        lo, hi = zip(*im.getextrema(), strict=True)
        assert max(hi) > min(lo), "the image is one constant colour"
    assert again.png == first.png
    assert other.png != first.png


def test_info_and_options(tiny_pipeline):
    gen = ld.DiffusersImageGenerator(adapter_id="gpu-sd", model_path=str(tiny_pipeline), options={"steps": "3", "guidance_scale": "4.5"})
    info = gen.info
    assert (info.adapter_id, info.task, info.provider, info.model) == ("gpu-sd", "image", "local", "tiny-sd-pipe")
    assert info.model_version == ld.folder_version(tiny_pipeline) and info.model_version.startswith("cfg-")
    assert (gen.steps, gen.guidance_scale, gen.dtype_name) == (3, 4.5, "auto")
    assert info.capabilities == frozenset() and info.price.per_image == 0.0
    refiner = ld.DiffusersRefiner(model_path=str(tiny_pipeline), options={"strength": "0.5", "headline": "false"})
    assert (refiner.info.task, refiner.strength, refiner.set_headline) == ("refine", 0.5, False)
    with pytest.raises(TypeError, match="unknown option"):
        ld.DiffusersImageGenerator(model_path=str(tiny_pipeline), options={"strenght": 1})
    with pytest.raises(ValueError, match="steps"):
        ld.DiffusersImageGenerator(model_path=str(tiny_pipeline), steps=0)
    with pytest.raises(ValueError, match="dtype"):
        ld.DiffusersImageGenerator(model_path=str(tiny_pipeline), dtype="float8")
    with pytest.raises(ValueError, match="no denoising step"):
        ld.DiffusersRefiner(model_path=str(tiny_pipeline), steps=2, strength=0.3)


def test_prompt_names_the_palette():
    prompt = ld.build_prompt("a bowl of ramen", ["#1b1f3b", "#E07A5F"], "studio photo")
    assert prompt == "a bowl of ramen. colour palette: navy (#1b1f3b), coral (#e07a5f). studio photo"
    assert ld.build_prompt("x", []) == "x"
    with pytest.raises(ValueError, match="not a hex colour"):
        ld.describe_palette(["blue-ish"])


def _draft_png(width: int = 48, height: int = 48) -> bytes:
    g = torch.Generator().manual_seed(3)
    pixels = (torch.rand(height, width, 3, generator=g) * 255).to(torch.uint8).numpy()
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def test_refiner_img2img_size_and_sha256(tiny_pipeline):
    draft = _draft_png(48, 40)
    request = RefineRequest(
        source_sha256=hashlib.sha256(draft).hexdigest(),
        min_short_side=36,
        aspect_ratio="9:16",
        palette=PALETTE,
        headline="Ride the rain",
        seed=5,
    )
    gen = ld.DiffusersImageGenerator(model_path=str(tiny_pipeline), steps=2)
    refiner = ld.DiffusersRefiner(model_path=str(tiny_pipeline), steps=2, strength=0.5)
    try:
        _run(gen.generate(_image_request()))  # loads the weights; the refiner derives its pipeline with from_pipe
        result = _run(refiner.refine(request, draft))
        im = _decode(result.png)
        # 9:16 with short side >= 36 and even sides (model_adapters.local_refine.target_size): 36x64.
        assert (im.mode, im.size, result.width, result.height) == ("RGB", (36, 64), 36, 64)
        assert len(ld._LOADED) == 1  # one copy of the weights for both adapters
        bad = request.model_copy(update={"source_sha256": "0" * 64})
        with pytest.raises(ValueError, match="sha256 mismatch"):
            _run(refiner.refine(bad, draft))
    finally:
        _run(refiner.aclose())
        _run(gen.aclose())
    assert not ld._LOADED  # the last holder released the pipeline


def test_refiner_alone_with_work_size(tiny_pipeline):
    draft = _draft_png(64, 64)
    request = RefineRequest(
        source_sha256=hashlib.sha256(draft).hexdigest(),
        min_short_side=40,
        aspect_ratio="16:9",
        palette=(),
        headline="",
        seed=1,
    )
    refiner = ld.DiffusersRefiner(model_path=str(tiny_pipeline), steps=2, strength=0.5, work_short_side=16)
    try:
        result = _run(refiner.refine(request, draft))  # loads AutoPipelineForImage2Image itself
    finally:
        _run(refiner.aclose())
    assert _decode(result.png).size == (result.width, result.height)
    assert min(result.width, result.height) >= 40 and result.width * 9 == result.height * 16


def test_missing_folder_is_a_clear_error(tmp_path):
    missing = tmp_path / "no-such-weights"
    gen = ld.DiffusersImageGenerator(model_path=str(missing))
    assert gen.info.model_version == ld.MISSING_VERSION and gen.info.model == "no-such-weights"
    with pytest.raises(ld.ModelWeightsNotFound) as err:
        _run(gen.generate(_image_request()))
    assert str(missing) in str(err.value) and "model_path" in str(err.value) and "docs/diffusers.md" in str(err.value)
    assert isinstance(err.value, FatalProviderError) and not err.value.retryable  # the route falls back
    (tmp_path / "not-a-pipeline").mkdir()
    with pytest.raises(ld.ModelWeightsNotFound, match="model_index.json"):
        ld.resolve_model(str(tmp_path / "not-a-pipeline"))
    with pytest.raises(ld.ModelWeightsNotFound, match="model_path is empty"):
        _run(ld.DiffusersImageGenerator().generate(_image_request()))


def test_uncached_hub_id_fails_fast_offline(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # so "acme/no-such-model" is no relative folder
    before = os.environ.get("HF_HUB_OFFLINE")
    refiner = ld.DiffusersRefiner(model_path="acme/no-such-model", cache_dir=str(tmp_path / "hub"), steps=4)
    assert refiner.info.model == "acme/no-such-model" and refiner.info.model_version == ld.MISSING_VERSION
    with pytest.raises(ld.ModelWeightsNotFound) as err:
        refiner.load()
    assert "'acme/no-such-model'" in str(err.value) and "local Hugging Face cache" in str(err.value)
    assert os.environ.get("HF_HUB_OFFLINE") == before


def test_hub_id_resolves_from_the_local_cache_offline(tiny_pipeline, tmp_path, monkeypatch):
    """A repo id in the hub cache loads from its snapshot, with HF_HUB_OFFLINE and local_files_only in force."""
    import huggingface_hub.constants as hub_constants
    from diffusers import AutoPipelineForText2Image

    monkeypatch.chdir(tmp_path)
    commit = "a" * 40
    repo = tmp_path / "hub" / "models--acme--tiny-sd"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    shutil.copytree(tiny_pipeline, repo / "snapshots" / commit)

    seen = {}
    real = AutoPipelineForText2Image.from_pretrained.__func__

    def spy(cls, path, **kwargs):
        seen.update(
            env=os.environ.get("HF_HUB_OFFLINE"),
            offline=hub_constants.is_offline_mode(),
            local_files_only=kwargs.get("local_files_only"),
            path=path,
        )
        return real(cls, path, **kwargs)

    monkeypatch.setattr(AutoPipelineForText2Image, "from_pretrained", classmethod(spy))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    offline_before = hub_constants.HF_HUB_OFFLINE
    gen = ld.DiffusersImageGenerator(model_path="acme/tiny-sd", cache_dir=str(tmp_path / "hub"), steps=2)
    try:
        assert (gen.info.model, gen.info.model_version) == ("acme/tiny-sd", commit)
        result = _run(gen.generate(_image_request(width=30, height=37)))  # worked at 32x40, then resized
    finally:
        _run(gen.aclose())
    assert _decode(result.png).size == (30, 37) and (result.width, result.height) == (30, 37)
    assert seen == {"env": "1", "offline": True, "local_files_only": True, "path": str(repo / "snapshots" / commit)}
    assert "HF_HUB_OFFLINE" not in os.environ and hub_constants.HF_HUB_OFFLINE == offline_before


def test_offline_context_nests_and_restores(monkeypatch):
    import huggingface_hub.constants as hub_constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    with ld.hub_offline():
        with ld.hub_offline():
            assert os.environ["HF_HUB_OFFLINE"] == "1" and hub_constants.is_offline_mode()
        assert os.environ["HF_HUB_OFFLINE"] == "1"
    assert os.environ["HF_HUB_OFFLINE"] == "0"
