"""What a full decode found out about an image's bytes, remembered by their sha256.

A refined still is decoded in one process by the stage that stores it (checked, and its
preview made) and again, moments later, by the `png_valid` check on the stored bytes: about
25 ms each for a 1080x1920 PNG, the largest share of a run worker's image work. Whether bytes
decode, and to what format, size and mode, is a function of the bytes alone, so a decode done
once answers for the same sha256 afterwards. Only successful full decodes are remembered
(`remember_decoded`); bytes never seen are decoded here.
"""

from __future__ import annotations

import hashlib
import io
import threading
from collections import OrderedDict
from typing import NamedTuple

from PIL import Image

MAX_REMEMBERED = 4096  # a few hundred bytes each


class DecodedImage(NamedTuple):
    format: str
    width: int
    height: int
    mode: str


_decoded: OrderedDict[str, DecodedImage] = OrderedDict()
_lock = threading.Lock()


def _remember(key: str, image: Image.Image) -> DecodedImage:
    facts = DecodedImage(str(image.format), image.width, image.height, image.mode)
    with _lock:
        _decoded[key] = facts
        _decoded.move_to_end(key)
        while len(_decoded) > MAX_REMEMBERED:
            _decoded.popitem(last=False)
    return facts


def remember_decoded(data: bytes, image: Image.Image) -> None:
    """Record that `data` decoded fully (`image.load()` returned) to `image`."""
    _remember(hashlib.sha256(data).hexdigest(), image)


def decoded_image(data: bytes) -> DecodedImage:
    """The format, size and mode `data` decodes to: remembered, or from a full decode now
    (PIL's errors raised as they come)."""
    key = hashlib.sha256(data).hexdigest()
    with _lock:
        known = _decoded.get(key)
    if known is not None:
        return known
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        return _remember(key, image)
