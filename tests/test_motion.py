"""The shared motion toolkit: FlowNet's coarse-to-fine upsampling keeps flows in pixels on odd sizes."""

import math

import pytest
import torch
import torch.nn.functional as F

from stvsr_cli.models.ops.motion import FlowNet, warp

pytestmark = pytest.mark.usefixtures("one_thread")


class Known(torch.nn.Module):
    """A FlowNet block that answers a given flow whatever it sees (the coarsest level's estimate)."""

    def __init__(self, flow: torch.Tensor) -> None:
        super().__init__()
        self.flow = flow

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert x.shape[-2:] == self.flow.shape[-2:], "the block sits at another level than the test thinks"
        return self.flow.expand(x.shape[0], -1, -1, -1)


class Zero(torch.nn.Module):
    """A block that refines nothing: only the upsampling between levels shapes the flow."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.new_zeros(x.shape[0], 2, *x.shape[-2:])


def rigged(levels: int, coarse_flow: torch.Tensor) -> FlowNet:
    net = FlowNet(8, levels)
    net.basic = torch.nn.ModuleList([Zero() for _ in range(levels - 1)] + [Known(coarse_flow)])
    return net


def texture(ys: torch.Tensor, xs: torch.Tensor) -> torch.Tensor:
    """A smooth picture defined everywhere: ``[1, 3, H, W]`` at rows ``ys`` and columns ``xs`` (1-D),
    or at the points ``(ys, xs)`` (2-D, ``[H, W]`` each)."""
    y, x = (ys[:, None], xs[None, :]) if ys.dim() == 1 else (ys, xs)
    planes = [
        0.5 + 0.2 * torch.sin(0.45 * x + 0.2 * y) + 0.2 * torch.cos(0.3 * y - 0.1 * x),
        0.5 + 0.3 * torch.sin(0.25 * x - 0.35 * y + 1.0),
        0.5 + 0.25 * torch.cos(0.4 * x) * torch.sin(0.3 * y + 0.5),
    ]
    return torch.stack(planes)[None]


def test_a_zoom_estimated_at_the_coarse_level_comes_out_right_at_full_size_on_odd_sizes():
    """A texture zooming about (cy, cx) by k: the true flow of ``b`` back to ``a`` is
    ``(k - 1) (p - c)`` pixels. Average pooling with ceil_mode puts coarse pixel j at fine position
    2j + 0.5 (the mean of pixels 2j and 2j+1), so the true coarse flow is ``f(2j + 0.5) / 2`` coarse
    pixels; a FlowNet whose coarsest block answers exactly that and whose finer block adds nothing
    must give the true flow at full size, where the zoomed texture gives ``a`` back. On 9 x 13 frames
    (coarse 5 x 7) resizing the coarse flow to 9 x 13 instead stretches the grid by 9/5 and 13/7 where
    pooling halved it: the flow is off by up to 0.2 px."""
    h, w, k, cy, cx = 9, 13, 1.2, 4.0, 6.0
    fy, fx = torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32)

    def zoomed(ys, xs):  # b, defined everywhere: b(p + f(p)) = a(p)
        return texture(cy + (ys - cy) / k, cx + (xs - cx) / k)

    a, b = texture(fy, fx), zoomed(fy, fx)
    truth = torch.stack(torch.broadcast_tensors((k - 1) * (fx[None, :] - cx), (k - 1) * (fy[:, None] - cy)))[None]
    jy, jx = torch.arange(math.ceil(h / 2)) * 2 + 0.5, torch.arange(math.ceil(w / 2)) * 2 + 0.5
    coarse = torch.stack(torch.broadcast_tensors((k - 1) * (jx[None, :] - cx), (k - 1) * (jy[:, None] - cy)))[None] / 2
    with torch.no_grad():
        flow = rigged(2, coarse)(a, b)
    inner = (..., slice(1, None), slice(1, None))  # pixel 0 sits before coarse pixel 0's centre: held at its value
    torch.testing.assert_close(flow[inner], truth[inner], rtol=0, atol=1e-5)
    # The moving picture itself, sampled exactly (not bilinearly) where the flow points, is ``a`` again.
    back = zoomed(fy[:, None] + flow[0, 1], fx[None, :] + flow[0, 0])
    torch.testing.assert_close(back[inner], a[inner], rtol=0, atol=1e-5)


def test_a_translation_moves_exactly_twice_as_many_pixels_per_level_on_odd_sizes():
    """A texture moved 4 px right moves exactly 1 coarse pixel two ceil-mode poolings down, on any size:
    the coarse flow of 1 px must come out as 4 px at full size (not the size ratio, 21/6 and 35/9
    here), and warping the moved texture by it gives the texture back."""
    fy, fx = torch.arange(21, dtype=torch.float32), torch.arange(35, dtype=torch.float32)
    a, b = texture(fy, fx), texture(fy, fx - 4)
    pooled_a, pooled_b = (F.avg_pool2d(F.avg_pool2d(x, 2, ceil_mode=True), 2, ceil_mode=True) for x in (a, b))
    assert pooled_a.shape[-2:] == (6, 9)
    # The coarse level's truth, checked there: 1 coarse pixel to the right (interior; the last column is 3 px wide).
    torch.testing.assert_close(pooled_b[..., 1:-1], pooled_a[..., :-2], rtol=0, atol=1e-6)
    coarse = torch.zeros(1, 2, 6, 9)
    coarse[:, 0] = 1.0
    with torch.no_grad():
        flow = rigged(3, coarse)(a, b)
    expected = torch.zeros(1, 2, 21, 35)
    expected[:, 0] = 4.0
    torch.testing.assert_close(flow, expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(warp(b, flow)[..., :-4], a[..., :-4], rtol=0, atol=1e-6)
