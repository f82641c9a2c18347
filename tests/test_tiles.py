"""Spatial tiling: the planner covers the frame; tiled and untiled outputs agree."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from stvsr_cli.models.classic import Classic
from stvsr_cli.models.zsm import ZoomingSlowMo
from stvsr_cli.pipeline.tiles import TILE_OVERLAP, TiledModel, plan_tiles


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 400), st.integers(1, 400), st.integers(32, 200))
def test_tiles_cover_the_frame_with_enough_overlap(height, width, tile):
    tiles = plan_tiles(height, width, tile, multiple=4)
    covered = torch.zeros(height, width, dtype=torch.int32)
    for t in tiles:
        assert 0 <= t.y0 < t.y1 <= height and 0 <= t.x0 < t.x1 <= width
        for size, length in ((t.y1 - t.y0, height), (t.x1 - t.x0, width)):
            assert size <= tile and (size % 4 == 0 or size == length)
        covered[t.y0 : t.y1, t.x0 : t.x1] += 1
    assert covered.min() >= 1
    ys = sorted({(t.y0, t.y1) for t in tiles})
    for (_, end), (start, _) in zip(ys, ys[1:]):
        assert end - start >= TILE_OVERLAP


def test_too_small_tiles_are_refused():
    with pytest.raises(ValueError):
        plan_tiles(100, 100, 31)


class Wrapped:
    def __init__(self, module, fps_arg):
        self.module, self.fps_arg, self.device = module, fps_arg, torch.device("cpu")
        self.arbitrary_times, self.size_multiple = False, module.size_multiple
        self.calls = 0

    @torch.no_grad()
    def __call__(self, frames, fps_x):
        self.calls += 1
        out = self.module(frames[None], fps_x=fps_x) if self.fps_arg else self.module(frames[None])
        return out[0]


def psnr(a, b):
    return 10 * math.log10(1 / torch.mean((a.clamp(0, 1) - b.clamp(0, 1)) ** 2).item())


class NearestBlend(torch.nn.Module):
    """Each output pixel from its own LR pixel only: nearest x``scale``, linear blending in time."""

    size_multiple = 1

    def __init__(self, scale):
        super().__init__()
        self.scale = scale

    def forward(self, frames, fps_x):
        up = frames.repeat_interleave(self.scale, -2).repeat_interleave(self.scale, -1)
        s = (torch.arange(fps_x, dtype=up.dtype) / fps_x).view(1, 1, -1, 1, 1, 1)
        between = up[:, :-1, None] + s * (up[:, 1:, None] - up[:, :-1, None])
        return torch.cat([between.flatten(1, 2), up[:, -1:]], 1)


def test_tiling_a_model_that_looks_at_one_pixel_changes_nothing():
    """Every tile is exact everywhere, so any blend with weights that sum to one is exact."""
    torch.manual_seed(0)
    frames = torch.rand(3, 3, 70, 90)
    model = Wrapped(NearestBlend(2), True)
    whole = model(frames, 2)
    tiled = TiledModel(model, tile=40, scale=2)(frames, 2)
    assert tiled.shape == whole.shape == (5, 3, 140, 180)
    torch.testing.assert_close(tiled, whole, rtol=0, atol=1e-6)


def seam_bound(tiles, height, width, scale, reach, overlap=TILE_OVERLAP):
    """The most tiling can change each output pixel of a model that reads ``reach`` output pixels
    around it, with values in [0, 1]: a tile is wrong only within ``reach`` of an edge it shares with
    a neighbour, where its weight ramps down to (d + 0.5) / (overlap * scale) at distance d, while the
    neighbour, at least overlap * scale - reach deep, weighs at least (overlap * scale - reach) / (...)."""
    bound = torch.zeros(height * scale, width * scale, dtype=torch.float64)
    ys = torch.arange(height * scale).view(-1, 1)
    xs = torch.arange(width * scale).view(1, -1)
    for t in tiles:
        inside = (ys >= t.y0 * scale) & (ys < t.y1 * scale) & (xs >= t.x0 * scale) & (xs < t.x1 * scale)
        shared = [(ys - t.y0 * scale, t.y0 > 0), (t.y1 * scale - 1 - ys, t.y1 < height)]
        shared += [(xs - t.x0 * scale, t.x0 > 0), (t.x1 * scale - 1 - xs, t.x1 < width)]
        near = torch.full_like(bound, math.inf)
        for distance, is_shared in shared:
            if is_shared:
                near = torch.minimum(near, distance.expand_as(bound).double())
        wrong = inside & (near < reach)
        bound[wrong] += (near[wrong] + 0.5) / (overlap * scale - reach)
    return bound


def test_tiled_classic_is_exact_away_from_the_seams_and_the_ramps_hide_them():
    """Bicubic reads 2 LR pixels around each output pixel: tiled and untiled outputs are equal except
    within 2 LR pixels of an edge between tiles, and there the ramps keep the difference small."""
    torch.manual_seed(0)
    frames = torch.rand(3, 3, 70, 90)
    model = Wrapped(Classic(scale=2), True)
    whole = model(frames, 2)
    tiled = TiledModel(model, tile=40, scale=2)(frames, 2)
    assert model.calls == 1 + 3 * 4  # the whole frame once, then 3 x 4 tiles
    assert tiled.shape == whole.shape
    bound = seam_bound(plan_tiles(70, 90, 40), 70, 90, scale=2, reach=2 * 2)
    assert (bound == 0).float().mean() > 0.7  # most of the frame is away from the seams
    difference = (tiled - whole).abs().amax(dim=(0, 1)).double()
    assert (difference <= bound + 1e-6).all(), (difference - bound).max()


def zsm_with_large_offsets():
    """A seeded, untrained network whose deformable offsets are large and random (the default init
    sets them to zero) and whose features are strong enough to carry them: a hard case for tiling,
    the same with or without the official test vector beside the repository."""
    torch.manual_seed(0)
    net = ZoomingSlowMo(nf=16, groups=8, front_rbs=1, back_rbs=2).eval()
    with torch.no_grad():
        for name, param in net.named_parameters():
            if "conv_offset_mask" in name:
                param.normal_(0, 0.15 if name.endswith("weight") else 0.05)
            elif name.endswith("weight"):
                param.normal_(0, 0.08)
    return net


def test_tiled_zsm_is_a_blend_of_its_tiles_and_no_further_from_untiled():
    """A receptive field wider than the overlap: tiles cannot agree with the untiled output, but each
    tiled pixel lies between the outputs of the tiles that cover it (one tile alone: that tile's), so
    it is never further from the untiled output than the worst of those tiles."""
    net = zsm_with_large_offsets()
    frames = torch.rand(1, 3, 1, 1).expand(2, 3, 56, 72).clone()
    frames += 0.1 * torch.rand(2, 3, 56, 72)  # a smooth field with some texture
    model = Wrapped(net, False)
    whole = model(frames, 2)
    tiled = TiledModel(model, tile=40, scale=4)(frames, 2)
    tiles = plan_tiles(56, 72, 40, multiple=net.size_multiple)
    assert len(tiles) == 2 * 3
    low = torch.full_like(whole, math.inf)
    high, worst = torch.full_like(whole, -math.inf), torch.zeros_like(whole)
    count = torch.zeros(whole.shape[-2:])
    for t in tiles:
        box = (..., slice(4 * t.y0, 4 * t.y1), slice(4 * t.x0, 4 * t.x1))
        part = model(frames[:, :, t.y0 : t.y1, t.x0 : t.x1], 2)
        low[box], high[box] = torch.minimum(low[box], part), torch.maximum(high[box], part)
        worst[box] = torch.maximum(worst[box], (part - whole[box]).abs())
        count[box[1:]] += 1
    assert ((tiled >= low - 1e-5) & (tiled <= high + 1e-5)).all()
    alone = count == 1
    torch.testing.assert_close(tiled[..., alone], low[..., alone], rtol=0, atol=1e-5)
    assert ((tiled - whole).abs() <= worst + 1e-5).all()
    assert (tiled - whole).abs().max() > 1e-3  # the case is hard: the tiles do disagree with the whole
