"""The Python API: what the ``stvsr`` command does, callable from scripts.

>>> from stvsr_cli import upscale
>>> result = upscale("in.mp4", "out.mp4", scale=4, fps_x=2)   # doctest: +SKIP
>>> result.frames_out, result.rate_out                        # doctest: +SKIP

A run is a short composition of stages: the source (probe, telecine undone or deinterlacing, scene
cuts, repeated frames), the plan (output grid, model windows), the model runner (tiles, out-of-memory fallback)
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
from stvsr_cli.pipeline.grain import grain_adder
from stvsr_cli.pipeline.grey import grey_windows
from stvsr_cli.pipeline.memory import budgeted_runner
from stvsr_cli.pipeline.plan import OutputGrid, output_grid, plan_run
from stvsr_cli.pipeline.planes import plane_layout
from stvsr_cli.pipeline.repeats import Dedup
from stvsr_cli.pipeline.run import run_windows
from stvsr_cli.pipeline.sink import OutputSink, Segments
from stvsr_cli.pipeline.source import Progress, Scan, Source, open_source, scan_once
from stvsr_cli.pipeline.stages import StageClock
from stvsr_cli.pipeline.tiles import OutOfMemoryFallback
from stvsr_cli.pipeline.transfer import Transfers
from stvsr_cli.pipeline.windows import WindowPlan

if TYPE_CHECKING:
    from stvsr_cli.io.colour import Colour
    from stvsr_cli.models.loader import Upscaler


@dataclass(frozen=True)
class UpscaleResult:
    input: Path
    output: Path
    model: str
    device: str
    license: str  # of the model's weights (``research_only``: not for what one publishes)
    research_only: bool
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
    pulldown_removed: bool = False  # hard telecine undone: frames_in and rate_in are the film's
    telecine: dict | None = None  # what the check of the first seconds found (found, phase, moving, repeats)
    dedup: bool = False  # repeated frames were dropped from the model's input and the rest re-timed
    repeated_frames: list[int] = field(default_factory=list)  # input frames dropped as repeats of the previous one
    repeat_patterns: list[str] = field(default_factory=list)  # regular patterns found, e.g. "1 in 5 over frames 0-59"
    grey_shots: list[int] = field(default_factory=list)  # first frames of the black-and-white shots (made grey)
    cleanup: list[str] = field(default_factory=list)  # FFmpeg filters run on the decoded frames (name=arguments)
    grain: dict[int, dict] | None = None  # --grain keep: each shot's measured grain, by its first frame
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
    with the encoder, so a GPU would gain little; ``--device cuda`` or ``--half`` run the tensor model."""
    return (
        spec.arch == "classic"
        and options.device in ("auto", "cpu")
        and not options.half
        and not options.weights
        and not options.device_colour
    )


@dataclass
class ModelStage:
    """The model side of a run: the network (None on the decoded arrays), its device, and the
    runner that feeds it windows (tiled as the memory budget says; its ``notes`` are warnings)."""

    upscaler: Upscaler | None
    device: str
    runner: OutOfMemoryFallback | ClassicFrames
    tiling: str | None  # the tiles the memory budget chose, for the user before the work


def prepare_model(
    job: Job, info: VideoInfo, grid: OutputGrid, download_progress: hub.Progress | None = None
) -> ModelStage:
    """The network ``job`` asks for, loaded (its weights downloaded on first use) and sized for
    ``info``'s frames; or classic on the decoded arrays, which needs neither."""
    options = job.options
    if on_arrays(job.spec, options):
        options.speed.check_device("cpu")
        runner = ClassicFrames(options.scale)
        if ignored := options.without_effect_on_arrays():
            runner.notes.append(f"{', '.join(ignored)}: no effect with model '{job.spec.name}' on the CPU")
        return ModelStage(None, "cpu", runner, None)
    upscaler = load_upscaler(options, job.spec, download_progress)
    runner, tiling = budgeted_runner(
        upscaler, window=job.window, fps_x=math.ceil(1 / grid.step), height=info.height, width=info.width,
        max_memory=options.max_memory, tile=options.tile, batch_windows=options.speed.batch_windows,
    )  # fmt: skip
    return ModelStage(upscaler, str(upscaler.device), runner, tiling)


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
    """Upscale ``input`` into ``output`` as ``options`` (an ``UpscaleOptions``, changed by ``changes``;
    or its fields as keywords) say: ``scale`` in space, ``fps_x`` in time or the rate ``fps``.

    The output lasts as long as the input, with its audio and subtitles; nothing is left at ``output``
    unless the whole run succeeds. Weights are downloaded on first use (``download_progress``) unless
    ``offline``. A scan (``scan_progress``) first finds the cuts no model call spans, repeated frames
    and black-and-white shots. Segments kept in a work folder let the same call resume after any
    interruption (``on_note`` says so); one closes after ``segment_frames`` frames or a minute by
    ``clock``. ``on_info`` hears what the input and output are; ``stage_clock`` times the stages.
    """
    began = time.perf_counter()
    options = replace(options, **changes) if options is not None else UpscaleOptions(**changes)
    job = check_job(input, output, options, registry)
    source = open_source(job.src, options, job.dst)
    info, grid = source.info, output_grid(source.info, job.spec, fps_x=options.fps_x, fps=options.fps)
    model = prepare_model(job, info, grid, download_progress)
    if on_info is not None:
        on_info(info, job, grid)
    settings = choose_codec(options.encode, model.device.split(":")[0], info.bit_depth)
    fmt = output_format(job.dst)  # the muxer: the encoder's stream is set up for it
    transfers = _transfers(model, job, fmt, info, grid, settings)
    work, note = WorkFolder.open(job.dst, _work_record(job, settings, transfers), restart=options.restart)
    for line in (note, source.note, model.tiling) if on_note is not None else ():
        if line:
            on_note(line)
    try:
        scan, dedup = scan_once(work, source, options, scan_progress)
        plan = plan_run(info, grid, job.spec, window=job.window, overlap=job.overlap, cuts=scan.cuts, dedup=dedup)
        segments = _segments(job, fmt, info, grid, settings, work, clock, stage_clock)
        warnings = _run(source, plan, model.runner, segments, progress, options, scan=scan, dedup=dedup,
                        transfers=transfers, clock=stage_clock)  # fmt: skip
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
    warnings = [note] * bool(note) + model.runner.notes + _nearest_time_warning(job.spec, grid, dedup) + warnings
    return _result(job, source, grid, model.device, scan, dedup, frames=frames, segments=pieces,
                   warnings=warnings, seconds=time.perf_counter() - began)  # fmt: skip


