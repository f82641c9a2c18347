#!/usr/bin/env python3
"""Deformable convolution: torchvision's kernel against our pure-PyTorch path, at zsm's shapes.

The official-size Zooming Slow-Mo aligns 64-channel features with 8 deformable groups at three
pyramid levels (the LR frame, 1/2 and 1/4). This times one forward of each implementation at
those shapes for a 480x270 and a 180x144 input, on this machine's CPU (and on CUDA when there is
one), and prints a table plus a JSON line per shape. ``pick_deform_conv`` is set from it
(benchmarks/README.md records the figures).

``--triton`` (CUDA only) compares the fused Triton kernel (``ops.dcn_triton``) with torchvision's
and ours in float16 at zsm's levels for 480x270 and 960x540 frames: ms per call from CUDA events
after a warm-up (which autotunes Triton), and each one's largest difference from torchvision.
``--profile`` (CUDA only) runs torch.profiler over one float16 forward of zsm (random weights) and
prints the 15 operations and kernels that take the most CUDA time; ``--impl`` swaps its
deformable convolution.

    python benchmarks/dcn_speed.py [--repeat 5] [--device cpu]
    python benchmarks/dcn_speed.py --triton [--sizes 480x270,960x540]
    python benchmarks/dcn_speed.py --profile [--impl triton] [--size 480x270]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from dataclasses import replace

import torch

from stvsr_cli.models.ops import dcn_triton
from stvsr_cli.models.ops.dcn import deform_conv2d_torch, torchvision_deform_conv2d, use_deform_conv
from stvsr_cli.models.ops.dcn_triton import triton_deform_conv2d

LEVELS = {"480x270": [(270, 480), (135, 240), (68, 120)], "180x144": [(144, 180), (72, 90), (36, 45)]}
# The levels zsm really runs on CUDA: it pads frames to a multiple of 4 (270 -> 272).
CUDA_LEVELS = {"480x270": [(272, 480), (136, 240), (68, 120)], "960x540": [(540, 960), (270, 480), (135, 240)]}
IMPLS = {"pure": deform_conv2d_torch, "torchvision": torchvision_deform_conv2d, "triton": triton_deform_conv2d}
CALLS = 10  # calls between two CUDA events: one call at the smallest level is too short to time alone


def timed(fn, repeat: int, device: torch.device) -> float:
    fn()  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    best = float("inf")
    for _ in range(repeat):
        began = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - began)
    return best


def cuda_ms(fn, repeat: int) -> float:
    """Best mean time of ``CALLS`` calls, over ``repeat`` tries, from CUDA events, after warm-up."""
    for _ in range(3):  # Triton compiles and autotunes on its first call
        fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    best = float("inf")
    for _ in range(repeat):
        start.record()
        for _ in range(CALLS):
            fn()
        end.record()
        end.synchronize()
        best = min(best, start.elapsed_time(end) / CALLS)
    return best


def triton_nchw_gathered(*args) -> torch.Tensor:
    """The Triton kernel reading an NCHW input as it is, without its copy to channels_last."""
    dcn_triton._GATHER_CHANNELS_LAST = False
    try:
        return triton_deform_conv2d(*args)
    finally:
        dcn_triton._GATHER_CHANNELS_LAST = True


def level_runs(
    x: torch.Tensor,
    offset: torch.Tensor,
    mask: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    weight32: torch.Tensor,
) -> dict[str, Callable[[], torch.Tensor]]:
    """The calls timed at one level, float16 unless named otherwise."""
    x_cl = x.contiguous(memory_format=torch.channels_last)  # what the CUDA model feeds it

    def torchvision_autocast() -> torch.Tensor:  # what zsm runs today: torchvision upcasts to float32
        with torch.autocast("cuda", dtype=torch.float16):
            return torchvision_deform_conv2d(x, offset, mask, weight32, bias.float())

    return {
        "triton": lambda: triton_deform_conv2d(x_cl, offset, mask, weight, bias),
        "triton_nchw_copied": lambda: triton_deform_conv2d(x, offset, mask, weight, bias),
        "triton_nchw_gathered": lambda: triton_nchw_gathered(x, offset, mask, weight, bias),
        "torchvision": lambda: torchvision_deform_conv2d(x, offset, mask, weight, bias),
        "torchvision_autocast": torchvision_autocast,
        "pure": lambda: deform_conv2d_torch(x, offset, mask, weight, bias),
    }


def compare_on_cuda(sizes: list[str], repeat: int) -> None:
    """Triton against torchvision and ours, float16, at zsm's levels (B=1: one window)."""
    device = torch.device("cuda")
    gen = torch.Generator().manual_seed(0)
    nf, groups = 64, 8
    weight32 = torch.randn(nf, nf, 3, 3, generator=gen) / 24
    weight, bias = weight32.half().to(device), torch.zeros(nf, device=device, dtype=torch.half)
    print(f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}, float16, {nf} channels, {groups} groups")
    for size in sizes:
        totals: dict[str, float] = {}
        for h, w in CUDA_LEVELS[size]:
            x = torch.randn(1, nf, h, w, generator=gen).half().to(device)
            offset = (torch.randn(1, 18 * groups, h, w, generator=gen) * 2).half().to(device)
            mask = torch.rand(1, 9 * groups, h, w, generator=gen).half().to(device)
            runs = level_runs(x, offset, mask, weight, bias, weight32.to(device))
            row: dict[str, object] = {"input": size, "level": f"{w}x{h}"}
            with torch.inference_mode():
                reference = runs["torchvision"]().float()
                row["torchvision_max_abs"] = round(reference.abs().max().item(), 4)
                for name, fn in runs.items():
                    row[f"{name}_max_abs_diff"] = round((fn().float() - reference).abs().max().item(), 5)
                    ms = cuda_ms(fn, repeat)
                    row[f"{name}_ms"] = round(ms, 3)
                    totals[name] = totals.get(name, 0.0) + ms
            print(json.dumps(row))
        tv = totals["torchvision"]
        print(f"{size}, three levels, ms per call (speed against torchvision float16):")
        for name, ms in totals.items():
            print(f"  {name:22s} {ms:8.3f} ms  {tv / ms:5.2f}x")


