#!/usr/bin/env python3
"""How compactly can training clips travel? Each clip re-encoded in a few codec settings, against
the original: bytes (frames per MB) and what training would read from it (``evaluation.read_clip``,
the frame cache's path): PSNR-Y on the eval protocol's BT.601 studio-range luma, and PSNR over RGB
(4:2:0 costs colour, which the loss sees, before it costs luma).

    python benchmarks/pack_clips.py [--clips N] [--frames F] --json OUT.json [CLIP_OR_FOLDER ...]

Defaults: the training folders beside the checkout, every clip, whole clips. The campaign's
``--prepare`` packs with the setting chosen from these figures (``gpu_campaign.PACKING``).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
import torch
from campaign_staging import SETTINGS, pack_clip

from stvsr_cli.evaluation import Clip, find_clips, read_clip
from stvsr_cli.metrics import psnr_y

SHARED_DATA = REPO.parent / "shared" / "data"


def _tensor(frames: list[np.ndarray]) -> torch.Tensor:
    """``[T, 3, H, W]`` of 8-bit values, as the metrics take them."""
    return torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2)


def psnr_rgb(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float(((a.double() - b.double()) ** 2).mean())
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def measure(clip: Clip, settings: list[str], frames: int | None) -> dict:
    original = read_clip(clip)[:frames]
    truth = _tensor(original)
    row: dict = {"clip": clip.name, "frames": len(original), "size": f"{truth.shape[-1]}x{truth.shape[-2]}"}
    with tempfile.TemporaryDirectory() as tmp:
        for name in ["copy", *settings]:
            packed = Path(tmp) / f"{name}.mkv"
            began = time.perf_counter()
            # "copy" copies the whole file (a cut of copied packets can end inside a B-frame group);
            # its bytes are then counted pro rata for the frames compared.
            kept = pack_clip(clip.path, packed, name, frames=None if name == "copy" else frames)
            seconds = time.perf_counter() - began
            size = packed.stat().st_size * min(1.0, len(original) / kept)
            began = time.perf_counter()
            decoded = read_clip(Clip(clip.name, packed))[: len(original)]
            decode_s = time.perf_counter() - began
            out = _tensor(decoded)
            row[name] = {
                "bytes": round(size),
                "frames": min(kept, len(original)),
                "psnr_y": round(psnr_y(out, truth), 2),
                "psnr_rgb": round(psnr_rgb(out, truth), 2),
                "encode_s": round(seconds, 1),
                "decode_s": round(decode_s, 2),
            }
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data", nargs="*", type=Path, default=[SHARED_DATA / "train", SHARED_DATA / "train2"])
    parser.add_argument("--settings", default=",".join(SETTINGS), help="Comma-separated (known: %(default)s).")
    parser.add_argument("--clips", type=int, default=None, help="Every n-th clip only (spread over the list).")
    parser.add_argument("--frames", type=int, default=None, help="The first F frames of each clip.")
    parser.add_argument("--json", type=Path, required=True)
    args = parser.parse_args(argv)
    settings = [s for s in args.settings.split(",") if s]
    clips = find_clips(args.data)
    if args.clips:
        clips = clips[:: max(1, len(clips) // args.clips)][: args.clips]
    torch.set_num_threads(1)
    rows = []
    for clip in clips:
        rows.append(measure(clip, settings, args.frames))
        print(json.dumps(rows[-1]), flush=True)
    summary = {}
    for name in ["copy", *settings]:
        total_bytes = sum(r[name]["bytes"] for r in rows)
        total_frames = sum(r["frames"] for r in rows)
        summary[name] = {
            "bytes": total_bytes,
            "frames_per_mb": round(total_frames / (total_bytes / 1e6), 1),
            "of_copy": round(total_bytes / sum(r["copy"]["bytes"] for r in rows), 3),
            "psnr_y_mean": round(float(np.mean([min(r[name]["psnr_y"], 99) for r in rows])), 2),
            "psnr_y_worst": min(r[name]["psnr_y"] for r in rows),
            "psnr_rgb_mean": round(float(np.mean([min(r[name]["psnr_rgb"], 99) for r in rows])), 2),
            "encode_s": round(sum(r[name]["encode_s"] for r in rows), 1),
            "decode_s": round(sum(r[name]["decode_s"] for r in rows), 1),
        }
    record = {
        "what": "training clips re-encoded for travel, against the originals (psnr capped at 99 in means)",
        "date": time.strftime("%Y-%m-%d"),
        "settings": {name: SETTINGS.get(name, "packets copied") for name in ["copy", *settings]},
        "summary": summary,
        "clips": rows,
    }
    args.json.write_text(json.dumps(record, indent=1) + "\n")
    for name, s in summary.items():
        print(f"{name:>12}: {s['frames_per_mb']:7.1f} frames/MB ({s['of_copy']:.2f} of the originals), "
              f"PSNR-Y {s['psnr_y_mean']:.2f} dB (worst {s['psnr_y_worst']:.2f}), RGB {s['psnr_rgb_mean']:.2f}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
