"""Memory of a long run: does a feature-length film need RAM or disk in proportion to its length?

Makes a synthetic film (small frames, a scene cut every 30 s, AAC audio) of ``--minutes``, runs
``stvsr upscale`` on it as a child process and samples the child's resident memory twice a second.
Prints one Markdown row per film length; run it with two lengths to see whether memory grows:

    python benchmarks/long_film.py --minutes 2 --minutes 20
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

RATE = 24
AUDIO_RATE = 48000
SHOT_SECONDS = 30


def make_film(path: Path, minutes: float, width: int, height: int) -> int:
    """Write the film; return its frame count."""
    frames = int(minutes * 60 * RATE)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=RATE)
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        video.options = {"preset": "ultrafast"}
        audio = container.add_stream("aac", rate=AUDIO_RATE)
        audio.layout = "mono"
        samples_per_frame = AUDIO_RATE // RATE
        tone = (0.2 * np.sin(2 * np.pi * 440 * np.arange(AUDIO_RATE) / AUDIO_RATE)).astype(np.float32)
        audio_pts = 0
        for i in range(frames):
            shot = i // (SHOT_SECONDS * RATE)
            phase = i / 60 if shot % 2 == 0 else -i / 45  # slow motion, so that cuts stand out
            level = 128 + 50 * ((-1) ** shot)  # alternate dark and bright shots, so that each cut is plain
            base = level + 60 * np.sin(2 * np.pi * (x / (13 + 4 * (shot % 3)) + y / 29 + phase))
            rgb = np.stack([base, 255 - base, np.roll(base, shot, axis=1)], axis=-1).astype(np.uint8)
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts = i
            for packet in video.encode(frame):
                container.mux(packet)
            while audio_pts < (i + 1) * samples_per_frame:
                start = audio_pts % AUDIO_RATE
                chunk = np.roll(tone, -start)[:1024][None].copy()
                block = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="mono")
                block.sample_rate, block.pts, block.time_base = AUDIO_RATE, audio_pts, Fraction(1, AUDIO_RATE)
                for packet in audio.encode(block):
                    container.mux(packet)
                audio_pts += 1024
        for stream in (video, audio):
            for packet in stream.encode():
                container.mux(packet)
    return frames


def rss_kib(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def measure(film: Path, out: Path, args: list[str]) -> dict:
    command = [sys.executable, "-m", "stvsr_cli", "upscale", str(film), str(out), "--json", "-q", "-y", *args]
    began = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    samples: list[tuple[float, int]] = []
    while child.poll() is None:
        value = rss_kib(child.pid)
        if value:
            samples.append((time.perf_counter() - began, value))
        time.sleep(0.5)
    summary = json.loads(child.stdout.read().strip().splitlines()[-1])
    if child.returncode:
        raise SystemExit(f"stvsr failed: {summary}")
    wall = time.perf_counter() - began
    rss = [v for _, v in samples]
    quarters = [max(v for t, v in samples if t <= wall * q / 4) for q in (1, 2, 3, 4)]
    return {"seconds": wall, "peak_mib": max(rss) / 1024, "quarters_mib": [q / 1024 for q in quarters], **summary}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, action="append", required=True)
    parser.add_argument("--size", default="64x48")
    parser.add_argument("--container", default="mp4", help="Output extension (mp4 keeps its index in memory).")
    parser.add_argument("--work", type=Path, default=None, help="Folder for the films (default: a temporary one).")
    parser.add_argument("stvsr_args", nargs="*", default=["--model", "classic", "--scale", "2", "--fps-x", "2"])
    opts = parser.parse_args()
    width, height = (int(v) for v in opts.size.split("x"))
    work = opts.work or Path(tempfile.mkdtemp(prefix="stvsr-long-"))
    work.mkdir(parents=True, exist_ok=True)
    print("| film | frames in -> out | cuts found | wall time | peak RSS | RSS max by 1/4, 1/2, 3/4, end of the run | output size |")
    print("|---|---|---|---|---|---|---|")
    try:
        for minutes in opts.minutes:
            film = work / f"film-{minutes:g}min.mp4"
            if not film.exists():
                make_film(film, minutes, width, height)
            out = work / f"film-{minutes:g}min-out.{opts.container}"
            result = measure(film, out, opts.stvsr_args)
            quarters = ", ".join(f"{q:.0f}" for q in result["quarters_mib"])
            print(
                f"| {minutes:g} min {width}x{height} @ {RATE} fps -> .{opts.container} | {result['frames_in']} -> {result['frames_out']} "
                f"| {len(result['cuts'])} | {result['seconds']:.0f} s | {result['peak_mib']:.0f} MiB "
                f"| {quarters} MiB | {out.stat().st_size / 2**20:.1f} MiB |",
                flush=True,
            )
    finally:
        if opts.work is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
