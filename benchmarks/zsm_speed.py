"""Speed and peak memory of the zsm network alone (random weights: speed does not depend on them).

    python benchmarks/zsm_speed.py --size 480x270 --device cuda --half
    python benchmarks/zsm_speed.py --size 120x68 --device cpu

One call = one pipeline window (default 7 input frames -> 13 output frames at 4x). Prints output
frames per second (model only: no decoding or encoding) and peak memory. Results are recorded in
benchmarks/README.md with the machine they came from.
"""

from __future__ import annotations

import argparse
import resource
import time

import torch

from stvsr_cli.models.loader import load_model
from stvsr_cli.models.registry import load_registry


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="480x270", help="LR WIDTHxHEIGHT")
    parser.add_argument("--window", type=int, default=7, help="input frames per call")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--half", action=argparse.BooleanOptionalAction, default=None)
    parser.add_argument("--calls", type=int, default=3, help="timed calls after one warm-up call")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))

    spec = load_registry().get("zsm")
    spec = type(spec)(**{**spec.__dict__, "weights": None})  # random weights: no download needed
    torch.manual_seed(0)
    model = load_model(spec, scale=4, device=args.device, half=args.half)
    frames = torch.rand(args.window, 3, height, width, device=model.device)
    cuda = model.device.type == "cuda"

    def call() -> None:
        model(frames, 2)
        if cuda:
            torch.cuda.synchronize()

    call()  # warm-up (cuDNN autotuning, allocator)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    began = time.perf_counter()
    for _ in range(args.calls):
        call()
    seconds = (time.perf_counter() - began) / args.calls
    outputs = 2 * args.window - 1
    peak = (
        torch.cuda.max_memory_allocated() / 2**30
        if cuda
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    )
    impl = next(m.deform_conv.__name__ for m in model.module.modules() if hasattr(type(m), "deform_conv"))
    print(
        f"zsm {width}x{height} -> {4 * width}x{4 * height}, window {args.window} ({outputs} outputs), "
        f"{model.device}, {'fp16 autocast' if model.half else 'fp32'}, deform conv {impl}: "
        f"{seconds:.3f} s per call, {outputs / seconds:.2f} output frames/s, peak memory {peak:.2f} GiB"
        f" ({'GPU allocated' if cuda else 'process RSS'})"
    )


if __name__ == "__main__":
    main()
