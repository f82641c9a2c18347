"""FFmpeg's filters on the decoded frames, before anything else sees them.

``FrameFilters`` says which run, in this order: telecine undone (field matching, then bwdif on what
stays combed, then decimation) or bwdif deinterlacing; then deflicker; then denoising. They run in
FFmpeg's filter graph (the same filters as ``ffmpeg -vf``), on the decoded pictures themselves.
``filter_arrays`` runs the same chain on RGB arrays (evaluation and benchmarks).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from fractions import Fraction

import av
import av.filter
import numpy as np

# bwdif (w3fdif and yadif's successor): one frame out per frame in, so the frame rate is kept;
# the field order is read from each frame; every frame is deinterlaced, as asked.
DEINTERLACE_FILTER = ("bwdif", "mode=send_frame:parity=auto:deint=all")
IVTC_FILTERS = (
    ("fieldmatch", "order=auto:combmatch=full"),
    ("bwdif", "mode=send_frame:parity=auto:deint=interlaced"),
    ("decimate", ""),
)
DENOISE_LEVELS = ("off", "light", "medium", "strong")
# The denoiser at each level: FFmpeg's 3D FFT denoiser (each frame with its two neighbours), chosen by
# benchmarks/cleanup.py over atadenoise and nlmeans (hqdn3d is not in PyAV's FFmpeg).
DENOISE_FILTERS = {
    "light": ("fftdnoiz", "sigma=3:prev=1:next=1"),
    "medium": ("fftdnoiz", "sigma=6:prev=1:next=1"),
    "strong": ("fftdnoiz", "sigma=10:prev=1:next=1"),
}
# deflicker: each frame's mean brightness brought to the mean of its 5-frame neighbourhood. On fewer
# frames than that FFmpeg's filter darkens them all (it divides by the full window), so a clip that
# short is left alone.
DEFLICKER_FRAMES = 5
DEFLICKER_FILTER = ("deflicker", f"size={DEFLICKER_FRAMES}:mode=am")


@dataclass(frozen=True)
class FrameFilters:
    """Which filters run on the decoded frames.

    ``deinterlace``: bwdif, one progressive frame per interlaced one (the rate kept). ``ivtc``: hard
    telecine undone as FFmpeg undoes it: ``fieldmatch`` pairs each frame's fields with the
    neighbours' fields that belong to the same film frame, bwdif deinterlaces only what stays combed
    (a broken cadence at an edit), ``decimate`` drops the one duplicate in every 5 frames.
    ``deflicker`` evens out brightness pumping; ``denoise`` (``DENOISE_LEVELS``) removes grain and
    noise before a network can enlarge it."""

    deinterlace: bool = False
    ivtc: bool = False
    deflicker: bool = False
    denoise: str = "off"

    def chain(self) -> list[tuple[str, str]]:
        chain = list(IVTC_FILTERS) if self.ivtc else [DEINTERLACE_FILTER] if self.deinterlace else []
        if self.deflicker:
            chain.append(DEFLICKER_FILTER)
        if self.denoise != "off":
            chain.append(DENOISE_FILTERS[self.denoise])
        return chain

    def described(self) -> list[str]:
        """The chain as FFmpeg's ``-vf`` writes each filter: ``name=arguments`` (or the name alone)."""
        return [f"{name}={args}" if args else name for name, args in self.chain()]

    def __bool__(self) -> bool:
        return bool(self.chain())


def filtered(
    frames: Iterable[av.VideoFrame], chain: Sequence[tuple[str, str]], rate: Fraction, time_base: Fraction | None = None
) -> Iterator[av.VideoFrame]:
    """``frames`` through FFmpeg's filters ``chain`` (name, arguments), with their timestamps (in the
    last filter's time base). The buffer is told the frame ``rate``: decimate needs it."""
    graph = source = sink = None
    for frame in frames:
        if graph is None:
            graph = av.filter.Graph()
            source = graph.add(
                "buffer",
                f"video_size={frame.width}x{frame.height}:pix_fmt={frame.format.name}:"
                f"time_base={frame.time_base or time_base or 1 / rate}:frame_rate={rate}:pixel_aspect=1/1",
            )
            previous = source
            for name, args in chain:
                step = graph.add(name, args)
                previous.link_to(step)
                previous = step
            sink = graph.add("buffersink")
            previous.link_to(sink)
            graph.configure()
        source.push(frame)
        yield from _pull_all(sink)
    if source is not None:
        source.push(None)  # flush: the filters hold frames back
        yield from _pull_all(sink)


def _pull_all(sink) -> Iterator[av.VideoFrame]:
    while True:
        try:
            yield sink.pull()
        except (BlockingIOError, av.EOFError):
            return


def filter_arrays(
    frames: Sequence[np.ndarray], filters: FrameFilters, rate: Fraction = Fraction(25)
) -> list[np.ndarray]:
    """RGB arrays ``[H, W, 3]`` (uint8) through ``filters``' chain, as many out as in (for the
    filters that keep the frame count: deflicker and denoise). The filters see YUV (4:4:4, BT.601),
    as they see decoded video: deflicker and the denoisers treat luma and chroma apart."""
    if filters.ivtc:
        raise ValueError("filter_arrays keeps the frame count: no telecine removal")
    if len(frames) < DEFLICKER_FRAMES:
        filters = replace(filters, deflicker=False)
    if not filters:
        return list(frames)

    def pictures() -> Iterator[av.VideoFrame]:
        for i, array in enumerate(frames):
            picture = av.VideoFrame.from_ndarray(array, format="rgb24").reformat(format="yuv444p", **_BT601)
            picture.pts, picture.time_base = i, 1 / rate
            yield picture

    return [p.to_ndarray(format="rgb24", **_BT601) for p in filtered(pictures(), filters.chain(), rate)]


_BT601 = {"interpolation": "BICUBIC"}
