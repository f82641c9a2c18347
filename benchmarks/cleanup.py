"""Clean-up before the model, measured: which FFmpeg denoiser, at which strengths, and with which model.

    python benchmarks/cleanup.py filters --json benchmarks/cleanup-filters-DATE-cpu.json
    python benchmarks/cleanup.py models --json benchmarks/cleanup-models-DATE-cpu.json

The eval clips (../shared/data/eval) under ``--degradation film`` (seed 0, as ``stvsr eval``), scored
by the eval protocol (PSNR/SSIM on Y of the x4, x2 output against the ground truth), with the input
cleaned first exactly as ``stvsr eval --denoise/--deflicker`` and ``upscale`` clean it
(``io.filters``):

- ``filters``: every candidate FFmpeg filter (in PyAV's FFmpeg: atadenoise, nlmeans, fftdnoiz; hqdn3d
  is not in that build) at three strengths, and deflicker, with ``classic`` (fast: the filter's own
  effect on the picture), with the seconds of each evaluation (the filter's cost beside classic's own);
- ``models``: the shipped ``--denoise`` levels (off, light, medium, strong; and deflicker) with
  classic, the default model and stvun-film.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

from stvsr_cli.evaluation import evaluate
from stvsr_cli.io import filters
from stvsr_cli.io.filters import FrameFilters
from stvsr_cli.models.loader import load_model
from stvsr_cli.models.registry import load_registry

EVAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "eval"

CANDIDATES = {
    "atadenoise": {
        "light": "s=5",
        "medium": "s=9",
        "strong": "0a=0.04:0b=0.08:1a=0.04:1b=0.08:2a=0.04:2b=0.08:s=9",
    },
    "nlmeans": {"light": "s=2:p=7:r=9", "medium": "s=4:p=7:r=9", "strong": "s=7:p=7:r=9"},
    "fftdnoiz": {
        "light": "sigma=3:prev=1:next=1",
        "medium": "sigma=6:prev=1:next=1",
        "strong": "sigma=10:prev=1:next=1",
    },
}


def score(model: str, cleanup: FrameFilters, clips: list[Path]) -> dict:
    upscaler = load_model(load_registry().get(model), scale=4, device="cpu", offline=True)
    began = time.perf_counter()
    with torch.inference_mode():
        result = evaluate(clips, upscaler, degradation="film", cleanup=cleanup)
    return {
        "model": model,
        "cleanup": result.cleanup,
        "psnr_y": round(result.mean["psnr_y"], 3),
        "ssim_y": round(result.mean["ssim_y"], 4),
        "seconds": round(time.perf_counter() - began, 1),
        "clips": {c.name: round(c.psnr_y, 3) for c in result.clips},
    }


def filter_rows(clips: list[Path]) -> list[dict]:
    rows = [score("classic", FrameFilters(), clips)]
    print(json.dumps(rows[-1]), flush=True)
    original = dict(filters.DENOISE_FILTERS)
    try:
        for name, levels in CANDIDATES.items():
            for level, args in levels.items():
                filters.DENOISE_FILTERS[level] = (name, args)
                rows.append({"filter": name, "level": level, **score("classic", FrameFilters(denoise=level), clips)})
                print(json.dumps(rows[-1]), flush=True)
    finally:
        filters.DENOISE_FILTERS.clear()
        filters.DENOISE_FILTERS.update(original)
    rows.append({"filter": "deflicker", **score("classic", FrameFilters(deflicker=True), clips)})
    print(json.dumps(rows[-1]), flush=True)
    return rows


def model_rows(clips: list[Path], models: list[str]) -> list[dict]:
    rows = []
    settings = [FrameFilters(denoise=level) for level in filters.DENOISE_LEVELS]
    settings.append(FrameFilters(deflicker=True, denoise="medium"))
    for model in models:
        for cleanup in settings:
            rows.append({"denoise": cleanup.denoise, "deflicker": cleanup.deflicker, **score(model, cleanup, clips)})
            print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stage", choices=("filters", "models"))
    parser.add_argument("--models", default="classic,stvun-gpu,stvun-film")
    parser.add_argument("--clips", type=int, default=0, help="only the first N eval clips (0: all)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    clips = sorted(p for p in EVAL.iterdir() if p.suffix in (".mkv", ".mp4") or p.is_dir())
    clips = clips[: args.clips] if args.clips else clips
    began = time.perf_counter()
    rows = filter_rows(clips) if args.stage == "filters" else model_rows(clips, args.models.split(","))
    record = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}",
        "clips": [c.name for c in clips],
        "degradation": "film (seed 0)",
        "seconds": round(time.perf_counter() - began),
        "rows": rows,
    }
    if args.json:
        args.json.write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
