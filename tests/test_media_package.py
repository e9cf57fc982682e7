"""`model_adapters.media`: the one torch-free home of the media helpers (WAV/PCM, aspect ratios, MP4
boxes, probing, text layout, atomic writes), and the places that used to keep copies now use it."""

from __future__ import annotations

import asyncio
import os
import pkgutil
import struct
import subprocess
import sys
from typing import get_args

import numpy as np
import pytest

import model_adapters.media as media
from model_adapters.media.aspect import ASPECT_RATIOS, AspectRatio, frame_size, ratio_sides
from model_adapters.media.errors import MediaError
from model_adapters.media.files import TEMP_PREFIX, atomic_write
from model_adapters.media.wav import (
    WAVE_FORMAT_EXTENSIBLE,
    WAVE_FORMAT_FLOAT,
    WAVE_FORMAT_PCM,
    decode_pcm16_wav,
    decode_wav,
    encode_wav,
    read_wav,
    to_pcm16,
)
from model_adapters.types import UnsupportedInput, VoiceRequest
from tests.conftest import PROJECT_ROOT

MEDIA_MODULES = sorted(f"model_adapters.media.{info.name}" for info in pkgutil.iter_modules(media.__path__))


def riff(tag: int, channels: int, rate: int, bits: int, payload: bytes, *, data_size: int | None = None) -> bytes:
    """A RIFF/WAVE file written by hand (any format tag; ``data_size`` overrides the data chunk's size field)."""
    block = channels * bits // 8
    if tag == WAVE_FORMAT_EXTENSIBLE:  # 40-byte fmt chunk whose sub-format GUID starts with the real tag
        fmt = struct.pack("<HHIIHH", tag, channels, rate, rate * block, block, bits)
        fmt += struct.pack("<HHI", 22, bits, 0) + struct.pack("<H", WAVE_FORMAT_PCM) + bytes(14)
    else:
        fmt = struct.pack("<HHIIHH", tag, channels, rate, rate * block, block, bits)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt
    body += b"data" + struct.pack("<I", len(payload) if data_size is None else data_size) + payload
    return b"RIFF" + struct.pack("<I", len(body)) + body


# --- the package stays torch-free ----------------------------------------------------------


def test_the_package_has_the_modules_the_issue_names():
    assert {"aspect", "errors", "files", "mp4", "probe", "text_layout", "wav"} <= {m.rsplit(".", 1)[1] for m in MEDIA_MODULES}


