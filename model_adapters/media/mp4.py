"""The boxes of an ISO-BMFF (MP4) file, read and relocated without decoding anything."""

from __future__ import annotations

import struct

# Boxes whose payload is a list of child boxes, on the way from moov down to stco/co64.
_CONTAINER_BOXES = {b"moov", b"trak", b"mdia", b"minf", b"stbl", b"edts", b"dinf", b"mvex", b"udta"}


def _box_at(data: bytes | bytearray, offset: int, end: int, *, to_end_allowed: bool) -> tuple[bytes, int, int]:
    """(kind, size, header length) of the box at ``offset``, which must end by ``end``.

    A 32-bit size of 1 means a 64-bit size follows the kind; a size of 0 means "to the
    end of the file", which only a top-level box may use (``to_end_allowed``).
    """
    size, kind = struct.unpack_from(">I4s", data, offset)
    header = 8
    if size == 1:
        size = struct.unpack_from(">Q", data, offset + 8)[0]
        header = 16
    elif size == 0 and to_end_allowed:
        size = end - offset
    if size < header or offset + size > end:
        raise ValueError(f"malformed MP4: box {kind!r} at {offset} has size {size}")
    return kind, size, header


def mp4_top_level_boxes(data: bytes) -> list[tuple[str, int, int]]:
    """(type, offset, size) of each top-level ISO-BMFF box."""
    boxes = []
    offset = 0
    while offset + 8 <= len(data):
        kind, size, _ = _box_at(data, offset, len(data), to_end_allowed=True)
        boxes.append((kind.decode("latin-1"), offset, size))
        offset += size
    return boxes


def is_faststart(data: bytes) -> bool:
    kinds = [kind for kind, _, _ in mp4_top_level_boxes(data)]
    return "moov" in kinds and "mdat" in kinds and kinds.index("moov") < kinds.index("mdat")


def _shift_chunk_offsets(box: bytearray, start: int, end: int, delta: int) -> None:
    """Add ``delta`` to every stco/co64 entry inside box[start:end] (the children of a container)."""
    offset = start
    while offset + 8 <= end:
        kind, size, header = _box_at(box, offset, end, to_end_allowed=False)
        if kind in _CONTAINER_BOXES:
            _shift_chunk_offsets(box, offset + header, offset + size, delta)
        elif kind == b"stco":
            count = struct.unpack_from(">I", box, offset + header + 4)[0]
            for n in range(count):
                at = offset + header + 8 + 4 * n
                value = struct.unpack_from(">I", box, at)[0] + delta
                if value >= 2**32:
                    raise ValueError("chunk offset overflows stco; cannot relocate moov")
                struct.pack_into(">I", box, at, value)
        elif kind == b"co64":
            count = struct.unpack_from(">I", box, offset + header + 4)[0]
            for n in range(count):
                at = offset + header + 8 + 8 * n
                struct.pack_into(">Q", box, at, struct.unpack_from(">Q", box, at)[0] + delta)
        offset += size


def move_moov_to_front(data: bytes) -> bytes:
    """What ``movflags=+faststart`` does, in Python: moov before the first mdat, chunk offsets patched."""
    boxes = mp4_top_level_boxes(data)
    kinds = [kind for kind, _, _ in boxes]
    if "moov" not in kinds or "mdat" not in kinds:
        raise ValueError("not an MP4 with moov and mdat")
    moov_index, mdat_index = kinds.index("moov"), kinds.index("mdat")
    if moov_index < mdat_index:
        return data
    _, moov_offset, moov_size = boxes[moov_index]
    moov = bytearray(data[moov_offset : moov_offset + moov_size])
    header = 16 if struct.unpack_from(">I", moov, 0)[0] == 1 else 8
    _shift_chunk_offsets(moov, header, len(moov), moov_size)
    insert_at = boxes[mdat_index][1]
    return data[:insert_at] + bytes(moov) + data[insert_at:moov_offset] + data[moov_offset + moov_size :]
