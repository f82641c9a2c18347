"""Helpers for comparing a network's output across precisions and devices: the shipped models (and
zsm at its official size with random weights made to behave like trained ones), one window of
real frames from the example clip, PSNR. Used by test_half.py (CPU) and test_cuda.py (CUDA)."""

from __future__ import annotations

import dataclasses
import functools
import math
from pathlib import Path

import av
import numpy as np
import torch

from stvsr_cli.models.loader import Upscaler, load_model
from stvsr_cli.models.registry import ModelSpec, load_registry

EXAMPLE = Path(__file__).parents[1] / "examples" / "vtest_200x150.mp4"
# The built-in models whose weights ship in weights/ (a local path, not a download).
SHIPPED = sorted(name for name, spec in load_registry().models.items() if spec.weights and "://" not in spec.weights)


def spec_of(name: str) -> ModelSpec:
    """A built-in model's spec; ``zsm`` (official size, weights a download) gets random weights."""
    spec = load_registry().get(name)
    return dataclasses.replace(spec, weights=None) if name == "zsm" else spec


def first_fps_x(spec: ModelSpec) -> int:
    return spec.fps_x[0] if spec.fps_x else 2


def loaded(
    spec: ModelSpec, device: torch.device | str, *, half: bool = False, like: Upscaler | None = None
) -> Upscaler:
    """``spec`` on ``device`` at x4, with ``like``'s weights when given (random ones included).
    ``half`` is float16 autocast: load_model's own on CUDA; forced on the CPU only to try these helpers."""
    device = torch.device(device)
    torch.manual_seed(0)
    upscaler = load_model(
        spec, scale=4, device=device, half=half and device.type == "cuda", random_weights=spec.weights is None
    )
    if like is not None:
        upscaler.module.load_state_dict(like.module.state_dict())
    return dataclasses.replace(upscaler, half=half)


def example_frames(count: int, size: int) -> torch.Tensor:
    """The first ``count`` frames of the example clip (real footage), centre crop of ``size`` x ``size``:
    ``[N, 3, H, W]`` float32 in [0, 1] on the CPU."""
    with av.open(str(EXAMPLE)) as container:
        frames = []
        for frame in container.decode(video=0):
            frames.append(frame.to_ndarray(format="rgb24"))
            if len(frames) == count:
                break
    stack = torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).float() / 255
    top, left = (stack.shape[2] - size) // 2, (stack.shape[3] - size) // 2
    return stack[:, :, top : top + size, left : left + size].contiguous()


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of data in [0, 1] (peak 1), in float64 on ``a``'s device."""
    mse = torch.mean((a.detach().double() - b.detach().to(a.device).double()) ** 2).item()
    return math.inf if mse == 0 else 10 * math.log10(1 / mse)


def crop_for(name: str) -> int:
    return 32 if name == "zsm" else 64  # the official-size network's CPU reference is the slow part


def shortest_window(name: str) -> int:
    """The fewest input frames ``name`` runs on (2, or the frames a fixed-window network needs)."""
    return max(2, spec_of(name).min_frames)


@functools.cache
def cpu_reference(
    name: str, crop: int | None = None, frames: int | None = None
) -> tuple[Upscaler, torch.Tensor, torch.Tensor]:
    """The model in float32 on the CPU, its input window (``frames`` real frames, default its
    window, ``crop`` pixels square) and its output (shared by the dtypes)."""
    spec = spec_of(name)
    model = loaded(spec, "cpu")
    frames = example_frames(frames or spec.window, crop or crop_for(name))
    if spec.weights is None:
        like_trained(model.module, frames[None])
    return model, frames, model(frames, first_fps_x(spec))


@torch.inference_mode()
def like_trained(net: torch.nn.Module, batch: torch.Tensor, offset_std: float = 2.0) -> None:
    """Make a randomly initialised Zooming Slow-Mo behave like a trained one where precision shows.
    As initialised, its deformable layers are plain convolutions (zero offsets) and its output is
    about +-0.05, on which any error looks tiny. Give the offset layers random weights scaled for
    offsets of about ``offset_std`` pixels, and scale the last layer for outputs of mean 0.5 and
    std 0.25 (as a picture's)."""
    from stvsr_cli.models.zsm import DCNPack

    packs = [m for m in net.modules() if isinstance(m, DCNPack)]
    stds = {}
    hooks = []
    for pack in packs:
        torch.nn.init.kaiming_uniform_(pack.conv_offset_mask.weight, a=5**0.5)
        rows = 2 * pack.conv_offset_mask.out_channels // 3  # the offsets; the rest are the masks

        def measure(module, args, out, pack=pack, rows=rows):
            stds.setdefault(pack, out[:, :rows].std().item())  # the first call: the rest follow from it

        hooks.append(pack.conv_offset_mask.register_forward_hook(measure))
    net(batch)
    for hook in hooks:
        hook.remove()
    for pack in packs:
        rows = 2 * pack.conv_offset_mask.out_channels // 3
        pack.conv_offset_mask.weight[:rows] *= offset_std / stds[pack]
    out = net(batch)
    gain = 0.25 / out.std().item()
    net.conv_last.weight *= gain
    net.conv_last.bias.copy_(net.conv_last.bias * gain + 0.5 - out.mean().item() * gain)


def autocast_vs_cpu(
    name: str, device: torch.device | str, dtype: torch.dtype, crop: int | None = None, frames: int | None = None
) -> tuple[float, float]:
    """PSNR (and max |error|) of model ``name`` on ``device`` under ``dtype`` autocast against the
    same weights in float32 on the CPU, on one window of real frames (``crop`` and ``frames`` as
    ``cpu_reference``'s). float16 goes through
    ``Upscaler(half=True)`` (the product's path), bfloat16 through the network's ``run`` under autocast.
    The raw network output (before the clamp to [0, 1]) must hold no inf or NaN."""
    spec = spec_of(name)
    fps_x = first_fps_x(spec)
    reference, window, want = cpu_reference(name, crop, frames)
    device = torch.device(device)
    model = loaded(spec, device, half=dtype == torch.float16, like=reference)
    raw = []
    hook = model.module.register_forward_hook(lambda module, args, out: raw.append(out.detach()))
    try:
        if dtype == torch.float16:
            got = model(window.to(device), fps_x)
        else:
            with torch.inference_mode(), torch.autocast(device.type, dtype=dtype):
                got = model.module.run(window.to(device)[None], fps_x)[0].float().clamp(0, 1)
    finally:
        hook.remove()
    assert len(raw) == 1 and raw[0].dtype in (dtype, torch.float32)
    assert torch.isfinite(raw[0]).all(), f"{name}: inf or NaN in the {dtype} output"
    assert got.shape == want.shape
    return psnr(got, want), (got.cpu() - want).abs().max().item()