def profile_zsm(impl: str, size: str) -> None:
    """torch.profiler over one float16 (autocast) forward of zsm on a window of random frames."""
    from stvsr_cli.models.loader import load_model
    from stvsr_cli.models.registry import load_registry

    spec = replace(load_registry().get("zsm"), weights=None)  # random weights: nothing to fetch
    width, height = (int(v) for v in size.split("x"))
    torch.manual_seed(0)
    upscaler = load_model(spec, scale=4, device="cuda", half=True, random_weights=True)
    if impl != "default":
        use_deform_conv(upscaler.module, IMPLS[impl])
    frames = torch.rand(spec.window, 3, height, width, device=upscaler.device)
    upscaler(frames, 2)  # warm-up: cuDNN, allocator, Triton's compiling and autotuning
    torch.cuda.synchronize()
    activities = [torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
    with torch.profiler.profile(activities=activities) as prof:
        upscaler(frames, 2)
        torch.cuda.synchronize()
    print(f"zsm, {spec.window} frames of {size}, float16 autocast, deformable convolution: {impl}")
    print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=15))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--sizes", default=None, help="CPU: 480x270,180x144 (default both); --triton: 480x270,960x540")
    parser.add_argument("--triton", action="store_true", help="CUDA: Triton vs torchvision vs ours, float16")
    parser.add_argument("--profile", action="store_true", help="CUDA: profile one float16 forward of zsm")
    parser.add_argument("--impl", default="default", choices=["default", *IMPLS], help="--profile: deform conv used")
    parser.add_argument("--size", default="480x270", help="--profile: frame size WxH")
    args = parser.parse_args()
    if (args.triton or args.profile) and not torch.cuda.is_available():
        sys.exit("dcn_speed.py: --triton and --profile need a CUDA device, and there is none here")
    if args.profile:
        profile_zsm(args.impl, args.size)
        return
    if args.triton:
        compare_on_cuda((args.sizes or ",".join(CUDA_LEVELS)).split(","), args.repeat)
        return
    device = torch.device(args.device)
    gen = torch.Generator().manual_seed(0)
    nf, groups = 64, 8
    weight = (torch.randn(nf, nf, 3, 3, generator=gen) / 24).to(device)
    bias = torch.zeros(nf, device=device)
    print(f"device {device}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    for size in (args.sizes or ",".join(LEVELS)).split(","):
        totals = {"pure": 0.0, "torchvision": 0.0}
        for h, w in LEVELS[size]:
            x = torch.randn(1, nf, h, w, generator=gen).to(device)
            offset = (torch.randn(1, 18 * groups, h, w, generator=gen) * 2).to(device)
            mask = torch.rand(1, 9 * groups, h, w, generator=gen).to(device)
            with torch.inference_mode():
                pure = timed(lambda: deform_conv2d_torch(x, offset, mask, weight, bias), args.repeat, device)
                tv = timed(lambda: torchvision_deform_conv2d(x, offset, mask, weight, bias), args.repeat, device)
            totals["pure"] += pure
            totals["torchvision"] += tv
            row = {
                "input": size,
                "level": f"{w}x{h}",
                "pure_ms": round(pure * 1e3, 2),
                "torchvision_ms": round(tv * 1e3, 2),
            }
            print(json.dumps(row))
        ratio = totals["pure"] / totals["torchvision"]
        print(
            f"{size}: three levels {totals['pure'] * 1e3:.1f} ms pure, "
            f"{totals['torchvision'] * 1e3:.1f} ms torchvision (torchvision {ratio:.2f}x the speed of pure)"
        )


if __name__ == "__main__":
    main()
