"""A 24 -> 60 fps conversion, checked: frame count, timestamps, video and audio durations.

Re-times the example clip's frames to 24000/1001 fps (a film transfer) with a 440 Hz tone of the
same length, converts it with ``stvsr upscale --fps RATE``, and prints what a player would see.

    python benchmarks/rate_conversion.py --model stvun --fps 60
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "vtest_200x150.mp4"
FILM_RATE = Fraction(24000, 1001)


def make_film(path: Path, frames: int) -> None:
    with av.open(str(EXAMPLE)) as source:
        pictures = [f.to_ndarray(format="rgb24") for _, f in zip(range(frames), source.decode(video=0))]
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=FILM_RATE)
        video.width, video.height, video.pix_fmt = pictures[0].shape[1], pictures[0].shape[0], "yuv420p"
        video.codec_context.time_base = 1 / FILM_RATE
        audio = out.add_stream("aac", rate=48000)
        audio.layout = "mono"
        for i, picture in enumerate(pictures):
            frame = av.VideoFrame.from_ndarray(picture, format="rgb24")
            frame.pts, frame.time_base = i, 1 / FILM_RATE
            for packet in video.encode(frame):
                out.mux(packet)
        for packet in video.encode():
            out.mux(packet)
        samples = int(len(pictures) / FILM_RATE * 48000)
        tone = (0.2 * np.sin(2 * np.pi * 440 * np.arange(samples) / 48000)).astype(np.float32)[None]
        for start in range(0, samples, 1024):
            block = av.AudioFrame.from_ndarray(tone[:, start : start + 1024].copy(), format="fltp", layout="mono")
            block.sample_rate, block.pts, block.time_base = 48000, start, Fraction(1, 48000)
            for packet in audio.encode(block):
                out.mux(packet)
        for packet in audio.encode():
            out.mux(packet)


def facts(path: Path) -> dict:
    with av.open(str(path)) as container:
        video, audio = container.streams.video[0], container.streams.audio[0]
        times = [f.pts * Fraction(video.time_base) for f in container.decode(video)]
        container.seek(0)
        audio_end = Fraction(0)
        for packet in container.demux(audio):
            if packet.pts is not None and packet.size:
                audio_end = max(audio_end, (packet.pts + packet.duration) * Fraction(packet.time_base))
    step = times[1] - times[0]
    return {
        "frames": len(times),
        "first": float(times[0]),
        "last": float(times[-1]),
        "spacing_exact": all(abs(b - a - step) < Fraction(1, 10**6) for a, b in zip(times, times[1:])),
        "video_duration": float(times[-1] + step),
        "audio_end": float(audio_end),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="classic")
    parser.add_argument("--fps", default="60")
    parser.add_argument("--frames", type=int, default=48)
    opts = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        film, out = Path(tmp) / "film.mp4", Path(tmp) / "out.mp4"
        make_film(film, opts.frames)
        command = [sys.executable, "-m", "stvsr_cli", "upscale", str(film), str(out), "--model", opts.model,
                   "--fps", opts.fps, "--json", "-q"]  # fmt: skip
        result = json.loads(subprocess.run(command, capture_output=True, text=True, check=True).stdout)
        print(f"input:  {json.dumps(facts(film))}")
        print(f"output: {json.dumps(facts(out))}")
        print(f"stvsr:  frames {result['frames_in']} -> {result['frames_out']}, rate {result['rate_in']} -> "
              f"{result['rate_out']}, {result['seconds']:.1f} s")  # fmt: skip


if __name__ == "__main__":
    main()
