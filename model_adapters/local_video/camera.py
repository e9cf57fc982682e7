"""The Ken Burns camera move: per-frame zoom and viewport centre, chosen by the request's seed."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import numpy as np

ZOOM_MAX = 1.08
PAN_SHARE = 0.6  # of the room the zoom leaves at its tightest
PAN_LIMIT = 0.03  # of the frame, whatever the room: a slight pan


@dataclass(frozen=True)
class CameraPath:
    """Per-frame zoom and viewport centre, in the still's pixel coordinates."""

    zoom: np.ndarray  # (n,) float64, 1.0 .. ZOOM_MAX
    center_x: np.ndarray  # (n,)
    center_y: np.ndarray  # (n,)
    cover_scale: float  # output px per still px at zoom 1 (cover fit)
    zoom_in: bool
    pan: tuple[float, float]  # unit direction of the pan (x right, y down)


def ease(t: np.ndarray) -> np.ndarray:
    """Cosine ease-in-out on [0, 1]: zero velocity at both ends."""
    eased: np.ndarray = 0.5 - 0.5 * np.cos(np.pi * np.clip(t, 0.0, 1.0))
    return eased


def camera_path(n_frames: int, still_size: tuple[int, int], out_size: tuple[int, int], seed: int) -> CameraPath:
    """The Ken Burns move: eased zoom 1.0 <-> ZOOM_MAX plus a slight pan, chosen by ``seed``.

    The viewport always stays inside the still: the pan at progress ``e`` is
    ``e`` times its final offset, and the room the zoom leaves is a concave
    function of ``e`` that starts at the cover-fit slack, so a final offset
    within the room at ``ZOOM_MAX`` is within the room at every ``e``.
    """
    still_w, still_h = still_size
    out_w, out_h = out_size
    cover = max(out_w / still_w, out_h / still_h)
    rng = random.Random(f"kenburns:{seed}")
    zoom_in = rng.random() < 0.5
    angle = rng.randrange(8) * math.pi / 4
    direction = (round(math.cos(angle), 6) + 0.0, round(math.sin(angle), 6) + 0.0)  # + 0.0: no -0.0

    # Final pan offset (still px): a share of the room at the tightest zoom, capped.
    room_x = (still_w - out_w / (cover * ZOOM_MAX)) / 2
    room_y = (still_h - out_h / (cover * ZOOM_MAX)) / 2
    pan_x = direction[0] * min(PAN_SHARE * room_x, PAN_LIMIT * out_w / cover)
    pan_y = direction[1] * min(PAN_SHARE * room_y, PAN_LIMIT * out_h / cover)

    t = np.arange(n_frames, dtype=np.float64) / max(n_frames - 1, 1)
    e = ease(t)
    if not zoom_in:
        e = 1.0 - e
    zoom = 1.0 + (ZOOM_MAX - 1.0) * e
    return CameraPath(
        zoom=zoom,
        center_x=still_w / 2 + pan_x * e,
        center_y=still_h / 2 + pan_y * e,
        cover_scale=cover,
        zoom_in=zoom_in,
        pan=direction,
    )
