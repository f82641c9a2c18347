"""Streaming video decoding with exact metadata.

``probe`` reads a file's video packets once (timestamps only, no decoding) so that the frame count
and the constant-rate grid are known before any work starts. ``VideoReader`` then decodes in a
background thread into a bounded queue and yields RGB frames on that grid; it never holds the video.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from stvsr_cli.errors import InputError
from stvsr_cli.io.colour import Colour, bit_depth, rgb_format, stream_colour
from stvsr_cli.pipeline.timing import grid_length, is_variable_rate, nominal_rate, resample_to_grid

# AVFieldOrder values.
_FIELD_ORDERS = {1: "progressive", 2: "tt", 3: "bb", 4: "tb", 5: "bt"}

# Packets are demuxed in decode order; presentation order may lag by this much (B-frame reordering).
_REORDER_MARGIN = Fraction(2)


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
    field_order: str  # progressive, tt, bb, tb, bt (interlaced, top/bottom field first) or unknown
    audio_streams: int
    subtitle_streams: int
    trim_start: Fraction | None  # absolute time the piece starts at, when --start/--duration are used
    trim_end: Fraction | None

    @property
    def duration(self) -> Fraction:
        return self.frame_count / self.frame_rate


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
            field_order=_FIELD_ORDERS.get(int(getattr(ctx, "field_order", 0) or 0), "unknown"),
            audio_streams=len(container.streams.audio),
            subtitle_streams=len(container.streams.subtitles),
            trim_start=trim_start,
            trim_end=trim_end,
        )
    return info


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
) -> tuple[list[Fraction], bool, av.VideoFrame | None]:
    """Every frame's presentation time, sorted, from the packets alone; whether those times had to be
    made up from the frame index; and the first frame, decoded for what only frames carry
    (rotation, colour tags, the real pixel format)."""
    seek(container, stream, trim_start)
    times: list[Fraction] = []
    missing = 0
    first_frame = None
    try:
        for packet in container.demux(stream):
            if first_frame is None:
                first_frame = _decode_first(packet)
            if packet.size == 0 or packet.is_discard:
                continue
            time = _time(packet.pts if packet.pts is not None else packet.dts, tb)
            if time is None:
                missing += 1
                continue
            if trim_end is not None and time > trim_end + _REORDER_MARGIN:
                break
            times.append(time)
    except av.FFmpegError as exc:
        raise InputError(f"'{path}' is corrupt: cannot read its packets", _reason(exc)) from None
    count = len(times) + missing
    index_timing = len(set(times)) < count * 0.9
    if index_timing:
        # Missing or repeated timestamps (raw elementary streams, broken muxers): space frames evenly.
        rate = Fraction(stream.guessed_rate or stream.average_rate or 25)
        start = min(times) if times else Fraction(0)
        times = [start + Fraction(i) / rate for i in range(count)]
    times = sorted(set(times))
    if trim_start is not None:
        times = [t for t in times if t >= trim_start and (trim_end is None or t < trim_end)]
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


def _declared_duration(stream) -> Fraction | None:
    if stream.duration:
        return stream.duration * Fraction(stream.time_base)
    tag = (stream.metadata or {}).get("DURATION")  # Matroska writes the stream's duration as a tag
    try:
        h, m, sec = tag.split(":")
        return (int(h) * 60 + int(m)) * 60 + Fraction(sec)
    except (AttributeError, ValueError):
        return None


def _check_complete(container, stream, times: list[Fraction], rate: Fraction, trim_end, path: Path) -> None:
    """Refuse a file whose packets stop well before what its own index declares (a cut-off copy)."""
    if not any(name in _EXACT_INDEX_FORMATS for name in container.format.name.split(",")):
        return
    found = f"{len(times)} frames, {float(times[-1] - times[0] + 1 / rate):.2f} s"
    if trim_end is None and stream.frames and len(times) < stream.frames:
        raise InputError(f"'{path}' is truncated: its index lists {stream.frames} frames, the file holds {found}")
    declared = _declared_duration(stream)
    if stream.frames or declared is None:
        return  # a frame count, where there is one, was checked above; it is the exact measure
    start = _time(stream.start_time, Fraction(stream.time_base)) or Fraction(0)
    expected_end = start + declared if trim_end is None else min(start + declared, trim_end)
    # Slack for a long-lasting last frame (variable frame rate) without missing a real cut.
    if times[-1] + 1 / rate < expected_end - max(3 / rate, declared / 10):
        raise InputError(f"'{path}' is truncated: it declares {float(declared):.2f} s, the file holds {found}")


def _frame_rate(stream: av.video.stream.VideoStream, times: list[Fraction]) -> Fraction:
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
    sources deeper than 8 bits). Use as a context manager so the thread always stops.
    """

    def __init__(self, info: VideoInfo, *, queue_size: int = 8) -> None:
        self.info = info
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
        yield from resample_to_grid(self._decoded(), info.start_time, info.frame_rate, info.frame_count)

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

    def _decode(self) -> None:
        info = self.info
        fmt = rgb_format(info.bit_depth)
        convert = info.colour.reformat_args(decoding=True)
        try:
            with open_input(info.path) as container:
                stream = video_stream(container, info.path)
                stream.thread_type = "AUTO"
                seek(container, stream, info.trim_start)
                tb = info.time_base
                previous: Fraction | None = None
                for frame in container.decode(stream):
                    time = None if info.index_timing else _time(frame.pts, tb)
                    if time is None:
                        time = info.start_time if previous is None else previous + 1 / info.frame_rate
                    previous = time
                    if time < info.start_time:
                        continue  # pre-roll from the seek
                    if info.trim_end is not None and time >= info.trim_end:
                        break
                    rgb = frame.to_ndarray(format=fmt, **convert)
                    if not self._put((time, rgb)):
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
