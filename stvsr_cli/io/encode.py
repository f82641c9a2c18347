"""Encoding: the upscaled video, plus the input's audio and subtitles, written atomically.

``FrameEncoder`` turns RGB frames into compressed packets, segment by segment (the work folder
keeps them, so a run can resume); ``join_segments`` remuxes the packets of all segments with the
source's audio and subtitles into a temporary file beside the target and renames it into place
only when everything (side streams copied, trailer written, data synced) succeeded; on any error or
Ctrl-C the temporary file is removed, so the target path never holds a partial video.
"""

from __future__ import annotations

import errno
import io
import os
import secrets
from collections.abc import Callable, Iterable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass
from fractions import Fraction
from itertools import islice
from pathlib import Path

import av
import numpy as np
from av.video.frame import PictureType

from stvsr_cli.errors import InputError, OutputError, UnsupportedOptionError
from stvsr_cli.io.colour import (
    AVCOL_RANGE_UNSPECIFIED, AVCOL_SPC_UNSPECIFIED, Colour, plane_samples, rgb_format, stream_colour,
)  # fmt: skip
from stvsr_cli.io.decode import VideoInfo, open_input, seek, video_stream

DEFAULT_CODEC = "libx264"
DEFAULT_CRF = 18
DEFAULT_PRESET = "medium"
DISK_FULL_ERRNOS = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT}


@dataclass(frozen=True)
class EncodeSettings:
    """Encoder choices; ``None`` means the default for the codec and container."""

    codec: str | None = None
    crf: float | None = None
    preset: str | None = None
    pix_fmt: str | None = None


@dataclass(frozen=True)
class Planes:
    """One frame as the encoder takes it: Y, U and V arrays (uint8, or uint16 for deeper formats)."""

    pix_fmt: str
    arrays: tuple[np.ndarray, np.ndarray, np.ndarray]

    @property
    def width(self) -> int:
        return self.arrays[0].shape[1]

    @property
    def height(self) -> int:
        return self.arrays[0].shape[0]


HARDWARE_CODECS = ("h264_nvenc",)  # tried in order when the model runs on a CUDA GPU and no --codec is given
DEEP_HARDWARE_CODECS = (("hevc_nvenc", "p010le"),)  # the same for 10-bit sources (H.264 NVENC has no 10-bit)
NVENC_OPTIONS = {"preset": "p5", "tune": "hq", "rc": "vbr", "cq": "19", "b": "0"}  # about x264's CRF 18


def choose_codec(settings: EncodeSettings, device_type: str, bit_depth: int = 8, can_open=None) -> EncodeSettings:
    """The encoder to use: the one asked for; else NVENC when the model runs on a CUDA GPU and the
    encoder really opens (the FFmpeg build has it, and so does the driver): H.264 for 8-bit
    sources, HEVC in 10 bits (p010) for deeper ones; else the default (x264). The GPU's own video
    encoder then takes the encoding off the CPU. Asking for any encoder setting (--crf, --preset,
    --pix-fmt) keeps x264, which those settings were written for."""
    if settings != EncodeSettings() or device_type != "cuda":
        return settings
    opens = can_open or encoder_opens
    candidates = [(codec, "yuv420p") for codec in HARDWARE_CODECS] if bit_depth <= 8 else DEEP_HARDWARE_CODECS
    for codec, pix_fmt in candidates:
        if codec in av.codecs_available and opens(codec, pix_fmt):
            return EncodeSettings(codec=codec) if bit_depth <= 8 else EncodeSettings(codec=codec, pix_fmt=pix_fmt)
    return settings


def encoder_opens(codec: str, pix_fmt: str) -> bool:
    """Whether ``codec`` opens here (hardware encoders also need their driver and device)."""
    return encoder_open_error(codec, pix_fmt) is None


