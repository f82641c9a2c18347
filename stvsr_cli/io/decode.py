"""Streaming video decoding with exact metadata.

``probe`` reads a file's video packets once (timestamps only, no decoding) so that the frame count
and the constant-rate grid are known before any work starts. ``VideoReader`` then decodes in a
background thread into a bounded queue and yields RGB frames on that grid; it never holds the video.
"""

from __future__ import annotations

import math
import queue
import threading
from array import array
from collections.abc import Callable, Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path
from typing import NamedTuple

import av
import numpy as np
from av.video.reformatter import Interpolation

from stvsr_cli.errors import InputError
from stvsr_cli.io.colour import Colour, bit_depth, plane_samples, rgb_format, stream_colour
from stvsr_cli.io.filters import FrameFilters, filtered
from stvsr_cli.io.timing import Timestamps, grid_length, is_variable_rate, nominal_rate, resample_to_grid

# AVFieldOrder values.
_FIELD_ORDERS = {1: "progressive", 2: "tt", 3: "bb", 4: "tb", 5: "bt"}
INTERLACED_FIELD_ORDERS = ("tt", "bb", "tb", "bt", "interlaced")

# Packets are demuxed in decode order; presentation order may lag by this much (B-frame reordering).
_REORDER_MARGIN = Fraction(2)

THUMBNAIL_WIDTH = 64  # luma thumbnails for scene detection: grain and compression noise average out


def thumbnail_size(width: int, height: int) -> tuple[int, int]:
    """The thumbnail size for a ``width`` x ``height`` frame: ``THUMBNAIL_WIDTH`` wide, same shape."""
    if width <= THUMBNAIL_WIDTH:
        return width, height
    return THUMBNAIL_WIDTH, max(1, round(height * THUMBNAIL_WIDTH / width))


class Thumbnail(NamedTuple):
    """What the scan keeps of a frame: a small ``[h, w]`` uint8 luma picture, and whether the whole
    frame is black-and-white (``frame_is_grey``)."""

    luma: np.ndarray
    grey: bool


# An 8-bit chroma sample this many levels from neutral still counts as grey: rounding in the encoding
# of a grey picture moves chroma by a level at most; a tinted or sepia film is several levels off.
CHROMA_TOLERANCE = 1
RGB_TOLERANCE = 3  # levels between the largest and the smallest channel, for RGB sources (about the same)


def frame_is_grey(frame: av.VideoFrame) -> bool:
    """Whether every pixel of a decoded frame is neutral: grey formats are; planar YUV when both
    chroma planes stay within ``CHROMA_TOLERANCE`` of neutral (read in place at full size, so that a
    small coloured object counts); any other format through RGB."""
    fmt = frame.format
    if fmt.name.startswith(("gray", "ya", "monob", "monow")):
        return True
    if fmt.name.startswith("yuv") and len(fmt.components) >= 3 and len(frame.planes) >= 3:
        bits = fmt.components[1].bits
        dtype = np.dtype("u1" if bits <= 8 else (">u2" if fmt.name.endswith("be") else "<u2"))
        neutral, tolerance = 1 << (bits - 1), CHROMA_TOLERANCE << max(0, bits - 8)
        for plane in frame.planes[1:3]:
            samples = plane_samples(plane, dtype)
            if int(samples.min()) < neutral - tolerance or int(samples.max()) > neutral + tolerance:
                return False
        return True
    rgb = frame.to_ndarray(format="rgb24")
    return int((rgb.max(axis=-1).astype(np.int16) - rgb.min(axis=-1)).max()) <= RGB_TOLERANCE


