"""The source stage: the input probed, whether hard telecine is undone or the input deinterlaced, the
scan (where its shots are cut, which frames repeat the previous one, which shots are black-and-white),
and a reader of its frames from wherever a run (or a resumed one) starts."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from stvsr_cli.io.decode import Thumbnail, VideoInfo, VideoReader, can_seek_exactly, probe, without_pulldown
from stvsr_cli.io.filters import DEFLICKER_FRAMES, FrameFilters
from stvsr_cli.io.workdir import WorkFolder, input_identity
from stvsr_cli.pipeline.grain import GrainProfile, measure_shots
from stvsr_cli.pipeline.grey import grey_shots
from stvsr_cli.pipeline.repeats import Dedup, choose_repeats, scan_repeats
from stvsr_cli.pipeline.scenes import DEFAULT_SCENE_THRESHOLD, frame_differences
from stvsr_cli.pipeline.stages import StageClock
from stvsr_cli.pipeline.telecine import SECONDS, Cadence, detect_telecine
from stvsr_cli.pipeline.windows import WindowPlan

if TYPE_CHECKING:
    from stvsr_cli.options import UpscaleOptions

Progress = Callable[[int, int], None]  # (frames done, frames in all)


@dataclass(frozen=True)
class Source:
    """The input as the run sees it: ``info`` describes the frames as they leave the ``filters``
    (with telecine undone: the film's frames, rate and count)."""

    info: VideoInfo
    filters: FrameFilters
    cadence: Cadence | None = None  # what the telecine check found; None where it did not look

    @property
    def deinterlace(self) -> bool:
        return self.filters.deinterlace

    @property
    def ivtc(self) -> bool:
        return self.filters.ivtc

    @property
    def note(self) -> str | None:
        """A line for the user where the telecine check could not be followed."""
        if self.cadence is not None and self.cadence.broken and not self.ivtc:
            return (
                f"fields repeat in the first {SECONDS} s but not in one 3:2 cadence (broken or mixed): "
                "deinterlacing with bwdif instead of undoing telecine (--ivtc on forces it)"
            )
        return None

    def resume_frame(self, plan: WindowPlan, done_windows: int) -> int:
        """The first frame to decode when ``done_windows`` of ``plan`` are done: just before the
        first frame still needed where seeking is exact, else the start."""
        if done_windows and can_seek_exactly(self.info, self.filters):
            return plan.first_frame_after(done_windows)
        return 0

    def reader(self, first_frame: int = 0, clock: StageClock | None = None, thumbnails: bool = False) -> VideoReader:
        return VideoReader(self.info, filters=self.filters, thumbnails=thumbnails, first_frame=first_frame, clock=clock)


def open_source(path: Path, options: UpscaleOptions, dst: Path | None = None) -> Source:
    """Probe ``path`` (the piece ``options`` ask for) and decide its filters: telecine undone
    (``--ivtc``: auto when the stream is interlaced and its first seconds show a 3:2 cadence; what an
    interrupted run writing ``dst`` found is reused), else bwdif (``--deinterlace``: auto when the
    stream says interlaced); then ``--deflicker`` and ``--denoise``."""
    info = probe(path, start=options.start, duration=options.duration)
    cadence = None
    if options.ivtc == "auto" and info.interlaced and not (info.variable_frame_rate or info.index_timing):
        asked = {"start": options.start, "duration": options.duration, "ivtc": options.ivtc}
        recorded = WorkFolder.recorded_cadence(dst, {"input": input_identity(path), "options": asked}) if dst else None
        cadence = Cadence(**recorded) if recorded else detect_telecine(info)
    cleanup = {"deflicker": options.deflicker and info.frame_count >= DEFLICKER_FRAMES, "denoise": options.denoise}
    if options.ivtc == "on" or (cadence is not None and cadence.found):
        return Source(without_pulldown(info), FrameFilters(ivtc=True, **cleanup), cadence)
    deinterlace = options.deinterlace == "on" or (options.deinterlace == "auto" and info.interlaced)
    return Source(info, FrameFilters(deinterlace=deinterlace, **cleanup), cadence)


@dataclass(frozen=True)
class Scan:
    """What one pass over the input's thumbnails found, before any model runs."""

    cuts: list[int]  # frames (on the constant-rate grid) that start a shot
    repeats: list[int] | None  # frames that repeat the previous one (None: not looked for)
    grey_shots: list[int]  # the first frames of the shots whose every frame is black-and-white
    grain: dict[int, GrainProfile] | None = None  # each shot's grain, by its first frame (``--grain keep``)


def scan(
    info: VideoInfo | Source, *, threshold: float | None = DEFAULT_SCENE_THRESHOLD, dedup: str = "off",
    progress: Progress | None = None,
) -> Scan:  # fmt: skip
    """The cuts (none when ``threshold`` is None), the repeated frames ``--dedup`` looks for (unless
    ``off``) and the black-and-white shots, from one pass over the thumbnails (8 bytes a frame kept)
    of a file's frames (``info``) or of a ``Source``'s, as its filters give them."""
    source = info if isinstance(info, Source) else Source(info, FrameFilters())
    info = source.info
    greys: list[bool] = []

    def lumas(thumbnails: Iterator[Thumbnail]) -> Iterator[np.ndarray]:
        for thumbnail in thumbnails:
            greys.append(thumbnail.grey)
            yield thumbnail.luma

    with source.reader(thumbnails=True) as reader:
        differences = list(frame_differences(lumas(_counted(reader.frames(), info.frame_count, progress))))
    cuts, found = scan_repeats(differences, threshold, dedup) if differences else ([], None)
    repeats = None if dedup == "off" else list(found.repeated) if found is not None else []
    return Scan(cuts, repeats, grey_shots(greys, cuts))


def find_scene_cuts(
    info: VideoInfo, threshold: float = DEFAULT_SCENE_THRESHOLD, progress: Progress | None = None
) -> list[int]:
    """The frames of ``info`` (indices on its constant-rate grid) that start a new shot."""
    return scan(info, threshold=threshold, progress=progress).cuts


def scan_once(
    work: WorkFolder, source: Source, options: UpscaleOptions, progress: Progress | None = None
) -> tuple[Scan, Dedup | None]:
    """The job's scan, made once: a resumed run reuses what its work folder recorded (the telecine
    check's too, and the grain ``--grain keep`` measures in a pass of its own); and the repeated
    frames to drop that it implies (``--dedup``)."""
    info = source.info
    if source.cadence is not None and work.cadence is None:
        work.set_cadence(source.cadence.as_dict())
    if work.cuts is None or work.grey_shots is None or (options.dedup != "off" and work.repeats is None):
        threshold = options.scene_threshold if options.scene_detect else None
        found = scan(source, threshold=threshold, dedup=options.dedup, progress=progress)
        work.set_scan(found.cuts, found.repeats, found.grey_shots)
    if options.grain == "keep" and work.grain is None:
        # Measured on the frames as decoded: before --deflicker and --denoise take the grain away.
        decoded = Source(info, FrameFilters(deinterlace=source.deinterlace, ivtc=source.ivtc))
        with decoded.reader() as reader:
            profiles = measure_shots(reader.frames(), info.frame_count, work.cuts)
        work.set_grain({str(shot): profile.as_dict() for shot, profile in profiles.items()})
    grain = {int(shot): GrainProfile(**p) for shot, p in work.grain.items()} if options.grain == "keep" else None
    found = Scan(work.cuts, work.repeats, work.grey_shots, grain)
    return found, choose_repeats(options.dedup, info.frame_count, found.cuts, found.repeats or [])


def _counted(thumbnails: Iterator[Thumbnail], total: int, progress: Progress | None) -> Iterator[Thumbnail]:
    for done, thumb in enumerate(thumbnails, 1):
        yield thumb
        if progress is not None and (done % 64 == 0 or done == total):
            progress(done, total)
