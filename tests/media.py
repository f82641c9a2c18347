"""Tiny synthetic videos for the tests, made with PyAV: known frames, known times, optional audio."""

from __future__ import annotations

from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

AUDIO_RATE = 48000


def pattern(index: int, height: int, width: int) -> np.ndarray:
    """Frame ``index`` of a moving, smooth RGB test pattern, ``[H, W, 3]`` uint8."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    r = 128 + 100 * np.sin(2 * np.pi * (x / 13 + index / 7))
    g = 128 + 100 * np.sin(2 * np.pi * (y / 11 - index / 9))
    b = 128 + 100 * np.sin(2 * np.pi * ((x + y) / 17 + index / 5))
    return np.stack([r, g, b], axis=-1).round().astype(np.uint8)


def smooth(index: int, height: int, width: int) -> np.ndarray:
    """A slowly varying colour field: what chroma subsampling keeps almost exactly."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    r = 128 + 60 * np.sin(x / 10 + index / 5)
    g = 128 + 60 * np.cos(y / 9)
    b = 128 + 50 * np.sin((x + y) / 12)
    return np.stack([r, g, b], axis=-1).round().astype(np.uint8)


def make_video(
    path: Path,
    *,
    frames: int = 8,
    rate: Fraction | int = 25,
    size: tuple[int, int] = (32, 24),
    codec: str = "libx264",
    pix_fmt: str = "yuv420p",
    audio: bool = False,
    audio_codec: str = "aac",
    rotation: int = 0,
    times: Sequence[Fraction] | None = None,
    sar: Fraction | None = None,
    colorspace: int | None = None,
    subtitle: bool = False,
    options: dict[str, str] | None = None,
    container_options: dict[str, str] | None = None,
    content=pattern,
) -> list[np.ndarray]:
    """Write a video of ``pattern`` frames; return the RGB frames that went in.

    ``times`` (seconds) places frames at explicit presentation times (variable frame rate) in a
    1/1000 time base; otherwise frame i is at i / rate. ``codec="ffv1", pix_fmt="bgr0"`` is lossless RGB.
    """
    rate = Fraction(rate)
    width, height = size
    rgb_frames = [content(i, height, width) for i in range(frames)]
    with av.open(str(path), "w", options=container_options or {}) as container:
        stream = container.add_stream(codec, rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, pix_fmt
        time_base = Fraction(1, 1000) if times is not None else 1 / rate
        stream.codec_context.time_base = time_base
        if options:
            stream.options = options
        if rotation:
            stream.set_display_rotation(rotation)
        if sar is not None:
            stream.codec_context.sample_aspect_ratio = sar
        if colorspace is not None:
            stream.codec_context.colorspace = colorspace
        audio_stream = None
        if audio:
            audio_stream = container.add_stream(audio_codec, rate=AUDIO_RATE)
            audio_stream.layout = "mono"
        subtitle_stream = container.add_mux_stream("subrip") if subtitle else None
        if subtitle_stream is not None:
            subtitle_stream.time_base = Fraction(1, 1000)
        for i, rgb in enumerate(rgb_frames):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            if colorspace is not None:
                frame = frame.reformat(format=pix_fmt, dst_colorspace=colorspace_sws(colorspace))
            frame.pts = round(times[i] / time_base) if times is not None else i
            frame.time_base = time_base
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
        if audio_stream is not None:
            duration = times[-1] + 1 / rate if times is not None else frames / rate
            _write_tone(container, audio_stream, duration)
        if subtitle_stream is not None:
            packet = av.Packet(b"hello from the subtitles")
            packet.pts = packet.dts = 0
            packet.duration = int(1000 * frames / rate)
            packet.time_base = Fraction(1, 1000)
            packet.stream = subtitle_stream
            container.mux(packet)
    return rgb_frames


def colorspace_sws(avcol: int) -> int:
    return {1: 1, 5: 5, 6: 5}.get(avcol, 5)


def _write_tone(container, stream, duration: Fraction) -> None:
    n = int(duration * AUDIO_RATE)
    t = np.arange(n) / AUDIO_RATE
    samples = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None]
    for start in range(0, n, 1024):
        frame = av.AudioFrame.from_ndarray(samples[:, start : start + 1024].copy(), format="fltp", layout="mono")
        frame.sample_rate = AUDIO_RATE
        frame.pts = start
        frame.time_base = Fraction(1, AUDIO_RATE)
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)


