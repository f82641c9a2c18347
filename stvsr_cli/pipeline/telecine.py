"""Hard telecine (3:2 pulldown) found in the first seconds of an interlaced stream.

A 24 fps film on a 30 fps interlaced medium carries its frames A B C D as ten fields woven into five
frames: AA BB BC CD DD (top field first). Two of every five frames then repeat a field of the frame
before (BC's top field is BB's; DD's bottom field is CD's), always at the same two places of the
cycle, two frames apart. True interlaced video (every field its own moment) repeats no field, nor
does progressive video stored as interlaced (PAL's 2:2); both are left to bwdif. Where fields repeat
but not in that one cadence (an edit that breaks it, mixed material), the run says so and
deinterlaces instead: field matching would guess.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from stvsr_cli.io.colour import plane_samples
from stvsr_cli.io.decode import VideoInfo, open_input, seek, video_stream

SECONDS = 10  # of the stream looked at
MOTION = 1.0  # mean change of a field, in 8-bit levels, from which a frame tells anything
REPEAT = 0.25  # a field changed by less than this share of its partner's change repeats the frame before's
MIN_MOVING = 10  # frames that must tell something before a cadence is believed
FIT = 0.9  # share of the repeats that must fall on the cadence's two places
COVERAGE = 0.7  # share of the moving frames at those places that must repeat a field


@dataclass(frozen=True)
class Cadence:
    """What the first seconds showed: ``found`` a 3:2 cadence (``phase``: the first of its two
    places, frame index mod 5); ``moving`` frames told something, ``repeats`` of them repeat a field."""

    found: bool
    phase: int | None
    moving: int
    repeats: int

    @property
    def broken(self) -> bool:
        """Fields repeat, but not in one 3:2 cadence (an edit that breaks it, mixed material)."""
        return not self.found and self.repeats >= max(2, self.moving // 10)

    def as_dict(self) -> dict:
        return {"found": self.found, "phase": self.phase, "moving": self.moving, "repeats": self.repeats}


def field_changes(lumas: Iterable[np.ndarray]) -> Iterator[tuple[float, float]]:
    """For each frame after the first: the mean absolute change of its top field (even rows) and of
    its bottom field (odd rows) from the frame before, in levels of the luma given."""
    previous = None
    for luma in lumas:
        current = luma.astype(np.float32)
        if previous is not None:
            change = np.abs(current - previous)
            yield float(change[0::2].mean()), float(change[1::2].mean())
        previous = current


def find_cadence(changes: Iterable[tuple[float, float]]) -> Cadence:
    """The 3:2 cadence in ``field_changes`` (entry i compares frame i + 1 with frame i), if one holds."""
    moving: list[int] = []
    repeats: list[int] = []
    for i, (top, bottom) in enumerate(changes):
        larger = max(top, bottom)
        if larger < MOTION:
            continue  # too still to tell (a held shot, animation on twos)
        moving.append(i + 1)
        if min(top, bottom) < REPEAT * larger:
            repeats.append(i + 1)
    best = None
    if len(moving) >= MIN_MOVING and len(repeats) >= 4:
        for phase in range(5):
            places = {phase, (phase + 2) % 5}
            fitting = sum(1 for j in repeats if j % 5 in places)
            chances = sum(1 for j in moving if j % 5 in places)
            if fitting >= FIT * len(repeats) and fitting >= COVERAGE * chances:
                best = phase
                break
    return Cadence(best is not None, best, len(moving), len(repeats))


def detect_telecine(info: VideoInfo, seconds: float = SECONDS) -> Cadence:
    """``find_cadence`` on the first ``seconds`` of ``info``'s stream (of the piece asked for),
    on luma at half width (the fields are rows; columns add nothing)."""
    end = info.start_time + Fraction(seconds)

    def lumas() -> Iterator[np.ndarray]:
        with open_input(info.path) as container:
            stream = video_stream(container, info.path)
            stream.thread_type = "AUTO"
            seek(container, stream, info.trim_start)
            for frame in container.decode(stream):
                time = frame.time
                if time is not None and time < info.start_time - Fraction(1, 2) / info.frame_rate:
                    continue
                if time is not None and time >= end:
                    return
                if not frame.format.name.startswith(("yuv", "gray")):
                    yield frame.to_ndarray(format="gray")[:, ::2]
                    continue
                luma = plane_samples(frame.planes[0], np.uint8 if info.bit_depth <= 8 else np.uint16)[:, ::2]
                yield luma if info.bit_depth <= 8 else luma >> (info.bit_depth - 8)

    return find_cadence(field_changes(lumas()))
