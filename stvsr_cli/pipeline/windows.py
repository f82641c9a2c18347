"""The window planner: which model calls to make over a clip, and which call gives each output frame.

A pure function of integers. A model call takes a window of consecutive input frames and returns
``fps_x * (len - 1) + 1`` frames at input times ``start, start + 1/k, ..., last`` (k = fps_x).
The clip's output has ``fps_x * n_frames`` frames, frame j at input time ``j / k``; the frames after
the last input frame (no next frame to interpolate towards) hold the last frame. Scene cuts split
the clip into shots that are planned apart.

A plan is lazy: ``WindowPlan.steps()`` streams the output frames' sources in constant memory, so a
feature film costs no more to plan than a clip; ``windows`` and ``sources`` list everything, for
inspection and tests.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from functools import cached_property
from itertools import groupby
from typing import NamedTuple, Protocol

from stvsr_cli.pipeline.scenes import shots


@dataclass(frozen=True, slots=True)
class Window:
    """One model call: the input frame indices it is fed, in order.

    Normally a run of consecutive indices. A clip shorter than the model's minimum window is padded
    by repeating its last frame; outputs past the last real frame are never used. ``opens_shot`` and
    ``closes_shot`` say whether its first and last frames are the first and last of their shot (a
    real edge) or have neighbours beyond the window (an edge of the window only).
    """

    frames: tuple[int, ...]
    opens_shot: bool = True
    closes_shot: bool = True

    @property
    def start(self) -> int:
        return self.frames[0]

    @property
    def last(self) -> int:
        """The last real input frame of the window (padding repeats it)."""
        return self.frames[-1]


class OutputPositions(Protocol):
    """Where each output frame lies among the clip's frames when that is not ``j * step`` (frames
    re-timed, as after dropping repeated ones): output ``j``'s position in units of ``1 / resolution``."""

    resolution: int

    def __call__(self, j: int) -> int: ...


class OutputSource(NamedTuple):
    """Where an output frame comes from: the window's position in the plan, and its output index."""

    window: int
    index: int


class Step(NamedTuple):
    """One output frame, in output order: output ``index`` of the model call on ``window``, the
    ``position``-th window of the plan."""

    position: int
    window: Window
    index: int


@dataclass(frozen=True)
class WindowPlan:
    """The model calls over a clip and where each output frame comes from.

    Output frame j is at input position ``j * step`` (in input frames; ``step = 1/fps_x`` for an
    integer factor, e.g. 2/5 for 24 -> 60 fps). Positions are multiples of ``1 / fps_x``, the time
    resolution (``step``'s denominator): a step's ``index`` counts in those units from its
    window's first frame. With ``positions``, output j is at ``positions(j)`` in units of
    ``1 / positions.resolution`` instead.
    """

    n_frames: int
    window: int
    overlap: int
    step: Fraction
    n_outputs: int
    min_frames: int
    cuts: tuple[int, ...]  # frames that start a shot, sorted, inside the clip
    positions: OutputPositions | None = None

    @property
    def fps_x(self) -> int:
        """The time resolution: positions are multiples of ``1 / fps_x`` input frames."""
        return self.positions.resolution if self.positions is not None else self.step.denominator

    def steps(self) -> Iterator[Step]:
        """The source of every output frame, in order; consecutive frames of one window together."""
        k = self.fps_x
        clip_shots = shots(self.n_frames, self.cuts)
        s = 0
        shot = _ShotWindows(self._windows_of(clip_shots[0]), first_position=0)
        for j in range(self.n_outputs):
            time = self.positions(j) if self.positions is not None else j * self.step.numerator  # units of 1/k
            while s + 1 < len(clip_shots) and time >= k * clip_shots[s + 1].start:
                s += 1
                shot = _ShotWindows(self._windows_of(clip_shots[s]), first_position=shot.drain())
            last = k * (clip_shots[s].stop - 1)
            if time <= last:
                yield shot.step_at(time, k)
                continue
            # Between this shot's last frame and the next shot's first (or after the clip's end):
            # a copy of the nearer real frame, never a blend of two shots (the earlier on a tie).
            following = clip_shots[s + 1] if s + 1 < len(clip_shots) else None
            if following is not None and k * following.start - time < time - last:
                yield Step(shot.drain(), next(self._windows_of(following)), 0)
            else:
                yield shot.step_at(last, k)

    def calls(self) -> Iterator[tuple[Window, list[Step]]]:
        """The model calls to make, in order: each window that supplies output frames, with the
        steps of those frames (windows no output frame needs are left out)."""
        for _, group in groupby(self.steps(), key=lambda step: step.position):
            steps = list(group)
            yield steps[0].window, steps

    def first_frame_after(self, windows_done: int) -> int:
        """The first input frame still needed once the first ``windows_done`` model calls are done:
        where a resumed run can start decoding."""
        for number, (window, _) in enumerate(self.calls()):
            if number == windows_done:
                return window.start
        return self.n_frames

    def _windows_of(self, shot: range) -> Iterator[Window]:
        """The windows of one shot, in order. A shot shorter than the model's minimum window is
        padded by repeating its last frame."""
        length = len(shot)
        if length <= self.window:
            real = list(shot)
            yield Window(tuple(real + [shot.stop - 1] * max(0, self.min_frames - length)))
            return
        for start in window_starts(length, self.window, self.overlap):
            frames = tuple(range(shot.start + start, shot.start + start + self.window))
            yield Window(frames, opens_shot=start == 0, closes_shot=start + self.window == length)

    @cached_property
    def windows(self) -> tuple[Window, ...]:
        """Every window of the plan, in order (including any that end up supplying no output)."""
        return tuple(w for shot in shots(self.n_frames, self.cuts) for w in self._windows_of(shot))

    @cached_property
    def sources(self) -> tuple[OutputSource, ...]:
        """One per output frame, in output order."""
        return tuple(OutputSource(step.position, step.index) for step in self.steps())

    @cached_property
    def output_ranges(self) -> tuple[range, ...]:
        """For each window, the contiguous range of output frames it supplies (possibly empty)."""
        firsts = [self.n_outputs] * len(self.windows)
        stops = [0] * len(self.windows)
        for j, src in enumerate(self.sources):
            firsts[src.window] = min(firsts[src.window], j)
            stops[src.window] = max(stops[src.window], j + 1)
        return tuple(range(f, s) if s > f else range(0) for f, s in zip(firsts, stops))


