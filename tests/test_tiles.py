"""Spatial tiling: the planner covers the frame; every kept pixel saw its whole context, so tiled
outputs are the untiled ones."""

from itertools import pairwise

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from stvsr_cli.errors import UsageError
from stvsr_cli.pipeline.tiles import BLEND, OutOfMemoryFallback, TiledModel, min_tile, plan_tiles, tile_weights


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 400), st.integers(1, 400), st.integers(32, 200), st.integers(1, 16))
def test_tiles_cover_the_frame_with_enough_overlap(height, width, tile, overlap):
    tiles = plan_tiles(height, width, max(tile, 2 * overlap), overlap, multiple=4)
    covered = torch.zeros(height, width, dtype=torch.int32)
    for t in tiles:
        assert 0 <= t.y0 < t.y1 <= height and 0 <= t.x0 < t.x1 <= width
        for size, length in ((t.y1 - t.y0, height), (t.x1 - t.x0, width)):
            assert size <= max(tile, 2 * overlap) and (size % 4 == 0 or size == length)
        covered[t.y0 : t.y1, t.x0 : t.x1] += 1
    assert covered.min() >= 1
    ys = sorted({(t.y0, t.y1) for t in tiles})
    for (_, end), (start, _) in pairwise(ys):
        assert end - start >= overlap


def test_too_small_tiles_are_refused():
    with pytest.raises(ValueError):
        plan_tiles(100, 100, 31, 16)
    with pytest.raises(UsageError, match="too small"):
        TiledModel(Wrapped(ConvStack(reach=3)), tile=min_tile(3) - 1, scale=2, context=3)


def test_weights_are_zero_in_the_context_band_and_cross_to_one_between_neighbours():
    band, blend = 6, 4
    left = tile_weights(0, 30, 50, band, blend, torch.device("cpu"))  # a neighbour on the right only
    right = tile_weights(14, 50, 50, band, blend, torch.device("cpu"))  # overlapping by 2 * band + blend
    assert left[:20].eq(1).all() and left[24:].eq(0).all()  # its own frame edge kept, its context band not
    assert right[:band].eq(0).all() and right[band + blend :].eq(1).all()
    total = torch.zeros(50)
    total[:30] += left
    total[14:] += right
    torch.testing.assert_close(total, torch.ones(50))


class ConvStack(nn.Module):
    """``reach`` 3x3 convolutions (zero padding) then x2 nearest: an output pixel depends on exactly
    the input pixels within ``reach`` of its own; with ``stride``, a stride-2 layer and its inverse
    in the middle, so the pixel grid matters too (``size_multiple`` 2)."""

    def __init__(self, reach: int, stride: bool = False) -> None:
        super().__init__()
        torch.manual_seed(0)
        layers = [nn.Conv2d(3, 8, 3, padding=1), nn.Tanh()]
        layers += [nn.Conv2d(8, 8, 3, padding=1), nn.Tanh()] * (reach - 2 - stride)
        if stride:
            layers += [nn.Conv2d(8, 8, 2, stride=2), nn.Tanh(), nn.Upsample(scale_factor=2)]
        layers += [nn.Conv2d(8, 3, 3, padding=1), nn.Upsample(scale_factor=2)]
        self.net = nn.Sequential(*layers)
        self.size_multiple = 2 if stride else 1

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return self.net(frames)


class Wrapped:
    """A window model around ``module`` (frames one by one, so fps_x 1), counting its calls."""

    def __init__(self, module):
        self.module, self.device = module, torch.device("cpu")
        self.arbitrary_times, self.shot_edges, self.size_multiple = False, False, module.size_multiple
        self.pad_mode = "replicate"
        self.calls = 0

    @torch.no_grad()
    def __call__(self, frames, fps_x):
        self.calls += 1
        h, w = frames.shape[-2:]
        m = self.size_multiple
        padded = nn.functional.pad(frames, (0, -w % m, 0, -h % m), mode="replicate")  # as VideoSRNet.run
        return self.module(padded)[..., : 2 * h, : 2 * w]


@pytest.mark.parametrize(("reach", "stride", "size"), [(3, False, (70, 90)), (5, True, (67, 91))])
def test_a_model_whose_reach_is_its_context_tiles_exactly(reach, stride, size):
    """Every kept pixel saw all the input it depends on, on the whole frame's pixel grid: the tiled
    output is the untiled one (odd sizes too, where the frame is padded to the size rule first)."""
    model = Wrapped(ConvStack(reach, stride))
    frames = torch.rand(2, 3, *size)
    whole = model(frames, 1)
    tiled = TiledModel(model, tile=min_tile(reach, model.size_multiple), scale=2, context=reach)(frames, 1)
    assert model.calls - 1 >= 4  # the frame went through at least 4 tiles
    assert tiled.shape == whole.shape
    torch.testing.assert_close(tiled, whole, rtol=0, atol=1e-6)


def test_a_context_too_small_for_the_model_shows_at_the_seams():
    """The same model tiled as if it reached one pixel less: not exact. (The test above is not exact
    by accident.)"""
    model = Wrapped(ConvStack(5))
    frames = torch.rand(2, 3, 70, 90)
    tiled = TiledModel(model, tile=2 * (2 * 4 + BLEND), scale=2, context=4)(frames, 1)
    assert (tiled - model(frames, 1)).abs().max() > 1e-4


def test_a_model_that_pools_over_the_whole_frame_is_tiled_with_one_warning():
    model = Wrapped(ConvStack(3))
    runner = OutOfMemoryFallback(model, 2, tile=min_tile(3), context=3, exact_tiles=False)
    runner(torch.rand(2, 3, 40, 40), 1)
    runner._current = runner._tiled(min_tile(3))  # tiled again (as after running out of memory)
    assert len([note for note in runner.notes if "pools over the whole frame" in note]) == 1
    exact = OutOfMemoryFallback(model, 2, tile=min_tile(3), context=3)
    assert exact.notes == []
