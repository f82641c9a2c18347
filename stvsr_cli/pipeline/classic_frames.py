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
  ``s`` in steps of 1/256 (at most half a level off the float blend, exact for s = 1/2);
- where the encoder takes planar YUV (``encode_as``), each upscaled frame is converted once, as the
  encoder would convert it, and the blends are made on its planes: half the samples of RGB, and the
  in-between frames need no conversion (the blend of converted frames is the converted blend, to a
  level of rounding).
"""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np

from stvsr_cli.io.colour import Colour, plane_samples
from stvsr_cli.io.decode import VideoInfo
from stvsr_cli.io.encode import Planes, rgb_template

WEIGHT_BITS = 8  # blend weights in steps of 1/256
Frame = np.ndarray | Planes  # RGB [H, W, 3], or the encoder's planes
PAD = 2  # input pixels repeated at each edge: bicubic reaches 2 pixels out
# Keys' cubic with a = -0.75 (PyTorch's bicubic) as swscale's (B, C) Mitchell-Netravali parameters.
SCALE_OPTIONS = "flags=bicubic+accurate_rnd:param0=0:param1=0.75"


class ClassicFrames:
    """A runner for ``run_windows`` that takes arrays ``[H, W, 3]`` (uint8 or uint16) and gives the
    same, or the encoder's planes after ``encode_as``: input frames upscaled ``scale`` times, output
    frames at any times between them. Each input frame is upscaled once, also where consecutive
    windows share it. It needs no PyTorch."""

    arbitrary_times = True

    def __init__(self, scale: int) -> None:
        self.scale = scale
        self.notes: list[str] = []  # the runner interface: warnings for the run (no tiles, no retries here)
        self._scaler: _Scaler | None = None
        self._planes: tuple[str, Colour, type[np.integer]] | None = None
        self._source: VideoInfo | None = None
        self._templates: dict[tuple[str, int, int], av.VideoFrame | None] = {}
        self._upscaled: dict[int, tuple[np.ndarray, Frame]] = {}  # id(input) -> (input, upscaled)

    def encode_as(self, pix_fmt: str, colour: Colour, source: VideoInfo | None = None) -> None:
        """Give frames as ``Planes`` of ``pix_fmt`` (planar YUV), converted from RGB in ``colour`` as
        ``FrameEncoder`` converts them: through a frame carrying ``source``'s tags (its chroma siting)."""
        depth = av.VideoFormat(pix_fmt).components[0].bits
        self._planes = (pix_fmt, colour, np.uint8 if depth <= 8 else np.uint16)
        self._source = source

    def frames_at(self, frames: list[np.ndarray], times: list[Fraction]) -> list[Frame]:
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
                outputs.append(blend_frames(upscaled[left], upscaled[right], weight))
        return outputs

    def _upscale(self, frame: np.ndarray) -> Frame:
        known = self._upscaled.get(id(frame))
        if known is not None and known[0] is frame:
            return known[1]
        if self._scaler is None or not self._scaler.fits(frame):
            self._scaler = _Scaler(frame.shape[1], frame.shape[0], frame.dtype, self.scale)
        picture = self._scaler(frame)
        if self._planes is None:
            return picture.to_ndarray()
        pix_fmt, colour, dtype = self._planes
        key = (picture.format.name, picture.width, picture.height)
        if key not in self._templates:
            self._templates[key] = rgb_template(self._source, *key[1:], key[0]) if self._source else None
        if (template := self._templates[key]) is not None:
            for into, plane in zip(template.planes, picture.planes, strict=True):
                plane_samples(into, frame.dtype)[:] = plane_samples(plane, frame.dtype)
            picture = template
        converted = picture.reformat(format=pix_fmt, **colour.reformat_args(decoding=False))
        return Planes(pix_fmt, tuple(plane_samples(plane, dtype) for plane in converted.planes))


def blend_frames(left: Frame, right: Frame, weight: int) -> Frame:
    """``blend_integer`` of two RGB frames, or plane by plane of two ``Planes``."""
    if isinstance(left, Planes):
        return Planes(left.pix_fmt, tuple(blend_integer(a, b, weight) for a, b in zip(left.arrays, right.arrays)))
    return blend_integer(left, right, weight)


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
        cut = PAD * scale  # the padding's output, cut off without a copy (the frame's pointers move)
        crop = self._graph.add("crop", f"{(width - 2 * PAD) * scale}:{(height - 2 * PAD) * scale}:{cut}:{cut}")
        self._sink = self._graph.add("buffersink")
        self._source.link_to(scaler)
        scaler.link_to(crop)
        crop.link_to(self._sink)
        self._graph.configure()
        self._pts = 0

    def fits(self, frame: np.ndarray) -> bool:
        return frame.shape[:2] == (self.height - 2 * PAD, self.width - 2 * PAD) and frame.dtype == self.dtype

    def __call__(self, frame: np.ndarray) -> av.VideoFrame:
        picture = av.VideoFrame.from_ndarray(np.pad(frame, ((PAD, PAD), (PAD, PAD), (0, 0)), mode="edge"), self.format)
        picture.pts, picture.time_base = self._pts, Fraction(1, 1)
        self._pts += 1
        self._source.push(picture)
        return self._sink.pull()
