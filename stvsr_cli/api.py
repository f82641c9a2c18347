"""The Python API: what the ``stvsr`` command does, callable from scripts.

>>> from stvsr_cli import upscale
>>> result = upscale("in.mp4", "out.mp4", scale=4, fps_x=2)   # doctest: +SKIP
>>> result.frames_out, result.rate_out                        # doctest: +SKIP

A run is a short composition of stages: the source (probe, deinterlace, scene cuts, repeated
frames), the plan (output grid, model windows), the model runner (tiles, out-of-memory fallback)
and the sink (encoded segments in a work folder, joined into the output at the end).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING

from stvsr_cli import hub
from stvsr_cli.errors import InputError, OutputError, UsageError
from stvsr_cli.io.decode import VideoInfo
from stvsr_cli.io.encode import EncodeSettings, choose_codec, encoder_pixels, is_disk_full, output_format
from stvsr_cli.io.workdir import UNWRITABLE_ERRNOS, WorkFolder, input_identity
from stvsr_cli.models.registry import ModelSpec, Registry, load_registry
from stvsr_cli.options import UpscaleOptions
from stvsr_cli.pipeline.classic_frames import ClassicFrames
from stvsr_cli.pipeline.memory import budgeted_runner
from stvsr_cli.pipeline.plan import OutputGrid, output_grid, plan_run
from stvsr_cli.pipeline.planes import plane_layout
from stvsr_cli.pipeline.repeats import Dedup, choose_repeats
from stvsr_cli.pipeline.run import run_windows
from stvsr_cli.pipeline.sink import OutputSink, Segments
from stvsr_cli.pipeline.source import Progress, Source, find_cuts_and_repeats, find_scene_cuts, open_source
from stvsr_cli.pipeline.stages import StageClock
from stvsr_cli.pipeline.tiles import OutOfMemoryFallback
from stvsr_cli.pipeline.transfer import Transfers
from stvsr_cli.pipeline.windows import WindowPlan

if TYPE_CHECKING:
    import torch

    from stvsr_cli.models.loader import Upscaler


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
    dedup: bool = False  # repeated frames were dropped from the model's input and the rest re-timed
    repeated_frames: list[int] = field(default_factory=list)  # input frames dropped as repeats of the previous one
    repeat_patterns: list[str] = field(default_factory=list)  # regular patterns found, e.g. "1 in 5 over frames 0-59"
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
    """A checked request: the files, the model and its window, the options; before any heavy work."""

    src: Path
    dst: Path
    spec: ModelSpec
    window: int
    overlap: int
    options: UpscaleOptions


def check_job(src: Path | str, dst: Path | str, options: UpscaleOptions, registry: Registry | None = None) -> Job:
    """Validate everything that can be validated without reading the video."""
    src, dst = Path(src), Path(dst)
    spec = (registry or load_registry()).get(options.model)
    # With a target --fps the time factor is checked once the input rate is known (output_grid).
    spec.check_factors(scale=options.scale, fps_x=None if options.fps else options.fps_x)
    window, overlap = spec.window_and_overlap(options.window, options.overlap)

    if not src.exists():
        raise InputError(f"input '{src}' not found")
    if dst.resolve() == src.resolve() or (dst.exists() and dst.samefile(src)):
        raise UsageError(f"output '{dst}' is the input file", "choose another output path")
    if dst.is_dir():
        raise OutputError(f"output '{dst}' is a folder", "give a file name such as out.mp4")
    if dst.exists() and not options.overwrite:
        raise OutputError(f"output '{dst}' already exists", "use --overwrite to replace it")
    if not dst.parent.is_dir():
        raise OutputError(f"output folder '{dst.parent}' does not exist")
    return Job(src, dst, spec, window, overlap, options)


def load_upscaler(
    options: UpscaleOptions, spec: ModelSpec | None = None, progress: hub.Progress | None = None
) -> Upscaler:
    """The model ``options`` name (or ``spec``), checked against their factors and loaded on their
    device, its weights downloaded on first use: for ``upscale`` and ``stvsr eval`` alike."""
    from stvsr_cli.models.loader import load_model  # PyTorch: imported only where a network runs

    spec = spec or load_registry().get(options.model)
    spec.check_factors(scale=options.scale, fps_x=None if options.fps else options.fps_x)
    return load_model(
        spec, scale=options.scale, device=options.device, half=options.half, weights=options.weights,
        offline=options.offline, progress=progress, speed=options.speed,
    )  # fmt: skip


def on_arrays(spec: ModelSpec, options: UpscaleOptions) -> bool:
    """Whether the run works on the decoded arrays, without PyTorch: classic on the CPU (the same
    pixels as its tensor model, to rounding, at a fraction of the time and memory; see
    ``pipeline.classic_frames``). ``--device auto`` counts as the CPU here: FFmpeg's scaler keeps up
    with the encoder, so a GPU would gain little; ``--device cuda`` or ``--half`` run the tensor model.
    ``--tile`` and ``--max-memory`` size nothing there: no frame is held as floats."""
    return (
        spec.arch == "classic"
        and options.device in ("auto", "cpu")
        and not options.half
        and not options.weights
        and not options.device_colour
    )


def upscale(
    input: Path | str,
    output: Path | str,
    options: UpscaleOptions | None = None,
    *,
    registry: Registry | None = None,
    on_info: Callable[[VideoInfo, Job, OutputGrid], None] | None = None,
    progress: Progress | None = None,
    scan_progress: Progress | None = None,
    download_progress: hub.Progress | None = None,
    on_note: Callable[[str], None] | None = None,
    clock: Callable[[], float] = time.monotonic,
    stage_clock: StageClock | None = None,
    **changes,
) -> UpscaleResult:
    """Upscale ``input`` into ``output`` as ``options`` (an ``UpscaleOptions``, with ``changes``
    made to it; or the ``UpscaleOptions`` fields as keywords) say: ``scale`` in space and ``fps_x``
    in time, or to the frame rate ``fps``.

    The output lasts as long as the input and carries its audio and subtitles; nothing is left at
    ``output`` unless the whole run succeeds. The model's weights are downloaded on first use
    (``download_progress``) unless ``offline``. Hard scene cuts are found first (``scan_progress``),
    so that no model call spans one. The output is made in segments kept in a work folder beside
    it until the end: running the same call again after any interruption resumes after the last
    finished segment, with the frames an uninterrupted run gives (``on_note`` says so, or why it
    starts afresh). A segment closes after ``segment_frames`` frames or a minute of work by
    ``clock``. ``on_info`` hears what the input is and what the output will be, before the work.
    ``stage_clock`` sums the seconds of each stage (decode to encode; ``stvsr bench``).
    """
    began = time.perf_counter()
    options = replace(options, **changes) if options is not None else UpscaleOptions(**changes)
    job = check_job(input, output, options, registry)
    source = open_source(job.src, start=options.start, duration=options.duration, deinterlace=options.deinterlace)
    if on_arrays(job.spec, options):
        upscaler, device = None, "cpu"
        options.speed.check_device("cpu")
    else:
        upscaler = load_upscaler(options, job.spec, download_progress)
        device = str(upscaler.device)
    grid = output_grid(source.info, job.spec, fps_x=options.fps_x, fps=options.fps)
    if on_info is not None:
        on_info(source.info, job, grid)
    settings = choose_codec(options.encode, device.split(":")[0], source.info.bit_depth)
    fmt = output_format(job.dst)  # the muxer: the encoder's stream is set up for it
    transfers = None if upscaler is None else _transfers(upscaler.device, job, fmt, source.info, grid, settings)
    device_colour = transfers is not None and transfers.layout is not None
    work, note = WorkFolder.open(job.dst, _work_record(job, settings, device_colour), restart=options.restart)
    if note and on_note is not None:
        on_note(note)
    if upscaler is None:
        runner, tiling = ClassicFrames(options.scale), None
    else:
        runner, tiling = budgeted_runner(
            upscaler, window=job.window, fps_x=math.ceil(1 / grid.step),
            height=source.info.height, width=source.info.width, max_memory=options.max_memory, tile=options.tile,
            batch_windows=options.speed.batch_windows,
        )  # fmt: skip
    if tiling and on_note is not None:
        on_note(tiling)
    try:
        cuts, dedup = _scan(work, source, options, scan_progress)
        plan = plan_run(source.info, grid, job.spec, window=job.window, overlap=job.overlap, cuts=cuts, dedup=dedup)
        segments = _segments(job, fmt, source.info, grid, settings, work, clock, stage_clock)
        sink = OutputSink(segments, threaded=options.pipelined)
        warnings = _run(
            source, plan, runner, sink, progress, pin_memory=options.pipelined, dedup=dedup,
            batch_windows=options.speed.batch_windows, clock=stage_clock, transfers=transfers,
        )  # fmt: skip
        warnings += segments.join(job.dst)
    except BaseException as exc:
        if not work.segments:
            work.discard()  # nothing worth keeping
        explained = _explained(exc, work, job.dst)
        if explained is exc:
            raise
        raise explained from None
    frames, pieces = work.done_frames, len(work.segments)
    work.discard()
    warnings = ([note] if note else []) + runner.notes + _nearest_time_warning(job.spec, grid, dedup) + warnings
    return _result(job, source, grid, device, cuts, dedup, frames=frames, segments=pieces,
                   warnings=warnings, seconds=time.perf_counter() - began)  # fmt: skip


def _work_record(job: Job, settings: EncodeSettings, device_colour: bool) -> dict:
    """What a resumable run must share with this one: the input's identity and the options."""
    options = job.options.manifest(
        model=job.spec.name, window=job.window, overlap=job.overlap, encode=settings, device_colour=device_colour
    )
    return {"input": input_identity(job.src), "options": options}


