"""STVUN's paper decodes only the centre of each window; does that beat our stitching on the eval clips?

The paper (Kang et al., ECCV 2020, section 3.1) feeds 7 frames and decodes the centre frame and the
times after it; a video is then covered by sliding the window one frame at a time. Our planner
(``stvsr_cli/pipeline/windows.py``) takes each output frame from the window in which its time is most
central, so ``--window 4 --overlap 3`` (stride 1) already decodes every output in the middle gap of a
window (positions 1 to 2 of 0..3) except near the clip's ends, where no window has it in the middle.
This script scores three ways of covering a clip with the same network, on the ``stvsr eval``
protocol (``stvsr_cli.evaluation``: same input, same rounding, same PSNR-Y/SSIM-Y):

- ``ours``: the registered window and overlap (4 / 2 for stvun-gpu): ``stvsr eval`` itself;
- ``stride1``: window 4, overlap 3: ``stvsr eval --window 4 --overlap 3``;
- ``centre``: stride 1, and the clip first padded by one reflected frame at each end (frame -1 is
  frame 1, frame n is frame n-2, as the blur degradation pads), so that every output frame, the
  first and last included, comes from the middle gap of a window: the paper's decoding everywhere.

Usage: ``python benchmarks/stvun_centre_windows.py --mode centre [--model stvun-gpu] [CLIPS...]``
(default clips: ../shared/data/eval). Prints one line per clip and the means; ``--json`` saves them.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from stvsr_cli.evaluation import degrade, find_clips, read_clip
from stvsr_cli.metrics import psnr_y, ssim_y
from stvsr_cli.models.loader import load_model
from stvsr_cli.models.registry import load_registry
from stvsr_cli.pipeline.run import run_windows
from stvsr_cli.pipeline.windows import plan_windows

EVAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "eval"
FPS_X = 2


def outputs(inputs: list[np.ndarray], model, mode: str) -> list[np.ndarray]:
    """The ``FPS_X * (n - 1) + 1`` output frames of the clip ``inputs`` (n frames), made as ``mode`` says."""
    n = len(inputs)
    window = model.spec.window
    frames, overlap, first = inputs, model.spec.overlap, 0
    if mode == "stride1":
        overlap = window - 1
    elif mode == "centre":
        overlap = window - 1
        frames = [inputs[1 if n > 1 else 0], *inputs, inputs[n - 2 if n > 1 else 0]]
        first = FPS_X  # output j of the padded clip is at padded time j / FPS_X; input 0 is padded frame 1
    made: list[np.ndarray] = []
    run_windows(frames, plan_windows(len(frames), window, overlap, FPS_X, model.spec.min_frames), model, made.append)
    return made[first : first + FPS_X * (n - 1) + 1]


def score(name: str, truth: list[np.ndarray], model, mode: str) -> dict:
    began = time.perf_counter()
    scale = model.scale
    h, w = truth[0].shape[:2]
    truth = [f[: h - h % scale, : w - w % scale] for f in truth]
    n_in = (len(truth) - 1) // FPS_X + 1
    scored = FPS_X * (n_in - 1) + 1
    made = outputs(degrade(truth[:scored], FPS_X, scale), model, mode)
    assert len(made) == scored
    psnrs, ssims = [], []
    for out, gt in zip(made, truth):
        a, b = torch.from_numpy(out).permute(2, 0, 1), torch.from_numpy(gt).permute(2, 0, 1)
        psnrs.append(psnr_y(a, b))
        ssims.append(ssim_y(a, b))
    between = [j for j in range(scored) if j % FPS_X]
    return {
        "name": name,
        "frames": scored,
        "psnr_y": float(np.mean(psnrs)),
        "ssim_y": float(np.mean(ssims)),
        "input_psnr_y": float(np.mean([psnrs[j] for j in range(0, scored, FPS_X)])),
        "interp_psnr_y": float(np.mean([psnrs[j] for j in between])) if between else None,
        "seconds": time.perf_counter() - began,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("clips", nargs="*", type=Path, default=[EVAL])
    parser.add_argument("--model", default="stvun-gpu")
    parser.add_argument("--mode", choices=("ours", "stride1", "centre"), default="centre")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    model = load_model(load_registry().get(args.model), scale=4, device="cpu", offline=True)
    rows = []
    for clip in find_clips(args.clips):
        row = score(clip.name, read_clip(clip), model, args.mode)
        rows.append(row)
        interp = row["interp_psnr_y"]
        print(
            f"{row['name']}: {row['psnr_y']:.2f} / {row['ssim_y']:.4f}  input {row['input_psnr_y']:.2f}  "
            f"interp {interp:.2f}  {row['seconds']:.1f} s"
            if interp is not None
            else f"{row['name']}: {row}",
            flush=True,
        )
    mean = {k: float(np.mean([r[k] for r in rows])) for k in ("psnr_y", "ssim_y", "input_psnr_y", "seconds")}
    interps = [r["interp_psnr_y"] for r in rows if r["interp_psnr_y"] is not None]
    mean["interp_psnr_y"] = float(np.mean(interps)) if interps else None
    mean["total_seconds"] = float(sum(r["seconds"] for r in rows))
    print(f"mean over {len(rows)} clips ({args.mode}): {json.dumps(mean)}")
    if args.json:
        args.json.write_text(
            json.dumps({"model": args.model, "mode": args.mode, "clips": rows, "mean": mean}, indent=1)
        )


if __name__ == "__main__":
    main()
