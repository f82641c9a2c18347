"""Both deformable convolutions (our pure-PyTorch path and torchvision's kernel) against a naive
per-tap reference, and against each other inside every model that has deformable layers."""

import pytest
import torch

from stvsr_cli.models.ops.dcn import (
    deform_conv2d_torch,
    pick_deform_conv,
    torchvision_deform_conv2d,
    use_deform_conv,
)

IMPLEMENTATIONS = {"pure": deform_conv2d_torch, "torchvision": torchvision_deform_conv2d}


def naive_deform_conv(x, offset, mask, weight, bias, padding=1, dilation=1):
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
            py = ys - padding + row * dilation + offset[:, 18 * g + 2 * t]
            px = xs - padding + col * dilation + offset[:, 18 * g + 2 * t + 1]
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


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
@pytest.mark.parametrize("dilation", [1, 2])
@pytest.mark.parametrize("seed,groups,size", [(0, 8, (7, 9)), (1, 1, (5, 5)), (2, 4, (1, 6)), (3, 8, (12, 3))])
def test_each_implementation_matches_the_naive_reference(impl, dilation, seed, groups, size):
    """Offsets reaching outside the image (zero padding), masks, groups, dilation; float32."""
    case = random_case(seed, groups=groups, h=size[0], w=size[1])
    got = IMPLEMENTATIONS[impl](*case, padding=dilation, dilation=dilation)
    want = naive_deform_conv(*case, padding=dilation, dilation=dilation)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), want, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("impl", IMPLEMENTATIONS)
def test_integer_offsets_shift_exactly_and_zero_offsets_are_a_plain_convolution(impl):
    deform = IMPLEMENTATIONS[impl]
    x, _, _, weight, bias = random_case(4, groups=8)
    zeros = torch.zeros(2, 144, 7, 9)
    ones = torch.ones(2, 72, 7, 9)
    plain = torch.nn.functional.conv2d(x, weight, bias, padding=1)
    torch.testing.assert_close(deform(x, zeros, ones, weight, bias), plain, atol=1e-4, rtol=1e-4)
    # Offset (dy, dx) = (1, 0) on every tap reads one row lower: rows y .. y+2 instead of y-1 .. y+1.
    down = torch.zeros(2, 8, 9, 2, 7, 9)
    down[:, :, :, 0] = 1.0
    want = torch.nn.functional.conv2d(torch.nn.functional.pad(x, (1, 1, 0, 2)), weight, bias)
    torch.testing.assert_close(deform(x, down.reshape(2, 144, 7, 9), ones, weight, bias), want, atol=1e-4, rtol=1e-4)
    far = torch.full((2, 144, 7, 9), 50.0)  # every sample lands outside the image: only the bias is left
    out = deform(x, far, ones, weight, bias)
    torch.testing.assert_close(out, bias.view(1, -1, 1, 1).expand_as(out), atol=1e-5, rtol=0)


def test_float16_runs_and_stays_close():
    case = random_case(5)
    half = deform_conv2d_torch(*(t.half() for t in case))
    assert half.dtype == torch.float16
    full = deform_conv2d_torch(*case)
    assert (half.float() - full).abs().max() < 0.05 * full.abs().max()


def test_cpu_models_get_the_pure_path():
    """On the CPU our path is the faster one (benchmarks/dcn_speed.py: torchvision's CPU kernel ran at
    0.26-0.41x its speed at zsm's shapes, 2 threads), so CPU models keep it; CUDA models get torchvision's."""
    from stvsr_cli.models.zsm import ZoomingSlowMo

    assert pick_deform_conv(torch.device("cpu")) is deform_conv2d_torch
    model = ZoomingSlowMo(nf=16, groups=8, front_rbs=1, back_rbs=1)
    marker = lambda *a, **k: None  # noqa: E731
    use_deform_conv(model, marker)
    layers = [m for m in model.modules() if hasattr(type(m), "deform_conv")]
    assert len(layers) == 18 and all(m.deform_conv is marker for m in layers)  # 3 PCDs x 2 branches x 3 levels


def _tiny_models():
    from stvsr_cli.models.davsr import DAVSR
    from stvsr_cli.models.stinet import STINet
    from stvsr_cli.models.zsm import ZoomingSlowMo

    torch.manual_seed(0)
    return {
        "zsm": (ZoomingSlowMo(nf=16, groups=8, front_rbs=1, back_rbs=1), {}),
        "stinet": (
            STINet(nf=16, sr_blocks=1, pnet_blocks=1, lr_modules=1, groups=4, gcn_layers=1, flow_nf=8, flow_levels=2),
            {"fps_x": 2},
        ),
        "davsr": (DAVSR(nf=16, blocks=1, flow_nf=8, deform_groups=4), {}),
    }


LAYER_TOLERANCE = 1e-4  # max |difference| over max |output| of a deformable layer, float32 (measured < 1e-6)
MODEL_TOLERANCE = 1e-4  # max |difference| of model outputs in [0, 1], float32 (measured < 1e-6)


def pixel_sized(offset: torch.Tensor) -> torch.Tensor:
    """The model's own offsets, scaled to a spread of 2 pixels: random weights predict near-zero
    offsets (where any implementation agrees); trained ones move samples by pixels."""
    return offset * (2.0 / max(offset.std().item(), 1e-6))


@pytest.mark.parametrize("name", ["zsm", "stinet", "davsr"])
def test_models_give_the_same_output_through_both_implementations(name):
    """Every deformable layer of a small model, on the activations and offsets the model itself
    makes (scaled to pixels), computed by both implementations; then the whole model through each."""
    model, kwargs = _tiny_models()[name]
    model.eval()
    layers = [m for m in model.modules() if hasattr(type(m), "deform_conv")]
    assert layers
    differences: list[float] = []  # max |difference| over max |output|, per layer call

    def both(x, offset, mask, weight, bias=None, **kw):
        assert offset.std() > 0
        offset = pixel_sized(offset)
        pure = deform_conv2d_torch(x, offset, mask, weight, bias, **kw)
        theirs = torchvision_deform_conv2d(x, offset, mask, weight, bias, **kw)
        differences.append((pure - theirs).abs().max().item() / max(pure.abs().max().item(), 1e-3))
        return pure

    def scaled(impl):
        return lambda x, offset, *args, **kw: impl(x, pixel_sized(offset), *args, **kw)

    frames = torch.rand(1, 3, 3, 16, 20, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        for module in model.modules():  # offset heads that start at zero (DCNv2's init) get weights
            if isinstance(module, torch.nn.Conv2d) and not module.weight.abs().sum():
                torch.nn.init.normal_(module.weight, std=0.05)
        use_deform_conv(model, both)
        model(frames, **kwargs)
        outputs = {}
        for impl, fn in IMPLEMENTATIONS.items():
            use_deform_conv(model, scaled(fn))
            outputs[impl] = model(frames, **kwargs)
    assert len(differences) >= len(layers)  # every layer ran
    assert max(differences) < LAYER_TOLERANCE
    assert (outputs["pure"] - outputs["torchvision"]).abs().max().item() < MODEL_TOLERANCE
