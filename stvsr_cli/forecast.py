"""``stvsr upscale --plan``: what a run would do, and how long it would take, before it starts.

The forecast sets the run up as ``upscale`` does (probe, telecine check, model and tiles, encoder),
scans for cuts and repeats where that is cheap, then times the real work on a sample: the first two
model windows' frames decoded, run through the model on this device and encoded in memory with the
run's encoder. The run's time is the set-up's, the first window's (which pays the warm-up), the
second's for each further window, and the scan's where it was left for the run; the output's size is the sample's bytes per
frame times the frames. Both as a range: later scenes may move more or less than the first, and
the machine may be busier. Nothing is written.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path

from stvsr_cli.api import check_job, prepare_model
from stvsr_cli.io.encode import FrameEncoder, choose_codec, output_format
from stvsr_cli.models.registry import Registry
from stvsr_cli.options import UpscaleOptions
from stvsr_cli.pipeline.plan import output_grid, plan_run
from stvsr_cli.pipeline.run import run_windows
from stvsr_cli.pipeline.source import open_source, scan

_IMPORTED = time.perf_counter()
SCAN_LIMIT = 3000  # input frames: a scan this short runs for the forecast, a longer one in the run
TIME_RANGE = (0.7, 1.5)  # the predicted time's range, as factors
SIZE_RANGE = (0.5, 1.5)  # the first frames (a keyframe among few) weigh more than the average


class _Sampled(Exception):
    """The sample window is done: stop the run."""


@dataclass(frozen=True)
class Forecast:
    input: str
    output: str
    model: str
    device: str
    license: str
    research_only: bool
    width: int
    height: int
    rate_in: str
    frames_in: int
    out_width: int
    out_height: int
    rate_out: str
    frames_out: int
    duration: float  # seconds of output
    codec: str
    tiling: str | None  # the tiles the memory budget gives, None for whole frames
    pulldown_removed: bool
    deinterlaced: bool
    cleanup: list[str]
    cuts: list[int] | None  # None: longer than SCAN_LIMIT, found during the run
    repeated_frames: list[int] | None
    windows: int
    sample_frames: int  # output frames of the timed windows (the first two)
    sample_seconds: float
    setup_seconds: float
    predicted_seconds: float
    predicted_seconds_range: tuple[float, float]
    predicted_cpu_seconds: float  # user + system time of all threads: what load on the machine leaves alone
    predicted_bytes: int
    predicted_bytes_range: tuple[int, int]

    def to_json(self) -> dict:
        return asdict(self)


def forecast(
    input: Path | str, output: Path | str, options: UpscaleOptions, registry: Registry | None = None
) -> Forecast:
    """The run ``upscale(input, output, options)`` would make, and its time and size, from a sample."""
    began, cpu_began = time.perf_counter(), time.process_time()
    job = check_job(input, output, options, registry)
    source = open_source(job.src, options, job.dst)
    info = source.info
    grid = output_grid(info, job.spec, fps_x=options.fps_x, fps=options.fps)
    model = prepare_model(job, info, grid)
    settings = choose_codec(options.encode, model.device.split(":")[0], info.bit_depth)
    found = None
    if info.frame_count <= SCAN_LIMIT:
        threshold = options.scene_threshold if options.scene_detect else None
        found = scan(source, threshold=threshold, dedup=options.dedup)
    plan = plan_run(info, grid, job.spec, window=job.window, overlap=job.overlap, cuts=found.cuts if found else [])
    setup, setup_cpu = time.perf_counter() - began, time.process_time() - cpu_began
    width, height = info.width * options.scale, info.height * options.scale
    encoder = FrameEncoder(output_format(job.dst), info, width=width, height=height, rate=grid.rate, settings=settings)
    sizes: list[int] = []

    def encode(frame) -> None:
        sizes.extend(len(p.data) for p in encoder.encode(frame))
        sizes.append(0)  # a frame made, whether or not the encoder has given its packets yet

    windows = len(plan.windows)
    done_at: list[tuple[float, float]] = []  # when each sampled window was done: wall and CPU clocks

    def stop(done: int, frames: int) -> None:
        done_at.append((time.perf_counter(), time.process_time()))
        if len(done_at) == min(2, windows):
            raise _Sampled

    sample_began = (time.perf_counter(), time.process_time())
    with source.reader() as reader:
        try:
            run_windows(reader.frames(), plan, model.runner, encode, on_window_done=stop, pin_memory=False)
        except _Sampled:
            pass
    sizes.extend(len(p.data) for p in encoder.flush())
    made = max(1, sizes.count(0))
    # The first window pays the warm-up (kernels chosen, memory first touched) once; the second is
    # what every later one costs.
    predicted = [0.0, 0.0]
    for clock in (0, 1):  # wall, then CPU (all threads; a busy machine slows the one, not the other)
        first = done_at[0][clock] - sample_began[clock]
        steady = done_at[-1][clock] - done_at[0][clock] if len(done_at) > 1 else first
        predicted[clock] = first + steady * (windows - 1)
    sample = done_at[-1][0] - sample_began[0]
    unscanned = 0.0 if found is not None else scan_time(source, info.frame_count)
    predicted[0] += started_since() + setup + unscanned
    predicted[1] += cpu_began + setup_cpu + unscanned  # cpu_began: what starting Python and the libraries took
    per_frame = sum(sizes) / made
    return Forecast(
        input=str(job.src), output=str(job.dst), model=job.spec.name, device=model.device,
        license=job.spec.license, research_only=job.spec.research_only, width=info.width, height=info.height,
        rate_in=str(info.frame_rate), frames_in=info.frame_count, out_width=width, out_height=height,
        rate_out=str(grid.rate), frames_out=grid.count, duration=float(grid.count / grid.rate),
        codec=settings.codec or "libx264", tiling=model.tiling, pulldown_removed=source.ivtc,
        deinterlaced=source.deinterlace, cleanup=source.filters.described(),
        cuts=found.cuts if found else None, repeated_frames=found.repeats if found else None, windows=windows,
        sample_frames=made, sample_seconds=round(sample, 3), setup_seconds=round(setup, 3),
        predicted_seconds=round(predicted[0], 1),
        predicted_seconds_range=(round(predicted[0] * TIME_RANGE[0], 1), round(predicted[0] * TIME_RANGE[1], 1)),
        predicted_cpu_seconds=round(predicted[1], 1),
        predicted_bytes=int(per_frame * grid.count),
        predicted_bytes_range=(int(per_frame * grid.count * SIZE_RANGE[0]), int(per_frame * grid.count * SIZE_RANGE[1])),
    )  # fmt: skip


def started_since() -> float:
    """Seconds this process ran before the forecast (Python and the libraries starting, which the
    run pays too); 0 where the system does not say (``/proc``)."""
    try:
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return max(0.0, uptime - ticks / os.sysconf("SC_CLK_TCK") - (time.perf_counter() - _IMPORTED))
    except (OSError, ValueError, IndexError):
        return 0.0


def scan_time(source, frames: int, sample: int = 100) -> float:
    """The scan's time for ``frames`` frames, from decoding the first ``sample`` as it does."""
    began = time.perf_counter()
    with source.reader(thumbnails=True) as reader:
        done = sum(1 for _ in zip(range(sample), reader.frames()))
    return (time.perf_counter() - began) / max(1, done) * frames