def _transfers(
    device: torch.device, job: Job, fmt: str, info: VideoInfo, grid: OutputGrid, settings: EncodeSettings
) -> Transfers:
    """How frames travel to the model's device and back: pinned on CUDA, on copy streams with
    ``--copy-stream`` (neither in the plain baseline); converted there to the encoder's planes
    with ``--device-colour`` where the output's pixel format allows it (planar YUV)."""
    options = job.options
    layout = None
    if options.uses_device_colour(device.type):
        scale = options.scale
        width, height = info.width * scale, info.height * scale
        pix_fmt, colour = encoder_pixels(fmt, info, width=width, height=height, rate=grid.rate, settings=settings)
        layout = plane_layout(pix_fmt, colour, width, height)
    side_stream = options.uses_copy_stream(device.type)
    return Transfers(device, pinned=options.pipelined, side_stream=side_stream, layout=layout)


def _segments(
    job: Job,
    fmt: str,
    info: VideoInfo,
    grid: OutputGrid,
    settings: EncodeSettings,
    work: WorkFolder,
    clock: Callable[[], float],
    stage_clock: StageClock | None = None,
) -> Segments:
    scale = job.options.scale
    size = {"width": info.width * scale, "height": info.height * scale, "rate": grid.rate}
    return Segments(
        work, fmt=fmt, info=info, settings=settings, size=size,
        max_frames=job.options.segment_frames, clock=clock, stage_clock=stage_clock,
    )  # fmt: skip


