"""The source stage: the input probed, whether it is deinterlaced, where its shots are cut (and
which frames repeat the previous one), and a reader of its frames from wherever a run (or a
resumed one) starts."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from stvsr_cli.io.decode import VideoInfo, VideoReader, can_seek_exactly, probe
from stvsr_cli.pipeline.repeats import Dedup, scan_repeats
from stvsr_cli.pipeline.scenes import DEFAULT_SCENE_THRESHOLD, find_cuts, frame_differences
from stvsr_cli.pipeline.stages import StageClock
from stvsr_cli.pipeline.windows import WindowPlan

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


def find_scene_cuts(
    info: VideoInfo, threshold: float = DEFAULT_SCENE_THRESHOLD, progress: Progress | None = None
) -> list[int]:
    """The frames of ``info`` (indices on its constant-rate grid) that start a new shot."""
    if info.frame_count < 2:
        return []
    with VideoReader(info, thumbnails=True) as reader:
        return find_cuts(_counted(reader.frames(), info.frame_count, progress), threshold)


def find_cuts_and_repeats(
    info: VideoInfo, threshold: float | None, mode: str, progress: Progress | None = None
) -> tuple[list[int], Dedup | None]:
    """The cuts (none when ``threshold`` is None) and the repeated frames ``--dedup mode`` drops,
    from one pass over the thumbnails (their differences are kept: 8 bytes a frame)."""
    if info.frame_count < 2:
        return [], None
    with VideoReader(info, thumbnails=True) as reader:
        differences = list(frame_differences(_counted(reader.frames(), info.frame_count, progress)))
    return scan_repeats(differences, threshold, mode)


def _counted(thumbnails: Iterator[np.ndarray], total: int, progress: Progress | None) -> Iterator[np.ndarray]:
    for done, thumb in enumerate(thumbnails, 1):
        yield thumb
        if progress is not None and (done % 64 == 0 or done == total):
            progress(done, total)
