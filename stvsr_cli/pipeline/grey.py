"""Black-and-white in, black-and-white out, decided per shot.

A network trained on colour (or on films made grey at random, as ``--degradation film`` does) guesses
colour from a grey picture: a faint tint. So the frames of a shot whose every input frame is grey
become their luma in all three channels. The decision belongs to the shot, not to a model call: a
neutral tile of a colour film (a white wall, a black border) or one window of a fade must keep the
network's colour. The scan (``pipeline.source``) decides it from the decoded frames before the model
runs (``io.decode.frame_is_grey``); the run loop applies it to whole frames of the shots found grey.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING

import av
import numpy as np

from stvsr_cli.io.encode import Planes

if TYPE_CHECKING:
    import torch

    from stvsr_cli.pipeline.windows import Window

LUMA_WEIGHTS = (0.299, 0.587, 0.114)  # BT.601; on a near-grey picture the matrix changes Y by far under a level


def grey_shots(grey_frames: Sequence[bool], cuts: Iterable[int]) -> list[int]:
    """The first frames of the shots (split at ``cuts``) whose every frame is grey."""
    starts = [0, *sorted(c for c in cuts if 0 < c < len(grey_frames))]
    stops = [*starts[1:], len(grey_frames)]
    return [start for start, stop in zip(starts, stops) if stop > start and all(grey_frames[start:stop])]


def grey_windows(
    shots: Sequence[int], cuts: Sequence[int], original: Callable[[int], int] = int
) -> Callable[[Window], bool] | None:
    """Which windows lie in a grey shot: ``shots`` (first frames of grey shots) and ``cuts`` in the
    input's frame numbers; ``original`` maps a window's frame number to the input's (when repeated
    frames were dropped). None when no shot is grey."""
    if not shots:
        return None
    starts = [0, *sorted(cuts)]
    grey = set(shots)

    def is_grey(window: Window) -> bool:
        return starts[bisect_right(starts, original(window.start)) - 1] in grey

    return is_grey


def luma_tensor(frames: torch.Tensor) -> torch.Tensor:
    """``[..., 3, H, W]`` -> the same shape, each pixel's BT.601 luma in all three channels."""
    import torch

    weights = torch.tensor(LUMA_WEIGHTS, dtype=frames.dtype, device=frames.device).view(3, 1, 1)
    return (frames * weights).sum(dim=-3, keepdim=True).expand_as(frames).contiguous()


def grey_frame(frame: np.ndarray | Planes) -> np.ndarray | Planes:
    """A frame made black-and-white: RGB as ``luma_array``; the encoder's planes keep their Y and get
    neutral chroma (the middle of the range: what swscale makes of R = G = B)."""
    if not isinstance(frame, Planes):
        return luma_array(frame)
    y, u, _ = frame.arrays
    neutral = np.full_like(u, 1 << (av.VideoFormat(frame.pix_fmt).components[0].bits - 1))
    return Planes(frame.pix_fmt, (y, neutral, neutral))


def luma_array(frame: np.ndarray) -> np.ndarray:
    """``[H, W, 3]`` uint8 or uint16 -> the same, each pixel's BT.601 luma (rounded) in all channels."""
    weights = np.array([299, 587, 114], dtype=np.int64)
    luma = (frame.astype(np.int64) @ weights + 500) // 1000
    return np.repeat(luma.astype(frame.dtype)[..., None], 3, axis=-1)