def _work_record(job: Job, settings: EncodeSettings, transfers: Transfers | None) -> dict:
    """What a resumable run must share with this one: the input's identity and the options."""
    device_colour = transfers is not None and transfers.layout is not None
    options = job.options.manifest(
        model=job.spec.name, window=job.window, overlap=job.overlap, encode=settings, device_colour=device_colour
    )
    return {"input": input_identity(job.src), "options": options}


def _transfers(
    model: ModelStage, job: Job, fmt: str, info: VideoInfo, grid: OutputGrid, settings: EncodeSettings
) -> Transfers | None:
    """How frames travel to the model's device and back: pinned on CUDA, on copy streams with
    ``--copy-stream`` (neither in the plain baseline); converted there to the encoder's planes
    with ``--device-colour`` where the output's pixel format allows it (planar YUV). On the decoded
    arrays nothing travels (None), and classic makes the encoder's planes wherever it takes planar YUV."""
    options = job.options
    width, height = info.width * options.scale, info.height * options.scale

    def planar() -> tuple[str, Colour] | None:
        pix_fmt, colour = encoder_pixels(fmt, info, width=width, height=height, rate=grid.rate, settings=settings)
        return (pix_fmt, colour) if plane_layout(pix_fmt, colour, width, height) is not None else None

    if model.upscaler is None:
        if (pixels := planar()) is not None:
            model.runner.encode_as(*pixels, source=info)
        return None
    device = model.upscaler.device
    pixels = planar() if options.uses_device_colour(device.type) else None
    layout = plane_layout(*pixels, width, height) if pixels is not None else None
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
    source: Source, plan: WindowPlan, runner: OutOfMemoryFallback | ClassicFrames, segments: Segments,
    progress: Progress | None, options: UpscaleOptions, *, scan: Scan, dedup: Dedup | None = None,
    transfers: Transfers | None = None, clock: StageClock | None = None,
) -> list[str]:  # fmt: skip
    """Decode (without ``dedup``'s repeated frames), run the model windows not done yet (those in the
    ``scan``'s black-and-white shots made grey), grain the output as the scan measured (``--grain
    keep``), encode; returns the reader's warnings."""
    sink = OutputSink(segments, threaded=options.pipelined)
    output = sink.frame
    if scan.grain is not None:  # each output frame grained as its shot's input, from its own number on
        per_output = source.info.frame_count / plan.n_outputs
        grained = grain_adder(scan.grain, scale=options.scale, input_frame=lambda j: int(j * per_output),
                              first_output=segments.work.done_frames)  # fmt: skip
        output = lambda frame: sink.frame(grained(frame))  # noqa: E731
    grey = grey_windows(scan.grey_shots, scan.cuts, dedup.original if dedup is not None else int)
    done = segments.work.done_windows
    first_frame = source.resume_frame(plan, done)  # the plan's frames: the unique ones with dedup
    start = dedup.original(first_frame) if dedup is not None else first_frame
    report = (lambda count: progress(count, plan.n_outputs)) if progress is not None else None
    with source.reader(start, clock) as reader:
        frames = dedup.unique_frames(reader.frames(), start) if dedup is not None else reader.frames()
        try:
            run_windows(
                frames, plan, runner, output, report, skip_windows=done, first_frame=first_frame,
                on_window_done=sink.window_done, pin_memory=options.pipelined,
                batch_windows=options.speed.batch_windows, clock=clock, transfers=transfers, grey=grey,
            )  # fmt: skip
            sink.close()
        except BaseException as exc:
            sink.stop(exc)
            raise
    return reader.warnings


def _result(
    job: Job, source: Source, grid: OutputGrid, device: str, scan: Scan, dedup: Dedup | None, *, frames: int,
    segments: int, warnings: list[str], seconds: float,
) -> UpscaleResult:  # fmt: skip
    info, scale, cuts = source.info, job.options.scale, scan.cuts
    return UpscaleResult(
        input=job.src,
        output=job.dst,
        model=job.spec.name,
        device=device,
        license=job.spec.license,
        research_only=job.spec.research_only,
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
        pulldown_removed=source.ivtc,
        telecine=source.cadence.as_dict() if source.cadence is not None else None,
        dedup=dedup is not None,
        repeated_frames=list(dedup.repeated) if dedup is not None else [],
        repeat_patterns=[str(c) for c in dedup.cadences] if dedup is not None else [],
        grey_shots=scan.grey_shots,
        cleanup=source.filters.described(),
        grain={shot: profile.as_dict() for shot, profile in scan.grain.items()} if scan.grain else None,
        segments=segments,
        warnings=[source.note] * bool(source.note) + warnings,
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