def test_importing_every_media_module_imports_neither_torch_nor_dagster():
    probe = (
        "import importlib, sys\n"
        f"for name in {MEDIA_MODULES!r}:\n"
        "    importlib.import_module(name)\n"
        "print(sorted(m for m in ('torch', 'dagster', 'transformers') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "[]", done.stdout


def test_the_old_import_paths_are_the_one_implementation():
    import assets.checks
    import model_adapters.http.base as http_base
    import model_adapters.local_transcribe as local_transcribe
    import model_adapters.pcm as pcm
    import model_adapters.types as types

    assert http_base.decode_wav is decode_wav and http_base.MediaError is MediaError
    assert pcm.decode_wav is decode_pcm16_wav and pcm.encode_wav is encode_wav and pcm.to_pcm16 is to_pcm16
    assert local_transcribe.decode_wav is decode_pcm16_wav
    assert types.frame_size is frame_size and types.AspectRatio is AspectRatio
    assert not hasattr(assets.checks, "_ASPECT_RATIOS")


# --- WAV ----------------------------------------------------------------------------------


def test_a_tone_round_trips_through_the_encoder_and_all_three_readers():
    rate = 22050
    tone = 0.5 * np.sin(2 * np.pi * 440 * np.arange(rate // 10) / rate)
    pcm16 = to_pcm16(tone)
    wav = encode_wav(pcm16, rate)
    strict, strict_rate = decode_wav(wav)
    lenient, lenient_rate = read_wav(wav)
    narrow, narrow_rate = decode_pcm16_wav(wav)
    assert strict_rate == lenient_rate == narrow_rate == rate
    assert strict.dtype == np.float64 and narrow.dtype == np.float32
    expected = pcm16.astype(np.float64) / 32768
    np.testing.assert_array_equal(strict, expected)
    np.testing.assert_array_equal(lenient, expected)
    np.testing.assert_array_equal(narrow, expected.astype(np.float32))
    assert np.max(np.abs(strict - tone)) <= 0.5 / 32768 + 1e-12  # rounding, not truncation


def test_to_pcm16_clips_only_past_full_scale():
    assert to_pcm16(np.array([-2.0, -1.0, 0.0, 32767 / 32768, 1.0, 3.0])).tolist() == [-32768, -32768, 0, 32767, 32767, 32767]


@pytest.mark.parametrize(
    ("tag", "bits", "payload", "expected"),
    [
        (WAVE_FORMAT_PCM, 8, bytes([128, 255, 0]), [0.0, 127 / 128, -1.0]),
        (WAVE_FORMAT_PCM, 24, b"\x00\x00\x40" + b"\x00\x00\xc0", [0.5, -0.5]),
        (WAVE_FORMAT_PCM, 32, struct.pack("<ii", 1 << 30, -(1 << 31)), [0.5, -1.0]),
        (WAVE_FORMAT_FLOAT, 32, struct.pack("<ff", 0.25, -0.75), [0.25, -0.75]),
        (WAVE_FORMAT_FLOAT, 64, struct.pack("<dd", 0.125, -0.5), [0.125, -0.5]),
        (WAVE_FORMAT_EXTENSIBLE, 16, struct.pack("<hh", 16384, -8192), [0.5, -0.25]),
    ],
)
def test_the_reader_decodes_every_encoding_providers_send(tag, bits, payload, expected):
    samples, rate = decode_wav(riff(tag, 1, 16000, bits, payload))
    assert rate == 16000 and samples.tolist() == pytest.approx(expected)


def test_channels_are_averaged_and_a_streamed_placeholder_size_is_read_to_the_end():
    stereo = struct.pack("<hhhh", 1000, 3000, -2000, 0)
    samples, _ = decode_wav(riff(WAVE_FORMAT_PCM, 2, 16000, 16, stereo, data_size=0xFFFFFFFF))
    assert samples.tolist() == pytest.approx([2000 / 32768, -1000 / 32768])


def test_strict_lenient_and_16_bit_contracts_differ_only_where_they_say():
    low_rate = riff(WAVE_FORMAT_PCM, 1, 1000, 16, struct.pack("<h", 100))
    with pytest.raises(MediaError, match="1000 Hz"):
        decode_wav(low_rate)
    assert read_wav(low_rate)[1] == 1000
    empty = riff(WAVE_FORMAT_PCM, 1, 16000, 16, b"")
    with pytest.raises(MediaError, match="no audio samples"):
        decode_wav(empty)
    assert len(read_wav(empty)[0]) == 0
    with pytest.raises(MediaError, match="non-finite"):
        decode_wav(riff(WAVE_FORMAT_FLOAT, 1, 16000, 32, struct.pack("<f", float("nan"))))
    with pytest.raises(MediaError, match="16-bit"):
        decode_pcm16_wav(riff(WAVE_FORMAT_PCM, 1, 16000, 24, bytes(6)))
    with pytest.raises(MediaError, match=r"not a RIFF/WAVE file \(bad header\)"):
        read_wav(b'{"error": "nope"}')
    with pytest.raises(MediaError, match="unsupported WAV encoding"):
        read_wav(riff(7, 1, 8000, 8, bytes(4)))  # mu-law
    with pytest.raises(MediaError, match="before its fmt"):
        read_wav(b"RIFF" + struct.pack("<I", 16) + b"WAVE" + b"data" + struct.pack("<I", 0))


def test_the_asset_check_reads_float_wavs_itself_and_other_containers_with_pyav():
    from assets.checks import decode_wav as check_decode

    floats = riff(WAVE_FORMAT_FLOAT, 1, 16000, 32, struct.pack("<ff", 0.25, -0.75))
    assert check_decode(floats)[0].tolist() == pytest.approx([0.25, -0.75])
    with pytest.raises(ValueError, match="not readable audio"):
        check_decode(b"neither a WAV nor anything FFmpeg reads")


# --- aspect ratios ------------------------------------------------------------------------


def test_one_table_matches_the_literal_and_gives_exact_even_frames():
    assert set(ASPECT_RATIOS) == set(get_args(AspectRatio))
    for name, (w, h) in ASPECT_RATIOS.items():
        width, height = frame_size(name, 1080)
        assert width * h == height * w and width % 2 == 0 and height % 2 == 0 and min(width, height) == 1080
    assert frame_size("9:16", 1081) == (1080, 1920)
    assert ratio_sides("16:9") == (16, 9)
    with pytest.raises(ValueError, match=r"unsupported aspect ratio '4:3'; expected one of \['16:9', '1:1', '9:16'\]"):
        ratio_sides("4:3")


# --- atomic writes ------------------------------------------------------------------------


def test_atomic_write_replaces_the_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "brief.yaml"
    atomic_write(target, b"first")
    atomic_write(target, b"second", durable=True)
    assert target.read_bytes() == b"second"
    assert [p.name for p in tmp_path.iterdir()] == ["brief.yaml"]


def test_a_failed_atomic_write_keeps_the_old_file_and_removes_its_temporary(tmp_path, monkeypatch):
    target = tmp_path / "manifest.json"
    target.write_bytes(b"old")

    def refuse(src, dst):
        assert os.path.basename(src).startswith(TEMP_PREFIX) and os.path.dirname(src) == str(tmp_path)
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, b"new")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["manifest.json"]


def test_a_durable_write_is_fsynced_before_the_rename(tmp_path, monkeypatch):
    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (events.append("fsync"), real_fsync(fd))[1])
    monkeypatch.setattr(os, "replace", lambda a, b: (events.append("replace"), real_replace(a, b))[1])
    atomic_write(tmp_path / "a.bin", b"x", durable=True)
    atomic_write(tmp_path / "b.bin", b"y")
    assert events == ["fsync", "replace", "replace"]


# --- voice input validation (one check, both HTTP voices) -----------------------------------


@pytest.mark.parametrize(
    ("module", "cls"), [("model_adapters.http.openai_compat", "OpenAISpeech"), ("model_adapters.http.elevenlabs", "ElevenLabsSpeech")]
)
def test_both_http_voices_refuse_empty_and_over_long_text_before_any_request(module, cls):
    import importlib

    adapter_cls = getattr(importlib.import_module(module), cls)
    adapter = adapter_cls(adapter_id="voice", model="m", base_url="http://127.0.0.1:9", options={"max_input_chars": 10})
    with pytest.raises(ValueError, match="voice request text is empty"):
        asyncio.run(adapter.synthesize(VoiceRequest(text="   ", locale="en-US", voice="default")))
    with pytest.raises(UnsupportedInput, match="text of 11 characters is over 10"):
        asyncio.run(adapter.synthesize(VoiceRequest(text="x" * 11, locale="en-US", voice="default")))


def test_an_image_decode_is_remembered_by_the_bytes_sha256(monkeypatch):
    """`decoded_image` decodes bytes it has not seen and answers the same bytes from memory;
    bytes that fail to decode are never remembered."""
    import io

    from PIL import Image

    from model_adapters.media import png
    from model_adapters.simulator.media import broken_png

    def encoded(width: int, height: int) -> bytes:
        buffer = io.BytesIO()
        Image.new("RGB", (width, height), (10, 200, 30)).save(buffer, format="PNG")
        return buffer.getvalue()

    wide, square = encoded(64, 32), encoded(32, 32)
    opened = []
    real_open = png.Image.open
    monkeypatch.setattr(png.Image, "open", lambda *a, **k: (opened.append(1), real_open(*a, **k))[1])
    assert png.decoded_image(wide) == png.DecodedImage("PNG", 64, 32, "RGB") and len(opened) == 1
    assert png.decoded_image(wide) == png.DecodedImage("PNG", 64, 32, "RGB") and len(opened) == 1  # remembered
    with real_open(io.BytesIO(square)) as image:
        image.load()
        png.remember_decoded(square, image)  # a decode done elsewhere (the stage that stored it)
    assert png.decoded_image(square).width == 32 and len(opened) == 1
    broken = broken_png(16, 16)
    for _ in range(2):  # a failure is raised each time: nothing remembered
        with pytest.raises(OSError):
            png.decoded_image(broken)
    assert len(opened) == 3
