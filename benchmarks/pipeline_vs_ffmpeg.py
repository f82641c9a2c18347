"""stvsr's classic mode against ffmpeg doing the same job: wall time, CPU time and peak memory, paired.

    python benchmarks/pipeline_vs_ffmpeg.py [--runs 3] [--json results.json]

Makes the clip of issue 27 once (100 frames of ../shared/data/train/davis2016_val__cows.mp4, bicubic
to 480x270, x264 CRF 18), then runs, alternately, ``--runs`` times each:

- stvsr: ``stvsr upscale cows270.mp4 st.mp4 --model classic --no-scene-detect --quiet``;
- ffmpeg: ``ffmpeg -i cows270.mp4 -vf scale=1920:1080:flags=bicubic,framerate=fps=50 -c:v libx264
  -crf 18 -preset medium -pix_fmt yuv420p ff.mp4``; where no ``ffmpeg`` program is installed (as on
  the development machine), the same filter graph and encoder through PyAV, which is the same
  libavfilter and libx264 in one process.

Each command runs in its own process; wall time, user + system CPU time and peak resident memory
come from the kernel (``wait4``). Prints the medians and the ratio stvsr / ffmpeg.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import av

ROOT = Path(__file__).resolve().parent.parent
COWS = ROOT.parent / "shared/data/train/davis2016_val__cows.mp4"
FRAMES = 100

# The ffmpeg command's work through PyAV, for machines without the ffmpeg program.
PYAV_FFMPEG = """
import sys, av
src, dst = sys.argv[1], sys.argv[2]
with av.open(src) as inp, av.open(dst, "w") as out:
    vin = inp.streams.video[0]
    vin.thread_type = "AUTO"
    graph = av.filter.Graph()
    head = graph.add_buffer(template=vin)
    scale = graph.add("scale", "1920:1080:flags=bicubic")
    rate = graph.add("framerate", "fps=50")
    sink = graph.add("buffersink")
    head.link_to(scale); scale.link_to(rate); rate.link_to(sink)
    graph.configure()
    vout = out.add_stream("libx264", rate=50)
    vout.width, vout.height, vout.pix_fmt = 1920, 1080, "yuv420p"
    vout.options = {"crf": "18", "preset": "medium"}
    def drain():
        while True:
            try:
                frame = graph.pull()
            except (av.BlockingIOError, av.EOFError):
                return
            frame.pict_type = av.video.frame.PictureType.NONE
            for packet in vout.encode(frame):
                out.mux(packet)
    for frame in inp.decode(vin):
        graph.push(frame)
        drain()
    graph.push(None)
    drain()
    for packet in vout.encode():
        out.mux(packet)
"""


def make_clip(dst: Path) -> None:
    """Issue 27's clip: 100 frames of cows, bicubic to 480x270, x264 CRF 18."""
    with av.open(str(COWS)) as inp, av.open(str(dst), "w") as out:
        vin = inp.streams.video[0]
        rate = Fraction(vin.average_rate or 25)
        vout = out.add_stream("libx264", rate=rate)
        vout.width, vout.height, vout.pix_fmt = 480, 270, "yuv420p"
        vout.options = {"crf": "18"}
        for i, frame in enumerate(inp.decode(vin)):
            if i == FRAMES:
                break
            small = frame.reformat(width=480, height=270, format="yuv420p", interpolation="BICUBIC")
            small.pts, small.time_base = i, 1 / rate
            for packet in vout.encode(small):
                out.mux(packet)
        for packet in vout.encode():
            out.mux(packet)


def run_measured(command: list[str]) -> dict:
    """Wall, CPU and peak memory of one command in its own process (``wait4``)."""
    began = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - began
    err = process.stderr.read().decode(errors="replace") if process.stderr else ""
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{' '.join(command)} failed: {err[-500:]}")
    return {
        "wall_s": round(wall, 2),
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
        "peak_mib": round(usage.ru_maxrss / 1024),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        clip = Path(tmp) / "cows270.mp4"
        make_clip(clip)
        stvsr = [sys.executable, "-m", "stvsr_cli", "upscale", str(clip), str(Path(tmp) / "st.mp4"), "--model",
                 "classic", "--no-scene-detect", "--quiet", "--overwrite"]  # fmt: skip
        if shutil.which("ffmpeg"):
            ffmpeg = ["ffmpeg", "-y", "-loglevel", "error", "-i", str(clip), "-vf",
                      "scale=1920:1080:flags=bicubic,framerate=fps=50", "-c:v", "libx264", "-crf", "18", "-preset",
                      "medium", "-pix_fmt", "yuv420p", str(Path(tmp) / "ff.mp4")]  # fmt: skip
            how = "ffmpeg program"
        else:
            ffmpeg = [sys.executable, "-c", PYAV_FFMPEG, str(clip), str(Path(tmp) / "ff.mp4")]
            how = "the ffmpeg command's filter graph and encoder through PyAV (no ffmpeg program here)"
        runs: dict[str, list[dict]] = {"stvsr": [], "ffmpeg": []}
        for i in range(args.runs):
            for name, command in (("stvsr", stvsr), ("ffmpeg", ffmpeg)):
                runs[name].append(run_measured(command))
                print(f"run {i + 1} {name}: {json.dumps(runs[name][-1])}", flush=True)
        for name in runs:  # both wrote 200 frames of 1920x1080?
            with av.open(str(Path(tmp) / ("st.mp4" if name == "stvsr" else "ff.mp4"))) as c:
                s = c.streams.video[0]
                frames = sum(1 for _ in c.decode(s))
                print(f"{name} output: {frames} frames of {s.width}x{s.height}")
    median = {
        name: {key: statistics.median(r[key] for r in results) for key in results[0]} for name, results in runs.items()
    }
    ratio = {key: round(median["stvsr"][key] / median["ffmpeg"][key], 2) for key in median["stvsr"]}
    record = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "ffmpeg_side": how,
        "runs": runs,
        "median": median,
        "ratio_stvsr_over_ffmpeg": ratio,
    }
    print(json.dumps({"median": median, "ratio": ratio}, indent=1))
    if args.json:
        args.json.write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
