"""The Python API: what the ``stvsr`` command does, callable from scripts.

>>> from stvsr_cli import upscale
>>> result = upscale("in.mp4", "out.mp4", scale=4, fps_x=2)   # doctest: +SKIP
>>> result.frames_out, result.rate_out                        # doctest: +SKIP
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path

from stvsr_cli import __version__, hub
from stvsr_cli.errors import InputError, OutputError, UsageError
from stvsr_cli.io.decode import VideoInfo, VideoReader, can_seek_exactly, probe
from stvsr_cli.io.encode import (
    EncodeSettings,
    FrameEncoder,
    choose_codec,
    is_disk_full,
    join_segments,
    output_format,
)
from stvsr_cli.io.workdir import UNWRITABLE_ERRNOS, WorkFolder, input_identity
from stvsr_cli.models.loader import load_model
from stvsr_cli.models.registry import ModelSpec, Registry, load_registry
from stvsr_cli.pipeline.run import run_windows
from stvsr_cli.pipeline.scenes import DEFAULT_SCENE_THRESHOLD, find_cuts
from stvsr_cli.pipeline.sink import InlineSink, ThreadedSink
from stvsr_cli.pipeline.tiles import MIN_TILE, OutOfMemoryFallback
from stvsr_cli.pipeline.timing import nominal_rate, rate_text
from stvsr_cli.pipeline.windows import plan_windows

Progress = Callable[[int, int], None]  # (frames done, frames in all)
DEINTERLACE_MODES = ("auto", "on", "off")
DEFAULT_SEGMENT_FRAMES = 480  # output frames per resumable segment (closed at the next window boundary)


@dataclass(frozen=True)
class UpscaleResult:
    input: Path
    output: Path
    model: str
    device: str
    scale: int
    fps_x: int | None  # None when a target frame rate (--fps) was asked for
    width: int
    height: int
    out_width: int
    out_height: int
    frames_in: int
    frames_out: int
    rate_in: Fraction
    rate_out: Fraction
    duration: Fraction  # seconds of video written
    seconds: float  # wall-clock time of the run
    cuts: list[int] = field(default_factory=list)  # input frames (on the constant-rate grid) that start a shot
    cut_times: list[Fraction] = field(default_factory=list)  # the same, in seconds from the first frame
    deinterlaced: bool = False
    segments: int = 1  # resumable pieces the output was made in (each starts with a keyframe)
    warnings: list[str] = field(default_factory=list)

    @property
    def fps(self) -> float:
        """Output frames per second of wall-clock time."""
        return self.frames_out / self.seconds if self.seconds > 0 else 0.0

    def to_json(self) -> dict:
        data = asdict(self)
        data.update(
            frames=self.frames_out,
            input=str(self.input),
            output=str(self.output),
            rate_in=str(self.rate_in),
            rate_out=str(self.rate_out),
            duration=float(self.duration),
            cut_times=[round(float(t), 6) for t in self.cut_times],
            seconds=round(self.seconds, 3),
            fps=round(self.fps, 3),
        )
        return data


@dataclass(frozen=True)
class Job:
    """A checked request: the files, the model and the plan parameters, before any heavy work."""

    src: Path
    dst: Path
    spec: ModelSpec
    scale: int
    fps_x: int
    window: int
    overlap: int


def check_job(
    src: Path | str,
    dst: Path | str,
    *,
    model: str | None,
    scale: int,
    fps_x: int | None,
    window: int | None,
    overlap: int | None,
    overwrite: bool,
    registry: Registry | None = None,
) -> Job:
    """Validate everything that can be validated without reading the video."""
    src, dst = Path(src), Path(dst)
    spec = (registry or load_registry()).get(model)
    spec.check_factors(scale=scale, fps_x=fps_x)  # fps_x None: a target --fps, checked once the input rate is known
    window, overlap = spec.window_and_overlap(window, overlap)

    if not src.exists():
        raise InputError(f"input '{src}' not found")
    if dst.resolve() == src.resolve() or (dst.exists() and dst.samefile(src)):
        raise UsageError(f"output '{dst}' is the input file", "choose another output path")
    if dst.is_dir():
        raise OutputError(f"output '{dst}' is a folder", "give a file name such as out.mp4")
    if dst.exists() and not overwrite:
        raise OutputError(f"output '{dst}' already exists", "use --overwrite to replace it")
    if not dst.parent.is_dir():
        raise OutputError(f"output folder '{dst.parent}' does not exist")
    return Job(src, dst, spec, scale, fps_x, window, overlap)


def upscale(
    input: Path | str,
    output: Path | str,
    *,
    model: str | None = None,
    scale: int = 4,
    fps_x: int = 2,
    fps: Fraction | float | str | None = None,
    window: int | None = None,
    overlap: int | None = None,
    tile: int = 0,
    device: str = "auto",
    half: bool | None = None,
    weights: Path | str | None = None,
    offline: bool | None = None,
    encode: EncodeSettings | None = None,
    start: float | Fraction | None = None,
    duration: float | Fraction | None = None,
    overwrite: bool = False,
    scene_detect: bool = True,
    scene_threshold: float = DEFAULT_SCENE_THRESHOLD,
    deinterlace: str = "auto",
    restart: bool = False,
    segment_frames: int = DEFAULT_SEGMENT_FRAMES,
    pipelined: bool = True,
    registry: Registry | None = None,
    on_info: Callable[[VideoInfo, Job], None] | None = None,
    progress: Progress | None = None,
    scan_progress: Progress | None = None,
    download_progress: hub.Progress | None = None,
    on_note: Callable[[str], None] | None = None,
) -> UpscaleResult:
    """Upscale ``input`` by ``scale`` in space and ``fps_x`` in time into ``output``.

    ``fps`` (a number or a fraction such as "60000/1001") asks for that frame rate instead of a
    factor: output frame j is the picture at j/fps seconds (a real frame where one falls exactly
    there), which models with arbitrary output times (``times = "any"`` in the registry) can make.
    The output has exactly ``fps_x`` times the input's frames at ``fps_x`` times its frame rate,
    lasts as long as the input and carries its audio and subtitles. Nothing is left at ``output``
    unless the whole run succeeds. ``start``/``duration`` (seconds) process a piece of the input.
    ``tile`` (LR pixels, 0 = off) runs the model on overlapping tiles, for frames too big for the device.
    The model's registered weights are downloaded on first use unless ``offline``; ``weights``
    names a local file to use instead.

    Hard scene cuts are found first (one quick pass over small thumbnails, ``scan_progress``
    reports it) unless ``scene_detect`` is off: no model call spans a cut, and the output frames
    between two shots repeat the nearer real frame. ``deinterlace`` is ``auto`` (when the stream
    says it is interlaced), ``on`` or ``off``.

    The output is made in segments of about ``segment_frames`` frames, kept in a work folder beside
    ``output`` until the end: running the same call again after any interruption resumes after the
    last finished segment, with the same frames an uninterrupted run gives (``restart`` starts
    over; a changed input or options start over by themselves; ``on_note`` hears which). A window
    that runs out of device memory is retried on smaller tiles.

    ``pipelined=False`` is the plain baseline that ``stvsr bench --plain`` measures: frames copied
    to the GPU from pageable memory and encoded in this thread, so decode, model and encode take
    turns instead of overlapping.
    """
    began = time.perf_counter()
    target_rate = parse_rate(fps) if fps is not None else None
    job = check_job(
        input, output, model=model, scale=scale, fps_x=None if target_rate else fps_x, window=window,
        overlap=overlap, overwrite=overwrite, registry=registry,
    )  # fmt: skip
    if start is not None and start < 0:
        raise UsageError("--start must not be negative")
    if duration is not None and duration <= 0:
        raise UsageError("--duration must be positive")
    if tile and tile < MIN_TILE:
        raise UsageError(f"--tile must be 0 (off) or at least {MIN_TILE} pixels")
    if deinterlace not in DEINTERLACE_MODES:
        raise UsageError(f"--deinterlace must be one of {', '.join(DEINTERLACE_MODES)}")
    if scene_threshold <= 0:
        raise UsageError("--scene-threshold must be positive")
    if segment_frames < 1:
        raise UsageError("--segment-frames must be at least 1")
    info = probe(job.src, start=start, duration=duration)
    upscaler = load_model(
        job.spec, scale=scale, device=device, half=half, weights=weights, offline=offline, progress=download_progress
    )
    if on_info is not None:
        on_info(info, job)
    rate_out = target_rate if target_rate is not None else info.frame_rate * fps_x
    step = info.frame_rate / rate_out  # input frames per output frame
    if target_rate is not None:  # a factor was checked with the job
        job.spec.check_step(step, f"{rate_text(info.frame_rate)} -> {rate_text(target_rate)} fps")
    n_outputs = output_count(info.frame_count, info.frame_rate, rate_out)
    deinterlacing = deinterlace == "on" or (deinterlace == "auto" and info.interlaced)
    settings = choose_codec(encode or EncodeSettings(), upscaler.device.type, info.bit_depth)
    fmt = output_format(job.dst)
    job_record = {
        "input": input_identity(job.src),
        "options": {
            "stvsr": __version__, "model": job.spec.name, "weights": input_identity(Path(weights)) if weights else None, "scale": scale,
            "fps_x": fps_x, "fps": target_rate, "window": job.window, "overlap": job.overlap, "tile": tile, "device": device,
            "half": half, "encode": asdict(settings), "start": start, "duration": duration,
            "scene_detect": scene_detect, "scene_threshold": scene_threshold, "deinterlace": deinterlace,
            "segment_frames": segment_frames,
        },
    }  # fmt: skip
    size = {"width": info.width * scale, "height": info.height * scale, "rate": rate_out}
    model = OutOfMemoryFallback(upscaler, scale, tile)
    work, note = WorkFolder.open(job.dst, job_record, restart=restart)
    try:
        notes = [note] if note else []
        if note and on_note is not None:
            on_note(note)
        if work.cuts is None:  # a resumed run reuses the cuts it found (the same input and options)
            work.set_cuts(find_scene_cuts(info, scene_threshold, scan_progress) if scene_detect else [])
        cuts = work.cuts
        plan = plan_windows(
            info.frame_count, job.window, job.overlap, min_frames=job.spec.min_frames, cuts=cuts,
            step=step, n_outputs=n_outputs,
        )  # fmt: skip
        # A resumed run decodes from just before the first frame it still needs, where that is exact.
        first_frame = 0
        if work.done_windows and can_seek_exactly(info, deinterlacing):
            first_frame = plan.first_frame_after(work.done_windows)
        with VideoReader(info, deinterlace=deinterlacing, first_frame=first_frame) as reader:
            segment = _SegmentBuilder(fmt, info, settings, size, work)
            # Encoding runs in its own thread, fed in order: the model never waits for the encoder.
            handle = lambda call: call[0](*call[1:])  # noqa: E731
            encoder = ThreadedSink(handle) if pipelined else InlineSink(handle)
            total = plan.n_outputs
            report = (lambda done: progress(done, total)) if progress is not None else None
            try:
                run_windows(
                    reader.frames(), plan, model, lambda rgb: encoder.put((segment.add, rgb)), report,
                    skip_windows=work.done_windows, first_frame=first_frame,
                    on_window_done=lambda windows, frames: encoder.put((segment.window_done, windows, frames)),
                    pin_memory=pipelined,
                )  # fmt: skip
                encoder.put((segment.finish,))
                encoder.close()
            except KeyboardInterrupt:
                try:
                    encoder.close()  # the few queued frames still go in: a segment they finish is kept
                except BaseException:
                    encoder.abort()
                raise
            except BaseException:
                encoder.abort()
                raise
        side_warnings = join_segments(
            job.dst, info, (work.packets(s) for s in work.segments), settings=settings, extradata=work.extradata,
            **size,
        )  # fmt: skip
    except BaseException as exc:
        if not work.segments:
            work.discard()  # nothing worth keeping
        explained = _explained(exc, work, job.dst)
        if explained is exc:
            raise
        raise explained from None
    frames_written, segments = work.done_frames, len(work.segments)
    work.discard()
    return UpscaleResult(
        input=job.src,
        output=job.dst,
        model=job.spec.name,
        device=str(upscaler.device),
        scale=scale,
        fps_x=fps_x if target_rate is None else None,
        width=info.width,
        height=info.height,
        out_width=info.width * scale,
        out_height=info.height * scale,
        frames_in=info.frame_count,
        frames_out=frames_written,
        rate_in=info.frame_rate,
        rate_out=rate_out,
        duration=frames_written / rate_out,
        seconds=time.perf_counter() - began,
        cuts=cuts,
        cut_times=[Fraction(c) / info.frame_rate for c in cuts],
        deinterlaced=deinterlacing,
        segments=segments,
        warnings=notes + model.notes + reader.warnings + side_warnings,
    )


class _SegmentBuilder:
    """Collects encoded output frames into segments of about ``segment_frames``, closed at window
    boundaries (so a resumed run recomputes exactly the same frames) and saved in the work folder."""

    def __init__(self, fmt: str, info: VideoInfo, settings: EncodeSettings, size: dict, work: WorkFolder) -> None:
        self.fmt, self.info, self.settings, self.size, self.work = fmt, info, settings, size, work
        self.limit = work.job["options"]["segment_frames"]
        self.encoder: FrameEncoder | None = None
        self.packets: list = []
        self.frames = 0
        self.windows = work.done_windows  # windows done so far, this run's and the earlier one's
        self.templates: dict = {}  # shared by the segments' encoders

    def add(self, rgb) -> None:
        if self.encoder is None:
            self.encoder = FrameEncoder(
                self.fmt, self.info, settings=self.settings, first_frame=self.work.done_frames,
                templates=self.templates, **self.size,
            )  # fmt: skip
        self.packets += self.encoder.encode(rgb)
        self.frames += 1

    def window_done(self, windows: int, frames: int) -> None:
        self.windows = windows
        if self.frames >= self.limit:
            self._close()

    def finish(self) -> None:
        if self.encoder is not None:
            self._close()

    def _close(self) -> None:
        self.packets += self.encoder.flush()
        windows = self.windows - self.work.done_windows
        self.work.add_segment(self.packets, windows=windows, frames=self.frames, extradata=self.encoder.extradata)
        self.encoder, self.packets, self.frames = None, [], 0


def _explained(exc: BaseException, work: WorkFolder, dst: Path) -> BaseException:
    """``exc`` as the user should see it: a full disk or Ctrl-C also says what was kept."""
    kept = len(work.segments)
    if isinstance(exc, OSError) and is_disk_full(exc):
        where = exc.filename or dst
        return OutputError(
            f"no space left on the disk of '{where}'",
            "free some space and run the same command again"
            + (f": {kept} finished segment(s) are kept in {work.path}" if kept else ""),
        )
    if isinstance(exc, OSError) and exc.errno in UNWRITABLE_ERRNOS:
        return OutputError(
            f"cannot write '{exc.filename or dst}': {(exc.strerror or str(exc)).lower()}",
            "choose an output folder you can write to",
        )
    if isinstance(exc, KeyboardInterrupt):
        return KeyboardInterrupt(
            f"interrupted; {kept} finished segment(s) kept in {work.path}: run the same command again to resume"
            if kept
            else "interrupted; no output was written"
        )
    return exc


def parse_rate(value: Fraction | float | str) -> Fraction:
    """A frame rate: 60, 59.94 (read as 60000/1001), or a fraction such as "60000/1001"."""
    try:
        rate = Fraction(str(value).strip()) if not isinstance(value, Fraction) else value
    except (ValueError, ZeroDivisionError):
        raise UsageError(f"--fps '{value}' is not a frame rate such as 60 or 60000/1001") from None
    if rate <= 0 or rate > 10_000:
        raise UsageError(f"--fps {value} is not a frame rate between 0 and 10000")
    return nominal_rate(rate) if rate.denominator in (1, 10, 100, 1000) else rate


def output_count(n_frames: int, rate_in: Fraction, rate_out: Fraction) -> int:
    """Output frames for ``n_frames`` at ``rate_out``: the same duration, to the nearest frame."""
    return max(1, math.floor(n_frames * rate_out / rate_in + Fraction(1, 2)))


def find_scene_cuts(
    info: VideoInfo, threshold: float = DEFAULT_SCENE_THRESHOLD, progress: Progress | None = None
) -> list[int]:
    """The frames of ``info`` (indices on its constant-rate grid) that start a new shot."""
    if info.frame_count < 2:
        return []
    total = info.frame_count

    def counted(thumbnails):
        for done, thumb in enumerate(thumbnails, 1):
            yield thumb
            if progress is not None and (done % 64 == 0 or done == total):
                progress(done, total)

    with VideoReader(info, thumbnails=True) as reader:
        return find_cuts(counted(reader.frames()), threshold)
