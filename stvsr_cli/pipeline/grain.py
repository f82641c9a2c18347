"""Film grain kept (``--grain keep``): measured on the input, added back to the model's output.

A network (and ``--denoise``) removes grain or smears it; a film without any looks plastic. So the
grain of each shot is measured on the input as decoded (before ``--denoise``): in the flattest
blocks of a few frames, the spread of what a 3x3 mean takes away, by brightness (film grain is
strongest in the mid-tones). After the model, every output frame gets new grain of that strength
at its own brightness: white noise drawn at the input's pixel size from a seed and the frame's
number (a resumed run draws the same), enlarged to the output's scale, one grain for all channels.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass

import av
import numpy as np

from stvsr_cli.io.encode import Planes
from stvsr_cli.pipeline.grey import LUMA_WEIGHTS

BINS = 8  # brightness bins of a strength curve
BLOCK = 16  # input pixels of a block whose flatness is judged
FLAT_SHARE = 0.2  # the flattest blocks measured
FRAMES_PER_SHOT = 6  # frames measured in each shot, evenly spread
SEED = 0
# A 3x3 mean of white noise keeps 1/9 of it: what it takes away has sqrt(8/9) of its spread.
_RESIDUAL_SPREAD = (8 / 9) ** 0.5
_LUMA = np.array(LUMA_WEIGHTS, dtype=np.float32)


@dataclass(frozen=True)
class GrainProfile:
    """The grain of one shot: its spread (8-bit levels, at the input's pixel size) at each of
    ``BINS`` brightness levels (bin centres, 0..1)."""

    levels: list[float]
    sigma: list[float]

    def at(self, brightness: np.ndarray) -> np.ndarray:
        return np.interp(brightness, self.levels, self.sigma).astype(np.float32)

    def as_dict(self) -> dict:
        return asdict(self)


def _box(picture: np.ndarray, size: int) -> np.ndarray:
    """Mean over ``size`` x ``size`` neighbourhoods (edges repeated), by cumulative sums."""
    pad = size // 2
    padded = np.pad(picture, ((pad, size - 1 - pad), (pad, size - 1 - pad)), mode="edge")
    total = padded.cumsum(axis=0).cumsum(axis=1)
    total = np.pad(total, ((1, 0), (1, 0)))
    h, w = picture.shape
    return (total[size:, size:] - total[:h, size:] - total[size:, :w] + total[:h, :w]) / (size * size)


def luma(frame: np.ndarray) -> np.ndarray:
    """BT.601 luma of an RGB frame ``[H, W, 3]``, in 8-bit levels (float)."""
    scale = 1.0 if frame.dtype == np.uint8 else 1 / 257
    return frame.astype(np.float32) @ (_LUMA * scale)


def measure_grain(lumas: Iterable[np.ndarray]) -> GrainProfile:
    """The grain in ``lumas`` (8-bit levels): in the flattest ``FLAT_SHARE`` of the flat ``BLOCK`` x
    ``BLOCK`` blocks of each brightness bin, the spread of the 3x3 high-pass; bins without a flat
    block take their neighbours' value."""
    by_bin: list[list[float]] = [[] for _ in range(BINS)]
    for y in lumas:
        h, w = (y.shape[0] // BLOCK) * BLOCK, (y.shape[1] // BLOCK) * BLOCK
        if h == 0 or w == 0:
            continue
        smooth = _box(y, 5)[:h, :w]
        residual = (y - _box(y, 3))[:h, :w]
        gy, gx = np.gradient(smooth)
        blocks = (h // BLOCK, BLOCK, w // BLOCK, BLOCK)
        energy = (gx**2 + gy**2).reshape(blocks).mean(axis=(1, 3)).ravel()
        spread = residual.reshape(blocks).std(axis=(1, 3)).ravel() / _RESIDUAL_SPREAD
        level = smooth.reshape(blocks).mean(axis=(1, 3)).ravel() / 255
        bins = np.minimum(BINS - 1, (level * BINS).astype(int))
        # Flat: the smoothed picture's slope small beside the block's own grain. White grain of spread s
        # leaves about s^2 / 125 after the 5x5 mean; real film grain is softer (scanned, compressed), so
        # its blocks are judged against each other too: the quarter with the least slope for their
        # grain. Edges and texture, whose slope is large, stay out either way.
        ratio = energy / np.maximum(spread**2, 1e-6)
        flat_enough = ratio <= max(1 / 25, float(np.percentile(ratio, 25)))
        for b in np.unique(bins[flat_enough]):  # the flattest of each brightness: grain is weaker in the dark
            members = np.flatnonzero((bins == b) & flat_enough)
            flat = members[np.argsort(energy[members])[: max(1, int(len(members) * FLAT_SHARE))]]
            by_bin[b].extend(float(v) for v in spread[flat])
    centres = [(b + 0.5) / BINS for b in range(BINS)]
    known = [(c, float(np.median(v))) for c, v in zip(centres, by_bin) if v]
    if not known:
        return GrainProfile(centres, [0.0] * BINS)
    sigma = np.interp(centres, [c for c, _ in known], [s for _, s in known])
    return GrainProfile(centres, [round(float(s), 3) for s in sigma])


def sampled(frame_count: int, cuts: Sequence[int], per_shot: int = FRAMES_PER_SHOT) -> dict[int, int]:
    """The frames to measure: ``per_shot`` evenly spread in each shot (split at ``cuts``), each
    mapped to its shot's first frame."""
    starts = [0, *sorted(c for c in cuts if 0 < c < frame_count)]
    stops = [*starts[1:], frame_count]
    chosen = {}
    for start, stop in zip(starts, stops):
        count = min(per_shot, stop - start)
        for k in range(count):
            chosen[start + (stop - start) * (2 * k + 1) // (2 * count)] = start
    return chosen


def grain_field(height: int, width: int, scale: int, index: int, seed: int = SEED) -> np.ndarray:
    """Unit-spread grain ``[height, width]`` for output frame ``index``: white noise drawn at the
    input's pixel size, enlarged ``scale`` times and softened over ``scale`` pixels."""
    rng = np.random.default_rng((seed, index))
    small = rng.standard_normal((-(-height // scale), -(-width // scale))).astype(np.float32)
    large = np.repeat(np.repeat(small, scale, axis=0), scale, axis=1)[:height, :width]
    if scale > 1:
        large = _box(large, scale)
    return (large / max(float(large.std()), 1e-6)).astype(np.float32)


def add_grain(frame: np.ndarray | Planes, profile: GrainProfile, scale: int, index: int) -> np.ndarray | Planes:
    """``frame`` (RGB, or the encoder's planes: on Y) with new grain of ``profile``'s strength."""
    if isinstance(frame, Planes):
        y, u, v = frame.arrays
        bits = av.VideoFormat(frame.pix_fmt).components[0].bits
        top = (1 << bits) - 1
        unit = 1 << (bits - 8)
        brightness = np.clip((y.astype(np.float32) / unit - 16) / 219, 0, 1)
        noise = profile.at(brightness) * grain_field(*y.shape, scale, index) * (219 / 255 * unit)
        grained = np.clip(np.rint(y + noise), 0, top).astype(y.dtype)
        return Planes(frame.pix_fmt, (grained, u, v))
    top = 255 if frame.dtype == np.uint8 else 65535
    unit = 1 if frame.dtype == np.uint8 else 257
    noise = profile.at(luma(frame) / 255) * grain_field(*frame.shape[:2], scale, index) * unit
    return np.clip(np.rint(frame + noise[..., None]), 0, top).astype(frame.dtype)


def grain_adder(
    profiles: dict[int, GrainProfile], *, scale: int, input_frame: Callable[[int], int], first_output: int = 0
) -> Callable[[np.ndarray | Planes], np.ndarray | Planes]:
    """A function that grains output frames in order from ``first_output`` on: each with its shot's
    profile (``profiles`` by the shot's first input frame; ``input_frame`` maps an output frame's
    number to the input frame it shows)."""
    starts = sorted(profiles)
    counter = [first_output]

    def grained(frame: np.ndarray | Planes) -> np.ndarray | Planes:
        index = counter[0]
        counter[0] += 1
        shot = starts[max(0, bisect_right(starts, input_frame(index)) - 1)]
        return add_grain(frame, profiles[shot], scale, index)

    return grained


def measure_shots(frames: Iterable[np.ndarray], frame_count: int, cuts: Sequence[int]) -> dict[int, GrainProfile]:
    """Each shot's grain (by its first frame), from the ``sampled`` frames of ``frames`` (RGB, in order)."""
    chosen = sampled(frame_count, cuts)
    lumas: dict[int, list[np.ndarray]] = {}
    for index, frame in enumerate(frames):
        if index in chosen:
            lumas.setdefault(chosen[index], []).append(luma(frame))
    return {shot: measure_grain(found) for shot, found in sorted(lumas.items())}