@dataclass(frozen=True)
class VideoInfo:
    """What the video stream of a file (or of the requested piece of it) is.

    Times are seconds as ``Fraction``. ``frame_count`` counts frames on the constant-rate grid the
    pipeline works on; it equals the stream's own frame count unless the frame rate is variable.
    """

    path: Path
    container: str
    codec: str
    width: int
    height: int
    frame_rate: Fraction
    time_base: Fraction
    start_time: Fraction  # presentation time of the first frame used
    frame_count: int
    source_frame_count: int  # frames in the stream (in the requested piece)
    variable_frame_rate: bool
    index_timing: bool  # the stream's timestamps are missing or broken: frames are timed by their index
    rotation: int  # degrees counter-clockwise, as the display matrix says
    sample_aspect_ratio: Fraction | None
    pix_fmt: str
    bit_depth: int
    colour: Colour
    field_order: str  # progressive, tt, bb, tb, bt, interlaced (order unknown) or unknown
    audio_streams: int
    subtitle_streams: int
    trim_start: Fraction | None  # absolute time the piece starts at, when --start/--duration are used
    trim_end: Fraction | None
    # Hard telecine undone (``pulldown_removed``): the frames are the film's own, 4 of every 5 of the
    # stream's, at 4/5 of its rate and timed by their index from ``start_time``.
    pulldown_removed: bool = False

    @property
    def duration(self) -> Fraction:
        return self.frame_count / self.frame_rate

    @property
    def interlaced(self) -> bool:
        """The stream says its frames are interlaced (its field order, or its first frame's flag)."""
        return self.field_order in INTERLACED_FIELD_ORDERS

    @property
    def timed_by_index(self) -> bool:
        """Frames are timed by their index on the grid, not by their timestamps."""
        return self.index_timing or self.pulldown_removed


def without_pulldown(info: VideoInfo) -> VideoInfo:
    """``info`` as the frames come out of ``FrameFilters(ivtc=True)``: decimation keeps 4 of every
    5 frames (all of a last, incomplete group of 5 but one), at 4/5 of the rate, progressive."""

    def kept(count: int) -> int:
        return count - count // 5

    return replace(
        info, frame_rate=info.frame_rate * Fraction(4, 5), frame_count=kept(info.frame_count),
        source_frame_count=kept(info.source_frame_count), field_order="progressive", pulldown_removed=True,
    )  # fmt: skip


def open_input(path: Path) -> av.container.InputContainer:
    """Open a media file, turning every failure into a one-line ``InputError``."""
    if not path.exists():
        raise InputError(f"input '{path}' not found")
    if path.is_dir():
        raise InputError(f"input '{path}' is a folder, not a video file")
    try:
        return av.open(str(path), "r")
    except PermissionError:
        raise InputError(f"cannot read '{path}': permission denied") from None
    except (av.FFmpegError, UnicodeDecodeError, ValueError) as exc:
        raise InputError(f"'{path}' is not a video file or is corrupt", _reason(exc)) from None


def video_stream(container: av.container.InputContainer, path: Path) -> av.video.stream.VideoStream:
    streams = [s for s in container.streams.video if not s.disposition & av.stream.Disposition.attached_pic]
    if not streams:
        kinds = sorted({s.type for s in container.streams})
        found = f"it has only {', '.join(kinds)} streams" if kinds else "it has no streams"
        raise InputError(f"'{path}' has no video stream", found)
    return streams[0]


def _reason(exc: BaseException) -> str:
    text = getattr(exc, "strerror", None) or str(exc)
    return text.split(":")[0].strip().lower() or type(exc).__name__


def _time(value: int | None, time_base: Fraction) -> Fraction | None:
    return None if value is None else value * time_base


