"""stvsr's classic mode against ffmpeg doing the same job: wall time, CPU time and peak memory, paired.

    python benchmarks/pipeline_vs_ffmpeg.py [--runs 3] [--json results.json]

Makes a clip once (100 frames of ../shared/data/train/davis2016_val__cows.mp4, bicubic to 480x270,
x264 CRF 18), then runs, alternately, ``--runs`` times each:

- stvsr: ``stvsr upscale cows270.mp4 st.mp4 --model classic --no-scene-detect --quiet``;
- ffmpeg: ``ffmpeg -i cows270.mp4 -vf scale=1920:1080:flags=bicubic,framerate=fps=50 -c:v libx264
  -crf 18 -preset medium -pix_fmt yuv420p ff.mp4``: the ``ffmpeg`` program where one is installed
  (``apt-get install ffmpeg``); else the same filter graph and encoder through PyAV, which is the
  same libavfilter and libx264 in one process. The record says which (``ffmpeg_side``).

Each command runs in its own process; wall time, user + system CPU time and peak resident memory
come from the kernel (``wait4``). Prints the medians and the ratio stvsr / ffmpeg. Then checks that
the frames of classic's array path (what upscale runs on the CPU) are the float32 tensor model's to
rounding (PSNR), and its YUV planes the encoder's conversion of those frames (largest difference in
levels), profiles classic's stages, and measures a learned model's run on the first frames: the
share of its wall time spent outside the model (``--learned stvun --learned-frames 8``).
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
    """The clip: 100 frames of cows, bicubic to 480x270, x264 CRF 18."""
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


# A learned model's run, in its own process: the wall time of ``upscale`` and the time inside the
# model's calls (``Upscaler.__call__``: the network, and its input's conversion to float).
LEARNED_RUN = """
import json, sys, time
from stvsr_cli.api import upscale
from stvsr_cli.models.loader import Upscaler
inside = [0.0]
call = Upscaler.__call__
def timed(self, *args, **kwargs):
    began = time.perf_counter()
    try:
        return call(self, *args, **kwargs)
    finally:
        inside[0] += time.perf_counter() - began
Upscaler.__call__ = timed
began = time.perf_counter()
upscale(sys.argv[1], sys.argv[2], model=sys.argv[3], device="cpu", scene_detect=False, overwrite=True)
print(json.dumps({"wall_s": time.perf_counter() - began, "model_s": inside[0]}))
"""


def frames_check(clip: Path, frames: int) -> dict:
    """The array path's frames against the float32 tensor model's, on the clip's first ``frames``
    frames (decoded as upscale decodes them): PSNR over all channels, min and mean over frames; and
    its YUV planes against the encoder's conversion of its RGB frames."""
    import numpy as np

    from stvsr_cli.io.colour import stream_colour
    from stvsr_cli.io.decode import VideoReader, probe
    from stvsr_cli.models.loader import load_model
    from stvsr_cli.models.registry import load_registry
    from stvsr_cli.pipeline.classic_frames import ClassicFrames
    from stvsr_cli.pipeline.run import run_windows
    from stvsr_cli.pipeline.windows import plan_windows

    info = probe(clip)
    with VideoReader(info) as reader:
        decoded = [f for _, f in zip(range(frames), reader.frames())]
    spec = load_registry().get("classic")
    plan = plan_windows(len(decoded), spec.window, spec.overlap, 2)
    after: list = []
    before: list = []
    run_windows(decoded, plan, ClassicFrames(4), after.append)
    run_windows(decoded, plan, load_model(spec, scale=4, device="cpu"), before.append)
    psnrs = []
    for a, b in zip(after, before, strict=True):
        mse = float(np.mean((a.astype(np.float64) - b) ** 2))
        psnrs.append(99.0 if mse == 0 else 10 * np.log10(255**2 / mse))
    # The same frames as the encoder's planes (what upscale hands an x264 encoder), against the
    # encoder's own conversion of the RGB frames.
    pix_fmt, colour = "yuv420p", stream_colour("yuv420p", 1920, 1080, 1, 1, 1, 1)
    runner = ClassicFrames(4)
    runner.encode_as(pix_fmt, colour)
    planes: list = []
    run_windows(decoded, plan, runner, planes.append)
    worst = 0
    for p, rgb in zip(planes, after, strict=True):
        converted = av.VideoFrame.from_ndarray(rgb, "rgb24").reformat(format=pix_fmt, **colour.reformat_args(decoding=False))
        for got, plane in zip(p.arrays, converted.planes, strict=True):
            want = np.frombuffer(plane, np.uint8).reshape(plane.height, -1)[:, : plane.width]
            worst = max(worst, int(np.abs(got.astype(np.int64) - want).max()))
    return {
        "frames": len(after), "psnr_min_db": round(min(psnrs), 2), "psnr_mean_db": round(statistics.mean(psnrs), 2),
        "planes_vs_encoder_conversion_max_levels": worst,
    }  # fmt: skip


