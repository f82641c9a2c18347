"""No-reference measures of what each model does to real old films (../shared/data/oldfilms).

The films have no clean version, so nothing can be scored against truth. Three measures of the
x4, x2 output's luma (BT.601, [0, 1]) instead, on the first ``--frames`` input frames of each film:

- flicker: the mean absolute difference of consecutive output frames after a heavy low-pass (each
  frame area-averaged to 1/32 of its size): brightness pumping, not motion detail;
- noise: the standard deviation of the high-pass residual (frame minus its 9x9 box blur: grain is
  a few film pixels, 4x that in the output) in the flattest tenth of 32x32 blocks (least gradient
  energy after the same blur): grain left in flat areas;
- sharpness: the mean squared Sobel gradient over the frame (x 1000): detail, and grain, and dust.

Lower noise and flicker with sharpness kept is what restoration wants; a model that sharpens the
grain raises all three. Usage: ``python benchmarks/oldfilms.py --models classic,stvun-gpu,stvun-film``.

``--variants`` adds the clean-up switches to each model, as ``stvsr compare -m`` writes them:
``MODEL+denoise=LEVEL``, ``+deflicker``, ``+grain`` (``--denoise``, ``--deflicker`` and ``--grain
keep`` of ``upscale``: the filters on the decoded frames before the model, the input's grain added
to the output after it).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from stvsr_cli.evaluation import Clip, read_clip
from stvsr_cli.io.filters import FrameFilters, filter_arrays
from stvsr_cli.models.loader import load_model
from stvsr_cli.models.registry import load_registry
from stvsr_cli.pipeline.grain import add_grain, measure_shots
from stvsr_cli.pipeline.run import run_windows
from stvsr_cli.pipeline.windows import plan_windows

FILMS = Path(__file__).resolve().parents[2] / "shared" / "data" / "oldfilms"


def luma(frame: np.ndarray) -> torch.Tensor:
    rgb = torch.from_numpy(frame).permute(2, 0, 1).float() / 255
    return (0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2])[None, None]


def flicker(lumas: list[torch.Tensor]) -> float:
    small = [F.avg_pool2d(y, 32) for y in lumas]
    return float(np.mean([(a - b).abs().mean().item() for a, b in zip(small, small[1:])]))


def noise(y: torch.Tensor) -> float:
    smooth = F.avg_pool2d(F.pad(y, (4, 4, 4, 4), mode="replicate"), 9, 1)
    residual = y - smooth
    gy, gx = torch.gradient(smooth[0, 0])
    energy = F.avg_pool2d((gx**2 + gy**2)[None, None], 32)
    spread = F.avg_pool2d(residual**2, 32)
    flat = energy.flatten().argsort()[: max(1, energy.numel() // 10)]
    return float(spread.flatten()[flat].mean().sqrt())


def sharpness(y: torch.Tensor) -> float:
    kx = torch.tensor([[-1.0, 0, 1], [-2, 0, 2], [-1, 0, 1]])[None, None] / 8
    gx = F.conv2d(y, kx)
    gy = F.conv2d(y, kx.transpose(-1, -2))
    return float((gx**2 + gy**2).mean() * 1000)


def measure(frames: list[np.ndarray]) -> dict[str, float]:
    lumas = [luma(f) for f in frames]
    return {
        "flicker": flicker(lumas),
        "noise": float(np.mean([noise(y) for y in lumas])),
        "sharpness": float(np.mean([sharpness(y) for y in lumas])),
    }


def upscale_frames(name: str, frames: list[np.ndarray]) -> list[np.ndarray]:
    model = load_model(load_registry().get(name), scale=4, device="cpu", offline=True)
    window, overlap = model.spec.window_and_overlap(None, None)
    out: list[np.ndarray] = []
    run_windows(frames, plan_windows(len(frames), window, overlap, 2, model.spec.min_frames), model, out.append)
    return out[: 2 * len(frames) - 1]


def run_variant(variant: str, frames: list[np.ndarray]) -> list[np.ndarray]:
    """``MODEL[+denoise=LEVEL][+deflicker][+grain]`` on ``frames``, as upscale runs those switches."""
    name, *switches = variant.split("+")
    denoise = next((s.split("=", 1)[1] for s in switches if s.startswith("denoise=")), "off")
    cleanup = FrameFilters(denoise=denoise, deflicker="deflicker" in switches)
    out = upscale_frames(name, filter_arrays(frames, cleanup) if cleanup else frames)
    if "grain" in switches:
        profile = measure_shots(frames, len(frames), [])[0]
        out = [add_grain(frame, profile, 4, index) for index, frame in enumerate(out)]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="classic,stvun-gpu,stvun-film")
    parser.add_argument("--variants", default="", help="comma-separated MODEL+switches, run after --models")
    parser.add_argument("--frames", type=int, default=8, help="input frames from the start of each film")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    rows = []
    runs = [*args.models.split(","), *filter(None, args.variants.split(","))]
    for film in sorted(FILMS.glob("*.mkv")):
        frames = read_clip(Clip(film.stem, film))[: args.frames]
        for variant in runs:
            began = time.perf_counter()
            with torch.inference_mode():
                scores = measure(run_variant(variant, frames))
            rows.append({"film": film.stem, "model": variant, **scores, "seconds": time.perf_counter() - began})
            print(json.dumps(rows[-1]), flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
