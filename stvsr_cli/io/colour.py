"""YUV <-> RGB conversion settings shared by the reader and the writer.

Both sides must use the same matrix and range, or colours shift. An untagged stream is read the way
players show it (BT.709 for HD sizes, BT.601 below) and the output is tagged with the matrix we
used, because a player would otherwise guess again from the new, larger size.
"""

from __future__ import annotations

from dataclasses import dataclass

import av
import numpy as np
from av.video.reformatter import ColorRange, Colorspace, Interpolation

# AVColorSpace values (libavutil/pixfmt.h) and the swscale matrix each one means.
AVCOL_SPC_BT709 = 1
AVCOL_SPC_UNSPECIFIED = 2
AVCOL_SPC_SMPTE170M = 6
_SWS_MATRIX = {
    1: Colorspace.ITU709,
    4: Colorspace.FCC,
    5: Colorspace.ITU601,
    6: Colorspace.SMPTE170M,
    7: Colorspace.SMPTE240M,
    9: Colorspace.BT2020,
    10: Colorspace.BT2020,
}
AVCOL_RANGE_UNSPECIFIED = 0
AVCOL_RANGE_MPEG = 1
AVCOL_RANGE_JPEG = 2

# Accurate rounding and full chroma interpolation keep a decode/encode round trip close to lossless.
CONVERSION_FLAGS = Interpolation.BICUBIC | Interpolation.ACCURATE_RND | Interpolation.FULL_CHR_H_INT


@dataclass(frozen=True)
class Colour:
    """Colour tags of a stream (FFmpeg enum values) and the matrix/range used to convert it."""

    primaries: int
    transfer: int
    matrix: int  # AVColorSpace actually used (never unspecified for YUV)
    range: int  # AVColorRange actually used
    is_rgb: bool  # the pixels are RGB already: no matrix involved

    def reformat_args(self, *, decoding: bool) -> dict:
        """Keyword arguments for ``VideoFrame.reformat``/``to_ndarray`` between RGB and this colour."""
        if self.is_rgb:
            return {"interpolation": CONVERSION_FLAGS}
        side = "src" if decoding else "dst"
        return {
            f"{side}_colorspace": _SWS_MATRIX.get(self.matrix, Colorspace.ITU601),
            f"{side}_color_range": ColorRange(self.range),
            "interpolation": CONVERSION_FLAGS,
        }


def stream_colour(
    pix_fmt: str, width: int, height: int, primaries: int, transfer: int, matrix: int, range_: int
) -> Colour:
    """Decide how to convert a stream with these tags; guess what players guess for untagged ones."""
    fmt = av.VideoFormat(pix_fmt)
    if fmt.is_rgb:
        return Colour(primaries, transfer, 0, AVCOL_RANGE_JPEG, True)
    if matrix not in _SWS_MATRIX:
        matrix = AVCOL_SPC_BT709 if (height >= 720 or width >= 1280) else AVCOL_SPC_SMPTE170M
    if range_ not in (AVCOL_RANGE_MPEG, AVCOL_RANGE_JPEG):
        range_ = AVCOL_RANGE_JPEG if pix_fmt.startswith("yuvj") else AVCOL_RANGE_MPEG
    return Colour(primaries, transfer, matrix, range_, False)


def bit_depth(pix_fmt: str) -> int:
    return max(c.bits for c in av.VideoFormat(pix_fmt).components)


def rgb_format(depth: int) -> str:
    """The packed RGB format frames travel in: 8 bits, or 16 bits for deeper sources."""
    return "rgb24" if depth <= 8 else "rgb48le"


def to_uint8(rgb: np.ndarray) -> np.ndarray:
    """8-bit RGB from 8- or 16-bit RGB (rounded)."""
    return rgb if rgb.dtype == np.uint8 else (rgb.astype(np.float64) / 257).round().astype(np.uint8)


def plane_samples(plane: av.video.plane.VideoPlane, dtype: np.dtype | type[np.integer]) -> np.ndarray:
    """A frame plane's samples as a ``[rows, columns]`` view, in place (its rows padded in memory);
    writable where the frame is."""
    return np.frombuffer(plane, dtype=dtype).reshape(plane.height, -1)[:, : plane.width]
