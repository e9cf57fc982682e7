"""The espeak-ng voice adapter and the loudness module.

Loudness and true peak are checked with tools independent of the code under
test: pyloudnorm for BS.1770 loudness, scipy's polyphase resampler for 4x
oversampled true peak.
"""

from __future__ import annotations

import asyncio
import io
import math
import re
import subprocess
import sys
import wave
from itertools import pairwise
from pathlib import Path

import numpy as np
import pyloudnorm
import pytest
from scipy.signal import resample_poly

from model_adapters import local_voice, loudness
from model_adapters.local_voice import LOCALE_VOICES, EspeakVoiceAdapter, canonical_locale, resolve_voice
from model_adapters.types import VoiceRequest, VoiceResult

EN_TEXT = "Fresh roasted coffee, delivered to your door every morning. Try it free for thirty days!"
DE_TEXT = "Frisch gerösteter Kaffee, jeden Morgen direkt an Ihre Tür geliefert. Jetzt kostenlos testen!"


def synthesize(adapter: EspeakVoiceAdapter, text: str, locale: str, voice: str = "default") -> VoiceResult:
    return asyncio.run(adapter.synthesize(VoiceRequest(text=text, locale=locale, voice=voice)))


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


def independent_true_peak_dbtp(samples: np.ndarray) -> float:
    oversampled = resample_poly(samples, 4, 1)
    return 20 * math.log10(max(np.abs(oversampled).max(), np.abs(samples).max()))


def independent_lufs(samples: np.ndarray, sample_rate: int) -> float:
    return pyloudnorm.Meter(sample_rate).integrated_loudness(samples)


@pytest.fixture(scope="module")
def adapter() -> EspeakVoiceAdapter:
    return EspeakVoiceAdapter()


@pytest.fixture(scope="module")
def spoken(adapter) -> dict[str, tuple[str, VoiceResult]]:
    return {
        "en": (EN_TEXT, synthesize(adapter, EN_TEXT, "en-US")),
        "de": (DE_TEXT, synthesize(adapter, DE_TEXT, "de-DE")),
    }


LANGUAGES = ["en", "de"]


# --- adapter description and voice resolution -------------------------------------


def test_info_describes_espeak(adapter):
    info = adapter.info
    assert (info.task, info.provider, info.model) == ("voice", "local", "espeak-ng")
    assert re.fullmatch(r"\d+\.\d+(\.\d+)?\S*", info.model_version)
    assert info.price.per_1k_characters == 0
    locales = {"en-US", "en-GB", "de-DE", "fr-FR", "es-ES", "it-IT", "pt-BR", "nl-NL", "ja-JP"}
    assert {f"locale:{locale}" for locale in locales} <= info.capabilities
    assert info.capabilities == frozenset(f"locale:{locale}" for locale in LOCALE_VOICES)


def test_every_mapped_locale_resolves_to_a_shipped_voice():
    for locale, voice in LOCALE_VOICES.items():
        assert resolve_voice(locale, "default") == voice
        # The mapped name is also accepted when asked for explicitly.
        assert resolve_voice(locale, voice) == voice


def test_resolve_voice_accepts_variants_and_locale_spellings():
    assert resolve_voice("en_us", None) == "en-us"
    assert canonical_locale("PT_br") == "pt-BR"
    assert resolve_voice("en-US", "en-us+f3") == "en-us+f3"
    # Names, identifiers and language codes come back in the form espeak selects exactly.
    assert resolve_voice("de-DE", "German") == "de"
    assert resolve_voice("en-GB", "gmw/en-GB-x-rp") == "en-gb-x-rp"
    assert resolve_voice("en-GB", "en-gb+m3") == "en+m3"
    assert resolve_voice("fr-FR", "fr-fr") == "fr"


def test_language_codes_as_voices_synthesize(adapter):
    # espeak_SetVoiceByName itself refuses "en-gb"; resolve_voice maps it.
    result = synthesize(adapter, "Good morning.", "en-GB", "en-gb")
    assert result.wav == synthesize(adapter, "Good morning.", "en-GB", "default").wav


