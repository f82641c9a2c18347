"""Encoding: the upscaled video, plus the input's audio and subtitles, written atomically.

``VideoWriter`` writes to a temporary file beside the target and renames it into place only when
everything (encoder drained, side streams copied, trailer written, data synced) succeeded; on any
error or Ctrl-C the temporary file is removed, so the target path never holds a partial video.
"""

from __future__ import annotations

import errno
import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from av.video.frame import PictureType

from stvsr_cli.errors import InputError, OutputError, UnsupportedOptionError
from stvsr_cli.io.colour import AVCOL_RANGE_UNSPECIFIED, AVCOL_SPC_UNSPECIFIED, rgb_format, stream_colour
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


def partial_path(dst: Path) -> Path:
    """A unique hidden file beside ``dst`` with the same extension (the muxer is chosen by it)."""
    return dst.with_name(f".{dst.stem}.stvsr-partial-{secrets.token_hex(4)}{dst.suffix}")


def is_disk_full(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in DISK_FULL_ERRNOS


class VideoWriter:
    """Encode RGB frames at a constant ``rate``; copy (or convert) the source's other streams.

    ``write`` takes ``[H, W, 3]`` uint8 or uint16 arrays; frame j is presented at
    ``start + j / rate`` where ``start`` is the source's first frame time (shifted to 0 when the
    source was trimmed), so the audio, copied with its own timestamps, stays in sync.
    """

    def __init__(
        self,
        dst: Path | str,
        source: VideoInfo,
        *,
        width: int,
        height: int,
        rate: Fraction,
        settings: EncodeSettings | None = None,
    ) -> None:
        self.dst = Path(dst)
        self.source = source
        self.rate = Fraction(rate)
        self.warnings: list[str] = []
        self.frames_written = 0
        self._tmp = partial_path(self.dst)
        self._offset = source.trim_start or Fraction(0)  # subtracted from every input time
        try:
            self._container = av.open(str(self._tmp), "w")
        except ValueError:
            raise UnsupportedOptionError(
                f"unknown output format '{self.dst.suffix or self.dst.name}'",
                "use a video extension such as .mp4 or .mkv",
            ) from None
        except OSError as exc:
            raise OutputError(f"cannot write '{self.dst}': {exc.strerror or exc}") from None
        try:
            self._stream, self._colour = self._add_video_stream(width, height, settings or EncodeSettings())
            self._side = SideStreams(source, self._container, self._offset, self.warnings)
            self._container.start_encoding()
        except BaseException as exc:
            self._discard()
            if isinstance(exc, av.FFmpegError) and not is_disk_full(exc):
                raise UnsupportedOptionError(
                    f"the encoder rejected the settings ({exc.strerror or exc})", "try another --codec or --pix-fmt"
                ) from None
            raise
        self._time_base = Fraction(self._stream.codec_context.time_base)
        self._pts0 = round((source.start_time - self._offset) / self._time_base)
        self._template: av.VideoFrame | None = None

    # -- setup -------------------------------------------------------------------------------
    def _add_video_stream(self, width: int, height: int, settings: EncodeSettings):
        container, source = self._container, self.source
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

        stream = container.add_stream(codec, rate=self.rate)
        ctx = stream.codec_context
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        ctx.time_base = 1 / self.rate
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
        stream.options = options

        # The source's colour matrix and range carry over; an RGB source gets what players assume.
        colour = source.colour
        if colour.is_rgb or fmt.is_rgb:
            colour = stream_colour(
                pix_fmt,
                width,
                height,
                colour.primaries,
                colour.transfer,
                AVCOL_SPC_UNSPECIFIED,
                AVCOL_RANGE_UNSPECIFIED,
            )
        if not fmt.is_rgb:
            ctx.colorspace = colour.matrix
            ctx.color_range = colour.range
        ctx.color_primaries = colour.primaries
        ctx.color_trc = colour.transfer
        if source.sample_aspect_ratio:
            ctx.sample_aspect_ratio = source.sample_aspect_ratio
        if source.rotation:
            stream.set_display_rotation(source.rotation)
        return stream, colour

    # -- writing -------------------------------------------------------------------------------
    def write(self, rgb: np.ndarray) -> None:
        fmt = rgb_format(8 if rgb.dtype == np.uint8 else 16)
        if self._template is None or self._template.format.name != fmt:
            self._template = _rgb_template(self.source, rgb.shape[1], rgb.shape[0], fmt)
        if self._template is not None:
            plane = self._template.planes[0]
            view = np.frombuffer(plane, dtype=rgb.dtype).reshape(plane.height, -1)
            view[:, : rgb.shape[1] * 3] = rgb.reshape(rgb.shape[0], -1)
            source = self._template
        else:
            source = av.VideoFrame.from_ndarray(rgb, format=fmt)
        frame = source.reformat(format=self._stream.pix_fmt, **self._colour.reformat_args(decoding=False))
        if frame is source:  # an RGB output format: no conversion, so no fresh frame; never hand out the template
            frame = av.VideoFrame.from_ndarray(rgb, format=fmt)
        frame.pts = self._pts0 + self.frames_written
        frame.time_base = self._time_base
        frame.duration = 1  # one output frame, not the decoded frame's duration in its own time base
        self._mux(self._stream.encode(frame))
        self.frames_written += 1
        # Interleave: copy the side streams up to this frame's time.
        self._side.copy_until(self.source.start_time + Fraction(self.frames_written) / self.rate)

    def _mux(self, packets) -> None:
        for packet in packets:
            if not packet.duration:
                packet.duration = 1  # one frame in the encoder's time base; muxers need it for the last frame
            self._container.mux(packet)

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self._discard()
            return
        try:
            self._mux(self._stream.encode())  # drain the encoder, or the last frames are lost
            self._side.finish()
            self._container.close()
            _fsync(self._tmp)
            os.replace(self._tmp, self.dst)
        except BaseException:
            self._discard()
            raise

    def _discard(self) -> None:
        try:
            self._container.close()
        except Exception:
            pass
        self._tmp.unlink(missing_ok=True)


def _rgb_template(source: VideoInfo, width: int, height: int, fmt: str) -> av.VideoFrame | None:
    """An RGB frame of the output size carrying the tags of the source's decoded frames.

    Among those tags is the chroma siting, which PyAV cannot set but swscale honours: converting
    our RGB back to YUV from a frame that carries it uses the siting the reader decoded with, so a
    round trip does not shift the colours by half a chroma sample.
    """
    try:
        with open_input(source.path) as container:
            first = next(container.decode(video_stream(container, source.path)), None)
            if first is None:
                return None
            template = first.reformat(
                width=width, height=height, format=fmt, **source.colour.reformat_args(decoding=True)
            )
    except (av.FFmpegError, InputError):
        return None
    # Frame properties travel with every conversion; a decoded picture type would force the
    # encoder to make every output frame a keyframe.
    template.pict_type = PictureType.NONE
    template.key_frame = False
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
