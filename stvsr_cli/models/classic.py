"""``classic``: bicubic upscaling in space, linear blending in time. No weights.

The baseline every learned model must beat, and the fallback that always works.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from stvsr_cli.models.base import VideoSRNet


def blend(frames: torch.Tensor, k: int) -> torch.Tensor:
    """Linear blending in time: ``[B, N, ...]`` -> ``[B, k(N-1)+1, ...]``; output ``k*i`` is frame i,
    output ``k*i + s`` is ``(1 - s/k) * frame(i) + (s/k) * frame(i+1)``."""
    if frames.shape[1] == 1 or k == 1:
        return frames
    weights = (torch.arange(k, dtype=frames.dtype, device=frames.device) / k).view(1, 1, k, *[1] * (frames.dim() - 2))
    between = torch.lerp(frames[:, :-1].unsqueeze(2), frames[:, 1:].unsqueeze(2), weights)  # [B, N-1, k, ...]
    return torch.cat([between.flatten(1, 2), frames[:, -1:]], dim=1)


class Classic(VideoSRNet):
    """Bicubic x``scale`` per frame (half-pixel centres, clamped to [0, 1]), then linear blending.

    Input ``[B, N, 3, H, W]`` in [0, 1]; output ``[B, k(N-1)+1, 3, sH, sW]``: output ``k*i`` is input
    frame i upscaled, output ``k*i + s`` is ``(1 - s/k) * up(i) + (s/k) * up(i+1)``. Any scale, any
    time factor or times (``registry.ARCHITECTURES["classic"]``).
    """

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
        return blend(up.reshape(b, n, c, h * self.scale, w * self.scale), fps_x)

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
