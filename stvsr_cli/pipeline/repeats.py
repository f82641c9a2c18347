"""Repeated frames: film transferred to video often shows some of its frames twice, in a fixed
rhythm (24 fps at 30: one frame in five is a copy). Doubling such a frame rate doubles the stall.

Pure functions of the scene scan's numbers, so they are tested without video:

- ``find_repeats``: a frame repeats the previous one when its difference from it (``mafd``, the
  scene scan's mean absolute thumbnail difference) is far below the typical motion around it in
  its shot. A shot's first frame never repeats (a cut is not a repeat); nothing repeats in a shot
  that hardly moves; more than ``MAX_RUN`` repeats in a row are a still (a pause), not a copy.
- ``find_cadence``: whether a shot's repeats are regular: one pattern (say frame 4 of every 5)
  held in most of the shot's periods.
- ``choose_repeats``: the frames to drop, by ``--dedup``: ``auto`` drops them only in shots with a
  regular pattern, ``on`` everywhere.
- ``scan_repeats``: cuts and repeats together. A unique frame between two copies stands out from
  both neighbours as a cut does (2 in 5: a a b b c), so where frames are dropped the cuts are
  scored on the differences of the unique frames alone; where none are, the cuts are the usual.
- ``Retiming``: each kept (unique) frame at its true time and each output time as a position among
  the unique frames. Within a shot, anchors split the time line; the unique frames between two
  anchors are spread evenly over it. In a regular shot the anchors are one period apart (the
  unique frame that follows the pattern's last repeat), so unique frame j of a 1-in-5 pattern
  sits at ``5/4 * j``; elsewhere each unique frame that follows a repeat is an anchor. A shot's
  first frame and its end are anchors too, so shots keep their place and no output leaves its shot.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from itertools import pairwise
from typing import NamedTuple, TypeVar

import numpy as np

from stvsr_cli.pipeline.scenes import cuts_from_differences, difference_scores, shots

DEDUP_MODES = ("auto", "on", "off")
REPEAT_RATIO = 0.15  # a repeat differs from the previous frame by less than this share of the typical motion
MIN_MOTION = 0.3  # percent of full scale: a shot moving less than this (locally) has no repeats to tell apart
MOTION_SPAN = 12  # frames each side over which the typical motion (upper quartile of mafd) is measured
MAX_RUN = 4  # more repeats in a row than this are a still, not a copy (12 fps at 60 repeats 4 in a row)
MAX_PERIOD = 30  # the longest pattern looked for (24 -> 25 fps repeats 1 frame in 25)
MIN_PERIODS = 4  # a shot must hold this many periods for its pattern to be called regular
REGULAR_SHARE = 0.75  # share of a shot's periods that must show the same pattern
TIME_RESOLUTION = 720720  # lcm(1..16): re-timed positions of patterns up to 16 frames long are exact

T = TypeVar("T")


def find_repeats(differences: Sequence[float], cuts: Iterable[int]) -> list[int]:
    """The frames that repeat the previous one, in order; ``differences[i]`` is the ``mafd`` of
    frame ``i + 1`` (``scenes.frame_differences``), ``cuts`` the frames that start a shot."""
    diffs = np.asarray(differences, dtype=np.float64)
    found: list[int] = []
    for shot in shots(len(diffs) + 1, cuts):
        local = diffs[shot.start : shot.stop - 1]  # frames shot.start + 1 ... shot.stop - 1
        if not len(local):
            continue
        typical = _typical_motion(local)
        flags = _without_long_runs((typical >= MIN_MOTION) & (local <= REPEAT_RATIO * typical), MAX_RUN)
        found.extend(shot.start + 1 + int(i) for i in np.flatnonzero(flags))
    return found


def _typical_motion(diffs: np.ndarray) -> np.ndarray:
    """The upper quartile of ``diffs`` within ``MOTION_SPAN`` of each: motion, even where a third
    of the frames are repeats."""
    padded = np.pad(diffs, MOTION_SPAN, constant_values=np.nan)
    windows = np.lib.stride_tricks.sliding_window_view(padded, 2 * MOTION_SPAN + 1)
    return np.nanpercentile(windows, 75, axis=1)


def _without_long_runs(flags: np.ndarray, longest: int) -> np.ndarray:
    """``flags`` with every run of more than ``longest`` consecutive trues cleared."""
    out = flags.copy()
    edges = np.flatnonzero(np.diff(np.concatenate([[0], flags.astype(np.int8), [0]])))
    for start, stop in zip(edges[::2], edges[1::2]):
        if stop - start > longest:
            out[start:stop] = False
    return out


@dataclass(frozen=True)
class Cadence:
    """A regular repeat pattern in the shot ``start:stop``: in every ``period`` frames counted from
    its first, the frames at ``offsets`` repeat the one before."""

    start: int
    stop: int
    period: int
    offsets: tuple[int, ...]

    def __str__(self) -> str:
        return f"{len(self.offsets)} in {self.period} over frames {self.start}-{self.stop - 1}"

    def anchor_offset(self) -> int:
        """The offset of the unique frame that follows the pattern's last repeat: where a period starts."""
        return next(r for r in range(self.period) if r not in self.offsets and (r - 1) % self.period in self.offsets)


