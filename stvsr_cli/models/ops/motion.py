"""The motion toolkit every flow-based architecture uses: one backward ``warp`` with one sampling
convention, one coarse-to-fine ``FlowNet``, and the resize that keeps a flow in pixels.

Convention: a flow is ``[N, 2, H, W]`` in pixels (channel 0 is x, 1 is y); ``warp(x, f)`` samples
``x`` at ``p + f(p)`` with pixel ``i`` at grid position ``-1 + 2 i / (size - 1)`` (``align_corners``),
so a zero flow returns ``x`` exactly. Positions are computed and sampled in float32: bf16/fp16
coordinates are off by whole pixels on frames a few hundred pixels wide.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def warp(x: torch.Tensor, flow: torch.Tensor, padding: str = "border") -> torch.Tensor:
    """Backward warp: ``x`` ``[N, C, H, W]`` sampled at ``p + flow(p)``; outside the frame ``padding``
    (``"border"`` repeats the edge, ``"zeros"`` gives zero)."""
    _, _, h, w = x.shape
    ys, xs = torch.meshgrid(
        torch.arange(h, device=x.device, dtype=torch.float32),
        torch.arange(w, device=x.device, dtype=torch.float32),
        indexing="ij",
    )
    flow = flow.float()
    gx = (xs + flow[:, 0]) * (2 / max(w - 1, 1)) - 1
    gy = (ys + flow[:, 1]) * (2 / max(h - 1, 1)) - 1
    grid = torch.stack([gx, gy], -1)
    out = F.grid_sample(x.float(), grid, mode="bilinear", padding_mode=padding, align_corners=True)
    return out.to(x.dtype)


def resize(x: torch.Tensor, size: tuple[int, int] | torch.Size) -> torch.Tensor:
    """Bilinear resize of feature maps (a no-op at the same size)."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


def resize_flow(flow: torch.Tensor, size: tuple[int, int] | torch.Size) -> torch.Tensor:
    """Bilinear resize of a pixel flow, its vectors rescaled to the new pixel size."""
    h, w = flow.shape[-2:]
    if (h, w) == tuple(size):
        return flow
    out = resize(flow, size)
    return torch.cat([out[:, :1] * (size[1] / w), out[:, 1:] * (size[0] / h)], 1)


def upsample_flow(flow: torch.Tensor, size: tuple[int, int] | torch.Size) -> torch.Tensor:
    """A flow on an ``avg_pool2d(x, 2, ceil_mode=True)`` level, brought to the ``size`` it was pooled from.

    Coarse pixel j averages fine pixels 2j and 2j+1, so the coarse grid is the fine one at twice the
    spacing, overhanging an odd size by half a coarse pixel: vectors scale by exactly 2 and positions
    map on that grid, i.e. ``resize_flow`` to twice the coarse size, cropped. Resizing to ``size``
    itself would stretch the grid on odd sizes (by ``size / coarse``, not 2), misplacing the flow by up
    to a pixel, and scaling its vectors so would shrink a translation that moved exactly 2x."""
    h, w = flow.shape[-2:]
    return resize_flow(flow, (2 * h, 2 * w))[..., : size[0], : size[1]]


class FlowNet(nn.Module):
    """Coarse-to-fine flow ``f = flow(a, b)`` with ``warp(b, f) ~ a`` (SpyNet-like): at each level of
    an average-pooled pyramid, a 4-conv block refines the upsampled coarser flow from
    ``cat(a, warp(b, flow), flow)``. The last conv of each block starts at zero (an untrained flow
    is zero: the network begins as plain blending of its neighbours), or, with ``zero_start=False``,
    at a tenth of its default initialisation (small flows, but every layer learns from the first step,
    which a loss on the flow itself needs)."""

    def __init__(self, nf: int = 32, levels: int = 3, *, zero_start: bool = True) -> None:
        super().__init__()
        self.levels = levels
        self.basic = nn.ModuleList(
            nn.Sequential(
                nn.Conv2d(8, nf, 5, 1, 2),
                nn.LeakyReLU(0.1),
                nn.Conv2d(nf, nf, 5, 1, 2),
                nn.LeakyReLU(0.1),
                nn.Conv2d(nf, nf // 2, 5, 1, 2),
                nn.LeakyReLU(0.1),
                nn.Conv2d(nf // 2, 2, 5, 1, 2),
            )
            for _ in range(levels)
        )
        with torch.no_grad():
            for block in self.basic:
                block[-1].weight.mul_(0.0 if zero_start else 0.1)
                block[-1].bias.mul_(0.0 if zero_start else 0.1)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        pyramid = [(a, b)]
        for _ in range(self.levels - 1):
            a, b = (F.avg_pool2d(x, 2, ceil_mode=True) for x in (a, b))
            pyramid.append((a, b))
        flow = None
        for level in reversed(range(self.levels)):
            a, b = pyramid[level]
            flow = a.new_zeros(a.shape[0], 2, *a.shape[-2:]) if flow is None else upsample_flow(flow, a.shape[-2:])
            flow = flow + self.basic[level](torch.cat([a, warp(b, flow), flow], 1))
        return flow
