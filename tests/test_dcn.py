"""The pure-PyTorch deformable convolution against a naive per-tap reference."""

import pytest
import torch

from stvsr_cli.models.ops.dcn import deform_conv2d_torch, pick_deform_conv, use_deform_conv


def naive_deform_conv(x, offset, mask, weight, bias, padding=1):
    """Per group and tap: bilinear from the floor corners, corners outside the image count zero."""
    x, offset, mask, weight, bias = (t.double() for t in (x, offset, mask, weight, bias))
    b, c, h, w = x.shape
    groups = offset.shape[1] // 18
    cg = c // groups
    columns = torch.zeros(b, c, 9, h, w, dtype=torch.float64)
    ys = torch.arange(h, dtype=torch.float64).view(1, h, 1)
    xs = torch.arange(w, dtype=torch.float64).view(1, 1, w)
    for g in range(groups):
        for t in range(9):
            row, col = divmod(t, 3)
            py = ys - padding + row + offset[:, 18 * g + 2 * t]
            px = xs - padding + col + offset[:, 18 * g + 2 * t + 1]
            y0, x0 = torch.floor(py), torch.floor(px)
            value = torch.zeros(b, cg, h, w, dtype=torch.float64)
            for yy, wy in ((y0, 1 - (py - y0)), (y0 + 1, py - y0)):
                for xx, wx in ((x0, 1 - (px - x0)), (x0 + 1, px - x0)):
                    inside = (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
                    index = (yy.clamp(0, h - 1) * w + xx.clamp(0, w - 1)).long().view(b, 1, h * w)
                    picked = x[:, g * cg : (g + 1) * cg].reshape(b, cg, h * w).gather(2, index.expand(b, cg, h * w))
                    value += picked.view(b, cg, h, w) * (wy * wx * inside).unsqueeze(1)
            columns[:, g * cg : (g + 1) * cg, t] = value * mask[:, 9 * g + t].unsqueeze(1)
    out = torch.einsum("ock,bckhw->bohw", weight.view(weight.shape[0], c, 9), columns)
    return out + bias.view(1, -1, 1, 1)


def random_case(seed, b=2, c=16, o=8, h=7, w=9, groups=8, spread=3.0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(b, c, h, w, generator=gen)
    offset = torch.randn(b, 18 * groups, h, w, generator=gen) * spread  # reaches well outside the image
    mask = torch.rand(b, 9 * groups, h, w, generator=gen)
    weight = torch.randn(o, c, 3, 3, generator=gen)
    bias = torch.randn(o, generator=gen)
    return x, offset, mask, weight, bias


@pytest.mark.parametrize("seed,groups,size", [(0, 8, (7, 9)), (1, 1, (5, 5)), (2, 4, (1, 6)), (3, 8, (12, 3))])
def test_pure_path_matches_the_naive_reference(seed, groups, size):
    case = random_case(seed, groups=groups, h=size[0], w=size[1])
    got = deform_conv2d_torch(*case)
    want = naive_deform_conv(*case)
    torch.testing.assert_close(got.double(), want, atol=1e-4, rtol=1e-4)


def test_integer_offsets_shift_exactly_and_zero_offsets_are_a_plain_convolution():
    x, _, _, weight, bias = random_case(4, groups=8)
    zeros = torch.zeros(2, 144, 7, 9)
    ones = torch.ones(2, 72, 7, 9)
    plain = torch.nn.functional.conv2d(x, weight, bias, padding=1)
    torch.testing.assert_close(deform_conv2d_torch(x, zeros, ones, weight, bias), plain, atol=1e-4, rtol=1e-4)
    far = torch.full((2, 144, 7, 9), 50.0)  # every sample lands outside the image: only the bias is left
    out = deform_conv2d_torch(x, far, ones, weight, bias)
    torch.testing.assert_close(out, bias.view(1, -1, 1, 1).expand_as(out), atol=1e-5, rtol=0)


def test_float16_runs_and_stays_close():
    case = random_case(5)
    half = deform_conv2d_torch(*(t.half() for t in case))
    assert half.dtype == torch.float16
    full = deform_conv2d_torch(*case)
    assert (half.float() - full).abs().max() < 0.05 * full.abs().max()


def test_cpu_models_get_the_pure_path():
    from stvsr_cli.models.zsm import ZoomingSlowMo

    assert pick_deform_conv(torch.device("cpu")) is deform_conv2d_torch
    model = ZoomingSlowMo(nf=16, groups=8, front_rbs=1, back_rbs=1)
    marker = lambda *a, **k: None  # noqa: E731
    use_deform_conv(model, marker)
    layers = [m for m in model.modules() if hasattr(type(m), "deform_conv")]
    assert len(layers) == 18 and all(m.deform_conv is marker for m in layers)  # 3 PCDs x 2 branches x 3 levels