@pytest.mark.parametrize(
    ("locale", "voice", "named"),
    [
        ("xx-XX", "default", "xx-XX"),
        ("en-US", "no-such-voice", "no-such-voice"),  # ("klingon" exists: piqd)
        ("en-US", "en-us+nosuchvariant", "nosuchvariant"),
    ],
)
def test_unknown_locale_or_voice_raises_value_error_naming_it(adapter, locale, voice, named):
    with pytest.raises(ValueError, match=re.escape(named)):
        resolve_voice(locale, voice)
    with pytest.raises(ValueError, match=re.escape(named)):
        synthesize(adapter, "Hello.", locale, voice)


def test_empty_text_is_rejected(adapter):
    with pytest.raises(ValueError, match="empty"):
        synthesize(adapter, "   ", "en-US")


# --- audio -------------------------------------------------------------------------


@pytest.mark.parametrize("language", LANGUAGES)
def test_wav_is_16_bit_mono_at_the_reported_rate(spoken, language):
    _, result = spoken[language]
    samples, rate, channels, width = decode(result.wav)
    assert (channels, width) == (1, 2)
    assert rate == result.sample_rate == 22050
    assert result.duration_s == pytest.approx(len(samples) / rate)


@pytest.mark.parametrize("language", LANGUAGES)
def test_duration_is_plausible_for_the_text(spoken, language):
    text, result = spoken[language]
    words_per_second = len(text.split()) / result.duration_s
    # espeak at 165 wpm with pauses at punctuation: roughly 2-3.5 words a second.
    assert 1.5 < words_per_second < 4.5
    assert result.characters == len(text)


@pytest.mark.parametrize("language", LANGUAGES)
def test_loudness_is_normalised(spoken, language):
    _, result = spoken[language]
    samples, rate, _, _ = decode(result.wav)
    assert independent_lufs(samples, rate) == pytest.approx(-16.0, abs=1.0)
    assert result.loudness_lufs == pytest.approx(-16.0, abs=0.5)


@pytest.mark.parametrize("language", LANGUAGES)
def test_true_peak_is_under_the_ceiling(spoken, language):
    _, result = spoken[language]
    samples, _, _, _ = decode(result.wav)
    assert independent_true_peak_dbtp(samples) <= -1.0
    assert result.true_peak_dbtp <= -1.0


# --- word timings ---------------------------------------------------------------------


@pytest.mark.parametrize("language", LANGUAGES)
def test_one_timing_per_word_in_order(spoken, language):
    text, result = spoken[language]
    assert [w.word for w in result.words] == text.split()


@pytest.mark.parametrize("language", LANGUAGES)
def test_timings_are_monotonic_and_inside_the_audio(spoken, language):
    _, result = spoken[language]
    previous_end = 0.0
    for word in result.words:
        assert previous_end <= word.start_s <= word.end_s <= result.duration_s
        previous_end = word.end_s
    # The last word ends where speech ends, not long before or after.
    assert result.words[-1].end_s == pytest.approx(result.duration_s, abs=0.25)


def _rms_db(samples: np.ndarray) -> float:
    return 20 * math.log10(math.sqrt(float(np.mean(samples**2))) + 1e-12)


@pytest.mark.parametrize("language", LANGUAGES)
def test_words_start_at_the_onset_of_speech(spoken, language):
    _, result = spoken[language]
    samples, rate, _, _ = decode(result.wav)
    window = int(0.05 * rate)
    after = [_rms_db(samples[int(w.start_s * rate) :][:window]) for w in result.words]
    # Speech normalised to -16 LUFS sits around -20 dBFS RMS; pauses are silent.
    # (Not all words: one starting with a stop after running speech starts
    # with its closure, a few tens of ms of near-silence.)
    assert sum(db > -40 for db in after) >= 0.85 * len(after)
    # Where a pause precedes a word, the 30 ms before its start are (near) silent:
    # the start is the onset, not the beginning of the pause.
    words = result.words
    after_pause = [w for prev, w in pairwise(words) if w.start_s - prev.end_s > 0.1]
    assert after_pause, "the texts have punctuation, so there must be pauses"
    for word in after_pause:
        start = int(word.start_s * rate)
        assert _rms_db(samples[start - int(0.03 * rate) : start]) < -60