def find_cadence(shot: range, repeats: Iterable[int]) -> Cadence | None:
    """The shortest pattern (a period with at least one repeat and one unique frame) that most of
    ``shot``'s periods show exactly, when the shot holds at least ``MIN_PERIODS`` of them."""
    found = np.asarray(repeats, dtype=np.int64)
    flags = np.zeros(len(shot), dtype=bool)
    flags[found[(found >= shot.start) & (found < shot.stop)] - shot.start] = True
    for period in range(2, MAX_PERIOD + 1):
        blocks = len(shot) // period
        if blocks < MIN_PERIODS:
            break
        rows = flags[: blocks * period].reshape(blocks, period)
        key, count = Counter(row.tobytes() for row in rows).most_common(1)[0]
        pattern = np.frombuffer(key, dtype=bool)
        if 0 < pattern.sum() < period and count >= REGULAR_SHARE * blocks:
            return Cadence(shot.start, shot.stop, period, tuple(int(r) for r in np.flatnonzero(pattern)))
    return None


@dataclass(frozen=True)
class Dedup:
    """The input frames dropped as repeats (sorted), and the regular patterns found."""

    n_frames: int
    cuts: tuple[int, ...]
    repeated: tuple[int, ...]
    cadences: tuple[Cadence, ...]

    @property
    def n_unique(self) -> int:
        return self.n_frames - len(self.repeated)

    def original(self, unique_index: int) -> int:
        """The input frame of the ``unique_index``-th unique frame (``n_frames`` past the last)."""
        if unique_index >= self.n_unique:
            return self.n_frames
        low, high = unique_index, self.n_frames - 1  # the frame is at least its own index
        while low < high:
            middle = (low + high) // 2
            if middle - bisect_right(self.repeated, middle) + 1 > unique_index:
                high = middle
            else:
                low = middle + 1
        return low

    def unique_index(self, frame: int) -> int:
        """How many unique frames come before input ``frame``."""
        return frame - bisect_right(self.repeated, frame - 1)

    def unique_frames(self, frames: Iterable[T], first: int = 0) -> Iterator[T]:
        """``frames`` (input frames from ``first`` on) without the repeated ones."""
        dropped = set(self.repeated)
        for index, frame in enumerate(frames, first):
            if index not in dropped:
                yield frame


def choose_repeats(mode: str, n_frames: int, cuts: Iterable[int], candidates: Iterable[int]) -> Dedup | None:
    """The frames to drop: ``on`` all ``candidates``, ``auto`` those in shots whose repeats are
    regular, ``off`` none; None when none are dropped (the run goes as without ``--dedup``)."""
    candidates = sorted(set(candidates))
    if mode == "off" or not candidates:
        return None
    clip_shots = shots(n_frames, cuts)
    cadences = tuple(c for shot in clip_shots if (c := find_cadence(shot, candidates)) is not None)
    if mode == "auto":
        starts = [c.start for c in cadences]
        candidates = [i for i in candidates if (at := bisect_right(starts, i) - 1) >= 0 and i < cadences[at].stop]
    if not candidates:
        return None
    return Dedup(n_frames, tuple(s.start for s in clip_shots[1:]), tuple(candidates), cadences)