def probe(
    path: Path | str, *, start: float | Fraction | None = None, duration: float | Fraction | None = None
) -> VideoInfo:
    """Read the metadata and every video packet's timestamp of ``path`` (or of the piece asked for).

    ``start``/``duration`` are seconds from the first frame.
    """
    path = Path(path)
    with open_input(path) as container:
        stream = video_stream(container, path)
        tb = Fraction(stream.time_base) if stream.time_base else Fraction(1, 90000)
        first = _time(stream.start_time, tb) or Fraction(0)
        trim_start = trim_end = None
        if start is not None or duration is not None:
            trim_start = first + Fraction(start or 0)
            trim_end = trim_start + Fraction(duration) if duration is not None else None
        times, index_timing, first_frame = _read_packets(container, stream, tb, trim_start, trim_end, path)
        rate = _frame_rate(stream, times)
        if not times:
            where = " in the requested piece (check --start/--duration)" if trim_start is not None else ""
            raise InputError(f"'{path}' has no video frames{where}")
        _check_complete(container, stream, times, rate, trim_end, path)
        if first_frame is None:
            raise InputError(f"'{path}' is corrupt: no video frame could be decoded")
        ctx = stream.codec_context
        pix_fmt = first_frame.format.name
        sar = ctx.sample_aspect_ratio
        info = VideoInfo(
            path=path,
            container=container.format.name,
            codec=ctx.name,
            width=first_frame.width,
            height=first_frame.height,
            frame_rate=rate,
            time_base=tb,
            start_time=times[0],
            frame_count=grid_length(times[0], times[-1], rate),
            source_frame_count=len(times),
            variable_frame_rate=is_variable_rate(times, rate),
            index_timing=index_timing,
            rotation=int(first_frame.rotation or 0),
            sample_aspect_ratio=Fraction(sar) if sar else None,
            pix_fmt=pix_fmt,
            bit_depth=bit_depth(pix_fmt),
            colour=stream_colour(
                pix_fmt,
                first_frame.width,
                first_frame.height,
                int(first_frame.color_primaries),
                int(first_frame.color_trc),
                int(first_frame.colorspace),
                int(first_frame.color_range),
            ),
            field_order=_field_order(ctx, first_frame),
            audio_streams=len(container.streams.audio),
            subtitle_streams=len(container.streams.subtitles),
            trim_start=trim_start,
            trim_end=trim_end,
        )
    return info


def can_seek_exactly(info: VideoInfo, filters: FrameFilters | bool) -> bool:
    """Whether a decode from a seek gives the same frames as one from the start (not where the
    ``filters`` look at neighbouring frames)."""
    return not (info.variable_frame_rate or info.timed_by_index or filters)


def _field_order(ctx, first_frame: av.VideoFrame) -> str:
    order = _FIELD_ORDERS.get(int(getattr(ctx, "field_order", 0) or 0), "unknown")
    if order == "unknown" and first_frame.interlaced_frame:
        return "interlaced"
    return order


def seek(container: av.container.InputContainer, stream: av.video.stream.VideoStream, time: Fraction | None) -> None:
    """Seek to the keyframe at or before ``time`` (seconds); the start when the format cannot seek."""
    if time is None:
        return
    try:
        container.seek(int(time / Fraction(stream.time_base)), stream=stream, backward=True)
    except av.FFmpegError:
        container.seek(0)


def _read_packets(
    container, stream, tb: Fraction, trim_start, trim_end, path: Path
) -> tuple[Timestamps, bool, av.VideoFrame | None]:
    """Every frame's presentation time, sorted, from the packets alone; whether those times had to be
    made up from the frame index; and the first frame, decoded for what only frames carry
    (rotation, colour tags, the real pixel format). Times are kept as integers: a feature film's
    hundred thousand frames take a megabyte."""
    seek(container, stream, trim_start)
    ticks = array("q")
    missing = 0
    first_frame = None
    stop_after = None if trim_end is None else math.floor((trim_end + _REORDER_MARGIN) / tb)
    try:
        for packet in container.demux(stream):
            if first_frame is None:
                first_frame = _decode_first(packet)
            if packet.size == 0 or packet.is_discard:
                continue
            tick = packet.pts if packet.pts is not None else packet.dts
            if tick is None:
                missing += 1
                continue
            if stop_after is not None and tick > stop_after:
                break
            ticks.append(tick)
    except av.FFmpegError as exc:
        raise InputError(f"'{path}' is corrupt: cannot read its packets", _reason(exc)) from None
    unique = np.unique(np.frombuffer(ticks, dtype=np.int64))  # sorted
    count = len(ticks) + missing
    index_timing = len(unique) < count * 0.9
    if index_timing:
        # Missing or repeated timestamps (raw elementary streams, broken muxers): space frames evenly.
        rate = Fraction(stream.guessed_rate or stream.average_rate or 25)
        start = int(unique[0]) * tb if len(unique) else Fraction(0)
        times = Timestamps(np.arange(count, dtype=np.int64), 1 / rate, start)
    else:
        times = Timestamps(unique, tb)
    if trim_start is not None:
        times = times.between(trim_start, trim_end)
    return times, index_timing, first_frame