def make_audio_only(path: Path, seconds: float = 0.5) -> None:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=AUDIO_RATE)
        stream.layout = "mono"
        _write_tone(container, stream, Fraction(seconds).limit_denominator(1000))


def read_frames(path: Path, fmt: str = "rgb24") -> list[np.ndarray]:
    """Every decoded video frame as an array (``rgb24`` of an RGB stream is exact)."""
    with av.open(str(path)) as container:
        return [f.to_ndarray(format=fmt) for f in container.decode(video=0)]


def stream_facts(path: Path) -> dict:
    """What a player sees: frame count, rate, time span of each stream, codecs, rotation, format."""
    with av.open(str(path)) as container:
        video = container.streams.video[0]
        facts = {
            "rate": Fraction(video.average_rate) if video.average_rate else None,
            "width": video.width,
            "height": video.height,
            "pix_fmt": video.codec_context.pix_fmt,
            "audio_codecs": [s.codec_context.codec.canonical_name for s in container.streams.audio],
            "subtitle_codecs": [s.codec_context.codec.canonical_name for s in container.streams.subtitles],
        }
        spans: dict[int, list[Fraction]] = {}
        keyframes = 0
        for packet in container.demux():
            if packet.size == 0 or packet.pts is None:
                continue
            keyframes += packet.stream.index == video.index and packet.is_keyframe
            tb = Fraction(packet.time_base)
            start, end = packet.pts * tb, (packet.pts + (packet.duration or 0)) * tb
            span = spans.setdefault(packet.stream.index, [start, end])
            span[0], span[1] = min(span[0], start), max(span[1], end)
        facts["video_span"] = spans[video.index][1] - spans[video.index][0]
        facts["keyframes"] = keyframes
        facts["audio_spans"] = [
            spans[s.index][1] - spans[s.index][0] for s in container.streams.audio if s.index in spans
        ]
        container.seek(0)
        decoded = list(container.decode(video=0))
        facts["frames"] = len(decoded)
        facts["times"] = [f.pts * Fraction(video.time_base) for f in decoded]
        facts["rotation"] = decoded[0].rotation
        facts["colorspace"] = int(decoded[0].colorspace)
    return facts


