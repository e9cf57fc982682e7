"""The grid frame path: float ``grid_sample`` in batches, 4:2:0 downsampling and captions on the
device (GPU, or CPU as a reference)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import av
import numpy as np
import torch
import torch.nn.functional as F

from model_adapters.local_video.camera import ZOOM_MAX, CameraPath
from model_adapters.local_video.captions_overlay import CaptionOverlay
from model_adapters.local_video.colour import downsample_chroma_420, rgb_to_yuv709
from model_adapters.local_video.frames import OVERSAMPLE, plane_tensors, resize_rgb

GRID_BATCH = 16


class _GridFrames:
    """Frames by float ``grid_sample`` in batches; 4:2:0 downsampling and captions on the device."""

    def __init__(
        self,
        still_rgb: torch.Tensor,
        path: CameraPath,
        width: int,
        height: int,
        overlays: Sequence[CaptionOverlay],
        schedule: Sequence[int],
        device: torch.device,
    ):
        self.name = f"{device.type}-grid"
        self.device = device
        self.width, self.height = width, height
        self.schedule = schedule
        self.overlays = [ov.to(device) for ov in overlays]
        _, still_h, still_w = still_rgb.shape
        density = OVERSAMPLE * ZOOM_MAX * path.cover_scale
        src_w, src_h = max(2, round(still_w * density)), max(2, round(still_h * density))
        sx, sy = src_w / still_w, src_h / still_h
        source = resize_rgb(still_rgb, src_w, src_h).to(device)
        self.source = rgb_to_yuv709(source.float()).unsqueeze(0)  # (1, 3, H, W)
        step_x = sx / (path.cover_scale * path.zoom)
        step_y = sy / (path.cover_scale * path.zoom)
        origin_x = sx * path.center_x - step_x * width / 2
        origin_y = sy * path.center_y - step_y * height / 2
        # Output pixel centre i -> source x = origin + (i + 0.5) * step; in grid_sample's
        # normalised coordinates (align_corners=False): x_n = 2 x / src_w - 1.
        theta = np.zeros((len(step_x), 2, 3), dtype=np.float64)
        theta[:, 0, 0] = width * step_x / src_w
        theta[:, 0, 2] = (2 * origin_x + width * step_x) / src_w - 1
        theta[:, 1, 1] = height * step_y / src_h
        theta[:, 1, 2] = (2 * origin_y + height * step_y) / src_h - 1
        self.theta = torch.from_numpy(theta).float().to(device)

    def __iter__(self) -> Iterator[av.VideoFrame]:
        w, h = self.width, self.height
        n = self.theta.shape[0]
        with torch.inference_mode():
            for start in range(0, n, GRID_BATCH):
                stop = min(n, start + GRID_BATCH)
                theta = self.theta[start:stop]
                b = stop - start
                grid = F.affine_grid(theta, [b, 3, h, w], align_corners=False)
                frames = F.grid_sample(self.source.expand(b, -1, -1, -1), grid, mode="bilinear", padding_mode="border", align_corners=False)
                luma = frames[:, 0]
                chroma = downsample_chroma_420(frames[:, 1:])
                for j in range(b):
                    shown = self.schedule[start + j]
                    if shown >= 0:
                        ov = self.overlays[shown]
                        left, top, right, bottom = ov.box
                        region = luma[j, top:bottom, left:right]
                        region.mul_(1 - ov.y_alpha).add_(ov.y_premult)
                        creg = chroma[j, :, top // 2 : bottom // 2, left // 2 : right // 2]
                        creg.mul_(1 - ov.c_alpha).add_(ov.c_premult)
                luma8 = luma.round_().clamp_(0, 255).to(torch.uint8).cpu()
                chroma8 = chroma.round_().clamp_(0, 255).to(torch.uint8).cpu()
                for j in range(b):
                    frame = av.VideoFrame(w, h, "yuv420p")
                    y, u, v = plane_tensors(frame)
                    y.copy_(luma8[j])
                    u.copy_(chroma8[j, 0])
                    v.copy_(chroma8[j, 1])
                    yield frame