def _scan(
    work: WorkFolder, source: Source, options: UpscaleOptions, progress: Progress | None
) -> tuple[list[int], Dedup | None]:
    """The cuts and the repeated frames to drop, found once per job: a resumed run reuses what its
    work folder recorded. With ``--dedup off`` the scan is the cut scan alone, as it always was."""
    info = source.info
    if work.cuts is None or (options.dedup != "off" and work.repeats is None):
        if options.dedup == "off":
            cuts = find_scene_cuts(info, options.scene_threshold, progress) if options.scene_detect else []
            work.set_cuts(cuts)
        else:
            threshold = options.scene_threshold if options.scene_detect else None
            cuts, dedup = find_cuts_and_repeats(info, threshold, options.dedup, progress)
            work.set_cuts(cuts, list(dedup.repeated) if dedup is not None else [])
    return work.cuts, choose_repeats(options.dedup, info.frame_count, work.cuts, work.repeats or [])


def _nearest_time_warning(spec: ModelSpec, grid: OutputGrid, dedup: Dedup | None) -> list[str]:
    """Re-timed frames fall between a fixed-factor model's own output times: say that it rounds."""
    if dedup is None or spec.arbitrary_times:
        return []
    k = grid.step.denominator
    line = (
        f"model '{spec.name}' makes frames only at 1/{k} steps between input frames: with the repeated frames "
        f"dropped, each output frame is the nearest of those to its re-timed place (up to 1/{2 * k} frame off); "
        "a model with arbitrary times (classic, stvun) makes them exactly"
    )
    return [line]


def _run(
    source: Source, plan: WindowPlan, runner: OutOfMemoryFallback | ClassicFrames, sink: OutputSink,
    progress: Progress | None, *, pin_memory: bool, dedup: Dedup | None = None, batch_windows: int = 1,
    clock: StageClock | None = None, transfers: Transfers | None = None,
) -> list[str]:  # fmt: skip
    """Decode (without ``dedup``'s repeated frames), run the model windows not done yet, encode;
    returns the reader's warnings."""
    done = sink.segments.work.done_windows
    first_frame = source.resume_frame(plan, done)  # the plan's frames: the unique ones with dedup
    start = dedup.original(first_frame) if dedup is not None else first_frame
    report = (lambda count: progress(count, plan.n_outputs)) if progress is not None else None
    with source.reader(start, clock) as reader:
        frames = dedup.unique_frames(reader.frames(), start) if dedup is not None else reader.frames()
        try:
            run_windows(
                frames, plan, runner, sink.frame, report, skip_windows=done, first_frame=first_frame,
                on_window_done=sink.window_done, pin_memory=pin_memory, batch_windows=batch_windows, clock=clock,
                transfers=transfers,
            )  # fmt: skip
            sink.close()
        except BaseException as exc:
            sink.stop(exc)
            raise
    return reader.warnings


def _result(
    job: Job, source: Source, grid: OutputGrid, device: str, cuts: list[int], dedup: Dedup | None, *, frames: int,
    segments: int, warnings: list[str], seconds: float,
) -> UpscaleResult:  # fmt: skip
    info, scale = source.info, job.options.scale
    return UpscaleResult(
        input=job.src,
        output=job.dst,
        model=job.spec.name,
        device=device,
        scale=scale,
        fps_x=job.options.fps_x if job.options.fps is None else None,
        width=info.width,
        height=info.height,
        out_width=info.width * scale,
        out_height=info.height * scale,
        frames_in=info.frame_count,
        frames_out=frames,
        rate_in=info.frame_rate,
        rate_out=grid.rate,
        duration=frames / grid.rate,
        seconds=seconds,
        cuts=cuts,
        cut_times=[Fraction(c) / info.frame_rate for c in cuts],
        deinterlaced=source.deinterlace,
        dedup=dedup is not None,
        repeated_frames=list(dedup.repeated) if dedup is not None else [],
        repeat_patterns=[str(c) for c in dedup.cadences] if dedup is not None else [],
        segments=segments,
        warnings=warnings,
    )


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
