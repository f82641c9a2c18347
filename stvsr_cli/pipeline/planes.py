"""RGB output frames to the encoder's YUV planes on the model's device.

On a GPU the model's float RGB frames would otherwise come back at 3 bytes a pixel (6 for 10-bit),
to be converted by swscale on a CPU core; converted where they are, only the encoder's planes come
back: 1.5 bytes a pixel for yuv420p. The conversion follows the one the RGB path gets from swscale
(same matrix, range and rounding; chroma sited as H.264 and HEVC site it, see ``PlaneLayout``),
so both give the same picture to within a level. PyTorch is imported where tensors are made.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from stvsr_cli.io.colour import AVCOL_RANGE_JPEG, Colour
from stvsr_cli.io.encode import Planes

if TYPE_CHECKING:
    import torch

# Kr, Kb of each AVColorSpace (libavutil/csp.c); unknown ones were resolved by ``stream_colour``.
_LUMA_COEFFICIENTS = {
    1: (0.2126, 0.0722),  # BT.709
    4: (0.30, 0.11),  # FCC
    5: (0.299, 0.114),  # BT.470BG
    6: (0.299, 0.114),  # SMPTE 170M (BT.601)
    7: (0.212, 0.087),  # SMPTE 240M
    9: (0.2627, 0.0593),  # BT.2020 non-constant luminance
    10: (0.2627, 0.0593),
}
_PLANAR_YUV = re.compile(r"^yuv(j?)4(20|22|44)p(?:(9|10|12|14|16)le)?$")


@dataclass(frozen=True)
class PlaneLayout:
    """The planes of one output frame: ``pix_fmt`` (planar YUV, little-endian), its size, depth and
    chroma subsampling, and the matrix and range they are converted with.

    Chroma of subsampled formats is sited the way MPEG-2, H.264 and HEVC site 4:2:0 by default
    ("left"): horizontally on the even luma columns (a 1-2-1 filter), vertically between two rows
    (their mean); 4:2:2 the same horizontally. That is where the decoder puts it back."""

    pix_fmt: str
    width: int
    height: int
    bits: int
    chroma_x_shift: int
    chroma_y_shift: int
    kr: float
    kb: float
    full_range: bool

    @property
    def chroma_size(self) -> tuple[int, int]:
        """(width, height) of each chroma plane."""
        return -(-self.width >> self.chroma_x_shift), -(-self.height >> self.chroma_y_shift)

    @property
    def bytes_per_sample(self) -> int:
        return 1 if self.bits == 8 else 2

    @property
    def plane_shapes(self) -> list[tuple[int, int]]:
        """(rows, columns) of Y, U and V."""
        cw, ch = self.chroma_size
        return [(self.height, self.width), (ch, cw), (ch, cw)]

    @property
    def frame_bytes(self) -> int:
        return sum(h * w for h, w in self.plane_shapes) * self.bytes_per_sample


def plane_layout(pix_fmt: str, colour: Colour, width: int, height: int) -> PlaneLayout | None:
    """The layout for frames the encoder takes as ``pix_fmt`` in ``colour``, or None where the
    conversion stays with swscale (RGB, grey, packed, big-endian or semi-planar formats)."""
    match = _PLANAR_YUV.match(pix_fmt)
    if match is None or colour.is_rgb or colour.matrix not in _LUMA_COEFFICIENTS:
        return None
    jpeg, chroma, depth = match.groups()
    kr, kb = _LUMA_COEFFICIENTS[colour.matrix]
    return PlaneLayout(
        pix_fmt=pix_fmt, width=width, height=height, bits=int(depth or 8),
        chroma_x_shift=0 if chroma == "44" else 1, chroma_y_shift=1 if chroma == "20" else 0,
        kr=kr, kb=kb, full_range=bool(jpeg) or colour.range == AVCOL_RANGE_JPEG,
    )  # fmt: skip


def rgb_to_planes(frames: torch.Tensor, layout: PlaneLayout) -> torch.Tensor:
    """``[M, 3, H, W]`` RGB in [0, 1] -> ``[M, layout.frame_bytes]`` uint8: each frame's Y, U and V
    samples one after the other (16-bit samples as little-endian byte pairs), rounded to nearest."""
    import torch

    rgb = frames.float()
    r, g, b = rgb[:, 0], rgb[:, 1], rgb[:, 2]
    kr, kb = layout.kr, layout.kb
    luma = kr * r + (1 - kr - kb) * g + kb * b
    # Chroma from the subsampled colour difference: linear, so subsampling before or after the
    # matrix is the same, and doing it once on B - Y and R - Y halves the filtering.
    cb = (b - luma) / (2 * (1 - kb))
    cr = (r - luma) / (2 * (1 - kr))
    chroma = torch.stack([cb, cr], dim=1)
    if layout.chroma_x_shift:
        chroma = _halve(chroma, -1, _COSITED_TAPS)
    if layout.chroma_y_shift:
        chroma = _halve(chroma, -2, _BETWEEN_TAPS)
    unit = 1 << (layout.bits - 8)
    top = (1 << layout.bits) - 1
    if layout.full_range:
        y = luma * top
        c = chroma * top + top / 2  # swscale's zero (127.5 for 8 bits, not H.273's 128): as the RGB path
    else:
        y = luma * (219 * unit) + 16 * unit
        c = chroma * (224 * unit) + 128 * unit
    y = y.round_().clamp_(0, top)
    c = c.round_().clamp_(0, top)
    m = frames.shape[0]
    if layout.bits == 8:
        return torch.cat([y.to(torch.uint8).reshape(m, -1), c.to(torch.uint8).reshape(m, -1)], dim=1)
    # uint16 samples as int16 with the same bits, read as bytes (CUDA and x86 are little-endian).
    y16 = _as_int16(y).reshape(m, -1)
    c16 = _as_int16(c).reshape(m, -1)
    return torch.cat([y16, c16], dim=1).view(torch.uint8)


# Halving filters: the bicubic (a = -0.5) kernel stretched to twice its width, as swscale and
# PyTorch's antialiased resize make it; taps at offsets from sample 2i (co-sited) or from 2i + 0.5.
_COSITED_TAPS = ((-3, -1 / 32), (-1, 9 / 32), (0, 1 / 2), (1, 9 / 32), (3, -1 / 32))
_BETWEEN_TAPS = tuple(
    (offset, weight / 256)
    for offset, weight in ((-3, -3), (-2, -9), (-1, 29), (0, 111), (1, 111), (2, 29), (3, -9), (4, -3))
)


def _halve(planes: torch.Tensor, dim: int, taps: tuple[tuple[int, float], ...]) -> torch.Tensor:
    """Every second sample along ``dim`` (-1 or -2) of ``taps``' filter, edges repeated; an odd
    length keeps its last sample's place."""
    import torch.nn.functional as F

    reach = max(abs(o) for o, _ in taps)
    length = planes.shape[dim]
    pad = (reach, reach + 1, 0, 0) if dim == -1 else (0, 0, reach, reach + 1)
    padded = F.pad(planes, pad, mode="replicate")
    count = -(-length // 2)
    out = None
    for offset, weight in taps:
        start = reach + offset
        part = padded.narrow(dim, start, 2 * count - 1)
        part = part[..., ::2] if dim == -1 else part[..., ::2, :]
        out = part * weight if out is None else out + part * weight
    return out


def _as_int16(values: torch.Tensor) -> torch.Tensor:
    import torch

    whole = values.to(torch.int32)
    return torch.where(whole > 32767, whole - 65536, whole).to(torch.int16)


def split_planes(packed: np.ndarray, layout: PlaneLayout) -> list[Planes]:
    """``rgb_to_planes``'s bytes, copied to the host, as one ``Planes`` per frame (views, no copy)."""
    dtype = np.uint8 if layout.bits == 8 else np.dtype("<u2")
    samples = packed.view(dtype)
    shapes = layout.plane_shapes
    sizes = [h * w for h, w in shapes]
    frames = []
    for row in samples:
        y = row[: sizes[0]].reshape(shapes[0])
        u = row[sizes[0] : sizes[0] + sizes[1]].reshape(shapes[1])
        v = row[sizes[0] + sizes[1] :].reshape(shapes[2])
        frames.append(Planes(layout.pix_fmt, (y, u, v)))
    return frames
