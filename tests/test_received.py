"""Error messages name what was received, and read the same on every run (no object addresses)."""

import io

import pytest
from PIL import Image

from assets.checks import check_png
from model_adapters.http.base import MediaError, decode_wav, open_image
from model_adapters.received import describe_received, error_text, sniff

SVG = b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="8" height="8"><rect width="8" height="8"/></svg>'


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (10, 20, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_sniffing_names_common_answers():
    assert sniff(_png()) == "PNG"
    assert sniff(SVG).startswith("SVG")
    assert sniff(b'{"error": "nope"}') == "JSON"
    assert sniff(b"<!DOCTYPE html><html>") == "HTML"
    assert sniff(b"") == "nothing (empty)"
    assert sniff(bytes(range(200, 256))) == "unknown binary data"


@pytest.mark.parametrize("data", [SVG, _png()[:40], b"not an image at all", b""])
def test_an_undecodable_image_says_what_arrived_and_reads_the_same_twice(data):
    messages = []
    for _ in range(2):
        with pytest.raises(MediaError) as raised:
            open_image(data)
        messages.append(str(raised.value))
    assert messages[0] == messages[1]
    assert " object at 0x" not in messages[0]
    if data:
        assert f"received {len(data)} bytes" in messages[0] and sniff(data) in messages[0]
    if data is SVG:
        assert "SVG (a vector drawing, not a raster image)" in messages[0]


def test_the_checks_and_wav_decoding_say_what_arrived():
    outcome = check_png(SVG, "1:1")
    assert not outcome.passed and "look like SVG" in outcome.metadata["problems"][0]
    assert " object at 0x" not in outcome.metadata["problems"][0]
    with pytest.raises(MediaError, match=r"not a RIFF/WAVE file \(bad header\); received 17 bytes that look like JSON"):
        decode_wav(b'{"error": "nope"}')


def test_error_text_drops_addresses():
    exc = OSError(f"cannot identify image file {io.BytesIO()!r}")
    assert error_text(exc) == "OSError: cannot identify image file <_io.BytesIO>"
    assert describe_received(b"abc", "text/plain") == "received 3 bytes (text/plain) that look like text, starting b'abc'"