def encoder_open_error(codec: str, pix_fmt: str) -> str | None:
    """Why ``codec`` does not open here, in one line, FFmpeg's own log message included (such as
    NVENC's "Cannot load libcuda.so.1"), or None when it does."""
    import av.logging

    previous = av.logging.get_level()
    av.logging.set_level(av.logging.ERROR)  # else FFmpeg's reason is dropped before PyAV sees it
    try:
        with av.logging.Capture() as logs:
            try:
                ctx = av.CodecContext.create(codec, "w")
                ctx.width, ctx.height, ctx.pix_fmt = 256, 256, pix_fmt
                ctx.time_base = Fraction(1, 25)
                ctx.open()
                return None
            except Exception as exc:
                message = f"{type(exc).__name__}: {exc}"
    finally:
        av.logging.set_level(previous)
    said = [text.strip() for _level, _name, text in logs if text.strip() and text.strip() not in message]
    return " ".join("; ".join([message, *said]).split())


def partial_path(dst: Path) -> Path:
    """A unique hidden file beside ``dst`` with the same extension (the muxer is chosen by it)."""
    return dst.with_name(f".{dst.stem}.stvsr-partial-{secrets.token_hex(4)}{dst.suffix}")


def is_disk_full(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in DISK_FULL_ERRNOS


@dataclass(frozen=True)
class EncodedPacket:
    """One compressed video packet, timestamps in frames of the output rate (codec time base)."""

    data: bytes
    pts: int
    dts: int
    keyframe: bool


def open_output(path: Path, dst: Path) -> av.container.OutputContainer:
    """Open ``path`` for writing a video of ``dst``'s format; one-line errors naming ``dst``."""
    try:
        return av.open(str(path), "w")
    except ValueError:
        raise UnsupportedOptionError(
            f"unknown output format '{dst.suffix or dst.name}'", "use a video extension such as .mp4 or .mkv"
        ) from None
    except OSError as exc:
        raise OutputError(f"cannot write '{dst}': {exc.strerror or exc}") from None


def output_format(dst: Path) -> str:
    """The muxer FFmpeg picks for ``dst``'s extension (an unknown one fails in one line). Opening a
    container for writing creates no file before encoding starts; the unlink is only a safeguard."""
    probe = dst.parent / f".{dst.stem}.stvsr-probe-{secrets.token_hex(4)}{dst.suffix}"
    container = open_output(probe, dst)
    try:
        return container.format.name.split(",")[0]
    finally:
        container.close()
        probe.unlink(missing_ok=True)


class FrameEncoder:
    """Encode RGB frames into compressed packets for ``fmt``'s muxer, without writing a file.

    The stream is set up exactly as the final file's (``open_video_stream``), inside an in-memory
    container of the same format, so the codec's global headers match byte for byte and packets
    of separately encoded segments can be joined into one stream. Output frame j is stamped
    ``first_pts + j`` in frames of ``rate``. ``templates`` caches the RGB template frames (see
    ``rgb_template``): pass one dict to all the encoders of a run, so the source is read once.
    """

    def __init__(
        self, fmt: str, source: VideoInfo, *, width: int, height: int, rate: Fraction, settings: EncodeSettings,
        first_frame: int = 0, templates: dict | None = None, clock: Callable | None = None,
    ) -> None:  # fmt: skip
        self.source = source
        self._timed = clock or nullcontext  # a StageClock: "to YUV", "encode"
        self._container = av.open(io.BytesIO(), "w", format=fmt)
        try:
            self._stream, self._colour = open_video_stream(self._container, source, width, height, rate, settings)
            self._container.start_encoding()
        except BaseException as exc:
            self.close()
            if isinstance(exc, av.FFmpegError):
                raise UnsupportedOptionError(
                    f"the encoder rejected the settings ({exc.strerror or exc})", "try another --codec or --pix-fmt"
                ) from None
            raise
        self.extradata = self._stream.codec_context.extradata
        self._time_base = Fraction(self._stream.codec_context.time_base)
        self._pts = start_pts(source, rate) + first_frame
        self._templates = templates if templates is not None else {}

    def encode(self, rgb: np.ndarray | Planes) -> list[EncodedPacket]:
        """Encode one frame: RGB (converted here by swscale) or the stream's own planes."""
        if isinstance(rgb, Planes):
            return self._encode_frame(self._planes_frame(rgb))
        fmt = rgb_format(8 if rgb.dtype == np.uint8 else 16)
        key = (fmt, rgb.shape[1], rgb.shape[0])
        if key not in self._templates:  # looked up once, even when there is none
            self._templates[key] = rgb_template(self.source, rgb.shape[1], rgb.shape[0], fmt)
        template = self._templates[key]
        if template is not None:
            plane = template.planes[0]
            view = np.frombuffer(plane, dtype=rgb.dtype).reshape(plane.height, -1)
            view[:, : rgb.shape[1] * 3] = rgb.reshape(rgb.shape[0], -1)
            source = template
        else:
            source = av.VideoFrame.from_ndarray(rgb, format=fmt)
        with self._timed("to YUV"):
            frame = source.reformat(format=self._stream.pix_fmt, **self._colour.reformat_args(decoding=False))
        if frame is source:  # an RGB output format: no conversion, so no fresh frame; never hand out the template
            frame = av.VideoFrame.from_ndarray(rgb, format=fmt)
        return self._encode_frame(frame)

    def _planes_frame(self, planes: Planes) -> av.VideoFrame:
        if planes.pix_fmt != self._stream.pix_fmt:
            raise ValueError(f"planes of {planes.pix_fmt} for a {self._stream.pix_fmt} stream")
        frame = av.VideoFrame(planes.width, planes.height, planes.pix_fmt)  # fresh: an encoder may keep it
        for plane, samples in zip(frame.planes, planes.arrays):
            plane_samples(plane, samples.dtype)[:] = samples
        frame.colorspace = self._colour.matrix
        frame.color_range = self._colour.range
        return frame

    def _encode_frame(self, frame: av.VideoFrame) -> list[EncodedPacket]:
        frame.pts = self._pts
        frame.time_base = self._time_base
        frame.duration = 1  # one output frame, not the decoded frame's duration in its own time base
        self._pts += 1
        with self._timed("encode"):
            return self._packets(self._stream.encode(frame))

    def flush(self) -> list[EncodedPacket]:
        """Drain the encoder (else the last frames are lost); the encoder is closed after."""
        try:
            with self._timed("encode"):
                return self._packets(self._stream.encode())
        finally:
            self.close()

    def _packets(self, packets) -> list[EncodedPacket]:
        return [
            EncodedPacket(bytes(p), p.pts, p.dts if p.dts is not None else p.pts, bool(p.is_keyframe))
            for p in packets
            if p.size
        ]

    def close(self) -> None:
        try:
            self._container.close()
        except Exception:
            pass


def encoder_pixels(
    fmt: str, source: VideoInfo, *, width: int, height: int, rate: Fraction, settings: EncodeSettings
) -> tuple[str, Colour]:
    """The pixel format and colour the output stream's frames are converted to (what ``FrameEncoder``
    does), for converting them before they reach it."""
    container = av.open(io.BytesIO(), "w", format=fmt)
    try:
        stream, colour = open_video_stream(container, source, width, height, rate, settings)
        return stream.pix_fmt, colour
    finally:
        container.close()


def start_pts(source: VideoInfo, rate: Fraction) -> int:
    """Output frame 0's timestamp, in frames of ``rate``: the source's first frame time (shifted to
    0 when the source was trimmed), so that the audio, copied with its own timestamps, stays in sync."""
    return round((source.start_time - (source.trim_start or Fraction(0))) * rate)


def reorder_delay(first_packets: Iterable[EncodedPacket]) -> int:
    """The largest decode delay (pts - dts of a segment's first packet) among segments."""
    return max((p.pts - p.dts for p in first_packets), default=0)


def join_segments(
    dst: Path | str,
    source: VideoInfo,
    segments: Iterable[Iterable[EncodedPacket]],
    *,
    width: int,
    height: int,
    rate: Fraction,
    settings: EncodeSettings,
    extradata: bytes | None = None,
    delay: int = 0,
) -> list[str]:
    """Write ``dst`` from encoded video packets (one iterable per segment, in order) and the
    source's audio and subtitles: remuxed, never re-encoded. Atomic: a hidden file beside ``dst``
    is renamed into place only when complete. Returns warnings about the side streams.

    Each segment's decode times are moved to the same reordering ``delay`` (frames; at least every
    segment's own, see ``reorder_delay``): an encoder gives a segment of a few frames no delay and a
    longer one its B-frame delay, and the decode times would otherwise step back where they meet."""
    dst = Path(dst)
    tmp = partial_path(dst)
    warnings: list[str] = []
    offset = source.trim_start or Fraction(0)
    container = open_output(tmp, dst)
    try:
        with container:
            stream, _ = open_video_stream(container, source, width, height, rate, settings)
            if extradata is not None:
                stream.codec_context.extradata = extradata
            side = SideStreams(source, container, offset, warnings)
            container.start_encoding()
            time_base = 1 / Fraction(rate)
            for segment in segments:
                shift = None
                for encoded in segment:
                    if shift is None:  # the segment starts with a keyframe at its first frame
                        shift = max(0, delay - (encoded.pts - encoded.dts))
                    packet = av.Packet(encoded.data)
                    packet.pts, packet.dts = encoded.pts, encoded.dts - shift
                    packet.time_base = time_base
                    packet.duration = 1  # one frame; muxers need it for the last frame
                    packet.is_keyframe = encoded.keyframe
                    packet.stream = stream
                    container.mux(packet)
                    # Interleave: the side streams up to this frame's time (input timeline).
                    side.copy_until(offset + (encoded.dts + 1) * time_base)
            side.finish()
        _fsync(tmp)
        os.replace(tmp, dst)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return warnings


def open_video_stream(container, source: VideoInfo, width: int, height: int, rate: Fraction, settings: EncodeSettings):
    """Add the output video stream to ``container``: codec, pixel format, rate, colour tags,
    aspect ratio and rotation, all checked against what the codec and container can do."""
    codec, pix_fmt = _check_codec(container, source, width, height, settings)
    stream = container.add_stream(codec, rate=rate)
    ctx = stream.codec_context
    stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
    ctx.time_base = 1 / Fraction(rate)
    stream.options = _encoder_options(ctx, codec, settings)
    colour = _tag_colour(ctx, source, width, height, pix_fmt)
    if source.sample_aspect_ratio:
        ctx.sample_aspect_ratio = source.sample_aspect_ratio
    if source.rotation:
        stream.set_display_rotation(source.rotation)
    return stream, colour


def _check_codec(container, source: VideoInfo, width: int, height: int, settings: EncodeSettings) -> tuple[str, str]:
    """The encoder and pixel format to use, refused in one line where the container, the codec or
    the frame size does not allow them."""
    supported = container.supported_codecs
    codec = settings.codec or (DEFAULT_CODEC if DEFAULT_CODEC in supported else container.default_video_codec)
    try:
        codec_info = av.Codec(codec, "w")
    except Exception:
        raise UnsupportedOptionError(f"unknown video encoder '{codec}'") from None
    if codec_info.type != "video":
        raise UnsupportedOptionError(f"'{codec}' is not a video encoder")
    if codec_info.name not in supported and codec_info.canonical_name not in supported:
        raise UnsupportedOptionError(
            f"the {container.format.name} container cannot hold {codec} video",
            "choose another --codec or extension",
        )
    pix_fmt = settings.pix_fmt or _default_pix_fmt(codec_info, source.bit_depth)
    formats = {f.name for f in codec_info.video_formats or []}
    if formats and pix_fmt not in formats:
        raise UnsupportedOptionError(
            f"{codec} cannot encode pixel format '{pix_fmt}'", "it supports " + ", ".join(sorted(formats))
        )
    fmt = av.VideoFormat(pix_fmt)
    if (width % 2 and fmt.chroma_width(2) < 2) or (height % 2 and fmt.chroma_height(2) < 2):
        raise UnsupportedOptionError(
            f"output size {width}x{height} is odd but {pix_fmt} needs even sizes",
            "use another --scale or --pix-fmt yuv444p",
        )
    return codec, pix_fmt


def _encoder_options(ctx, codec: str, settings: EncodeSettings) -> dict[str, str]:
    """The encoder's private options: CRF and preset (our defaults where it has them), quiet x265, NVENC's."""
    private = {o.name: o for o in ctx.supported_options.private}
    options = {}
    if "crf" in private:
        options["crf"] = _number(settings.crf if settings.crf is not None else DEFAULT_CRF)
    elif settings.crf is not None:
        raise UnsupportedOptionError(f"{codec} has no --crf setting")
    if settings.preset is not None:
        if "preset" not in private:
            raise UnsupportedOptionError(f"{codec} has no --preset setting")
        options["preset"] = settings.preset
    elif "preset" in private and private["preset"].type.name == "STRING":
        options["preset"] = DEFAULT_PRESET
    if "x265-params" in private:
        options["x265-params"] = "log-level=error"  # x265 prints a report per encoder otherwise
    if codec in HARDWARE_CODECS or codec in dict(DEEP_HARDWARE_CODECS):
        options.update(NVENC_OPTIONS)
    return options


def _tag_colour(ctx, source: VideoInfo, width: int, height: int, pix_fmt: str) -> Colour:
    """Tag the stream with the source's colour matrix and range (an RGB source or output gets what
    players assume), primaries and transfer; returns the colour the frames are converted with."""
    colour, fmt = source.colour, av.VideoFormat(pix_fmt)
    if colour.is_rgb or fmt.is_rgb:
        colour = stream_colour(
            pix_fmt, width, height, colour.primaries, colour.transfer, AVCOL_SPC_UNSPECIFIED, AVCOL_RANGE_UNSPECIFIED
        )
    if not fmt.is_rgb:
        ctx.colorspace = colour.matrix
        ctx.color_range = colour.range
    ctx.color_primaries = colour.primaries
    ctx.color_trc = colour.transfer
    return colour


_TEMPLATE_SEARCH = 8  # decoded frames to look through for one without side data


def rgb_template(source: VideoInfo, width: int, height: int, fmt: str) -> av.VideoFrame | None:
    """An RGB frame of the output size carrying the tags of the source's decoded frames, its
    samples zero; None where the source gives no such frame.

    Among those tags is the chroma siting, which PyAV cannot set but swscale honours: converting
    our RGB back to YUV from a frame that carries it uses the siting the reader decoded with, so a
    round trip does not shift the colours by half a chroma sample. Copy each frame's samples into
    the template's planes and convert the template.
    """
    try:
        with open_input(source.path) as container:
            # A frame without side data: x264 reads some (the first frame's SEI, copied from the
            # source encoder) and then no longer encodes the same frames the same way twice.
            plain = None
            for decoded in islice(container.decode(video_stream(container, source.path)), _TEMPLATE_SEARCH):
                if not len(decoded.side_data):
                    plain = decoded
                    break
            if plain is None:
                return None
            template = plain.reformat(
                width=width, height=height, format=fmt, **source.colour.reformat_args(decoding=True)
            )
    except (av.FFmpegError, InputError):
        return None
    # Frame properties travel with every conversion; a decoded picture type would force the
    # encoder to make every output frame a keyframe.
    template.pict_type = PictureType.NONE
    template.key_frame = False
    for plane in template.planes:
        # Zero the row padding: swscale's vector code reads it, and stale bytes there would make two
        # encodings of the same frames differ (a resumed run must match exactly).
        np.frombuffer(plane, dtype=np.uint8)[:] = 0
    return template


def _default_pix_fmt(codec: av.Codec, depth: int) -> str:
    wanted = "yuv420p" if depth <= 8 else "yuv420p10le"
    formats = [f.name for f in codec.video_formats or []]
    if not formats or wanted in formats:
        return wanted
    same_depth = [f for f in formats if (max(c.bits for c in av.VideoFormat(f).components) > 8) == (depth > 8)]
    return (same_depth or formats)[0]


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class SideStreams:
    """The source's audio and subtitle streams, copied packet by packet in step with the video.

    A stream whose codec the output container accepts is copied untouched; audio it does not accept
    is re-encoded (AAC where the container takes it); such subtitles are dropped with a warning.
    """

    def __init__(self, source: VideoInfo, output: av.container.OutputContainer, offset: Fraction, warnings: list[str]):
        self._source = source
        self._output = output
        self._offset = offset
        self._warnings = warnings
        self._input = None
        self._packets: Iterator | None = None
        self._pending = None
        self._map: dict[int, tuple[str, object, object]] = {}  # input index -> (mode, out stream, encoder)
        if source.audio_streams == 0 and source.subtitle_streams == 0:
            return
        self._input = open_input(source.path)
        supported = output.supported_codecs
        for stream in list(self._input.streams.audio) + list(self._input.streams.subtitles):
            name = stream.codec_context.codec.canonical_name  # "mp3", not the decoder's "mp3float"
            if name in supported:
                out = output.add_stream_from_template(stream)
                self._map[stream.index] = ("copy", out, None)
            elif stream.type == "audio":
                codec = "aac" if "aac" in supported else output.default_audio_codec
                out = output.add_stream(codec, rate=stream.codec_context.sample_rate)
                out.layout = stream.codec_context.layout
                self._map[stream.index] = ("encode", out, None)
                self._warnings.append(
                    f"audio stream {stream.index} ({name}) cannot go into {output.format.name}: re-encoded as {codec}"
                )
            else:
                self._warnings.append(
                    f"subtitle stream {stream.index} ({name}) cannot go into {output.format.name}: dropped"
                )
        if not self._map:
            self._close_input()
            return
        streams = [s for s in self._input.streams if s.index in self._map]
        seek(self._input, video_stream(self._input, source.path), source.trim_start)
        self._packets = self._input.demux(streams)

    def _next(self):
        if self._pending is None and self._packets is not None:
            try:
                self._pending = next(self._packets)
            except StopIteration:
                self._packets = None
            except av.FFmpegError as exc:
                raise InputError(f"'{self._source.path}' is corrupt: cannot read its audio/subtitles ({exc})") from None
        return self._pending

    def copy_until(self, until: Fraction) -> None:
        """Write every side packet that comes before ``until`` (input time)."""
        while (packet := self._next()) is not None:
            stamp = packet.dts if packet.dts is not None else packet.pts
            if stamp is not None and stamp * Fraction(packet.time_base) > until:
                return
            self._pending = None
            self._write(packet)

    def finish(self) -> None:
        self.copy_until(Fraction(10**12))
        for mode, out, _ in self._map.values():
            if mode == "encode":
                for packet in out.encode(None):
                    self._output.mux(packet)
        self._close_input()

    def _write(self, packet) -> None:
        if packet.size == 0 or packet.pts is None:
            return  # flush packets
        tb = Fraction(packet.time_base)
        time = packet.pts * tb
        source = self._source
        if source.trim_start is not None and (
            time < source.trim_start or (source.trim_end is not None and time >= source.trim_end)
        ):
            return
        mode, out, _ = self._map[packet.stream.index]
        shift = round(self._offset / tb)
        if mode == "copy":
            packet.pts -= shift
            if packet.dts is not None:
                packet.dts -= shift
            packet.stream = out
            self._output.mux(packet)
            return
        try:
            frames = packet.decode()
        except av.FFmpegError:
            return  # a damaged audio packet is skipped, as players do
        for frame in frames:
            if frame.pts is not None:
                frame.pts -= round(self._offset / Fraction(frame.time_base))
            for encoded in out.encode(frame):
                self._output.mux(encoded)

    def _close_input(self) -> None:
        if self._input is not None:
            self._input.close()
            self._input = None
