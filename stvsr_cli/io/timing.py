"""Exact timing: the constant-rate grid the model works on, and how input frames map onto it.

All times are ``Fraction`` seconds. Input frames are placed on a constant grid at the stream's
frame rate by their presentation timestamps (the nearest frame for each grid time), so variable
frame rate input is resampled by time, never by frame index; constant-rate input maps one to one.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from fractions import Fraction
from typing import TypeVar

import numpy as np

T = TypeVar("T")


# Rates that cameras and editors use. Containers with coarse time bases (Matroska's milliseconds)
# give back rates such as 7001/146 for 48000/1001; within _SNAP of one of these we take the exact one.
STANDARD_RATES = tuple(
    sorted(
        {Fraction(n, 12) for n in range(1, 60 * 12 + 1)}
        | {Fraction(n * 1000, 1001) for n in (12, 15, 24, 30, 48, 60, 120, 240)}
    )
)
_SNAP = Fraction(1, 10_000)


class Timestamps(Sequence[Fraction]):
    """Sorted presentation times held as integers, ``origin + ticks[i] * unit`` seconds: 8 bytes a
    frame, where a list of ``Fraction`` takes twenty times that."""

    def __init__(self, ticks: np.ndarray, unit: Fraction, origin: Fraction = Fraction(0)) -> None:
        self.ticks = np.asarray(ticks, dtype=np.int64)
        self.unit = Fraction(unit)
        self.origin = Fraction(origin)

    def __len__(self) -> int:
        return len(self.ticks)

    def __getitem__(self, index):  # an int; slices are not needed
        return self.origin + int(self.ticks[index]) * self.unit

    def between(self, low: Fraction | None, high: Fraction | None) -> Timestamps:
        """The times ``t`` with ``low <= t < high`` (either bound may be None)."""
        keep = np.ones(len(self.ticks), dtype=bool)
        if low is not None:
            keep &= self.ticks >= math.ceil((low - self.origin) / self.unit)
        if high is not None:
            keep &= self.ticks < math.ceil((high - self.origin) / self.unit)
        return Timestamps(self.ticks[keep], self.unit, self.origin)


def rate_text(rate: Fraction) -> str:
    """A frame rate for people: 25, or 23.976."""
    return str(rate.numerator) if rate.denominator == 1 else f"{float(rate):.3f}"


def nominal_rate(rate: Fraction) -> Fraction:
    """``rate``, or the standard rate within 0.01 % of it (the one a coarse time base blurred)."""
    nearest = min(STANDARD_RATES, key=lambda r: abs(r - rate))
    return nearest if abs(nearest - rate) <= _SNAP * rate else rate


def grid_length(first: Fraction, last: Fraction, rate: Fraction) -> int:
    """Number of grid points ``first + i / rate`` needed to cover frames presented from first to last."""
    return math.floor((last - first) * rate + Fraction(1, 2)) + 1


def is_variable_rate(times: Sequence[Fraction], rate: Fraction) -> bool:
    """True when some frame sits more than a quarter frame away from the constant-rate grid."""
    if len(times) < 2:
        return False
    return any(abs((t - times[0]) * rate - i) > Fraction(1, 4) for i, t in enumerate(times))


def resample_to_grid(frames: Iterable[tuple[Fraction, T]], start: Fraction, rate: Fraction, count: int) -> Iterator[T]:
    """Yield ``count`` payloads, one per grid time ``start + i / rate``: the frame nearest in time.

    ``frames`` are (presentation time, payload) in presentation order; frames whose time does not
    increase are skipped. Ties go to the earlier frame. When the frames run out, the last one is held.
    """
    index = 0
    previous: tuple[Fraction, T] | None = None
    for time, payload in frames:
        if previous is not None and time <= previous[0]:
            continue
        while index < count and start + Fraction(index) / rate <= time:
            grid_time = start + Fraction(index) / rate
            if previous is None or time - grid_time < grid_time - previous[0]:
                yield payload
            else:
                yield previous[1]
            index += 1
        previous = (time, payload)
        if index >= count:
            return
    if previous is None:
        return
    for _ in range(index, count):
        yield previous[1]
