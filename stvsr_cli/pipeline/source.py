"""The source stage: the input probed, whether it is deinterlaced, the scan (where its shots are cut,
which frames repeat the previous one, which shots are black-and-white), and a reader of its frames
from wherever a run (or a resumed one) starts."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from stvsr_cli.io.decode import Thumbnail, VideoInfo, VideoReader, can_seek_exactly, probe
from stvsr_cli.io.workdir import WorkFolder
from stvsr_cli.pipeline.grey import grey_shots
from stvsr_cli.pipeline.repeats import Dedup, choose_repeats, scan_repeats
from stvsr_cli.pipeline.scenes import DEFAULT_SCENE_THRESHOLD, frame_differences
from stvsr_cli.pipeline.stages import StageClock
from stvsr_cli.pipeline.windows import WindowPlan

if TYPE_CHECKING:
    from stvsr_cli.options import UpscaleOptions

Progress = Callable[[int, int], None]  # (frames done, frames in all)


@dataclass(frozen=True)
class Source:
    info: VideoInfo
    deinterlace: bool  # frames go through bwdif before the model

    def resume_frame(self, plan: WindowPlan, done_windows: int) -> int:
        """The first frame to decode when ``done_windows`` of ``plan`` are done: just before the
        first frame still needed where seeking is exact, else the start."""
        if done_windows and can_seek_exactly(self.info, self.deinterlace):
            return plan.first_frame_after(done_windows)
        return 0

    def reader(self, first_frame: int = 0, clock: StageClock | None = None) -> VideoReader:
        return VideoReader(self.info, deinterlace=self.deinterlace, first_frame=first_frame, clock=clock)


def open_source(
    path: Path, *, start: Fraction | float | None, duration: Fraction | float | None, deinterlace: str
) -> Source:
    """Probe ``path`` (the piece asked for); ``deinterlace`` is on, off or auto (as the stream says)."""
    info = probe(path, start=start, duration=duration)
    return Source(info, deinterlace == "on" or (deinterlace == "auto" and info.interlaced))


@dataclass(frozen=True)
class Scan:
    """What one pass over the input's thumbnails found, before any model runs."""

    cuts: list[int]  # frames (on the constant-rate grid) that start a shot
    repeats: list[int] | None  # frames that repeat the previous one (None: not looked for)
    grey_shots: list[int]  # the first frames of the shots whose every frame is black-and-white


def scan(
    info: VideoInfo, *, threshold: float | None = DEFAULT_SCENE_THRESHOLD, dedup: str = "off",
    progress: Progress | None = None,
) -> Scan:  # fmt: skip
    """The cuts (none when ``threshold`` is None), the repeated frames ``--dedup`` looks for (unless
    ``off``) and the black-and-white shots, from one pass over the thumbnails (8 bytes a frame kept)."""
    greys: list[bool] = []

    def lumas(thumbnails: Iterator[Thumbnail]) -> Iterator[np.ndarray]:
        for thumbnail in thumbnails:
            greys.append(thumbnail.grey)
            yield thumbnail.luma

    with VideoReader(info, thumbnails=True) as reader:
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
    work: WorkFolder, info: VideoInfo, options: UpscaleOptions, progress: Progress | None = None
) -> tuple[Scan, Dedup | None]:
    """The job's scan, made once: a resumed run reuses what its work folder recorded; and the
    repeated frames to drop that it implies (``--dedup``)."""
    if work.cuts is None or work.grey_shots is None or (options.dedup != "off" and work.repeats is None):
        threshold = options.scene_threshold if options.scene_detect else None
        found = scan(info, threshold=threshold, dedup=options.dedup, progress=progress)
        work.set_scan(found.cuts, found.repeats, found.grey_shots)
    found = Scan(work.cuts, work.repeats, work.grey_shots)
    return found, choose_repeats(options.dedup, info.frame_count, found.cuts, found.repeats or [])


def _counted(thumbnails: Iterator[Thumbnail], total: int, progress: Progress | None) -> Iterator[Thumbnail]:
    for done, thumb in enumerate(thumbnails, 1):
        yield thumb
        if progress is not None and (done % 64 == 0 or done == total):
            progress(done, total)
