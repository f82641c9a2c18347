"""The plan stage: the output frame grid (how many frames, at what rate) and the model windows that
make it, from the probed input, the model's facts and the options (and the repeated frames dropped)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

from stvsr_cli.io.decode import VideoInfo
from stvsr_cli.io.timing import rate_text
from stvsr_cli.models.registry import ModelSpec
from stvsr_cli.pipeline.repeats import TIME_RESOLUTION, Dedup, RetimedPositions, Retiming
from stvsr_cli.pipeline.windows import WindowPlan, plan_windows


@dataclass(frozen=True)
class OutputGrid:
    rate: Fraction  # output frames per second
    count: int  # output frames
    step: Fraction  # input frames from one output frame to the next


def output_count(n_frames: int, rate_in: Fraction, rate_out: Fraction) -> int:
    """Output frames for ``n_frames`` at ``rate_out``: the same duration, to the nearest frame."""
    return max(1, math.floor(n_frames * rate_out / rate_in + Fraction(1, 2)))


def output_grid(info: VideoInfo, spec: ModelSpec, *, fps_x: int, fps: Fraction | None) -> OutputGrid:
    """``fps_x`` times the input's frames and rate, or the frames at the rate ``fps`` (which
    ``spec`` must be able to make: checked here, once the input rate is known)."""
    rate = fps if fps is not None else info.frame_rate * fps_x
    step = info.frame_rate / rate
    if fps is not None:
        spec.check_step(step, f"{rate_text(info.frame_rate)} -> {rate_text(fps)} fps")
    return OutputGrid(rate, output_count(info.frame_count, info.frame_rate, rate), step)


def plan_run(
    info: VideoInfo, grid: OutputGrid, spec: ModelSpec, *, window: int, overlap: int, cuts: list[int],
    dedup: Dedup | None = None,
) -> WindowPlan:  # fmt: skip
    """The model windows over ``info``'s frames that make ``grid``, none spanning a cut.

    With ``dedup``, the windows run over the unique frames only, and each output frame is asked
    for at its re-timed position among them: exactly where the model takes arbitrary times, else
    at the nearest of the model's own ``1/fps_x`` steps (``grid.step`` is then ``1/fps_x``)."""
    if dedup is None:
        return plan_windows(
            info.frame_count, window, overlap, min_frames=spec.min_frames, cuts=cuts, step=grid.step,
            n_outputs=grid.count,
        )  # fmt: skip
    retiming = Retiming(dedup)
    resolution = grid.step.denominator * (TIME_RESOLUTION if spec.arbitrary_times else 1)
    return plan_windows(
        dedup.n_unique, window, overlap, min_frames=spec.min_frames, cuts=retiming.cuts, step=grid.step,
        n_outputs=grid.count, positions=RetimedPositions(retiming, grid.step, resolution),
    )  # fmt: skip