def test_words_without_their_own_event_keep_their_place(adapter):
    # espeak gives no WORD event for the dash, and one for the whole compound.
    text = "Save 20% — today's state-of-the-art café opens at 9:30!"
    result = synthesize(adapter, text, "en-US")
    assert [w.word for w in result.words] == text.split()
    dash = result.words[2]
    assert dash.start_s == dash.end_s == result.words[1].end_s
    for word in result.words:
        assert 0 <= word.start_s <= word.end_s <= result.duration_s


def test_unspaced_script_is_split_into_espeak_words(adapter):
    text = "こんにちは、コーヒーはいかがですか。"
    result = synthesize(adapter, text, "ja-JP")
    assert len(result.words) >= 2
    assert "".join(w.word for w in result.words) == text


def test_other_loudness_targets_are_honoured(adapter):
    request = VoiceRequest(text=EN_TEXT, locale="en-US", voice="default", target_lufs=-23.0, true_peak_dbtp=-2.0)
    result = asyncio.run(adapter.synthesize(request))
    samples, rate, _, _ = decode(result.wav)
    assert independent_lufs(samples, rate) == pytest.approx(-23.0, abs=1.0)
    assert independent_true_peak_dbtp(samples) <= -2.0


def test_nothing_is_loaded_at_import_time():
    code = (
        "import model_adapters.local_voice as lv, pathlib;"
        "assert lv._FACTS is None and lv._PRIVATE_COPY is None;"
        "maps = pathlib.Path('/proc/self/maps');"
        "assert not maps.exists() or 'espeak' not in maps.read_text()"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parent.parent)


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs /proc (Linux)")
def test_espeak_is_unloaded_after_each_synthesis(spoken):
    # A fresh instance per synthesis is what makes the output independent of
    # what ran before (see local_voice._espeak_session).
    private_copy = local_voice._PRIVATE_COPY
    assert private_copy is not None
    assert str(private_copy[1]) not in Path("/proc/self/maps").read_text()


# --- determinism and concurrency --------------------------------------------------------


def test_same_request_gives_the_same_bytes(adapter, spoken):
    _, first = spoken["en"]
    # Something else in between, with a variant (it uses the random generator).
    synthesize(adapter, "Something else entirely.", "en-GB", "en+f3")
    again = synthesize(adapter, EN_TEXT, "en-US")
    assert again.wav == first.wav
    assert again.words == first.words


def test_variant_changes_the_voice(adapter):
    default = synthesize(adapter, "Good morning.", "en-US")
    female = synthesize(adapter, "Good morning.", "en-US", "en-us+f3")
    assert default.wav != female.wav
    assert female == synthesize(adapter, "Good morning.", "en-US", "en-us+f3")


def test_concurrent_requests_do_not_mix(adapter, spoken):
    requests = [
        VoiceRequest(text=EN_TEXT, locale="en-US", voice="default"),
        VoiceRequest(text=DE_TEXT, locale="de-DE", voice="default"),
        VoiceRequest(text="Bonjour et bienvenue.", locale="fr-FR", voice="default"),
        VoiceRequest(text=EN_TEXT, locale="en-US", voice="default"),
    ]

    async def run_all() -> list[VoiceResult]:
        return await asyncio.gather(*(adapter.synthesize(r) for r in requests))

    results = asyncio.run(run_all())
    assert results[0].wav == results[3].wav == spoken["en"][1].wav
    assert results[1].wav == spoken["de"][1].wav
    assert len({r.wav for r in results}) == 3


# --- loudness module on synthetic signals -------------------------------------------------


