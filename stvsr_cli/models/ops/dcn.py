"""Modulated deformable convolution (DCNv2 semantics) without compiled extensions.

Semantics, shared by both implementations here: for output pixel (y, x), tap t = 3*row + col of
deformable group g reads the input at (y - pad + row*dil + dy, x - pad + col*dil + dx), bilinearly
from the floor-based corners, with corners outside the image contributing zero; the sample is
multiplied by the tap's mask, then contracted with the dense weight. Offsets are laid out as
``offset[:, 18*g + 2*t] = dy`` and ``offset[:, 18*g + 2*t + 1] = dx`` (for 3x3 kernels), masks as
``mask[:, 9*g + t]``: the layout of ``torchvision.ops.deform_conv2d``.

``deform_conv2d_torch`` is pure PyTorch (``grid_sample`` + one matrix product): any device, float32
or float16 (sampling positions are always computed in float32). ``torchvision_deform_conv2d`` is
torchvision's kernel: CUDA models use it; on the CPU ours is faster (benchmarks/dcn_speed.py,
2 cores: torchvision's CPU kernel ran at 0.26-0.41x our speed at zsm's shapes), so CPU models keep
ours, which also serves devices torchvision has no kernel for and is the reference the tests hold
torchvision to. ``dcn_triton`` has a third, a fused Triton kernel for CUDA in half precision.
``pick_deform_conv`` chooses once per model (``--deform-conv``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

DeformConv = Callable[..., torch.Tensor]


def deform_shapes(
    x: torch.Tensor, offset: torch.Tensor, weight: torch.Tensor, padding: int, dilation: int
) -> tuple[int, ...]:
    """``(b, c, h, w, out_channels, kh, kw, groups, out_h, out_w)`` of a call, checked: dense
    weights only, channels that split into the offsets' deformable groups."""
    b, c, h, w = x.shape
    out_channels, c_per_group_w, kh, kw = weight.shape
    if c_per_group_w != c:
        raise ValueError("grouped weights are not supported")
    groups = offset.shape[1] // (2 * kh * kw)
    if groups < 1 or c % groups:
        raise ValueError(f"{c} channels do not split into {groups} deformable groups")
    out_h = h + 2 * padding - dilation * (kh - 1)
    out_w = w + 2 * padding - dilation * (kw - 1)
    return b, c, h, w, out_channels, kh, kw, groups, out_h, out_w


def deform_conv2d_torch(
    x: torch.Tensor,
    offset: torch.Tensor,
    mask: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    padding: int = 1,
    dilation: int = 1,
) -> torch.Tensor:
    """Stride-1 modulated deformable convolution; output has the input's spatial size when
    ``padding == dilation * (k - 1) // 2``."""
    b, c, h, w, out_channels, kh, kw, groups, out_h, out_w = deform_shapes(x, offset, weight, padding, dilation)
    taps = kh * kw

    # Sampling positions in input pixels, float32 whatever the data type: [B, G, taps, Ho, Wo].
    offset = offset.float().view(b, groups, taps, 2, out_h, out_w)
    ys = torch.arange(out_h, device=x.device, dtype=torch.float32).view(1, 1, 1, out_h, 1) - padding
    xs = torch.arange(out_w, device=x.device, dtype=torch.float32).view(1, 1, 1, 1, out_w) - padding
    rows = (torch.arange(kh, device=x.device, dtype=torch.float32) * dilation).repeat_interleave(kw)
    cols = (torch.arange(kw, device=x.device, dtype=torch.float32) * dilation).repeat(kh)
    pos_y = ys + rows.view(1, 1, taps, 1, 1) + offset[:, :, :, 0]
    pos_x = xs + cols.view(1, 1, taps, 1, 1) + offset[:, :, :, 1]
    # grid_sample's align_corners=False convention: pixel i sits at (2i + 1) / size - 1. Zero
    # padding gives exactly DCNv2's rule that corners outside the image contribute nothing.
    grid = torch.stack([(2 * pos_x + 1) / w - 1, (2 * pos_y + 1) / h - 1], dim=-1)
    grid = grid.view(b * groups, taps * out_h, out_w, 2)
    per_group = x.float().reshape(b * groups, c // groups, h, w)
    sampled = F.grid_sample(per_group, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    sampled = sampled.view(b, groups, c // groups, taps, out_h, out_w)
    sampled = sampled * mask.float().view(b, groups, 1, taps, out_h, out_w)
    # Columns ordered (channel, tap), matching weight.view(out, c * taps).
    columns = sampled.reshape(b, c * taps, out_h * out_w).to(weight.dtype)
    out = torch.matmul(weight.reshape(out_channels, c * taps), columns)
    out = out.view(b, out_channels, out_h, out_w)
    if bias is not None:
        out = out + bias.view(1, -1, 1, 1)
    return out.to(x.dtype)


def torchvision_deform_conv2d(
    x: torch.Tensor,
    offset: torch.Tensor,
    mask: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    padding: int = 1,
    dilation: int = 1,
) -> torch.Tensor:
    from torchvision.ops import deform_conv2d

    return deform_conv2d(x, offset, weight, bias, padding=padding, dilation=dilation, mask=mask)


def torchvision_available() -> bool:
    """True when torchvision imports and its compiled ops load (its PyPI wheels do not beside CPU torch)."""
    try:
        import torchvision.ops  # noqa: F401
    except Exception:  # ImportError, or RuntimeError "operator torchvision::nms does not exist"
        return False
    return True


def pick_deform_conv(device: torch.device, choice: str = "auto") -> DeformConv:
    """The implementation for a model on ``device``: ``choice`` where it can run, refused in one
    line where not; ``auto`` is torchvision's kernel on CUDA where it imports, ours elsewhere (the
    faster one on the CPU, measured). ``triton``: the fused half-precision kernel (``dcn_triton``;
    CUDA, or Triton's interpreter where TRITON_INTERPRET=1)."""
    from stvsr_cli.errors import UnsupportedOptionError

    if choice == "torch":
        return deform_conv2d_torch
    if choice == "torchvision":
        if not torchvision_available():
            raise UnsupportedOptionError("--deform-conv torchvision: torchvision's ops do not load here")
        return torchvision_deform_conv2d
    if choice == "triton":
        from stvsr_cli.models.ops.dcn_triton import triton_available, triton_deform_conv2d

        if not triton_available(device):
            raise UnsupportedOptionError(
                "--deform-conv triton needs Triton and a CUDA device", "use --deform-conv auto"
            )
        return triton_deform_conv2d
    if choice != "auto":
        raise ValueError(f"unknown deformable convolution '{choice}'")
    if device.type == "cuda" and torchvision_available():
        return torchvision_deform_conv2d
    return deform_conv2d_torch


def use_deform_conv(model: torch.nn.Module, impl: DeformConv) -> None:
    """Make every deformable layer of ``model`` (modules with a ``deform_conv`` slot) use ``impl``."""
    for module in model.modules():
        if hasattr(type(module), "deform_conv"):
            module.deform_conv = impl
