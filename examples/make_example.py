"""Rebuild examples/vtest_200x150.mp4 from the OpenCV sample clip in ../shared/data/train/.

    python examples/make_example.py [SOURCE] [OUTPUT]

3 s (75 frames at 25 fps) of OpenCV's vtest sample (Apache-2.0), area-downscaled from 768x576 to
200x150, H.264 yuv420p, plus a synthesized 3 s AAC audio track (a soft chime on every second) so
that the demo shows the sound is kept.
"""

from __future__ import annotations

import sys
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

HERE = Path(__file__).resolve().parent
SOURCE = HERE.parent.parent / "shared" / "data" / "train" / "opencv_samples__vtest.mp4"
OUTPUT = HERE / "vtest_200x150.mp4"
FRAMES, RATE, SIZE = 75, Fraction(25), (200, 150)
SAMPLE_RATE = 48000


def chime(seconds: float) -> np.ndarray:
    """A decaying two-tone chime at the start of every second, quiet enough not to annoy."""
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    phase = t % 1.0
    note = np.where((t // 1.0) % 2 == 0, 660.0, 880.0)
    wave = 0.2 * np.exp(-4 * phase) * (np.sin(2 * np.pi * note * t) + 0.5 * np.sin(4 * np.pi * note * t))
    return wave.astype(np.float32)


def main(source: Path = SOURCE, output: Path = OUTPUT) -> None:
    with av.open(str(source)) as src, av.open(str(output), "w") as dst:
        video = dst.add_stream("libx264", rate=RATE)
        video.width, video.height, video.pix_fmt = *SIZE, "yuv420p"
        video.options = {"crf": "20", "preset": "slow"}
        audio = dst.add_stream("aac", rate=SAMPLE_RATE)
        audio.layout = "mono"
        for i, frame in enumerate(src.decode(video=0)):
            if i == FRAMES:
                break
            small = frame.reformat(width=SIZE[0], height=SIZE[1], format="yuv420p", interpolation="AREA")
            small.pts, small.time_base = i, 1 / RATE
            for packet in video.encode(small):
                dst.mux(packet)
        for packet in video.encode():
            dst.mux(packet)
        samples = chime(FRAMES / RATE)
        for start in range(0, len(samples), 1024):
            chunk = av.AudioFrame.from_ndarray(samples[None, start : start + 1024].copy(), format="fltp", layout="mono")
            chunk.sample_rate, chunk.pts, chunk.time_base = SAMPLE_RATE, start, Fraction(1, SAMPLE_RATE)
            for packet in audio.encode(chunk):
                dst.mux(packet)
        for packet in audio.encode():
            dst.mux(packet)
    print(f"wrote {output}")


if __name__ == "__main__":
    main(*(Path(a) for a in sys.argv[1:3]))
