"""``classic`` on the decoded frames themselves: FFmpeg's scaler in space, integer blending in time.

``models.classic.Classic`` is the reference (float32 tensors: what eval, compare and the GPU run).
On the CPU, float bicubic at the output size, the blends and the conversion back to 8 bits cost
several times the encoder's own work; this runner makes the same pixels (to rounding: PSNR above
60 dB against the reference) from uint8 or uint16 arrays, without a float copy of any output frame:

- swscale's bicubic with B = 0, C = 0.75 is the Keys kernel with a = -0.75, PyTorch's; on planar
  RGB (``gbrp``) nothing goes through YUV. Its edges differ from PyTorch's (up to 5 levels in the
  outer pixels), so the frame is scaled with ``PAD`` repeated pixels around it, PyTorch's edge rule,
  and the padding's output is cut off;
- output ``(1 - s) * up(i) + s * up(i + 1)`` is computed in integers on the rounded frames, with
  ``s`` in steps of 1/256 (at most half a level off the float blend, exact for s = 1/2).
"""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np

WEIGHT_BITS = 8  # blend weights in steps of 1/256
PAD = 2  # input pixels repeated at each edge: bicubic reaches 2 pixels out
# Keys' cubic with a = -0.75 (PyTorch's bicubic) as swscale's (B, C) Mitchell-Netravali parameters.
SCALE_OPTIONS = "flags=bicubic+accurate_rnd:param0=0:param1=0.75"


class ClassicFrames:
    """A runner for ``run_windows`` that takes and gives arrays ``[H, W, 3]`` (uint8 or uint16):
    input frames upscaled ``scale`` times, output frames at any times between them. Each input frame
    is upscaled once, also where consecutive windows share it. It needs no PyTorch."""

    arbitrary_times = True

    def __init__(self, scale: int) -> None:
        self.scale = scale
        self.notes: list[str] = []  # the runner interface: warnings for the run (no tiles, no retries here)
        self._scaler: _Scaler | None = None
        self._upscaled: dict[int, tuple[np.ndarray, np.ndarray]] = {}  # id(input) -> (input, upscaled)

    def frames_at(self, frames: list[np.ndarray], times: list[Fraction]) -> list[np.ndarray]:
        """The output frames at ``times`` (positions from 0 to ``len(frames) - 1``), in that order."""
        last = len(frames) - 1
        needed = {min(int(t), last) for t in times} | {min(int(t) + 1, last) for t in times if t != int(t)}
        upscaled = {i: self._upscale(frames[i]) for i in sorted(needed)}
        self._upscaled = {id(frames[i]): (frames[i], up) for i, up in upscaled.items()}  # for the next window
        outputs = []
        for t in times:
            left = min(int(t), last)
            right = min(left + 1, last)
            weight = round((t - left) * (1 << WEIGHT_BITS))
            if weight == 0 or left == right:
                outputs.append(upscaled[left])
            elif weight == 1 << WEIGHT_BITS:
                outputs.append(upscaled[right])
            else:
                outputs.append(blend_integer(upscaled[left], upscaled[right], weight))
        return outputs

    def _upscale(self, frame: np.ndarray) -> np.ndarray:
        known = self._upscaled.get(id(frame))
        if known is not None and known[0] is frame:
            return known[1]
        if self._scaler is None or not self._scaler.fits(frame):
            self._scaler = _Scaler(frame.shape[1], frame.shape[0], frame.dtype, self.scale)
        return self._scaler(frame)


def blend_integer(left: np.ndarray, right: np.ndarray, weight: int) -> np.ndarray:
    """``round(((256 - weight) * left + weight * right) / 256)`` in integers, of ``left``'s dtype."""
    wide = np.uint16 if left.dtype == np.uint8 else np.uint32
    total = left.astype(wide)
    total *= (1 << WEIGHT_BITS) - weight
    part = right.astype(wide)
    part *= weight
    total += part
    total += 1 << (WEIGHT_BITS - 1)
    total >>= WEIGHT_BITS
    return total.astype(left.dtype)


class _Scaler:
    """One FFmpeg ``scale`` filter for frames of one size and depth, ``PAD`` pixels added around them."""

    def __init__(self, width: int, height: int, dtype: np.dtype, scale: int) -> None:
        width, height = width + 2 * PAD, height + 2 * PAD
        self.width, self.height, self.dtype, self.scale = width, height, np.dtype(dtype), scale
        self.format = "gbrp" if self.dtype == np.uint8 else "gbrp16le"
        self._graph = av.filter.Graph()  # held: the filter contexts below live as long as the graph
        self._source = self._graph.add_buffer(
            width=width, height=height, format=av.VideoFormat(self.format), time_base=Fraction(1, 1)
        )
        scaler = self._graph.add("scale", f"{width * scale}:{height * scale}:{SCALE_OPTIONS}")
        self._sink = self._graph.add("buffersink")
        self._source.link_to(scaler)
        scaler.link_to(self._sink)
        self._graph.configure()
        self._pts = 0

    def fits(self, frame: np.ndarray) -> bool:
        return frame.shape[:2] == (self.height - 2 * PAD, self.width - 2 * PAD) and frame.dtype == self.dtype

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        picture = av.VideoFrame.from_ndarray(np.pad(frame, ((PAD, PAD), (PAD, PAD), (0, 0)), mode="edge"), self.format)
        picture.pts, picture.time_base = self._pts, Fraction(1, 1)
        self._pts += 1
        self._source.push(picture)
        out = self._sink.pull().to_ndarray()
        cut = PAD * self.scale
        return np.ascontiguousarray(out[cut:-cut, cut:-cut])