def scan_repeats(differences: Sequence[float], threshold: float | None, mode: str) -> tuple[list[int], Dedup | None]:
    """The cuts (none when ``threshold`` is None) and the repeated frames to drop by ``mode``, from
    the ``frame_differences`` of a clip; with nothing to drop, the cuts ``find_cuts`` gives."""
    plain = cuts_from_differences(differences, threshold) if threshold is not None else []
    if mode == "off":
        return plain, None
    n_frames = len(differences) + 1
    cuts = plain
    if threshold is not None:
        first_guess = set(find_repeats(differences, []))
        kept = [i for i in range(1, n_frames) if i not in first_guess]
        scores = difference_scores(differences[i - 1] for i in kept)
        cuts = [kept[j - 1] for j, score in enumerate(scores) if j > 0 and score > threshold]
    dedup = choose_repeats(mode, n_frames, cuts, find_repeats(differences, cuts))
    return (cuts, dedup) if dedup is not None else (plain, None)


class _Piece(NamedTuple):
    """Input frames ``start:stop`` (display time), in which unique frame ``first + i`` sits at
    ``start + i * spacing``; ``shot_stop`` and ``unique_stop`` end its shot."""

    start: int
    stop: int
    first: int
    spacing: Fraction
    shot_stop: int
    unique_stop: int


class Retiming:
    """Output times (in input frames, as on the output grid) as positions among ``dedup``'s unique
    frames, after each unique frame is placed at its true time."""

    def __init__(self, dedup: Dedup) -> None:
        self.dedup = dedup
        cadence_at = {c.start: c for c in dedup.cadences}
        dropped = set(dedup.repeated)
        self._pieces = [
            piece for shot in shots(dedup.n_frames, dedup.cuts)
            for piece in _shot_pieces(shot, dedup, dropped, cadence_at.get(shot.start))
        ]  # fmt: skip
        self._starts = [p.start for p in self._pieces]

    @property
    def cuts(self) -> list[int]:
        """The cuts as unique-frame indices (a cut is never a repeat)."""
        return [self.dedup.unique_index(c) for c in self.dedup.cuts]

    def position(self, time: Fraction) -> Fraction:
        """Where output time ``time`` (input frames) falls among the unique frames, never past its
        shot's last. From a shot's last input frame to the next shot's first, the offset is kept, so
        the planner's rule for the frames between shots (the nearer shot's frame) reads the same."""
        piece = self._pieces[max(0, bisect_right(self._starts, time) - 1)]
        if time >= piece.shot_stop - 1:
            return piece.unique_stop - 1 + (time - (piece.shot_stop - 1))
        place = piece.first + (time - piece.start) / piece.spacing
        return min(place, Fraction(piece.unique_stop - 1))


def _shot_pieces(shot: range, dedup: Dedup, dropped: set[int], cadence: Cadence | None) -> Iterator[_Piece]:
    """The pieces of one shot, between its anchors: unique frames spread evenly over each. In a
    regular shot, the part period after the last anchor keeps the pattern's spacing (5/4 frame for
    1 in 5). The part period before the first is spread evenly: the shot's first frame stays at its
    start, so that no output frame waits for it."""
    anchors = _anchors(shot, dropped, cadence)
    bounds = (shot.stop, dedup.unique_index(shot.stop))
    for number, (a, b) in enumerate(pairwise(anchors)):
        first = dedup.unique_index(a)
        count = dedup.unique_index(b) - first
        spacing = Fraction(b - a, count)
        if cadence is not None and number > 0 and (b - a) % cadence.period:
            spacing = Fraction(cadence.period, cadence.period - len(cadence.offsets))
        yield _Piece(a, b, first, spacing, *bounds)


def _anchors(shot: range, dropped: set[int], cadence: Cadence | None) -> list[int]:
    """The times in ``shot`` that keep their place: its start and end, and a unique frame at each
    period of a regular pattern, or each unique frame that follows a repeat."""
    if cadence is not None:
        inner = range(shot.start + cadence.anchor_offset(), shot.stop, cadence.period)
    else:
        inner = (f for f in range(shot.start + 1, shot.stop) if f - 1 in dropped)
    return sorted({shot.start, shot.stop, *(f for f in inner if f not in dropped)})


@dataclass(frozen=True)
class RetimedPositions:
    """Output frame ``j``'s position among the unique frames, at ``j * step`` input frames, in
    units of ``1 / resolution``, rounded to the nearest: for ``WindowPlan``'s ``positions``."""

    retiming: Retiming
    step: Fraction
    resolution: int

    def __call__(self, j: int) -> int:
        return math.floor(self.retiming.position(j * self.step) * self.resolution + Fraction(1, 2))
