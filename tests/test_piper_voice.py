"""The local Piper voice adapter (model_adapters/local_piper.py), offline.

The voice is loaded once for the module (a few seconds) and each request
below is synthesized once; the checks measure the delivered WAV with tools
independent of the code under test (pyloudnorm, scipy's resampler for true
peak, numpy for energy), as tests/test_voice_adapter.py does for espeak.
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

from model_adapters import local_piper
from model_adapters.local_piper import WORDS_PER_SECOND, PiperVoiceAdapter
from model_adapters.types import UnsupportedInput, VoiceRequest, VoiceResult

TEXT = "Fresh roasted coffee, delivered to your door every morning. Try it free for thirty days!"
# Expansions and a punctuation-only word: "30%" and "$50" are several spoken words each, the
# dash none.
GB_TEXT = "Save 30% on orders over $50 — today only."
RATE = 22050


def request(text: str = TEXT, locale: str = "en-US", speed: float = 1.0) -> VoiceRequest:
    return VoiceRequest(text=text, locale=locale, voice="default", speed=speed)


def synthesize(adapter: PiperVoiceAdapter, req: VoiceRequest) -> VoiceResult:
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
def adapter() -> PiperVoiceAdapter:
    return PiperVoiceAdapter()


@pytest.fixture(scope="module")
def spoken(adapter) -> dict[str, VoiceResult]:
    return {
        "normal": synthesize(adapter, request()),
        "fast": synthesize(adapter, request(speed=1.15)),
        "slow": synthesize(adapter, request(speed=0.85)),
        "gb": synthesize(adapter, request(GB_TEXT, locale="en-gb")),
    }


# --- description, validation, loading ---------------------------------------------------


def test_info_describes_the_piper_voice(adapter):
    info = adapter.info
    assert (info.adapter_id, info.task, info.provider) == ("local-piper", "voice", "local")
    assert info.model == "piper:en_US-joe-medium"
    assert info.model_version.startswith("piper-tts-1.8.0+cfg.")
    assert info.capabilities == frozenset({"locale:en-US", "locale:en-GB"})
    assert info.price.per_1k_characters == 0 and info.max_concurrency == 1
    assert PiperVoiceAdapter(max_concurrency=3).info.max_concurrency == 3


def test_nothing_heavy_at_import_or_construction():
    code = (
        "import sys, model_adapters.local_piper as lp;"
        "a = lp.PiperVoiceAdapter();"
        "heavy = [m for m in ('piper', 'onnxruntime', 'onnx') if m in sys.modules];"
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parent.parent)


def test_other_locales_are_unsupported(adapter):
    with pytest.raises(UnsupportedInput, match="fr-FR") as caught:
        synthesize(adapter, request("Bonjour et bienvenue.", locale="fr-FR"))
    assert caught.value.provider == "local"
    assert not caught.value.retryable


def test_empty_text_is_rejected(adapter):
    with pytest.raises(ValueError, match="empty"):
        synthesize(adapter, request("   "))


def test_a_missing_voice_file_is_refused_at_construction(tmp_path):
    with pytest.raises(ValueError, match="no Piper voice"):
        PiperVoiceAdapter(voice_path=str(tmp_path / "nothing.onnx"))


# --- audio ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["normal", "fast", "gb"])
def test_wav_is_16_bit_mono_22050(spoken, name):
    result = spoken[name]
    samples, rate, channels, width = decode(result.wav)
    assert (rate, channels, width) == (RATE, 1, 2)
    assert result.sample_rate == RATE
    assert result.duration_s == pytest.approx(len(samples) / rate, abs=1e-9)
    assert result.characters == len(TEXT if name != "gb" else GB_TEXT)


@pytest.mark.parametrize("name", ["normal", "fast", "gb"])
def test_loudness_and_true_peak(spoken, name):
    result = spoken[name]
    samples, rate, _, _ = decode(result.wav)
    assert pyloudnorm.Meter(rate).integrated_loudness(samples) == pytest.approx(-16.0, abs=1.0)
    oversampled = resample_poly(samples, 4, 1)
    assert 20 * math.log10(max(np.abs(oversampled).max(), np.abs(samples).max())) <= -1.0
    # What the adapter reports is what the delivered samples measure.
    assert result.loudness_lufs == pytest.approx(-16.0, abs=0.5)
    assert result.true_peak_dbtp <= -1.0


@pytest.mark.parametrize(("name", "speed"), [("fast", 1.15), ("slow", 0.85)])
def test_speed_scales_the_length_by_its_ratio(spoken, name, speed):
    # Exactly, not "roughly": a plain length_scale / speed would give only ~1.08 for 1.15.
    normal, other = spoken["normal"], spoken[name]
    assert other.duration_s == pytest.approx(normal.duration_s / speed, abs=0.025)
    speech = lambda r: r.words[-1].end_s - r.words[0].start_s  # noqa: E731
    assert speech(other) == pytest.approx(speech(normal) / speed, rel=0.02)
    assert [w.word for w in other.words] == TEXT.split()


def test_natural_rate_matches_words_per_second(spoken):
    normal = spoken["normal"]
    rate = len(TEXT.split()) / (normal.words[-1].end_s - normal.words[0].start_s)
    assert rate == pytest.approx(WORDS_PER_SECOND, rel=0.2)
    assert 2.0 < WORDS_PER_SECOND < 4.0


# --- word timings -------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["normal", "fast", "gb"])
def test_one_timing_per_word_monotonic_inside_the_audio(spoken, name):
    result = spoken[name]
    assert [w.word for w in result.words] == (GB_TEXT if name == "gb" else TEXT).split()
    previous_end = 0.0
    for word in result.words:
        assert previous_end <= word.start_s <= word.end_s <= result.duration_s
        previous_end = word.end_s
    # Every word with sounds has a real duration (the dash has none, see below).
    assert all(w.start_s < w.end_s for w in result.words if w.word != "—")
    # The last word ends near the end of the audio (piper leaves ~0.1 s after it).
    assert result.duration_s - result.words[-1].end_s < 0.3


@pytest.mark.parametrize("name", ["normal", "fast", "gb"])
def test_first_word_starts_at_the_onset_of_speech(spoken, name):
    result = spoken[name]
    samples, rate, _, _ = decode(result.wav)
    levels = frame_db(samples, rate)
    onset_s = int(np.flatnonzero(levels > levels.max() - 40)[0]) * 0.01
    assert result.words[0].start_s == pytest.approx(onset_s, abs=0.05)
    # The last word ends where the audio falls silent (within 60 ms).
    offset_s = (int(np.flatnonzero(levels > levels.max() - 40)[-1]) + 1) * 0.01
    assert result.words[-1].end_s == pytest.approx(offset_s, abs=0.06)


def test_words_carry_speech_and_pauses_fall_between_them(spoken):
    result = spoken["normal"]
    samples, rate, _, _ = decode(result.wav)
    levels = frame_db(samples, rate)
    peak = levels.max()
    for word in result.words:
        inside = levels[int(word.start_s * 100) : max(int(word.start_s * 100) + 1, int(word.end_s * 100))]
        assert inside.max() > peak - 20, word
    # The sentence break ("morning." / "Try") is a pause: no word covers it, and it is quiet.
    words = {w.word: w for w in result.words}
    gap = (words["morning."].end_s, words["Try"].start_s)
    assert gap[1] - gap[0] > 0.15
    middle = levels[int(gap[0] * 100) + 3 : int(gap[1] * 100) - 3]
    assert middle.max() < peak - 35
    # The comma is a shorter pause, also between words.
    assert words["delivered"].start_s - words["coffee,"].end_s > 0.05


@pytest.mark.parametrize("name", ["normal", "slow", "gb"])
def test_word_edges_sit_on_speech_energy(spoken, name):
    # Starts and ends are trimmed to energy: the first and last 20 ms of every word are
    # speech, not the quiet pad or closure around it (levels relative to the loud speech).
    result = spoken[name]
    samples, rate, _, _ = decode(result.wav)
    loud = float(np.percentile(frame_db(samples, rate), 95))
    window = int(0.02 * rate)
    rms_db = lambda x: 20 * math.log10(math.sqrt(float(np.mean(x**2))) + 1e-12)  # noqa: E731
    for word in result.words:
        if word.end_s - word.start_s < 0.04:
            continue
        start, end = int(word.start_s * rate), int(word.end_s * rate)
        assert rms_db(samples[start : start + window]) > loud - 42, word
        assert rms_db(samples[end - window : end]) > loud - 42, word


def test_expanded_and_silent_words(spoken):
    words = spoken["gb"].words
    by_word = {w.word: w for w in words}
    duration = lambda w: w.end_s - w.start_s  # noqa: E731
    # "30%" is "thirty percent", "$50" "fifty dollars": longer than the short words around them.
    assert duration(by_word["30%"]) > 2 * duration(by_word["on"])
    assert duration(by_word["$50"]) > 2 * duration(by_word["over"])
    # The dash is not spoken: a zero-length timing where the word before it ends.
    dash = by_word["—"]
    assert dash.start_s == dash.end_s == by_word["$50"].end_s
    assert by_word["today"].start_s >= dash.end_s


def test_a_long_text_falls_back_to_greedy_alignment(adapter, spoken, monkeypatch):
    # Above the alignment's size limit, difflib's matching labels the phonemes instead.
    monkeypatch.setattr(local_piper, "_MAX_ALIGNMENT_CELLS", 1)
    again = synthesize(adapter, request(GB_TEXT, locale="en-GB"))
    assert again.wav == spoken["gb"].wav
    exact = spoken["gb"].words
    assert [w.word for w in again.words] == [w.word for w in exact]
    assert max(abs(a.start_s - b.start_s) for a, b in zip(again.words, exact, strict=False)) < 0.1


# --- determinism --------------------------------------------------------------------------


def test_same_request_gives_the_same_bytes_also_after_a_reload(adapter, spoken):
    again = synthesize(adapter, request())
    assert again.wav == spoken["normal"].wav and again.words == spoken["normal"].words

    # A reloaded model (as in another process), two requests loading it at once; the en-GB
    # one is spoken by the same en-US voice, so it gives the same audio.
    asyncio.run(adapter.aclose())

    async def both() -> list[VoiceResult]:
        return await asyncio.gather(adapter.synthesize(request(locale="en-GB")), adapter.synthesize(request()))

    gb, normal = asyncio.run(both())
    assert normal.wav == gb.wav == spoken["normal"].wav
    assert normal.words == spoken["normal"].words
    assert spoken["fast"].wav != spoken["normal"].wav


def test_nonsense_characters_are_read_as_text(adapter):
    # "[[ ]]" would be raw phonemes for piper; control characters are spaces.
    text = "Try [[ab]] now\x07!"
    result = synthesize(adapter, request(text))
    assert [w.word for w in result.words] == text.split()
    assert result.duration_s > 0.5
    assert all(a.end_s <= b.start_s for a, b in pairwise(result.words))


def test_a_named_espeak_voice_is_left_to_espeak(adapter):
    with pytest.raises(UnsupportedInput, match="one speaker"):
        asyncio.run(adapter.synthesize(request().model_copy(update={"voice": "en-us+f3"})))


def test_the_registry_declares_what_the_adapter_measured():
    from model_adapters.local_piper import SUPPORTED_LOCALES, WORDS_PER_SECOND
    from model_adapters.registry import adapter_kind

    kind = adapter_kind("local-piper")
    assert kind.words_per_second == WORDS_PER_SECOND
    assert kind.locales == SUPPORTED_LOCALES


def test_onnx_threads_sleep_rather_than_spin_when_idle(adapter, spoken):
    # Spinning idle threads burn CPU beside run workers and checks (model_adapters/concurrency.py).
    voice = adapter._loaded_voice()
    for session in (voice.piper.session, voice.durations):
        assert session.get_session_options().get_session_config_entry("session.intra_op.allow_spinning") == "0"
