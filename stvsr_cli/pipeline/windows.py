"""The window planner: which model calls to make over a clip, and which call gives each output frame.

A pure function of integers. A model call takes a window of consecutive input frames and returns
``fps_x * (len - 1) + 1`` frames at input times ``start, start + 1/k, ..., last`` (k = fps_x).
The clip's output has ``fps_x * n_frames`` frames, frame j at input time ``j / k``; the frames after
the last input frame (no next frame to interpolate towards) hold the last frame.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property


@dataclass(frozen=True)
class Window:
    """One model call: the input frame indices it is fed, in order.

    Normally a run of consecutive indices. A clip shorter than the model's minimum window is padded
    by repeating its last frame; outputs past the last real frame are never used.
    """

    frames: tuple[int, ...]

    @property
    def start(self) -> int:
        return self.frames[0]

    @property
    def last(self) -> int:
        """The last real input frame of the window (padding repeats it)."""
        return self.frames[-1]


@dataclass(frozen=True)
class OutputSource:
    """Where an output frame comes from: the window's position in the plan, and its output index."""

    window: int
    index: int


@dataclass(frozen=True)
class WindowPlan:
    n_frames: int
    fps_x: int
    windows: tuple[Window, ...]
    sources: tuple[OutputSource, ...]  # one per output frame, in output order

    @property
    def n_outputs(self) -> int:
        return len(self.sources)

    @cached_property
    def output_ranges(self) -> tuple[range, ...]:
        """For each window, the contiguous range of output frames it supplies (possibly empty)."""
        firsts = [self.n_outputs] * len(self.windows)
        stops = [0] * len(self.windows)
        for j, src in enumerate(self.sources):
            firsts[src.window] = min(firsts[src.window], j)
            stops[src.window] = max(stops[src.window], j + 1)
        return tuple(range(f, s) if s > f else range(0) for f, s in zip(firsts, stops))


def window_starts(n_frames: int, window: int, overlap: int) -> list[int]:
    """Start indices of full windows: every ``window - overlap`` frames, the last one flush with the end."""
    if n_frames <= window:
        return [0]
    stride = window - overlap
    starts = []
    start = 0
    while start + window < n_frames:
        starts.append(start)
        start += stride
    starts.append(n_frames - window)  # aligned to the end, so the tail is never dropped
    return starts


def plan_windows(n_frames: int, window: int, overlap: int, fps_x: int, min_frames: int = 2) -> WindowPlan:
    """Plan the model calls for a clip of ``n_frames`` input frames.

    ``window`` input frames per call, consecutive calls sharing ``overlap`` frames (at least one,
    so that every gap between two input frames lies inside some window). Each output frame is
    taken from the window in which its time is most central (ties go to the earlier window),
    because bidirectional models are weakest at a window's edges.
    """
    if n_frames < 1:
        raise ValueError("a clip needs at least one frame")
    if fps_x < 1:
        raise ValueError("fps_x must be at least 1")
    if min_frames < 1 or window < max(2, min_frames):
        raise ValueError(f"window must be at least {max(2, min_frames)} frames")
    if not 1 <= overlap < window:
        raise ValueError("overlap must be at least 1 and smaller than the window")

    if n_frames <= window:
        real = list(range(n_frames))
        padded = real + [n_frames - 1] * max(0, min_frames - n_frames)
        windows = [Window(tuple(padded))]
    else:
        windows = [Window(tuple(range(s, s + window))) for s in window_starts(n_frames, window, overlap)]

    # Work in units of 1/fps_x input frames so that all times are integers.
    k = fps_x
    last_time = k * (n_frames - 1)
    sources: list[OutputSource] = []
    first_candidate = 0
    for j in range(k * n_frames):
        t = min(j, last_time)  # after the last input frame, hold it
        while k * windows[first_candidate].last < t:
            first_candidate += 1
        best, best_score = first_candidate, -1
        w = first_candidate
        while w < len(windows) and k * windows[w].start <= t:
            score = min(t - k * windows[w].start, k * windows[w].last - t)
            if score > best_score:
                best, best_score = w, score
            w += 1
        sources.append(OutputSource(best, t - k * windows[best].start))
    return WindowPlan(n_frames, fps_x, tuple(windows), tuple(sources))