class _ShotWindows:
    """The windows of one shot, admitted lazily as output times reach them (constant memory)."""

    def __init__(self, windows: Iterator[Window], first_position: int) -> None:
        self._upcoming = windows
        self._pending: Window | None = next(windows)
        self._next_position = first_position
        self._active: deque[tuple[int, Window]] = deque()  # admitted windows that may still be used

    def _admit(self) -> None:
        self._active.append((self._next_position, self._pending))
        self._next_position += 1
        self._pending = next(self._upcoming, None)

    def step_at(self, time: int, k: int) -> Step:
        """The window in which ``time`` (units of 1/k) is most central, earliest on a tie."""
        while self._pending is not None and k * self._pending.start <= time:
            self._admit()
        while len(self._active) > 1 and k * self._active[0][1].last < time:
            self._active.popleft()
        best, best_score = self._active[0], None
        for candidate in self._active:
            window = candidate[1]
            if not k * window.start <= time <= k * window.last:
                continue
            score = min(time - k * window.start, k * window.last - time)
            if best_score is None or score > best_score:
                best, best_score = candidate, score
        return Step(best[0], best[1], time - k * best[1].start)

    def drain(self) -> int:
        """Admit the rest; the position the next shot's first window will have."""
        while self._pending is not None:
            self._admit()
        return self._next_position


def window_starts(n_frames: int, window: int, overlap: int) -> Iterator[int]:
    """Start indices of full windows: every ``window - overlap`` frames, the last one flush with the end."""
    if n_frames <= window:
        yield 0
        return
    stride = window - overlap
    start = 0
    while start + window < n_frames:
        yield start
        start += stride
    yield n_frames - window  # aligned to the end, so the tail is never dropped


def plan_windows(
    n_frames: int,
    window: int,
    overlap: int,
    fps_x: int = 2,
    min_frames: int = 2,
    cuts: Iterable[int] = (),
    *,
    step: Fraction | None = None,
    n_outputs: int | None = None,
    positions: OutputPositions | None = None,
) -> WindowPlan:
    """Plan the model calls for a clip of ``n_frames`` input frames.

    ``window`` input frames per call, consecutive calls sharing ``overlap`` frames (at least one,
    so that every gap between two input frames lies inside some window). Each output frame is
    taken from the window in which its time is most central (ties go to the earlier window),
    because bidirectional models are weakest at a window's edges.

    ``step`` (input frames between output frames) and ``n_outputs`` replace the integer factor
    for any frame-rate change (24000/1001 -> 60000/1001 is a step of 2/5); positions past the last
    input frame hold it. ``positions`` places the output frames anywhere instead (non-decreasing).

    ``cuts`` are the frames that start a new shot. No window spans a cut, and an output frame
    between the last frame of a shot and the first of the next is a copy of the nearer of the two
    (the earlier on a tie): a blend of two shots is never right.
    """
    if n_frames < 1:
        raise ValueError("a clip needs at least one frame")
    if fps_x < 1:
        raise ValueError("fps_x must be at least 1")
    if min_frames < 1 or window < max(2, min_frames):
        raise ValueError(f"window must be at least {max(2, min_frames)} frames")
    if not 1 <= overlap < window:
        raise ValueError("overlap must be at least 1 and smaller than the window")
    if step is None:
        step, n_outputs = Fraction(1, fps_x), fps_x * n_frames
    elif step <= 0 or n_outputs is None or n_outputs < 1:
        raise ValueError("a step needs a positive value and an output count")
    inside = tuple(sorted({c for c in cuts if 0 < c < n_frames}))
    return WindowPlan(n_frames, window, overlap, Fraction(step), n_outputs, min_frames, inside, positions)
