"""The local ``video`` adapter: a slow camera move over the refined still, captions, H.264 + AAC.

:class:`PyAVCompositor` turns a still (PNG) and a voiceover (WAV) into an MP4:

* video: H.264 (libx264), yuv420p, BT.709 limited range (tagged on the stream),
  ``request.width`` x ``request.height`` at ``request.fps``. The camera makes
  one slow Ken Burns move: an eased zoom between 1.0 and :data:`ZOOM_MAX` with a
  slight pan; whether it zooms in or out and which way it pans come from
  ``request.seed`` (:func:`camera_path`, deterministic).
* captions: each :class:`CaptionCue` is drawn once (Pillow's bundled scalable
  font, white with a dark outline on a translucent panel, in the bottom safe
  area) and blended into exactly the frames whose start time lies in
  ``[start_s, end_s)``.
* audio: the WAV resampled to 48 kHz stereo, padded with silence to the video's
  length, encoded with FFmpeg's native ``aac`` encoder.
* length: ``round((audio + tail_s) * fps)`` frames; the audio stream lasts as
  long as the video (never shorter than the voice), so the two differ by less
  than one frame.
* ``moov`` before ``mdat`` (``movflags=+faststart``; checked on the bytes, with
  a pure-Python relocation as the fallback).

Fast path (CPU). Per-frame Python/PIL resizing runs at ~1.4x real time at
720p30 on two cores; here the per-frame work is a handful of C++ kernels:

1. Once per call: the still is resized to ~1.19x the output's pixel density,
   converted to YUV (BT.709, limited range) and packed as a 4-channel uint8
   channels-last image; its chroma is pre-filtered with the 4:2:0 siting filter
   so that point-sampling it later equals a proper chroma downsample.
2. Per frame: one ``F.interpolate(uint8, bilinear, antialias=True)`` call (the
   AVX2 uint8 kernel, ~2 ms at 720p) does crop + resample of Y, U and V
   together. That kernel only crops at integer offsets, so sub-pixel camera
   positions are reached by choosing, per axis, an integer crop start and a
   small output offset ``m`` (``m * r`` has a different fractional part for
   each ``m``; :func:`.fast_path._phase_plan`): positions are exact to < 0.1 px and the
   move is smooth, without the 1-px stepping of integer-crop zooms.
3. Y is copied and U/V point-sampled straight into the ``AVFrame`` planes
   (no swscale, no intermediate buffers); the caption, precomposed per cue as
   premultiplied int16 planes, is blended in place inside its box only.
4. Frames are made on a long-lived worker thread (single-threaded ATen, so it
   does not fight libx264's threads), audio is decoded and AAC-encoded on
   another, and the calling thread feeds x264 and muxes; x264, the torch
   kernels and the AAC encoder all release the GIL.

On CUDA (:func:`model_adapters.devices.pick_device`) the frames are made in
batches with ``grid_sample`` in float and downsampled to 4:2:0 on the GPU; the
same path runs on CPU with ``backend="grid"`` (a reference for tests).

The package, one concern a module: :mod:`.camera` (the move), :mod:`.colour`
(BT.709 and 4:2:0), :mod:`.captions_overlay` (layout, drawing, schedule),
:mod:`.frames` (what both frame paths share), :mod:`.fast_path`,
:mod:`.grid_path`, :mod:`.audio`, :mod:`.workers` (the frame threads) and
:mod:`.adapter`. MP4 boxes and probing live in the torch-free
:mod:`model_adapters.media` (``mp4``, ``probe``); the word wrap in
:mod:`model_adapters.media.text_layout`. Every name below is importable from
``model_adapters.local_video`` as it was when this was one module.
"""

from __future__ import annotations

from model_adapters.local_video.adapter import (
    ALGORITHM_VERSION,
    MAX_FPS,
    MAX_SIDE,
    MIN_SIDE,
    MODEL,
    PROVIDER,
    QUEUE_FRAMES,
    Backend,
    PyAVCompositor,
    decode_still,
)
from model_adapters.local_video.audio import (
    AAC_FRAME,
    AUDIO_BITRATE,
    AUDIO_LAYOUT,
    AUDIO_RATE,
    decode_audio,
    voice_duration,
)
from model_adapters.local_video.camera import PAN_LIMIT, PAN_SHARE, ZOOM_MAX, CameraPath, camera_path, ease
from model_adapters.local_video.captions_overlay import (
    CAPTION_FONT_SHARE,
    CAPTION_MAX_LINES,
    CAPTION_MAX_WIDTH,
    CAPTION_PANEL_ALPHA,
    CaptionLayout,
    CaptionOverlay,
    build_overlay,
    caption_font_size,
    cue_schedule,
    layout_caption,
    render_caption,
)
from model_adapters.local_video.colour import (
    AVCOL_PRI_BT709,
    AVCOL_RANGE_MPEG,
    AVCOL_SPC_BT709,
    AVCOL_TRC_BT709,
    KB,
    KR,
    downsample_chroma_420,
    rgb_to_yuv709,
    yuv709_to_rgb,
)
from model_adapters.local_video.fast_path import MAX_PHASE_OFFSET, SOURCE_PAD, _FastFrames
from model_adapters.local_video.frames import OVERSAMPLE
from model_adapters.local_video.grid_path import GRID_BATCH, _GridFrames
from model_adapters.local_video.workers import FRAME_WORKERS
from model_adapters.media.mp4 import is_faststart, move_moov_to_front, mp4_top_level_boxes
from model_adapters.media.probe import StreamFacts, probe_mp4

__all__ = [
    "AAC_FRAME",
    "ALGORITHM_VERSION",
    "AUDIO_BITRATE",
    "AUDIO_LAYOUT",
    "AUDIO_RATE",
    "AVCOL_PRI_BT709",
    "AVCOL_RANGE_MPEG",
    "AVCOL_SPC_BT709",
    "AVCOL_TRC_BT709",
    "CAPTION_FONT_SHARE",
    "CAPTION_MAX_LINES",
    "CAPTION_MAX_WIDTH",
    "CAPTION_PANEL_ALPHA",
    "FRAME_WORKERS",
    "GRID_BATCH",
    "KB",
    "KR",
    "MAX_FPS",
    "MAX_PHASE_OFFSET",
    "MAX_SIDE",
    "MIN_SIDE",
    "MODEL",
    "OVERSAMPLE",
    "PAN_LIMIT",
    "PAN_SHARE",
    "PROVIDER",
    "QUEUE_FRAMES",
    "SOURCE_PAD",
    "ZOOM_MAX",
    "Backend",
    "CameraPath",
    "CaptionLayout",
    "CaptionOverlay",
    "PyAVCompositor",
    "StreamFacts",
    "_FastFrames",
    "_GridFrames",
    "build_overlay",
    "camera_path",
    "caption_font_size",
    "cue_schedule",
    "decode_audio",
    "decode_still",
    "downsample_chroma_420",
    "ease",
    "is_faststart",
    "layout_caption",
    "move_moov_to_front",
    "mp4_top_level_boxes",
    "probe_mp4",
    "render_caption",
    "rgb_to_yuv709",
    "voice_duration",
    "yuv709_to_rgb",
]