def learned_share(clip: Path, model: str, frames: int, tmp: Path) -> dict:
    """``upscale`` with a learned model on the clip's first ``frames`` frames: wall time, time in the
    model, and the pipeline's share (the time outside the model's calls)."""
    short = tmp / "short.mp4"
    with av.open(str(clip)) as inp, av.open(str(short), "w") as out:
        vin = inp.streams.video[0]
        vout = out.add_stream_from_template(vin)
        for packet in inp.demux(vin):
            if packet.dts is None:
                continue
            if packet.pts is not None and packet.pts * packet.time_base >= frames / vin.average_rate:
                break
            packet.stream = vout
            out.mux(packet)
    done = subprocess.run(
        [sys.executable, "-c", LEARNED_RUN, str(short), str(tmp / "learned.mp4"), model],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["pipeline_share"] = round(1 - result["model_s"] / result["wall_s"], 3)
    return {"model": model, "frames": frames, **{k: round(v, 3) for k, v in result.items()}}


# Stages of a classic run, by the functions that do them (cProfile's cumulative time, main thread).
STAGES = {
    "scan for cuts, repeated frames and grey shots (thumbnails)": "scan_once",
    "waiting for decoded frames (decoder thread)": "_decoded",
    "upscale (swscale)": "__call__ of _Scaler",
    "RGB to the encoder's YUV (upscaled frames only)": "_upscale of ClassicFrames",
    "blend (on the YUV planes)": "blend_frames",
    "encode (x264, and copying the planes in)": "encode of FrameEncoder",
    "join segments, copy audio": "join_segments",
}
SUBTRACTED = {"RGB to the encoder's YUV (upscaled frames only)": "upscale (swscale)"}  # cumulative times nest


def stage_profile(clip: Path, tmp: Path) -> dict:
    """cProfile of ``upscale(model="classic", pipelined=False)`` (encoding in the main thread):
    seconds per stage (``STAGES``) and in all."""
    import cProfile
    import pstats

    from stvsr_cli.api import upscale

    profiler = cProfile.Profile()
    began = time.perf_counter()
    profiler.runcall(
        upscale, clip, tmp / "profiled.mp4", model="classic", scene_detect=False, pipelined=False, overwrite=True
    )
    total = time.perf_counter() - began
    stats = pstats.Stats(profiler).stats  # (file, line, name) -> (calls, recursive calls, tottime, cumtime, callers)
    stages = {}
    for stage, wanted in STAGES.items():
        name, _, owner = wanted.partition(" of ")
        seconds = 0.0
        for (file, _line, function), (_, _, _, cumulative, _) in stats.items():
            named = function == name or function.startswith(f"<method '{name}' ")  # ours, or PyAV's
            if named and (not owner or _defines(file, owner)):
                seconds = max(seconds, cumulative)
        stages[stage] = round(seconds, 2)
    for stage, inner in SUBTRACTED.items():
        stages[stage] = round(stages[stage] - stages[inner], 2)
    stages["total"] = round(total, 2)
    return stages


def _defines(file: str, owner: str) -> bool:
    """Whether source ``file`` defines class ``owner`` (cProfile names functions, not classes)."""
    try:
        return f"class {owner}" in Path(file).read_text()
    except OSError:
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--check-frames", type=int, default=24, help="frames compared with the tensor model")
    parser.add_argument("--learned", default="stvun", help="a learned model whose pipeline share is measured")
    parser.add_argument("--learned-frames", type=int, default=8)
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
            how = "the ffmpeg command's filter graph and encoder through PyAV (no ffmpeg program installed)"
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
        check = frames_check(clip, args.check_frames)
        print(f"array path against the tensor model: {json.dumps(check)}", flush=True)
        stages = stage_profile(clip, Path(tmp))
        print(f"classic's stages: {json.dumps(stages)}", flush=True)
        learned = learned_share(clip, args.learned, args.learned_frames, Path(tmp)) if args.learned_frames else None
        print(f"learned model: {json.dumps(learned)}", flush=True)
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
        "classic_frames_vs_tensor_model": check,
        "classic_stages_s": stages,
        "learned_model": learned,
    }
    print(json.dumps({"median": median, "ratio": ratio}, indent=1))
    if args.json:
        args.json.write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
