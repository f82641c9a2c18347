#!/usr/bin/env python3
"""Deformable convolution: torchvision's kernel against our pure-PyTorch path, at zsm's shapes.

The official-size Zooming Slow-Mo aligns 64-channel features with 8 deformable groups at three
pyramid levels (the LR frame, 1/2 and 1/4). This times one forward of each implementation at
those shapes for a 480x270 and a 180x144 input, on this machine's CPU (and on CUDA when there is
one), and prints a table plus a JSON line per shape. ``pick_deform_conv`` is set from it
(benchmarks/README.md records the figures).

    python benchmarks/dcn_speed.py [--repeat 5] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from stvsr_cli.models.ops.dcn import deform_conv2d_torch, torchvision_deform_conv2d

LEVELS = {"480x270": [(270, 480), (135, 240), (68, 120)], "180x144": [(144, 180), (72, 90), (36, 45)]}


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--sizes", default=",".join(LEVELS))
    args = parser.parse_args()
    device = torch.device(args.device)
    gen = torch.Generator().manual_seed(0)
    nf, groups = 64, 8
    weight = (torch.randn(nf, nf, 3, 3, generator=gen) / 24).to(device)
    bias = torch.zeros(nf, device=device)
    print(f"device {device}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    for size in args.sizes.split(","):
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
