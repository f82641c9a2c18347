"""Fused stride-1 modulated deformable convolution (DCNv2) in Triton: a half-precision path for CUDA.

Same semantics and offset/mask layout as ``ops.dcn`` (torchvision's); ``deform_conv2d_torch`` is
the reference it is tested against. It is an implicit GEMM: no im2col buffer ever reaches memory.
A program owns BLOCK_M output pixels (flattened over B*Ho*Wo) by BLOCK_N output channels; its K
loop runs over taps, then over chunks of BLOCK_K input channels. For each chunk it samples the
input bilinearly at every pixel's deformed position (positions, corner weights and blending in
float32), scales by the mask, and feeds that tile straight to ``tl.dot`` against the weight,
rearranged once per call to [(tap, channel), O] so its rows load contiguously. Accumulation is
float32; operands are the input's dtype (float16/bfloat16), or float32 at IEEE precision.

A chunk holds whole deformable groups when a group has fewer channels than BLOCK_K (zsm: 64
channels in 8 groups, 8 per group), so ``tl.dot`` is not fed half-empty tiles: positions are
computed once per (pixel, group) on a [BLOCK_M, groups-per-chunk] tile and broadcast over the
group's channels.

Triton is imported guarded: CPU-only installs may lack it. With ``TRITON_INTERPRET=1`` the kernel
runs in Triton's interpreter on CPU tensors (slow; the tests use it), with one small fixed tile
configuration instead of autotuning.
"""

from __future__ import annotations

import contextlib
import functools
import os
import weakref
from typing import Any

import torch

from stvsr_cli.models.ops.dcn import deform_shapes

try:
    import triton
    import triton.language as tl
except Exception:  # noqa: BLE001  ImportError, or a broken install: this path is then unavailable
    triton = None
    tl = None

# (BLOCK_M, BLOCK_K, num_warps, num_stages) tried on CUDA. BLOCK_N is chosen from O on the host: a
# tile narrower than O would repeat the costly sampling once per extra column tile. Compiled for
# sm_90 at zsm's shapes (float16, channels_last, 8 channels a group) these use 96-205 registers a
# thread without spilling; a 128x32 tile on 4 warps spilled, so it is not offered.
_CUDA_CONFIGS = [(32, 32, 4, 2), (64, 32, 8, 2), (64, 64, 8, 2), (128, 32, 8, 2)]
# The interpreter runs numpy per op: small tiles, no autotuning (every block dim >= 16 for tl.dot).
_INTERPRETER_CONFIG = {"BLOCK_M": 32, "BLOCK_N": 16, "BLOCK_K": 16}
# On CUDA an input whose channels are not contiguous (NCHW) is copied to channels_last first. The
# kernel takes any strides, but gathering a pixel's channels from one place lets each corner load
# be one 16-byte vector (8 float16 channels) where NCHW needs 8 scattered 2-byte loads, 36 times
# per input element; the copy reads and writes x once. benchmarks/dcn_speed.py times both.
_GATHER_CHANNELS_LAST = True


def _interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"


def triton_available(device: torch.device) -> bool:
    """True when Triton imports and can run on ``device``: CUDA (compute capability 7.0 or later),
    or any device under Triton's interpreter (``TRITON_INTERPRET=1``). Never raises."""
    try:
        if triton is None:
            return False
        if _interpreting():
            return True
        device = torch.device(device)
        if device.type != "cuda" or not torch.cuda.is_available():
            return False
        return torch.cuda.get_device_capability(device) >= (7, 0)
    except Exception:  # noqa: BLE001  a bad device string, a CUDA that fails to initialise: not available
        return False


