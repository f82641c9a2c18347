"""Hard scene cuts, found on small luma thumbnails of the input frames.

``mafd[i]`` is the mean absolute difference between the thumbnails of frames i-1 and i, in percent
of full scale (thumbnails, so that grain and compression noise average out). A hard cut makes it
jump for exactly one frame; a pan or a moving subject makes it high too, but about as high on the
frames around. So the score of frame i is how far ``mafd[i]`` stands above both neighbours,
``min(mafd[i] - mafd[i-1], mafd[i] - mafd[i+1])`` (one side at the ends of the clip; FFmpeg's
``scdet`` compares with the previous frame only, which fires when motion starts), and a cut lies
before every frame whose score exceeds the threshold. The default threshold was chosen on the
project's training and evaluation clips (benchmarks/README.md, "Scene cuts").
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np

DEFAULT_SCENE_THRESHOLD = 5.0  # percent of full scale


def frame_differences(thumbnails: Iterable[np.ndarray]) -> Iterator[float]:
    """``mafd`` of every frame after the first, from ``[h, w]`` uint8 luma thumbnails."""
    previous: np.ndarray | None = None
    for thumb in thumbnails:
        current = np.asarray(thumb, dtype=np.float32)
        if previous is not None:
            yield float(np.abs(current - previous).mean()) * 100.0 / 255.0
        previous = current


def cut_scores(thumbnails: Iterable[np.ndarray]) -> Iterator[float]:
    """The score of every frame (0 for the first), streaming with one frame of look-ahead."""
    return difference_scores(frame_differences(thumbnails))


def difference_scores(differences: Iterable[float]) -> Iterator[float]:
    """``cut_scores`` from the ``frame_differences`` (for a scan that keeps them for other uses)."""
    yield 0.0
    before: float | None = None  # mafd of the frame before the current one
    current: float | None = None
    for after in differences:
        if current is not None:
            yield _score(before, current, after)
            before = current
        current = after
    if current is not None:
        yield _score(before, current, None)


def _score(before: float | None, current: float, after: float | None) -> float:
    sides = [current - other for other in (before, after) if other is not None]
    return max(0.0, min(sides)) if sides else current


def find_cuts(thumbnails: Iterable[np.ndarray], threshold: float = DEFAULT_SCENE_THRESHOLD) -> list[int]:
    """Indices of the frames that start a new shot (never 0), in order."""
    return cuts_from_differences(frame_differences(thumbnails), threshold)


def cuts_from_differences(differences: Iterable[float], threshold: float = DEFAULT_SCENE_THRESHOLD) -> list[int]:
    """``find_cuts`` from the ``frame_differences``."""
    return [i for i, score in enumerate(difference_scores(differences)) if i > 0 and score > threshold]


def shots(n_frames: int, cuts: Iterable[int]) -> list[range]:
    """The shots of a clip of ``n_frames`` frames cut before each index in ``cuts``."""
    bounds = sorted({c for c in cuts if 0 < c < n_frames})
    return [range(a, b) for a, b in zip([0, *bounds], [*bounds, n_frames])]
