"""The Python API: what the ``stvsr`` command does, callable from scripts.

>>> from stvsr_cli import upscale
>>> result = upscale("in.mp4", "out.mp4", scale=4, fps_x=2)   # doctest: +SKIP
>>> result.frames_out, result.rate_out                        # doctest: +SKIP
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path

from stvsr_cli import hub
from stvsr_cli.errors import InputError, OutputError, UsageError
from stvsr_cli.io.decode import VideoInfo, VideoReader, probe
from stvsr_cli.io.encode import EncodeSettings, VideoWriter, is_disk_full
from stvsr_cli.models.loader import load_model
from stvsr_cli.models.registry import ModelSpec, Registry, load_registry
from stvsr_cli.pipeline.run import run_windows
from stvsr_cli.pipeline.scenes import DEFAULT_SCENE_THRESHOLD, find_cuts
from stvsr_cli.pipeline.tiles import MIN_TILE, TiledModel
from stvsr_cli.pipeline.windows import plan_windows

Progress = Callable[[int, int], None]  # (frames done, frames in all)
DEINTERLACE_MODES = ("auto", "on", "off")


@dataclass(frozen=True)
class UpscaleResult:
    input: Path
    output: Path
    model: str
    device: str
    scale: int
    fps_x: int
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
    fps_x: int,
    window: int | None,
    overlap: int | None,
    overwrite: bool,
    registry: Registry | None = None,
) -> Job:
    """Validate everything that can be validated without reading the video."""
    src, dst = Path(src), Path(dst)
    spec = (registry or load_registry()).get(model)
    spec.check_factors(scale=scale, fps_x=fps_x)
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
    registry: Registry | None = None,
    on_info: Callable[[VideoInfo, Job], None] | None = None,
    progress: Progress | None = None,
    scan_progress: Progress | None = None,
    download_progress: hub.Progress | None = None,
) -> UpscaleResult:
    """Upscale ``input`` by ``scale`` in space and ``fps_x`` in time into ``output``.

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
    """
    began = time.perf_counter()
    job = check_job(
        input, output, model=model, scale=scale, fps_x=fps_x, window=window, overlap=overlap,
        overwrite=overwrite, registry=registry,
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
    info = probe(job.src, start=start, duration=duration)
    upscaler = load_model(
        job.spec, scale=scale, device=device, half=half, weights=weights, offline=offline, progress=download_progress
    )
    if on_info is not None:
        on_info(info, job)
    cuts = find_scene_cuts(info, scene_threshold, scan_progress) if scene_detect else []
    plan = plan_windows(info.frame_count, job.window, job.overlap, fps_x, job.spec.min_frames, cuts=cuts)
    deinterlacing = deinterlace == "on" or (deinterlace == "auto" and info.interlaced)
    rate_out = info.frame_rate * fps_x
    try:
        with (
            VideoReader(info, deinterlace=deinterlacing) as reader,
            VideoWriter(
                job.dst,
                info,
                width=info.width * scale,
                height=info.height * scale,
                rate=rate_out,
                settings=encode or EncodeSettings(),
            ) as writer,
        ):
            total = plan.n_outputs
            report = (lambda done: progress(done, total)) if progress is not None else None
            model = TiledModel(upscaler, tile, scale) if tile else upscaler
            run_windows(reader.frames(), plan, model, writer.write, report)
    except OSError as exc:
        if is_disk_full(exc):
            raise OutputError(f"no space left on the disk of '{job.dst}'", "free some space and run again") from None
        raise
    return UpscaleResult(
        input=job.src,
        output=job.dst,
        model=job.spec.name,
        device=str(upscaler.device),
        scale=scale,
        fps_x=fps_x,
        width=info.width,
        height=info.height,
        out_width=info.width * scale,
        out_height=info.height * scale,
        frames_in=info.frame_count,
        frames_out=writer.frames_written,
        rate_in=info.frame_rate,
        rate_out=rate_out,
        duration=writer.frames_written / rate_out,
        seconds=time.perf_counter() - began,
        cuts=cuts,
        cut_times=[Fraction(c) / info.frame_rate for c in cuts],
        deinterlaced=deinterlacing,
        warnings=reader.warnings + writer.warnings,
    )


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
