"""Moved: 16-bit PCM and WAV encoding and decoding live in `model_adapters.media.wav`.

Kept so that `from model_adapters.pcm import ...` goes on working; `decode_wav`
here is the float32, 16-bit-only contract (`media.wav.decode_pcm16_wav`).
"""

from model_adapters.media.wav import PCM16_SCALE, encode_wav, to_pcm16
from model_adapters.media.wav import decode_pcm16_wav as decode_wav

__all__ = ["PCM16_SCALE", "decode_wav", "encode_wav", "to_pcm16"]
