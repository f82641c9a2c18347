"""Each shipped model on a real 480x368 film on this machine's CPU: speed and peak memory under a budget.

    python benchmarks/cpu_models.py [--seconds 0.25] [--max-memory 4G] [--json results.json] [MODEL ...]

Runs ``stvsr upscale FILM out.mkv --model M --duration S --max-memory B --device cpu`` once per model
in its own process and reads that process's peak resident memory from the kernel (``wait4``), so
each figure is the whole command's: decoding, model, encoding. The film is The Great Train Robbery
(1903) from ../shared/data/oldfilms, 480x368 at 16 fps: what issue 26 measured (tpsr there: 541 s and
17.4 GB without a budget).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import av

ROOT = Path(__file__).resolve().parent.parent
FILM = ROOT.parent / "shared/data/oldfilms/public_domain_1900s__the_great_train_robbery.mkv"
SHIPPED = ["classic", "stvun-gpu", "stvun-film", "stvun", "zsm-lite-cpu", "tpsr", "stinet", "davsr"]


def run_one(model: str, seconds: float, max_memory: str, out_dir: Path) -> dict:
    out = out_dir / f"{model}.mkv"
    command = [
        sys.executable, "-m", "stvsr_cli", "upscale", str(FILM), str(out), "--model", model, "--duration",
        str(seconds), "--max-memory", max_memory, "--device", "cpu", "--overwrite",
    ]  # fmt: skip
    began = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - began
    if os.waitstatus_to_exitcode(status) != 0:
        return {"model": model, "error": output.strip().splitlines()[-1] if output.strip() else "failed"}
    with av.open(str(out)) as container:
        frames = sum(1 for _ in container.decode(video=0))
    notes = [line.strip() for line in output.splitlines() if "tiles of" in line]
    return {
        "model": model,
        "output_frames": frames,
        "seconds": round(wall, 1),
        "output_frames_per_s": round(frames / wall, 3),
        "peak_rss_gib": round(usage.ru_maxrss / 2**20, 2),
        "tiling": notes[0] if notes else "whole frames",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", default=SHIPPED)
    parser.add_argument("--seconds", type=float, default=0.25, help="film seconds to upscale (16 fps)")
    parser.add_argument("--max-memory", default="4G")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for model in args.models:
            result = run_one(model, args.seconds, args.max_memory, Path(tmp))
            print(json.dumps(result), flush=True)
            results.append(result)
    record = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "film": FILM.name,
        "seconds": args.seconds,
        "max_memory": args.max_memory,
        "results": results,
    }
    if args.json:
        args.json.write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