def duration_text(seconds: float) -> str:
    """``seconds`` as people say it: 45 s, 12 min, 3 h 20 min, 4 days."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    if seconds < 48 * 3600:
        hours, minutes = divmod(round(seconds / 60), 60)
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    return f"{seconds / 86400:.1f} days"


def size_text(size: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} GB"


def forecast_lines(f: Forecast) -> list[str]:
    """The forecast for a person: what goes in, what comes out, how, and how long."""
    rate_in, rate_out = float(Fraction(f.rate_in)), float(Fraction(f.rate_out))
    source = ["3:2 pulldown undone"] * f.pulldown_removed + ["deinterlaced"] * f.deinterlaced
    cuts = "found during the run" if f.cuts is None else f"{len(f.cuts)}"
    repeats = "" if f.repeated_frames is None else f", {len(f.repeated_frames)} repeated frames"
    low, high = f.predicted_seconds_range
    return [
        f"in:  {Path(f.input).name}: {f.width}x{f.height}, {rate_in:.3f} fps, {f.frames_in} frames"
        + (f" ({', '.join(source)})" if source else ""),
        f"out: {Path(f.output).name}: {f.out_width}x{f.out_height}, {rate_out:.3f} fps, {f.frames_out} frames, "
        f"{f.duration:.1f} s, {f.codec}",
        f"model {f.model} on {f.device}, {f.tiling or 'whole frames'}"
        + (f"; before it: {', '.join(c.split('=')[0] for c in f.cleanup)}" if f.cleanup else ""),
        f"scene cuts: {cuts}{repeats}; {f.windows} model windows",
        f"predicted: {duration_text(f.predicted_seconds)} ({duration_text(low)} to {duration_text(high)}), "
        f"output about {size_text(f.predicted_bytes)}; from two windows ({f.sample_frames} frames) in "
        f"{f.sample_seconds:.1f} s after {f.setup_seconds:.1f} s of set-up",
    ]