def _dcn_kernel(
    x_ptr, off_ptr, mask_ptr, w_ptr, bias_ptr, out_ptr,
    B, C, H, W, O, HO, WO, G, HW_OUT, M_BUCKET,
    sxb, sxc, sxh, sxw,
    sob, soc, soh, sow,
    smb, smc, smh, smw,
    syb, syc, syh, syw,
    PAD, DIL,
    KH: tl.constexpr, KW: tl.constexpr, CG: tl.constexpr, CG_POW2: tl.constexpr,
    HAS_BIAS: tl.constexpr, IEEE: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):  # fmt: skip
    # A chunk of BLOCK_K = GPC * CGB channels: GPC groups of CGB channels each (both powers of two).
    CGB: tl.constexpr = min(BLOCK_K, CG_POW2)
    GPC: tl.constexpr = BLOCK_K // CGB
    TAPS: tl.constexpr = KH * KW

    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    m_ok = m < B * HW_OUT
    b = (m // HW_OUT).to(tl.int64)  # batch offsets in int64: a batch can exceed 2**31 elements
    p = m % HW_OUT
    oy = p // WO
    ox = p % WO
    x_base = b * sxb
    off_base = b * sob + oy * soh + ox * sow
    mask_base = b * smb + oy * smh + ox * smw

    n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    n_ok = n < O
    gi = tl.arange(0, GPC)
    ci = tl.arange(0, CGB)
    k = tl.arange(0, BLOCK_K)
    op_dtype = w_ptr.dtype.element_ty
    hf = H - 1.0  # the last row and column, as float32 for comparisons and clamping
    wf = W - 1.0

    # tl.full, not tl.zeros: Triton's @jit helpers (tl.zeros, tl.cdiv, ...) are decorated for the
    # interpreter or the compiler when triton is imported, so the interpreter could not call them
    # where triton was imported before TRITON_INTERPRET was set. Builtins work either way.
    acc = tl.full((BLOCK_M, BLOCK_N), 0.0, dtype=tl.float32)
    for t in range(TAPS):
        base_y = (oy - PAD + (t // KW) * DIL).to(tl.float32)
        base_x = (ox - PAD + (t % KW) * DIL).to(tl.float32)
        for g0 in range(0, G, GPC):
            # Where each pixel samples for each group of the chunk: [BLOCK_M, GPC], float32.
            g = g0 + gi
            g_ok = g < G
            ch = g * TAPS + t
            lm = m_ok[:, None] & g_ok[None, :]
            dy = tl.load(off_ptr + off_base[:, None] + (2 * ch)[None, :] * soc, mask=lm, other=0.0).to(tl.float32)
            dx = tl.load(off_ptr + off_base[:, None] + (2 * ch + 1)[None, :] * soc, mask=lm, other=0.0).to(tl.float32)
            mod = tl.load(mask_ptr + mask_base[:, None] + ch[None, :] * smc, mask=lm, other=0.0).to(tl.float32)
            py = base_y[:, None] + dy
            px = base_x[:, None] + dx
            y0 = tl.floor(py)
            x0 = tl.floor(px)
            ly = py - y0
            lx = px - x0
            # Corners outside the image contribute zero; clamped indices keep every address inside
            # it even for huge or NaN offsets (NaN fails every comparison, so weighs nothing).
            y0_ok = (y0 >= 0.0) & (y0 <= hf)
            y1_ok = (y0 >= -1.0) & (y0 <= hf - 1.0)
            x0_ok = (x0 >= 0.0) & (x0 <= wf)
            x1_ok = (x0 >= -1.0) & (x0 <= wf - 1.0)
            yi0 = tl.minimum(tl.maximum(y0, 0.0), hf).to(tl.int32)
            yi1 = tl.minimum(tl.maximum(y0 + 1.0, 0.0), hf).to(tl.int32)
            xi0 = tl.minimum(tl.maximum(x0, 0.0), wf).to(tl.int32)
            xi1 = tl.minimum(tl.maximum(x0 + 1.0, 0.0), wf).to(tl.int32)
            ok00 = y0_ok & x0_ok
            ok01 = y0_ok & x1_ok
            ok10 = y1_ok & x0_ok
            ok11 = y1_ok & x1_ok
            w00 = tl.where(ok00, (1.0 - ly) * (1.0 - lx) * mod, 0.0)
            w01 = tl.where(ok01, (1.0 - ly) * lx * mod, 0.0)
            w10 = tl.where(ok10, ly * (1.0 - lx) * mod, 0.0)
            w11 = tl.where(ok11, ly * lx * mod, 0.0)
            s00 = yi0 * sxh + xi0 * sxw
            s01 = yi0 * sxh + xi1 * sxw
            s10 = yi1 * sxh + xi0 * sxw
            s11 = yi1 * sxh + xi1 * sxw
            for c0 in range(0, CG, CGB):
                # The A tile: BLOCK_K sampled, modulated channels per pixel, as [BLOCK_M, GPC, CGB].
                c = c0 + ci
                chan_ok = g_ok[:, None] & (c < CG)[None, :]
                ok = m_ok[:, None, None] & chan_ok[None, :, :]
                ptr = x_ptr + x_base[:, None, None] + ((g[:, None] * CG + c[None, :]) * sxc)[None, :, :]
                v = w00[:, :, None] * tl.load(ptr + s00[:, :, None], mask=ok & ok00[:, :, None], other=0.0).to(
                    tl.float32
                )
                v += w01[:, :, None] * tl.load(ptr + s01[:, :, None], mask=ok & ok01[:, :, None], other=0.0).to(
                    tl.float32
                )
                v += w10[:, :, None] * tl.load(ptr + s10[:, :, None], mask=ok & ok10[:, :, None], other=0.0).to(
                    tl.float32
                )
                v += w11[:, :, None] * tl.load(ptr + s11[:, :, None], mask=ok & ok11[:, :, None], other=0.0).to(
                    tl.float32
                )
                a = tl.reshape(v, (BLOCK_M, BLOCK_K)).to(op_dtype)
                # The B tile: weight rows (tap, channel) in the same order as the A tile's columns.
                kg = g0 + k // CGB
                kc = c0 + k % CGB
                k_ok = (kg < G) & (kc < CG)
                rows = t * C + kg * CG + kc
                bt = tl.load(w_ptr + rows[:, None] * O + n[None, :], mask=k_ok[:, None] & n_ok[None, :], other=0.0)
                if IEEE:
                    acc = tl.dot(a, bt, acc, input_precision="ieee")
                else:
                    acc = tl.dot(a, bt, acc)

    if HAS_BIAS:
        acc += tl.load(bias_ptr + n, mask=n_ok, other=0.0).to(tl.float32)[None, :]
    out = out_ptr + (b * syb + oy * syh + ox * syw)[:, None] + (n * syc)[None, :]
    tl.store(out, acc.to(out_ptr.dtype.element_ty), mask=m_ok[:, None] & n_ok[None, :])


@functools.cache
def _kernel(interpret: bool) -> Any:
    """The launchable kernel, decorated on first use: Triton picks interpreter or compiler when it
    decorates, so the choice follows ``TRITON_INTERPRET`` at the first call, not at import."""
    jitted = triton.jit(_dcn_kernel)
    if interpret:
        return jitted
    configs = [
        triton.Config({"BLOCK_M": bm, "BLOCK_K": bk}, num_warps=warps, num_stages=stages)
        for bm, bk, warps, stages in _CUDA_CONFIGS
    ]
    # M_BUCKET (pixels, rounded up to a power of two) rather than the exact size: tiles of a frame
    # differ by a few pixels, and each new key costs a round of benchmarking.
    return triton.autotune(configs, key=["C", "O", "G", "M_BUCKET"])(jitted)


def _next_pow2(n: int) -> int:
    return 1 << max(n - 1, 0).bit_length()


def _image_fits_int32(t: torch.Tensor) -> bool:
    """The kernel offsets within one image in int32 (only the batch offset is int64)."""
    return sum((size - 1) * abs(stride) for size, stride in zip(t.shape[1:], t.stride()[1:])) < 2**31


# A layer's weight rearranged for the kernel, kept while the weight lives and is unchanged: a zsm
# window makes hundreds of calls with the same few weights.
_GEMM_WEIGHTS: dict[int, tuple[weakref.ref, tuple, torch.Tensor]] = {}  # by id(weight); tensors' == is elementwise


def _gemm_weight(weight: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``weight`` [O, C, kh, kw] as [(tap, channel), O] in ``dtype``, contiguous."""
    key = (weight._version, dtype)
    cached = _GEMM_WEIGHTS.get(id(weight))
    if cached is not None and cached[0]() is weight and cached[1] == key:
        return cached[2]
    out_channels, c, kh, kw = weight.shape
    rearranged = weight.detach().permute(2, 3, 1, 0).reshape(kh * kw * c, out_channels).to(dtype).contiguous()
    if not torch.is_grad_enabled() or not weight.requires_grad:  # a training step's weight changes next step
        if cached is None or cached[0]() is not weight:
            weakref.finalize(weight, _GEMM_WEIGHTS.pop, id(weight), None)  # forgotten with the weight
        _GEMM_WEIGHTS[id(weight)] = (weakref.ref(weight), key, rearranged)
    return rearranged


def triton_deform_conv2d(
    x: torch.Tensor,
    offset: torch.Tensor,
    mask: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    padding: int = 1,
    dilation: int = 1,
) -> torch.Tensor:
    """Stride-1 modulated deformable convolution, as ``deform_conv2d_torch``; x may be NCHW or
    channels_last (the output follows x's memory format). Products use x's dtype (float16,
    bfloat16, or float32 at IEEE precision) and accumulate in float32; output is in x's dtype."""
    if triton is None:
        raise RuntimeError("triton_deform_conv2d needs Triton, which does not import here")
    interpret = _interpreting()
    if x.device.type != "cuda" and not interpret:
        raise RuntimeError(f"triton_deform_conv2d runs on CUDA (or under TRITON_INTERPRET=1), not {x.device}")
    if x.dtype not in (torch.float16, torch.bfloat16, torch.float32):
        raise TypeError(f"triton_deform_conv2d takes float16, bfloat16 or float32 input, not {x.dtype}")
    b, c, h, w, out_channels, kh, kw, groups, out_h, out_w = deform_shapes(x, offset, weight, padding, dilation)
    taps = kh * kw
    if tuple(offset.shape) != (b, 2 * groups * taps, out_h, out_w):
        raise ValueError(f"offset has shape {tuple(offset.shape)}, expected {(b, 2 * groups * taps, out_h, out_w)}")
    if tuple(mask.shape) != (b, groups * taps, out_h, out_w):
        raise ValueError(f"mask has shape {tuple(mask.shape)}, expected {(b, groups * taps, out_h, out_w)}")
    others = [t for t in (offset, mask, weight, bias) if t is not None]
    if any(t.device != x.device for t in others):
        raise ValueError(f"offset, mask, weight and bias must be on x's device ({x.device})")

    channels_last = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    out = torch.empty((b, out_channels, out_h, out_w), device=x.device, dtype=x.dtype, memory_format=memory_format)
    if out.numel() == 0:
        return out
    if x.stride(1) != 1 and not interpret and _GATHER_CHANNELS_LAST:
        x = x.contiguous(memory_format=torch.channels_last)
    if not all(_image_fits_int32(t) for t in (x, offset, mask, out)):
        raise ValueError("an image spans 2**31 elements or more; the kernel indexes within an image in int32")
    # [(tap, channel), O]: the B tile's rows load contiguously, in the A tile's column order.
    # Triton 3.8's interpreter multiplies bfloat16 dot operands as their raw uint16 bits, so there
    # bfloat16 products run in float32 (the kernel casts A to the weight's dtype).
    op_dtype = torch.float32 if interpret and x.dtype == torch.bfloat16 else x.dtype
    w_t = _gemm_weight(weight, op_dtype)
    bias_arg = bias.contiguous() if bias is not None else w_t  # any pointer: unread without bias

    cg = c // groups
    m_total = b * out_h * out_w
    kernel = _kernel(interpret)
    if interpret:
        meta = dict(_INTERPRETER_CONFIG)
        grid = (triton.cdiv(m_total, meta["BLOCK_M"]), triton.cdiv(out_channels, meta["BLOCK_N"]))
    else:
        meta = {"BLOCK_N": min(max(16, _next_pow2(out_channels)), 128)}

        def grid(config: dict[str, Any]) -> tuple[int, int]:
            return triton.cdiv(m_total, config["BLOCK_M"]), triton.cdiv(out_channels, config["BLOCK_N"])

    # Triton launches on the current CUDA device, which need not be x's.
    with torch.cuda.device(x.device) if x.is_cuda else contextlib.nullcontext():
        kernel[grid](
            x, offset, mask, w_t, bias_arg, out,
            b, c, h, w, out_channels, out_h, out_w, groups, out_h * out_w, _next_pow2(m_total),
            *x.stride(), *offset.stride(), *mask.stride(), *out.stride(),
            padding, dilation,
            KH=kh, KW=kw, CG=cg, CG_POW2=_next_pow2(cg), HAS_BIAS=bias is not None, IEEE=op_dtype == torch.float32,
            **meta,
        )  # fmt: skip
    return out
