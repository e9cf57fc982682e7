"""Fitting speech into the brief's duration: the pace the voiceover stage asks for, and voices that honour it."""

import asyncio
import io
import wave

import pytest

from assets.stage_kinds.voiceover import VoiceSettings, fitted_speed
from model_adapters.local_voice import EspeakVoiceAdapter
from model_adapters.types import VoiceRequest

SETTINGS = VoiceSettings()
SCRIPT = "Meet the Aurora Lamp, made for night owls who read in bed. Warm light, no glare, and a dimmer that remembers you."


def test_speech_that_fits_keeps_its_pace():
    assert fitted_speed(9.0, 9.5, SETTINGS) == 1.0
    assert fitted_speed(0.8 * 9.5, 9.5, SETTINGS) == 1.0  # exactly the fill floor


def test_long_speech_is_asked_faster_within_the_limit():
    assert fitted_speed(10.0, 9.5, SETTINGS) == pytest.approx(10.0 / 9.5 * 1.02, abs=1e-3)
    assert fitted_speed(20.0, 9.5, SETTINGS) == SETTINGS.max_speed  # no faster than 1.15: the check refuses the rest


def test_short_speech_is_slowed_a_little():
    speed = fitted_speed(6.0, 9.5, SETTINGS)
    assert SETTINGS.min_speed <= speed < 1.0
    assert 6.0 / speed <= 9.5  # still fits once slowed
    assert fitted_speed(2.0, 9.5, SETTINGS) == SETTINGS.min_speed


def wav_seconds(data: bytes) -> float:
    with wave.open(io.BytesIO(data)) as wav:
        return wav.getnframes() / wav.getframerate()


def test_espeak_honours_the_requested_pace():
    voice = EspeakVoiceAdapter()
    request = VoiceRequest(text=SCRIPT, locale="en-US", voice="default")
    natural = asyncio.run(voice.synthesize(request))
    faster = asyncio.run(voice.synthesize(request.model_copy(update={"speed": 1.15})))
    slower = asyncio.run(voice.synthesize(request.model_copy(update={"speed": 0.9})))
    ratio_fast = wav_seconds(natural.wav) / wav_seconds(faster.wav)
    ratio_slow = wav_seconds(slower.wav) / wav_seconds(natural.wav)
    # espeak's pauses scale with its rate too, so the length follows the pace closely.
    assert 1.08 <= ratio_fast <= 1.2, ratio_fast
    assert 1.05 <= ratio_slow <= 1.15, ratio_slow
    assert len(faster.words) == len(natural.words) == len(SCRIPT.split())