def _loud_signal_with_sharp_peaks(rate: int = 22050, seconds: float = 4.0) -> np.ndarray:
    rng = np.random.default_rng(7)
    t = np.arange(int(rate * seconds)) / rate
    body = 0.15 * np.sin(2 * np.pi * 180 * t) * (1 + 0.5 * np.sin(2 * np.pi * 2.5 * t))
    body += 0.03 * rng.standard_normal(len(t))
    # Clicks: three a second, single-sample spikes, some with inter-sample overs.
    for start in range(rate // 10, len(t), rate // 3):
        body[start : start + 2] = [0.95, -0.9]
    return body.astype(np.float32)


def test_normalize_limits_without_hard_clipping():
    rate = 22050
    signal = _loud_signal_with_sharp_peaks(rate)
    lufs_in = independent_lufs(signal.astype(np.float64), rate)
    # Without a limiter, gain to -16 LUFS would push the clicks far past the ceiling.
    assert independent_true_peak_dbtp(signal * 10 ** ((-16 - lufs_in) / 20)) > 0.0

    out, lufs, peak = loudness.normalize(signal, rate, target_lufs=-16.0, true_peak_dbtp=-1.0)
    assert out.dtype == np.float32 and out.shape == signal.shape
    assert independent_true_peak_dbtp(out.astype(np.float64)) <= -1.0
    assert peak <= -1.0
    assert independent_lufs(out.astype(np.float64), rate) == pytest.approx(-16.0, abs=0.5)
    assert lufs == pytest.approx(-16.0, abs=0.5)
    assert _longest_run_at_max(out) <= 2


def _longest_run_at_max(samples: np.ndarray) -> int:
    """Longest run of consecutive samples sitting at the signal's extreme value:
    the signature of hard clipping."""
    magnitude = np.abs(samples)
    at_max = magnitude >= magnitude.max() * 0.9999
    longest = run = 0
    for flag in at_max:
        run = run + 1 if flag else 0
        longest = max(longest, run)
    return longest


def test_limiter_gain_is_smooth():
    rate = 22050
    signal = _loud_signal_with_sharp_peaks(rate).astype(np.float64)
    gained = signal * 4.0
    limited = loudness.limit(gained, rate, ceiling_dbtp=-1.0)
    body = np.abs(gained) > 0.05  # where the gain is well defined
    gain = limited[body] / gained[body]
    assert gain.max() <= 1.0 + 1e-9
    # A 5 ms attack ramp: the gain moves by a small fraction of its dip per sample.
    assert np.max(np.abs(np.diff(gain))) < 0.1


def test_true_peak_finds_inter_sample_peaks():
    rate = 48000
    t = np.arange(rate) / rate
    # A quarter-rate sine sampled 45 degrees off its crests: samples peak at
    # 0.707, the waveform at 1.0 (+3 dB over the sample peak).
    sine = np.sin(2 * np.pi * (rate / 4) * t + np.pi / 4)
    assert 20 * math.log10(np.abs(sine).max()) == pytest.approx(-3.01, abs=0.05)
    assert loudness.true_peak_dbtp(sine[100:-100]) == pytest.approx(0.0, abs=0.1)


def test_measure_agrees_with_pyloudnorm():
    rate = 48000
    rng = np.random.default_rng(3)
    noise = 0.05 * rng.standard_normal(rate * 5)
    sine = 0.3 * np.sin(2 * np.pi * 997 * np.arange(rate * 3) / rate)
    for signal in (noise, sine):
        lufs, _ = loudness.measure(signal, rate)
        assert lufs == pytest.approx(independent_lufs(signal, rate), abs=0.1)
    # BS.1770: a 997 Hz sine at amplitude A reads 20*log10(A) - 3.01 LUFS.
    assert loudness.integrated_loudness(sine, rate) == pytest.approx(20 * math.log10(0.3) - 3.01, abs=0.02)


def test_silence_is_left_alone():
    out, lufs, peak = loudness.normalize(np.zeros(22050, dtype=np.float32), 22050)
    assert not np.any(out)
    assert lufs == -math.inf and peak == -math.inf