def _decode_first(packet) -> av.VideoFrame | None:
    """Feed one packet to the decoder (the flush packet drains it); the first frame out, if any."""
    try:
        frames = packet.decode()
    except av.FFmpegError:
        return None  # e.g. the leading packets of a cut file, which reference frames it lacks
    return frames[0] if frames else None


# Containers whose indexes state exact frame counts and durations; others (MPEG-TS, AVI, raw streams)
# only estimate them, so a shortfall there proves nothing.
_EXACT_INDEX_FORMATS = ("mov", "mp4", "matroska", "webm")


def _declared_end(stream) -> tuple[Fraction, Fraction] | None:
    """When the stream's index says it ends, and how long it says it lasts."""
    tb = Fraction(stream.time_base)
    start = _time(stream.start_time, tb) or Fraction(0)
    if stream.duration:
        return start + stream.duration * tb, stream.duration * tb
    # Matroska writes the time the stream ends, measured from zero, as a DURATION tag; reading it as
    # an end time is also the lenient reading when some other muxer meant a length.
    tag = (stream.metadata or {}).get("DURATION")
    try:
        h, m, sec = tag.split(":")
        end = (int(h) * 60 + int(m)) * 60 + Fraction(sec)
    except (AttributeError, ValueError):
        return None
    return end, end - start


def _check_complete(container, stream, times: Sequence[Fraction], rate: Fraction, trim_end, path: Path) -> None:
    """Refuse a file whose packets stop well before what its own index declares (a cut-off copy)."""
    if not any(name in _EXACT_INDEX_FORMATS for name in container.format.name.split(",")):
        return
    found = f"{len(times)} frames, {float(times[-1] - times[0] + 1 / rate):.2f} s"
    if trim_end is None and stream.frames and len(times) < stream.frames:
        raise InputError(f"'{path}' is truncated: its index lists {stream.frames} frames, the file holds {found}")
    declared = _declared_end(stream)
    if stream.frames or declared is None:
        return  # a frame count, where there is one, was checked above; it is the exact measure
    end, length = declared
    expected_end = end if trim_end is None else min(end, trim_end)
    # Slack for a long-lasting last frame (variable frame rate) without missing a real cut.
    if times[-1] + 1 / rate < expected_end - max(3 / rate, length / 10):
        raise InputError(f"'{path}' is truncated: it declares {float(length):.2f} s, the file holds {found}")


def _frame_rate(stream: av.video.stream.VideoStream, times: Sequence[Fraction]) -> Fraction:
    """The average frame rate, falling back to the guessed rate, then to the timestamps; snapped to
    the standard rate it is a rounding of."""
    for rate in (stream.average_rate, stream.guessed_rate):
        if rate:
            return nominal_rate(Fraction(rate))
    if len(times) >= 2 and times[-1] > times[0]:
        return nominal_rate(Fraction(len(times) - 1) / (times[-1] - times[0]))
    return Fraction(25)


_END = object()


