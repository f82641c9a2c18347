#!/usr/bin/env python3
"""Where one Zooming Slow-Mo call spends its time, by part of the network, on the CPU.

    python benchmarks/zsm_profile.py [--size 480x270] [--frames 4] [--json OUT.json]

The official size (nf 64, 8 groups, 5 + 40 residual blocks) with seeded random weights (the
official checkpoint is not needed for timing), float32, one call of ``frames`` input frames. Each
part's wall time is taken inclusively by forward hooks (the CPU runs synchronously), then split so
that the parts add up: the deformable convolutions (every ``DCNPack``, in the PCD alignment and in
the ConvLSTM's state alignment), the ConvLSTM's gates and the rest of its alignment, the PCD
alignment without its deformable convolutions, feature extraction, the reconstruction trunk, and
the upsampling. With ``--ops`` a second call under torch.profiler lists the top operators.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from stvsr_cli.models.zsm import DCNPack, ZoomingSlowMo  # noqa: E402

PARTS = {  # part: the top-level children it is made of
    "feature extraction": ("conv_first", "feature_extraction", "fea_L2_conv1", "fea_L2_conv2", "fea_L3_conv1",
                           "fea_L3_conv2"),  # fmt: skip
    "PCD alignment (without its DCN)": ("pcd_align", "fusion"),
    "ConvLSTM (gates and state alignment, without DCN)": ("ConvBLSTM",),
    "reconstruction trunk (40 residual blocks)": ("recon_trunk",),
    "upsampling and HR convolutions": ("upconv1", "upconv2", "HRconv", "conv_last"),
}


class Timer:
    """Inclusive wall time of modules by label, from forward pre- and post-hooks."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self._began: dict[int, float] = {}

    def watch(self, module: torch.nn.Module, label: str) -> None:
        def pre(mod, _inputs):
            self._began[id(mod)] = time.perf_counter()

        def post(mod, _inputs, _output):
            self.seconds[label] += time.perf_counter() - self._began.pop(id(mod))

        module.register_forward_pre_hook(pre)
        module.register_forward_hook(post)


def profile(width: int, height: int, frames: int, threads: int | None, ops: bool = False) -> dict:
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = ZoomingSlowMo(nf=64, groups=8, front_rbs=5, back_rbs=40).eval()
    timer = Timer()
    for name, child in model.named_children():
        timer.watch(child, name)
    dcn_inside: dict[str, int] = defaultdict(int)
    for name, module in model.named_modules():
        if isinstance(module, DCNPack):
            timer.watch(module, "dcn:" + name.split(".")[0])
            dcn_inside[name.split(".")[0]] += 1
    m = model.size_multiple  # the pipeline pads frames up to it, as here
    height, width = -(-height // m) * m, -(-width // m) * m
    x = torch.rand(1, frames, 3, height, width)
    with torch.no_grad():
        model(x[:, :, :, :32, :32])  # warm-up: allocations, kernel choices
        timer.seconds.clear()
        began = time.perf_counter()
        model(x)
        total = time.perf_counter() - began
    seconds = dict(timer.seconds)
    dcn = {top: seconds.get("dcn:" + top, 0.0) for top in dcn_inside}
    parts = {"deformable convolution (DCNPack)": sum(dcn.values())}
    for part, children in PARTS.items():
        parts[part] = sum(seconds.get(c, 0.0) - dcn.get(c, 0.0) for c in children)
    parts["other (pixel shuffle, interpolation, glue)"] = total - sum(parts.values())
    top = []
    if ops:  # a second call under torch.profiler: the operators by their own time
        with torch.no_grad(), torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            model(x)
        events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)[:12]
        top = [{"op": e.key, "share": round(e.self_cpu_time_total / 1e6 / total, 3)} for e in events]
    return {
        "model": "zsm nf 64, groups 8, front_rbs 5, back_rbs 40 (seeded random weights), float32",
        "input": f"{frames} frames of {width}x{height} (padded to a multiple of {m})",
        "threads": torch.get_num_threads(),
        "cpu": torch.backends.cpu.get_cpu_capability(),
        "torch": torch.__version__,
        "seconds": round(total, 2),
        "parts": {k: {"seconds": round(v, 2), "share": round(v / total, 3)} for k, v in parts.items()},
        "dcn_packs": dict(dcn_inside),
        "top_ops_self_cpu": top,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="480x270")
    parser.add_argument("--frames", type=int, default=4)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--ops", action="store_true", help="Also list the top operators (a second call).")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    width, height = (int(v) for v in args.size.lower().split("x"))
    record = profile(width, height, args.frames, args.threads, args.ops)
    record["date"] = time.strftime("%Y-%m-%d")
    text = json.dumps(record, indent=1)
    if args.json:
        args.json.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
