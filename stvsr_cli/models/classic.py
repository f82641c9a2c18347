"""``classic``: bicubic upscaling in space, linear blending in time. No weights.

The baseline every learned model must beat, and the fallback that always works.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Classic(nn.Module):
    """Bicubic x``scale`` per frame (half-pixel centres, clamped to [0, 1]), then linear blending.

    Input ``[B, N, 3, H, W]`` in [0, 1]; output ``[B, k(N-1)+1, 3, sH, sW]``: output ``k*i`` is input
    frame i upscaled, output ``k*i + s`` is ``(1 - s/k) * up(i) + (s/k) * up(i+1)``.
    """

    takes_fps_x = True  # any time factor, given to forward
    takes_times = True  # or any times between the inputs

    def __init__(self, *, scale: int = 4) -> None:
        super().__init__()
        self.scale = scale

    def forward(self, frames: torch.Tensor, fps_x: int = 2, times: list[float] | None = None) -> torch.Tensor:
        """``times`` (positions in input frames, 0 to N-1) replace the factor: one output per time."""
        if times is not None:
            return self._at(frames, times)
        b, n, c, h, w = frames.shape
        up = F.interpolate(
            frames.reshape(b * n, c, h, w), scale_factor=self.scale, mode="bicubic", align_corners=False
        ).clamp_(0, 1)
        up = up.reshape(b, n, c, h * self.scale, w * self.scale)
        if n == 1 or fps_x == 1:
            return up
        weights = torch.arange(fps_x, dtype=up.dtype, device=up.device) / fps_x  # s/k for s = 0..k-1
        weights = weights.view(1, 1, fps_x, 1, 1, 1)
        left, right = up[:, :-1].unsqueeze(2), up[:, 1:].unsqueeze(2)
        between = torch.lerp(left, right, weights)  # [B, N-1, k, C, sH, sW]
        return torch.cat([between.flatten(1, 2), up[:, -1:]], dim=1)

    def _at(self, frames: torch.Tensor, times: list[float]) -> torch.Tensor:
        b, n, c, h, w = frames.shape
        needed = sorted({min(int(t), n - 1) for t in times} | {min(int(t) + 1, n - 1) for t in times})
        up = F.interpolate(
            frames[:, needed].reshape(-1, c, h, w), scale_factor=self.scale, mode="bicubic", align_corners=False
        ).clamp_(0, 1)
        up = up.reshape(b, len(needed), c, h * self.scale, w * self.scale)
        where = {frame: i for i, frame in enumerate(needed)}
        out = []
        for t in times:
            left = min(int(t), n - 1)
            right = min(left + 1, n - 1)
            out.append(torch.lerp(up[:, where[left]], up[:, where[right]], float(t) - left))
        return torch.stack(out, dim=1)