class VideoReader:
    """Decode ``info``'s frames in a background thread; yield them as RGB arrays on the frame grid.

    ``frames()`` yields exactly ``info.frame_count`` arrays ``[H, W, 3]`` (uint8, or uint16 for
    sources deeper than 8 bits); with ``thumbnails``, ``Thumbnail``s instead (for the scan: scene
    cuts, repeated frames, black-and-white shots). ``filters`` (``FrameFilters``) run on the decoded
    frames first: bwdif, or telecine undone. ``first_frame`` starts at that grid frame, seeking to
    the keyframe before it (a resumed run), for constant-rate, well-timed, progressive input only,
    where seeking gives the very frames a decode from the start would.
    Use as a context manager so the thread always stops.
    """

    def __init__(
        self, info: VideoInfo, *, filters: FrameFilters | None = None, thumbnails: bool = False,
        queue_size: int = 8, first_frame: int = 0, clock: Callable | None = None,
    ) -> None:  # fmt: skip
        filters = filters or FrameFilters()
        if first_frame and not can_seek_exactly(info, filters):
            raise ValueError("seeking to a frame needs constant-rate, well-timed, progressive input")
        if info.pulldown_removed != filters.ivtc:
            raise ValueError("frames timed without pulldown need FrameFilters(ivtc=True), and only they")
        self.info = info
        self.filters = filters
        self.thumbnails = thumbnails
        self.first_frame = first_frame
        self._timed = clock or nullcontext  # a StageClock: "decode", "to RGB"
        self._queue: queue.Queue = queue.Queue(maxsize=queue_size)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.warnings: list[str] = []

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            while self._thread.is_alive():
                try:  # unblock a producer waiting on a full queue
                    self._queue.get(timeout=0.05)
                except queue.Empty:
                    pass
            self._thread = None

    def frames(self) -> Iterator[np.ndarray]:
        info = self.info
        self._thread = threading.Thread(target=self._decode, name="stvsr-decode", daemon=True)
        self._thread.start()
        first = info.start_time + Fraction(self.first_frame) / info.frame_rate
        yield from resample_to_grid(self._decoded(), first, info.frame_rate, info.frame_count - self.first_frame)

    def _decoded(self) -> Iterator[tuple[Fraction, np.ndarray]]:
        count = 0
        while True:
            item = self._queue.get()
            if item is _END:
                break
            if isinstance(item, BaseException):
                raise item
            count += 1
            yield item
        if self.first_frame:
            return  # a part of the stream: the whole was checked when it was decoded from the start
        expected = self.info.source_frame_count
        missing = expected - count
        if missing > max(2, expected // 100):
            raise InputError(f"'{self.info.path}' is corrupt or truncated: decoded {count} of {expected} frames")
        if missing > 0:  # e.g. leading frames of a cut file that reference frames it lacks
            self.warnings.append(f"{missing} of {expected} frames could not be decoded; their neighbours stand in")

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _converter(self) -> Callable[[av.VideoFrame], np.ndarray]:
        info = self.info
        if self.thumbnails:
            width, height = thumbnail_size(info.width, info.height)
            return lambda frame: Thumbnail(
                frame.to_ndarray(width=width, height=height, format="gray", interpolation=Interpolation.AREA),
                frame_is_grey(frame),
            )
        fmt = rgb_format(info.bit_depth)
        args = info.colour.reformat_args(decoding=True)
        return lambda frame: frame.to_ndarray(format=fmt, **args)

    def _decode(self) -> None:
        info = self.info
        convert = self._converter()
        try:
            with open_input(info.path) as container:
                stream = video_stream(container, info.path)
                stream.thread_type = "AUTO"
                start = info.trim_start
                if self.first_frame:  # a little before the frame: the grid picks the nearest one
                    start = info.start_time + (Fraction(self.first_frame) - Fraction(1, 2)) / info.frame_rate
                seek(container, stream, start)
                previous: Fraction | None = None
                decoded = container.decode(stream)
                rate = Fraction(stream.average_rate or stream.guessed_rate or info.frame_rate)
                chain = self.filters.chain()
                frames = iter(filtered(decoded, chain, rate, info.time_base) if chain else decoded)
                while True:
                    with self._timed("decode"):
                        frame = next(frames, None)
                    if frame is None:
                        break
                    tb = Fraction(frame.time_base) if frame.time_base else info.time_base
                    time = None if info.timed_by_index else _time(frame.pts, tb)
                    if time is None:
                        time = info.start_time if previous is None else previous + 1 / info.frame_rate
                    previous = time
                    if time < info.start_time:
                        continue  # pre-roll from the seek
                    if info.trim_end is not None and time >= info.trim_end:
                        break
                    with self._timed("to RGB"):
                        array = convert(frame)
                    if not self._put((time, array)):
                        return
        except InputError as exc:
            self._put(exc)
            return
        except av.FFmpegError as exc:
            at = f" near {float(previous):.2f} s" if previous is not None else ""
            self._put(InputError(f"'{info.path}' is corrupt: decoding failed{at}", _reason(exc)))
            return
        except Exception as exc:  # surfaced in the consuming thread
            self._put(exc)
            return
        self._put(_END)
