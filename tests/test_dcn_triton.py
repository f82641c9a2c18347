"""The Triton deformable convolution against the pure-PyTorch reference (``deform_conv2d_torch``).

Without CUDA the kernel runs in Triton's interpreter on the CPU. The interpreter is switched on by a
module fixture rather than at import: Triton reads ``TRITON_INTERPRET`` when a kernel is decorated
(``dcn_triton`` decorates on first call), and pytest imports every test module before running any,
so setting it at import would put the whole session's Triton kernels (``torch.compile`` on CUDA in
test_cuda.py) under the interpreter. With CUDA the compiled kernel is tested instead.
"""

import pytest
import torch
import torch.nn.functional as F

triton = pytest.importorskip("triton", reason="Triton is not installed")
pytestmark = pytest.mark.cuda  # the campaign runs it compiled on a GPU; here, under the interpreter

from stvsr_cli.models.ops import dcn_triton
from stvsr_cli.models.ops.dcn import deform_conv2d_torch, use_deform_conv
from stvsr_cli.models.ops.dcn_triton import triton_available, triton_deform_conv2d
from stvsr_cli.models.zsm import DCNPack


@pytest.fixture(scope="module", autouse=True)
def device():
    """CUDA where there is one; otherwise the CPU under Triton's interpreter, for this module only."""
    if torch.cuda.is_available():
        yield torch.device("cuda")
        return
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TRITON_INTERPRET", "1")
        knobs = getattr(triton, "knobs", None)
        if knobs is not None and not knobs.runtime.interpret:
            pytest.skip("triton.knobs.runtime.interpret was set off in this process; the interpreter cannot run")
        from triton.runtime.interpreter import InterpretedFunction

        if not isinstance(dcn_triton._kernel(True), InterpretedFunction):
            pytest.skip("Triton decorated the kernel for a GPU although TRITON_INTERPRET=1 (Triton read it earlier)")
        yield torch.device("cpu")


def random_case(seed, *, b=1, c=16, o=20, h=6, w=7, groups=1, k=(3, 3), padding=1, dilation=1, device="cpu"):
    """Offsets with std 2: many samples fall between pixels and many outside the image."""
    gen = torch.Generator().manual_seed(seed)
    kh, kw = k
    out_h, out_w = h + 2 * padding - dilation * (kh - 1), w + 2 * padding - dilation * (kw - 1)
    taps = kh * kw
    x = torch.randn(b, c, h, w, generator=gen)
    offset = torch.randn(b, 2 * groups * taps, out_h, out_w, generator=gen) * 2
    mask = torch.sigmoid(torch.randn(b, groups * taps, out_h, out_w, generator=gen))
    weight = torch.randn(o, c, kh, kw, generator=gen) / (c * taps) ** 0.5
    bias = torch.randn(o, generator=gen)
    return tuple(t.to(device) for t in (x, offset, mask, weight, bias))


CASES = {
    # 24 channels in one group: two chunks of 16, the second half empty; O=20 spans two 16-wide tiles.
    "c24-g1": {"b": 1, "c": 24, "h": 5, "w": 7, "groups": 1},
    "c24-g1-no-bias": {"b": 1, "c": 24, "h": 5, "w": 7, "groups": 1, "bias": False},
    # 12 channels a group in a 16-wide chunk; two images in one pixel tile.
    "c24-g2-dil2": {"b": 2, "c": 24, "h": 6, "w": 9, "groups": 2, "dilation": 2, "padding": 2},
    # zsm's 8 channels a group: two groups share a chunk; 3 groups leave the last chunk half full.
    "c24-g3": {"b": 1, "c": 24, "h": 7, "w": 5, "groups": 3},
    "c24-g3-no-bias": {"b": 1, "c": 24, "h": 7, "w": 5, "groups": 3, "bias": False},
    # 4 channels a group, four groups a chunk.
    "c16-g4-dil2": {"b": 1, "c": 16, "h": 5, "w": 8, "groups": 4, "dilation": 2, "padding": 2},
    # No padding (output smaller than input), a 1x3 kernel.
    "c16-g2-pad0": {"b": 1, "c": 16, "h": 6, "w": 9, "groups": 2, "padding": 0},
    "c16-g2-k1x3": {"b": 1, "c": 16, "h": 5, "w": 6, "groups": 2, "k": (1, 3), "padding": 1},
}


@pytest.mark.parametrize("case", CASES)
def test_matches_the_reference_in_float32(device, case):
    kwargs = dict(CASES[case])  # a copy: bias is popped
    with_bias = kwargs.pop("bias", True)
    x, offset, mask, weight, bias = random_case(0, device=device, **kwargs)
    bias = bias if with_bias else None
    pad, dil = kwargs.get("padding", 1), kwargs.get("dilation", 1)
    got = triton_deform_conv2d(x, offset, mask, weight, bias, padding=pad, dilation=dil)
    want = deform_conv2d_torch(x, offset, mask, weight, bias, padding=pad, dilation=dil)
    assert got.dtype == torch.float32 and got.shape == want.shape
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("dtype,tolerance", [(torch.float16, 1e-2), (torch.bfloat16, 3e-2)], ids=["fp16", "bf16"])
def test_half_precision_within_its_rounding(device, dtype, tolerance):
    """Against float32 on the same (rounded) inputs: only the products' operands and the output are rounded."""
    case = random_case(1, b=2, c=32, o=16, h=6, w=7, groups=4, device=device)
    x, offset, mask, weight, bias = (t.to(dtype) for t in case)
    got = triton_deform_conv2d(x, offset, mask, weight, bias)
    want = deform_conv2d_torch(*(t.float() for t in (x, offset, mask, weight, bias)))
    assert got.dtype == dtype
    assert (got.float() - want).abs().max() < tolerance * want.abs().max()


