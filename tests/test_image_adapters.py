"""Local image adapters: MiniLM embedder, procedural generator, torch refiner.

Offline and CPU-only friendly: the packaged MiniLM loads once per session
(fixture), images are small where the size does not matter.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from model_adapters import local_refine
from model_adapters.devices import pick_device
from model_adapters.local_image import ProceduralImageGenerator, draft_size
from model_adapters.local_refine import TorchRefiner, layout_headline, safe_box, target_size
from model_adapters.palette import contrast_ratio, parse_hex, parse_palette, pick_text_color
from model_adapters.text_embedding import MiniLMEmbedder, cosine, get_embedder
from model_adapters.types import ImageRequest, RefineRequest

REPO = Path(__file__).resolve().parents[1]
PALETTE = ("#0b3d91", "#ff6f3c", "#ffd166", "#f4f4f4")
DRAFT_SIZES = {"9:16": (576, 1024), "1:1": (768, 768), "16:9": (1024, 576)}
REFINED_SIZES = {"9:16": (1080, 1920), "1:1": (1080, 1080), "16:9": (1920, 1080)}
RATIOS = {"9:16": (9, 16), "1:1": (1, 1), "16:9": (16, 9)}


# --- fixtures -------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def embedder() -> MiniLMEmbedder:
    emb = get_embedder()
    emb.load()
    return emb


@pytest.fixture(scope="session")
def generator(embedder) -> ProceduralImageGenerator:
    return ProceduralImageGenerator(embedder=embedder)


@pytest.fixture(scope="session")
def refiner() -> TorchRefiner:
    return TorchRefiner()


@pytest.fixture(scope="session")
def drafts(generator) -> dict[str, bytes]:
    """One draft per aspect ratio at the sizes callers use."""
    return {
        ar: generator.generate_sync(
            ImageRequest(prompt="a red sports car on a coastal road at sunset", width=w, height=h, palette=PALETTE, seed=3)
        ).png
        for ar, (w, h) in DRAFT_SIZES.items()
    }


def pixels(png: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(png)) as im:
        assert im.format == "PNG"
        return np.asarray(im.convert("RGB"), dtype=np.int16)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def refine_request(png: bytes, aspect_ratio: str, headline: str = "Drive the coast like never before", **kw) -> RefineRequest:
    fields = dict(
        source_sha256=sha(png),
        min_short_side=1080,
        aspect_ratio=aspect_ratio,
        palette=PALETTE,
        headline=headline,
        seed=1,
    )
    fields.update(kw)
    return RefineRequest(**fields)


def inside(inner: tuple[int, int, int, int], outer: tuple[int, int, int, int]) -> bool:
    return inner[0] >= outer[0] and inner[1] >= outer[1] and inner[2] <= outer[2] and inner[3] <= outer[3]


# --- devices, import hygiene ------------------------------------------------------------------


def test_pick_device_reads_env_when_called(monkeypatch):
    monkeypatch.setenv("STUDIO_DEVICE", "cpu")
    assert pick_device() == torch.device("cpu")
    monkeypatch.delenv("STUDIO_DEVICE")
    assert pick_device().type == ("cuda" if torch.cuda.is_available() else "cpu")
    monkeypatch.setenv("STUDIO_DEVICE", "not-a-device")
    with pytest.raises(ValueError, match="STUDIO_DEVICE"):
        pick_device()


def test_importing_adapters_does_no_work_and_no_dagster():
    code = (
        "import sys\n"
        "import model_adapters.devices, model_adapters.palette, model_adapters.text_embedding\n"
        "import model_adapters.local_image, model_adapters.local_refine\n"
        "bad = [m for m in ('dagster', 'transformers') if m in sys.modules]\n"
        "assert not bad, bad\n"
        "from model_adapters import text_embedding, local_image\n"
        "assert text_embedding._shared is None and local_image._feature_basis is None\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


# --- embeddings -----------------------------------------------------------------------------------


def test_minilm_similarity_sanity(embedder):
    vecs = embedder.embed(["a red sports car", "a fast red automobile", "a bowl of soup"])
    assert vecs.shape == (3, 384) and vecs.dtype == torch.float32
    assert torch.allclose(vecs.norm(dim=1), torch.ones(3), atol=1e-5)
    assert float(cosine(vecs[0], vecs[1])) > float(cosine(vecs[0], vecs[2])) + 0.2
    assert embedder.embed([]).shape == (0, 384)
    with pytest.raises(TypeError):
        embedder.embed("a string, not a list")
    assert get_embedder() is embedder


def test_minilm_batching_matches_single(embedder):
    texts = [f"variant {i}: sparkling water with {'lime ' * (i % 4)}flavour" for i in range(5)]
    batched = MiniLMEmbedder(batch_size=2)
    batched._model, batched._tokenizer, batched._device = embedder._model, embedder._tokenizer, embedder._device
    together = batched.embed(texts)
    alone = torch.stack([embedder.embed([t])[0] for t in texts])
    assert torch.allclose(together, alone, atol=1e-5)


# --- palette helpers --------------------------------------------------------------------------------


def test_palette_parsing_and_contrast():
    assert parse_hex("#FF6f3c") == (255, 111, 60)
    assert parse_hex("abc") == (170, 187, 204)
    for bad in ("#12345", "red", "#gg0000", ""):
        with pytest.raises(ValueError, match="hex"):
            parse_hex(bad)
    assert len(parse_palette([])) >= 3  # the default palette
    assert parse_palette([], default=()) == []
    dark_bg = (20, 20, 40)
    chosen = pick_text_color(dark_bg, [(30, 30, 30), (255, 209, 102)])
    assert chosen == (255, 209, 102) and contrast_ratio(chosen, dark_bg) >= 4.5
    assert pick_text_color((128, 128, 128), [(120, 120, 120)]) in ((0, 0, 0), (255, 255, 255))


# --- procedural generator -------------------------------------------------------------------------


def test_draft_size():
    assert draft_size("9:16") == (576, 1024)
    assert draft_size("16:9") == (1024, 576)
    assert draft_size("1:1") == (1024, 1024)
    assert draft_size("1:1", 768) == (768, 768)
    assert draft_size("9:16", 1025) == (576, 1024)
    for ar in RATIOS:
        w, h = draft_size(ar, 1500)
        assert w % 2 == 0 and h % 2 == 0
    with pytest.raises(ValueError):
        draft_size("wide")


def test_generator_info(generator):
    info = generator.info
    assert (info.task, info.provider, info.model, info.model_version) == ("image", "local", "procedural-minilm", "1")
    assert info.price.per_image == 0 and info.adapter_id == "local-procedural"


@pytest.mark.parametrize("aspect_ratio", list(DRAFT_SIZES))
def test_generate_exact_size(generator, aspect_ratio):
    w, h = DRAFT_SIZES[aspect_ratio]
    result = asyncio.run(generator.generate(ImageRequest(prompt="running shoes", width=w, height=h, palette=PALETTE, seed=5)))
    arr = pixels(result.png)
    assert (result.width, result.height) == (w, h)
    assert arr.shape == (h, w, 3)
    a, b = RATIOS[aspect_ratio]
    assert w * b == h * a
    assert arr.std() > 10  # a picture, not a flat fill


def test_generate_odd_size(generator):
    result = generator.generate_sync(ImageRequest(prompt="x", width=333, height=201, palette=(), seed=0))
    assert pixels(result.png).shape == (201, 333, 3)


def test_generate_is_deterministic(generator):
    req = ImageRequest(prompt="fresh lemonade on a summer day", width=320, height=568, palette=PALETTE, seed=42)
    first = generator.generate_sync(req).png
    second = asyncio.run(generator.generate(req)).png
    fresh = ProceduralImageGenerator(embedder=generator._embedder).generate_sync(req).png
    assert first == second == fresh


def test_batch_render_matches_single(generator):
    reqs = [ImageRequest(prompt=p, width=256, height=256, palette=PALETTE, seed=s) for p, s in (("coffee", 1), ("tea", 2))]
    reqs.append(ImageRequest(prompt="juice", width=144, height=256, palette=PALETTE, seed=3))
    batched = asyncio.run(generator.generate_many(reqs))
    assert [r.png for r in batched] == [generator.generate_sync(r).png for r in reqs]


def _mean_abs_diff(a: bytes, b: bytes) -> float:
    return float(np.abs(pixels(a) - pixels(b)).mean())


def test_different_prompts_give_visibly_different_images(generator):
    def png(prompt: str) -> bytes:
        return generator.generate_sync(ImageRequest(prompt=prompt, width=384, height=384, palette=PALETTE, seed=1)).png

    prompts = ["a red sports car", "a bowl of soup", "a yoga retreat on a tropical island", "a gaming laptop"]
    images = [png(p) for p in prompts]
    for i in range(len(images)):
        for j in range(i + 1, len(images)):
            assert _mean_abs_diff(images[i], images[j]) > 12, (prompts[i], prompts[j])


def test_different_seeds_differ(generator):
    def png(seed: int) -> bytes:
        return generator.generate_sync(ImageRequest(prompt="a red sports car", width=384, height=384, palette=PALETTE, seed=seed)).png

    assert _mean_abs_diff(png(1), png(2)) > 12
    assert _mean_abs_diff(png(0), png(-1)) > 12


def test_palette_drives_colour(generator):
    def channels(palette: tuple[str, ...]) -> np.ndarray:
        png = generator.generate_sync(ImageRequest(prompt="a red sports car", width=256, height=256, palette=palette, seed=9)).png
        return pixels(png).reshape(-1, 3).mean(axis=0)

    red = channels(("#d00000", "#ff8080"))
    blue = channels(("#0030d0", "#80a0ff"))
    assert red[0] - red[2] > 30
    assert blue[2] - blue[0] > 30


def test_bad_palette_is_a_value_error(generator):
    with pytest.raises(ValueError, match="not a hex colour"):
        generator.generate_sync(ImageRequest(prompt="x", width=64, height=64, palette=("#12",), seed=0))


def test_concurrent_generate(embedder):
    gen = ProceduralImageGenerator(max_concurrency=1, embedder=embedder)
    reqs = [ImageRequest(prompt=f"poster {i}", width=128, height=128, palette=PALETTE, seed=i) for i in range(4)]

    async def run_all():
        return await asyncio.gather(*(gen.generate(r) for r in reqs))

    results = asyncio.run(run_all())
    assert [r.png for r in results] == [gen.generate_sync(r).png for r in reqs]
    asyncio.run(gen.aclose())


# --- refiner ---------------------------------------------------------------------------------------------


def test_refiner_info(refiner):
    info = refiner.info
    assert (info.task, info.provider, info.model, info.model_version) == ("refine", "local", "torch-refiner", "1")
    assert info.price.per_image == 0 and info.adapter_id == "local-refiner"


def test_target_size():
    assert target_size("9:16", 1080) == (1080, 1920)
    assert target_size("1:1", 1080) == (1080, 1080)
    assert target_size("16:9", 1080) == (1920, 1080)
    w, h = target_size("9:16", 1000)
    assert w >= 1000 and w * 16 == h * 9 and w % 2 == 0 and h % 2 == 0
    assert target_size("1:1", 1080, source_size=(1500, 1500)) == (1500, 1500)  # never downscaled


@pytest.mark.parametrize("aspect_ratio", list(DRAFT_SIZES))
def test_refine_size_and_aspect(refiner, drafts, aspect_ratio):
    png = drafts[aspect_ratio]
    result = asyncio.run(refiner.refine(refine_request(png, aspect_ratio), png))
    arr = pixels(result.png)
    assert (result.width, result.height) == REFINED_SIZES[aspect_ratio]
    assert arr.shape == (result.height, result.width, 3)
    assert min(result.width, result.height) >= 1080
    a, b = RATIOS[aspect_ratio]
    assert result.width * b == result.height * a


def test_refine_crops_a_source_of_another_shape(refiner):
    png = _png(np.full((1000, 700, 3), 90, dtype=np.uint8))  # 0.7, not 9:16
    result = refiner.refine_sync(refine_request(png, "9:16", headline=""), png)
    assert (result.width, result.height) == (1080, 1920)


def test_refine_is_deterministic(refiner, drafts):
    png = drafts["1:1"]
    req = refine_request(png, "1:1")
    assert refiner.refine_sync(req, png).png == asyncio.run(refiner.refine(req, png)).png


@pytest.mark.parametrize("aspect_ratio", list(DRAFT_SIZES))
def test_headline_is_drawn_inside_the_safe_box(refiner, drafts, aspect_ratio):
    png = drafts[aspect_ratio]
    with_text = pixels(refiner.refine_sync(refine_request(png, aspect_ratio), png).png)
    without = pixels(refiner.refine_sync(refine_request(png, aspect_ratio, headline=""), png).png)
    h, w = with_text.shape[:2]
    box = safe_box(aspect_ratio, w, h)
    layout = layout_headline("Drive the coast like never before", aspect_ratio, w, h)
    assert layout.safe_box == box and layout.lines
    assert inside(layout.text_box, layout.panel_box) and inside(layout.panel_box, box)

    changed = np.abs(with_text - without).max(axis=2) > 0
    ys, xs = np.nonzero(changed)
    assert len(xs) > 0.02 * (box[2] - box[0]) * (box[3] - box[1])  # there is type
    assert xs.min() >= box[0] and xs.max() < box[2] and ys.min() >= box[1] and ys.max() < box[3]
    # every change (type, shadow, panel) lies inside the panel the layout reported
    pl, pt, pr, pb = layout.panel_box
    assert xs.min() >= pl and xs.max() < pr and ys.min() >= pt and ys.max() < pb


@pytest.mark.parametrize("aspect_ratio", list(DRAFT_SIZES))
def test_layout_shrinks_to_fit(aspect_ratio):
    w, h = REFINED_SIZES[aspect_ratio]
    box = safe_box(aspect_ratio, w, h)
    short = layout_headline("Run", aspect_ratio, w, h)
    long = layout_headline(
        "The all-new electric hatchback that turns every weekday commute into the best part of your day",
        aspect_ratio,
        w,
        h,
    )
    giant_word = layout_headline("Supercalifragilisticexpialidocious" * 3, aspect_ratio, w, h)
    absurd = layout_headline("word " * 2000, aspect_ratio, w, h)
    for layout in (short, long, giant_word, absurd):
        assert inside(layout.text_box, box) and inside(layout.panel_box, box)
    assert long.font_size < short.font_size
    assert len(long.lines) > 1 and not long.truncated
    assert absurd.truncated and absurd.lines[-1].endswith("…")
    assert layout_headline("   ", aspect_ratio, w, h).lines == ()


def test_safe_boxes_follow_the_layout_rules():
    left, top, right, bottom = safe_box("9:16", 1080, 1920)
    assert bottom <= 1920 / 3 + 60 and top >= 0.09 * 1920  # upper third, clear of the top
    assert left >= 0.07 * 1080 and right <= 0.93 * 1080  # wide side margins
    left, top, right, bottom = safe_box("16:9", 1920, 1080)
    assert right <= 0.6 * 1920  # left 60%
    left, top, right, bottom = safe_box("1:1", 1080, 1080)
    assert top >= 0.6 * 1080 and abs((left + right) / 2 - 540) <= 1  # centred, lower third


def test_grading_moves_colour_toward_the_palette(refiner, generator):
    blue = generator.generate_sync(ImageRequest(prompt="a quiet lake", width=576, height=1024, palette=("#1040c0", "#80b0ff"), seed=4)).png
    red_palette = ("#e01010", "#ff9a7a")
    graded = pixels(refiner.refine_sync(refine_request(blue, "9:16", headline="", palette=red_palette), blue).png)
    ungraded = pixels(refiner.refine_sync(refine_request(blue, "9:16", headline="", palette=()), blue).png)

    pal = np.array([parse_hex(c) for c in red_palette], dtype=np.float64)

    def distance_to_palette(arr: np.ndarray) -> float:
        flat = arr.reshape(-1, 3)[::97].astype(np.float64)
        return float(np.sqrt(((flat[:, None, :] - pal[None]) ** 2).sum(-1)).min(axis=1).mean())

    assert distance_to_palette(graded) < 0.85 * distance_to_palette(ungraded)
    g_mean, u_mean = graded.reshape(-1, 3).mean(0), ungraded.reshape(-1, 3).mean(0)
    assert (g_mean[0] - g_mean[2]) > (u_mean[0] - u_mean[2]) + 10


def test_grading_lut_matches_exact_map():
    torch.manual_seed(0)
    img = torch.rand(1, 3, 40, 60)
    pal = [parse_hex(c) for c in PALETTE]
    via_lut = local_refine.grade_toward_palette(img, pal)
    exact = local_refine.grade_colors(img[0].permute(1, 2, 0), pal).permute(2, 0, 1).unsqueeze(0)
    assert float((via_lut - exact).abs().max()) < 4 / 255


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def test_corrupt_png_is_a_value_error(refiner, drafts):
    truncated = drafts["1:1"][:5000]
    with pytest.raises(ValueError, match="could not be decoded"):
        refiner.refine_sync(refine_request(truncated, "1:1"), truncated)
    garbage = b"\x89PNG\r\n\x1a\n" + b"not really a png" * 10
    with pytest.raises(ValueError, match="could not be decoded"):
        asyncio.run(refiner.refine(refine_request(garbage, "1:1"), garbage))
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), "red").save(buf, format="JPEG")
    jpeg = buf.getvalue()
    with pytest.raises(ValueError, match="not PNG"):
        refiner.refine_sync(refine_request(jpeg, "1:1"), jpeg)


def test_sha_mismatch_is_a_value_error(refiner, drafts):
    png = drafts["1:1"]
    req = refine_request(png, "1:1", source_sha256=sha(png + b"x"))
    with pytest.raises(ValueError, match="sha256 mismatch"):
        refiner.refine_sync(req, png)
    with pytest.raises(ValueError, match="sha256 mismatch"):
        asyncio.run(refiner.refine(req, png))


def test_embedder_is_thread_safe(embedder):
    from concurrent.futures import ThreadPoolExecutor

    texts = [f"campaign variant number {i} for summer" for i in range(16)]
    expected = [embedder.embed([t])[0] for t in texts]
    with ThreadPoolExecutor(max_workers=4) as pool:
        got = list(pool.map(lambda t: embedder.embed([t])[0], texts))
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(got, expected, strict=True))


def test_type_has_glyphs_for_accented_headlines():
    """Pillow's default font draws one 'missing glyph' box for every non-ASCII letter."""
    from model_adapters.fonts import load_font

    font = load_font(48, "Bold")
    masks = {ch: bytes(font.getmask(ch)) for ch in "üéñç"}
    assert len(set(masks.values())) == 4
