"""How far each model's output reaches into its input (its ``context``), and what tiles then give.

    python benchmarks/tile_context.py [--json results.json] [--contexts 4,8,...] [MODEL ...]

For each model, one window of real footage: the evaluation protocol's input from the ToFlow clip of
../shared/data/eval (1280x720 ground truth, so 320x180 input frames; the even-indexed frames), its
centre 240x160.

- ``crop_psnr``: for each context ``c``, 32x32 output crops (8x8 input pixels) are run with ``c`` input
  pixels around them (the box aligned to the model's size rule, as tiles are) and compared with the
  same crops of the whole frame's output: the worst of four crops, in dB. A model's registered
  ``context`` is the smallest ``c`` at which this reaches ``TARGET_DB``.
- ``tiled_psnr``: the whole window tiled as ``upscale`` tiles it (``pipeline.tiles.TiledModel``, with
  that context, the smallest tile it allows) against the untiled output.

``zsm`` (the official size; its weights are a download) runs with seeded random weights made to
behave like trained ones (``tests/precision.py``). Models that pool over the whole frame (``exact_tiles`` false) cannot reach the target.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))  # precision.like_trained

from stvsr_cli.evaluation import Clip, downscale, read_clip
from stvsr_cli.models.loader import load_model
from stvsr_cli.models.registry import load_registry
from stvsr_cli.pipeline.tiles import TiledModel, min_tile, plan_tiles, tile_overlap

CLIP = ROOT.parent / "shared/data/eval/toflow_examples__baseball_lowfps_input.mkv"
MODELS = ["classic", "stvun-gpu", "stvun-film", "stvun", "zsm-lite-cpu", "tpsr", "stinet", "davsr", "zsm"]
CONTEXTS = (8, 12, 16, 24, 32, 48)
TARGET_DB = 60.0  # crops with the chosen context; tiles, whose kept pixels see at least that much, then reach it too
CROP = 8  # input pixels a side of each measured crop
FRAME = (160, 240)  # the centre of the 320x180 input frames: CPU time, and still 4 tiles or more for contexts to 32


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = torch.mean((a.double() - b.double()) ** 2).item()
    return math.inf if mse == 0 else 10 * math.log10(1 / mse)


def window_frames(count: int, crop: tuple[int, int] | None) -> torch.Tensor:
    """``count`` input frames of the clip as the protocol makes them: ``[N, 3, h, w]`` in [0, 1]."""
    truth = read_clip(Clip(CLIP.stem, CLIP))[: 2 * count - 1 : 2]
    small = torch.from_numpy(np.stack(downscale(truth, 4))).permute(0, 3, 1, 2).float() / 255
    if crop is not None:
        h, w = crop
        top, left = (small.shape[2] - h) // 2, (small.shape[3] - w) // 2
        small = small[:, :, top : top + h, left : left + w]
    return small.contiguous()


def measure(name: str, contexts: tuple[int, ...]) -> dict:
    from precision import like_trained

    registry = load_registry()
    spec = registry.get(name)
    official = name == "zsm"
    if official:
        spec = dataclasses.replace(spec, weights=None)
    torch.manual_seed(0)
    model = load_model(spec, scale=4, device="cpu", random_weights=official)
    frames = window_frames(spec.window, FRAME)
    if official:
        like_trained(model.module, frames[None])
    fps_x = spec.fps_x[0] if spec.fps_x else 2
    began = time.perf_counter()
    whole = model(frames, fps_x)
    seconds = time.perf_counter() - began
    h, w = frames.shape[-2:]
    m = model.size_multiple
    centres = [(h * i // 3 - CROP // 2, w * j // 3 - CROP // 2) for i in (1, 2) for j in (1, 2)]
    crop_psnr = {}
    for c in contexts:
        worst = math.inf
        for cy, cx in centres:
            y0, x0 = max(0, (cy - c) // m * m), max(0, (cx - c) // m * m)
            y1, x1 = min(h, -(-(cy + CROP + c) // m) * m), min(w, -(-(cx + CROP + c) // m) * m)
            part = model(frames[:, :, y0:y1, x0:x1], fps_x)
            oy, ox = 4 * (cy - y0), 4 * (cx - x0)
            got = part[:, :, oy : oy + 4 * CROP, ox : ox + 4 * CROP]
            want = whole[:, :, 4 * cy : 4 * (cy + CROP), 4 * cx : 4 * (cx + CROP)]
            worst = min(worst, psnr(got, want))
        crop_psnr[c] = round(worst, 1)
    # The smallest context from which on every larger one reaches the target (the worst crop is noisy).
    reaching = [c for i, c in enumerate(contexts) if all(crop_psnr[d] >= TARGET_DB for d in contexts[i:])]
    context = reaching[0] if reaching else max(contexts)
    tile = min_tile(context, m)
    tiles = plan_tiles(h + -h % m, w + -w % m, tile, tile_overlap(context, m), m)
    tiled = TiledModel(model, tile, 4, context)(frames, fps_x)
    return {
        "model": name,
        "frames": list(frames.shape),
        "seconds_whole": round(seconds, 2),
        "crop_psnr": crop_psnr,
        "context": context,  # the smallest reaching the target (or the largest tried)
        "reaches_target": bool(reaching),
        "registered_context": spec.context,
        "exact_tiles": model.exact_tiles,
        "tile": tile,
        "tiles": len(tiles),
        "tiled_psnr": round(psnr(tiled, whole), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="*", default=MODELS)
    parser.add_argument("--contexts", default=",".join(map(str, CONTEXTS)))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(2)
    contexts = tuple(int(c) for c in args.contexts.split(","))
    rows = []
    for name in args.models:
        with torch.inference_mode():
            row = measure(name, contexts)
        rows.append(row)
        print(json.dumps(row), flush=True)
    if args.json:
        record = {"machine": f"{platform.machine()} CPU, {torch.get_num_threads()} threads", "torch": torch.__version__,
                  "target_db": TARGET_DB, "rows": rows}  # fmt: skip
        args.json.write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