def make_ramp_video(
    path: Path, *, frames: int = 3, size: tuple[int, int] = (64, 48), tags: dict[str, int] | None = None
) -> None:
    """A lossless 10-bit (yuv420p10le, FFV1) grey ramp using 877 luma levels: more than 8 bits can hold.

    ``tags`` sets colour tags on the stream: color_primaries, color_trc, colorspace, color_range.
    """
    width, height = size
    with av.open(str(path), "w") as container:
        stream = container.add_stream("ffv1", rate=25)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p10le"
        for name, value in (tags or {}).items():
            setattr(stream.codec_context, name, value)
        for i in range(frames):
            y = (64 + (np.arange(height * width).reshape(height, width) + 7 * i) % 877).astype(np.uint16)
            chroma = np.full(width * height // 2, 512, np.uint16)
            frame = av.VideoFrame.from_ndarray(
                np.concatenate([y.ravel(), chroma]).reshape(height * 3 // 2, width), format="yuv420p10le"
            )
            for name, value in (tags or {}).items():
                setattr(frame, name, value)
            frame.pts = i
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def make_interlaced_video(path: Path, *, frames: int = 8, size: tuple[int, int] = (64, 48)) -> list[np.ndarray]:
    """An interlaced (top field first) H.264 clip of a moving bar: each frame weaves two fields taken
    at different times, as a tape transfer does, so a progressive reading shows combing."""

    def woven(index: int, height: int, width: int) -> np.ndarray:
        fields = []
        for half in (0, 1):
            picture = np.full((height, width, 3), 30, np.uint8)
            left = (8 * index + 4 * half) % (width - 8)
            picture[:, left : left + 8] = 220
            fields.append(picture)
        picture = fields[0].copy()
        picture[1::2] = fields[1][1::2]
        return picture

    return make_video(
        path,
        frames=frames,
        size=size,
        content=woven,
        options={"flags": "+ildct+ilme", "x264-params": "interlaced=1:tff=1", "qp": "0"},
    )


def combing(frame: np.ndarray) -> float:
    """Mean of |2 row - row above - row below| on the luma: high where fields from two times alternate."""
    y = frame.astype(np.float64).mean(axis=-1)
    return float(np.abs(2 * y[1:-1] - y[:-2] - y[2:]).mean())


def make_training_clips(folder: Path, *, frames: int, count: int = 2) -> Path:
    """``count`` lossless 40x36 clips of the smooth pattern: a tiny training set."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        make_video(folder / f"clip{i}.mkv", frames=frames, size=(40, 36), codec="ffv1", pix_fmt="bgr0", content=smooth)
    return folder


def train_tiny(arch: str, params: dict, data: Path, out: Path, name: str, *, steps: int, lr: str, extra=()) -> list[dict]:
    """Run ``stvsr train`` on a tiny set (batch 2, 16-px patches, a log line every 5 steps); the logs."""
    import json

    from click.testing import CliRunner

    from stvsr_cli.cli import main

    result = CliRunner().invoke(
        main,
        ["train", "--arch", arch, "--params", json.dumps(params), "--data", str(data), "--out", str(out),
         "--steps", str(steps), "--batch", "2", "--patch", "16", "--log-every", "5", "--lr", lr, "--name", name,
         *extra],
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    return [json.loads(line) for line in (out / "train.jsonl").read_text().splitlines()]


def _yuv420_planes(rgb: np.ndarray) -> list[np.ndarray]:
    frame = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")
    return [np.frombuffer(p, np.uint8).reshape(p.height, -1)[:, : p.width].copy() for p in frame.planes]


def _woven(top: list[np.ndarray], bottom: list[np.ndarray]) -> list[np.ndarray]:
    """A frame of ``top``'s top field (even rows) and ``bottom``'s bottom field, plane by plane; in
    interlaced 4:2:0 each chroma row belongs to one field too, alternately."""
    planes = []
    for a, b in zip(top, bottom, strict=True):
        woven = a.copy()
        woven[1::2] = b[1::2]
        planes.append(woven)
    return planes


def make_telecined_video(
    path: Path,
    *,
    film_frames: int = 40,
    size: tuple[int, int] = (64, 48),
    pulldown: str = "3:2",
    drop_video_frame: int | None = None,
    audio: bool = False,
    codec: str = "libx264",
    crf: int = 16,
    content=pattern,
) -> None:
    """A progressive film of ``film_frames`` frames put on interlaced video as a transfer does it:
    ``3:2`` at 30000/1001 (film frames A B C D as the frames AA BB BC CD DD, top field first), or
    ``2:2`` at 25 (each film frame's two fields in one frame, as PAL carries film); ``none`` is the
    film itself, progressive at 24000/1001, from the same 4:2:0 planes. x264 codes it interlaced
    (``crf``, field order flagged; progressive for ``none``); ``codec="ffv1"`` is lossless.
    ``drop_video_frame`` cuts that video frame out (an edit that breaks the cadence)."""
    width, height = size
    planes = [_yuv420_planes(content(i, height, width)) for i in range(film_frames)]
    if pulldown == "3:2":
        rate, video = Fraction(30000, 1001), []
        for k in range(0, film_frames - film_frames % 4, 4):
            a, b, c, d = planes[k : k + 4]
            video += [_woven(a, a), _woven(b, b), _woven(b, c), _woven(c, d), _woven(d, d)]
    elif pulldown == "2:2":
        rate, video = Fraction(25), [_woven(p, p) for p in planes]
    else:
        rate, video = Fraction(24000, 1001), planes
    if drop_video_frame is not None:
        del video[drop_video_frame]
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        if codec == "libx264":
            interlaced = {"flags": "+ildct+ilme", "x264-params": "interlaced=1:tff=1"} if pulldown != "none" else {}
            stream.options = {**interlaced, "crf": str(crf)}
        audio_stream = None
        if audio:
            audio_stream = container.add_stream("aac", rate=AUDIO_RATE)
            audio_stream.layout = "mono"
        for i, frame_planes in enumerate(video):
            frame = av.VideoFrame(width, height, "yuv420p")
            for plane, samples in zip(frame.planes, frame_planes, strict=True):
                np.frombuffer(plane, np.uint8).reshape(plane.height, -1)[:, : plane.width] = samples
            frame.pts, frame.time_base = i, 1 / rate
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
        if audio_stream is not None:
            _write_tone(container, audio_stream, len(video) / rate)
