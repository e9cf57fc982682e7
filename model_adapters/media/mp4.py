"""The top-level boxes of an ISO-BMFF (MP4) file, read without decoding anything."""

from __future__ import annotations

import struct


def mp4_top_level_boxes(data: bytes) -> list[tuple[str, int, int]]:
    """(type, offset, size) of each top-level ISO-BMFF box."""
    boxes = []
    offset = 0
    while offset + 8 <= len(data):
        size, kind = struct.unpack_from(">I4s", data, offset)
        header = 8
        if size == 1:
            size = struct.unpack_from(">Q", data, offset + 8)[0]
            header = 16
        elif size == 0:
            size = len(data) - offset
        if size < header or offset + size > len(data):
            raise ValueError(f"malformed MP4: box {kind!r} at {offset} has size {size}")
        boxes.append((kind.decode("latin-1"), offset, size))
        offset += size
    return boxes


def is_faststart(data: bytes) -> bool:
    kinds = [kind for kind, _, _ in mp4_top_level_boxes(data)]
    return "moov" in kinds and "mdat" in kinds and kinds.index("moov") < kinds.index("mdat")