@pytest.mark.parametrize("layout", ["channels_last", "channel-slice"])
def test_strided_input_gives_the_contiguous_result(device, layout):
    x, offset, mask, weight, bias = random_case(2, b=2, c=16, h=5, w=6, groups=2, device=device)
    want = triton_deform_conv2d(x, offset, mask, weight, bias)
    if layout == "channels_last":
        strided = x.contiguous(memory_format=torch.channels_last)
    else:
        strided = torch.cat([x, torch.randn_like(x)], dim=1)[:, :16]  # every stride but the channel one too big
    assert not strided.is_contiguous()
    got = triton_deform_conv2d(strided, offset, mask, weight, bias)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    assert got.is_contiguous(memory_format=torch.channels_last) == (layout == "channels_last")


def test_zero_offsets_and_unit_mask_are_a_plain_convolution(device):
    x, offset, mask, weight, bias = random_case(3, c=24, h=6, w=7, groups=3, dilation=2, padding=2, device=device)
    got = triton_deform_conv2d(x, torch.zeros_like(offset), torch.ones_like(mask), weight, bias, padding=2, dilation=2)
    torch.testing.assert_close(got, F.conv2d(x, weight, bias, padding=2, dilation=2), atol=1e-4, rtol=1e-4)


def test_integer_offsets_read_whole_pixels_per_tap_and_group(device):
    """Each (group, tap) its own whole-pixel shift and mask: a convolution of shifted inputs, which
    catches a swapped dy/dx, a tap order other than 3*row + col, or a mask read from the wrong tap."""
    b, c, o, h, w, groups, pad = 1, 16, 20, 6, 7, 2, 1
    x, _, _, weight, bias = random_case(4, b=b, c=c, o=o, h=h, w=w, groups=groups, device=device)
    gen = torch.Generator().manual_seed(5)
    shifts = torch.randint(-3, 4, (groups, 9, 2), generator=gen)  # (dy, dx) per group and tap
    scales = torch.rand(groups, 9, generator=gen) + 0.5
    offset = shifts.float().reshape(1, 18 * groups, 1, 1).expand(b, -1, h, w).contiguous().to(device)
    mask = scales.reshape(1, 9 * groups, 1, 1).expand(b, -1, h, w).contiguous().to(device)

    big = 8  # zero border wide enough for every shift
    padded = F.pad(x, (big, big, big, big))
    want = bias.view(1, -1, 1, 1).expand(b, o, h, w).clone()
    cg = c // groups
    for g in range(groups):
        for t in range(9):
            row, col = divmod(t, 3)
            dy, dx = shifts[g, t].tolist()
            top, left = big - pad + row + dy, big - pad + col + dx
            window = padded[:, g * cg : (g + 1) * cg, top : top + h, left : left + w]
            want += scales[g, t].item() * torch.einsum(
                "oc,bchw->bohw", weight[:, g * cg : (g + 1) * cg, row, col], window
            )
    got = triton_deform_conv2d(x, offset, mask, weight, bias)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


def test_plugs_into_a_deformable_layer(device):
    """zsm's DCNPack gives the same output with the Triton kernel in its ``deform_conv`` slot."""
    torch.manual_seed(6)
    layer = DCNPack(nf=16, groups=2).to(device).eval()
    torch.nn.init.normal_(layer.conv_offset_mask.weight, std=0.3)  # offsets well away from zero
    x = torch.randn(1, 16, 6, 7, device=device)
    guide = torch.randn(1, 16, 6, 7, device=device)
    with torch.no_grad():
        want = layer(x, guide)
        use_deform_conv(layer, triton_deform_conv2d)
        got = layer(x, guide)
    assert layer.deform_conv is triton_deform_conv2d
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


def test_availability(device, monkeypatch):
    assert triton_available(device)
    if device.type == "cpu":
        monkeypatch.delenv("TRITON_INTERPRET")
        assert not triton_available(torch.device("cpu"))
        assert not triton_available("not a device")  # never raises


def test_refuses_what_it_does_not_compute(device):
    x, offset, mask, weight, _ = random_case(7, c=16, groups=2, device=device)
    with pytest.raises(ValueError, match="deformable groups"):
        triton_deform_conv2d(x[:, :15], offset, mask, weight[:, :15])
    with pytest.raises(ValueError, match="grouped weights"):
        triton_deform_conv2d(x, offset, mask, weight[:, :8])
    with pytest.raises(TypeError, match="float64"):
        triton_deform_conv2d(x.double(), offset, mask, weight)


def test_the_rearranged_weight_is_reused_until_the_weight_changes():
    layer = torch.nn.Conv2d(8, 4, 3)
    with torch.inference_mode():
        first = dcn_triton._gemm_weight(layer.weight, torch.float16)
        assert dcn_triton._gemm_weight(layer.weight, torch.float16) is first
        assert first.shape == (9 * 8, 4) and first.dtype == torch.float16
    with torch.no_grad():
        layer.weight.add_(1.0)  # an in-place change: a new version
    with torch.inference_mode():
        changed = dcn_triton._gemm_weight(layer.weight, torch.float16)
    assert changed is not first and torch.allclose(changed.float(), first.float() + 1, atol=1e-2)
    key = id(layer.weight)
    del layer
    assert key not in dcn_triton._GEMM_WEIGHTS  # forgotten with the weight
