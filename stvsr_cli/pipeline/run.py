"""The run loop: frames in, windows through the model, output frames out in order.

Knows nothing of files, click or rich: frames come from any iterator, results go to a callback,
progress is reported through another. Only the frames the current and next windows need are held.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from itertools import islice
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

from stvsr_cli.pipeline.grey import grey_frame, luma_tensor
from stvsr_cli.pipeline.stages import StageClock, clock_or_nothing
from stvsr_cli.pipeline.transfer import Frame, Transfers
from stvsr_cli.pipeline.windows import Step, Window, WindowPlan

if TYPE_CHECKING:  # PyTorch is imported where tensors are made: a run on arrays never needs it
    import torch


class WindowModel(Protocol):
    """``[N, 3, H, W]`` in [0, 1] -> ``[fps_x*(N-1)+1, 3, sH, sW]`` in [0, 1]. A model whose
    ``arbitrary_times`` is true also takes ``times=`` (positions 0..N-1) and returns one frame each;
    one whose ``shot_edges`` is true also takes ``edges=(opens_shot, closes_shot)``, whether the
    window's first and last frames are its shot's; ``size_multiple`` is the frame size rule its
    network pads to. ``Upscaler`` is one."""

    device: torch.device
    arbitrary_times: bool
    shot_edges: bool
    size_multiple: int

    def __call__(self, frames: torch.Tensor, fps_x: int, **facts) -> torch.Tensor: ...


@runtime_checkable
class BatchModel(Protocol):
    """A window model that also takes several windows of one shape at once: ``[B, N, 3, H, W]``."""

    def batch(self, windows: torch.Tensor, fps_x: int, **facts) -> torch.Tensor: ...


@runtime_checkable
class FrameModel(Protocol):
    """A model that works on the decoded arrays themselves (no tensors, no float frames):
    ``frames_at(frames, times)`` gives the output frames at ``times`` (positions 0..N-1): arrays,
    or the encoder's planes."""

    def frames_at(self, frames: list[np.ndarray], times: list[Fraction]) -> list[Frame]: ...


@dataclass
class Call:
    """Consecutive windows that go through the model together: of one length, needing the same
    outputs (in units of 1/fps_x from their first frame), with the same shot facts."""

    numbers: list[int]  # the windows' places among the plan's calls
    windows: list[Window]
    steps: list[list[Step]]  # per window, the output frames it gives, in order
    needed: list[int]
    grey: bool  # in a black-and-white shot: the outputs become their luma

    @property
    def edges(self) -> tuple[bool, bool]:
        return self.windows[0].opens_shot, self.windows[0].closes_shot

    def joins(self, window: Window, needed: list[int], grey: bool, batch: int) -> bool:
        first = self.windows[0]
        same = (len(window.frames), window.opens_shot, window.closes_shot, needed, grey)
        return len(self.windows) < batch and same == (
            len(first.frames), first.opens_shot, first.closes_shot, self.needed, self.grey
        )


def plan_calls(
    plan: WindowPlan, skip_windows: int = 0, batch_windows: int = 1, grey: Callable[[Window], bool] | None = None
) -> Iterator[Call]:
    """``plan``'s model calls after the first ``skip_windows`` windows, up to ``batch_windows``
    windows a call; ``grey`` says which windows lie in black-and-white shots."""
    call = None
    for number, (window, steps) in islice(enumerate(plan.calls()), skip_windows, None):
        needed, in_grey = sorted({step.index for step in steps}), grey is not None and grey(window)
        if call is not None and call.joins(window, needed, in_grey, batch_windows):
            call.numbers.append(number), call.windows.append(window), call.steps.append(steps)
            continue
        if call is not None:
            yield call
        call = Call([number], [window], [steps], needed, in_grey)
    if call is not None:
        yield call


class HeldFrames:
    """The decoded frames the coming windows need, read in order from ``frames`` (which starts at
    ``first``); earlier ones are let go."""

    def __init__(self, frames: Iterable[np.ndarray], first: int, total: int) -> None:
        self._source, self._next, self._total = iter(frames), first, total
        self._held: dict[int, np.ndarray] = {}

    def window(self, window: Window) -> list[np.ndarray]:
        for i in [i for i in self._held if i < window.start]:
            del self._held[i]
        while self._next <= window.last:
            frame = next(self._source, None)
            if frame is None:
                raise RuntimeError(f"the frame source ended after {self._next} of {self._total} frames")
            if self._next >= window.start:
                self._held[self._next] = frame
            self._next += 1
        return [self._held[i] for i in window.frames]


def start_call(
    model: WindowModel | FrameModel, call: Call, frames: list[list[np.ndarray]], fps_x: int,
    transfers: Transfers | None, clock: StageClock | None = None,
) -> Callable[[], list[list[Frame]]]:  # fmt: skip
    """``call`` queued on the model (``frames``: its windows' frames); the call returned collects,
    for each window, the output frames at ``call.needed`` (arrays of the input's dtype, or the
    encoder's planes, as ``transfers`` says). ``clock`` times "upload", "model" and "download"."""
    timed = clock_or_nothing(clock)
    times = [Fraction(i, fps_x) for i in call.needed]
    if isinstance(model, FrameModel):
        with timed("model"):
            made = [model.frames_at(window, times) for window in frames]
        return lambda: [[grey_frame(f) for f in m] if call.grey else m for m in made]
    facts = {"times": times} if model.arbitrary_times else {}
    if model.shot_edges:
        facts["edges"] = call.edges
    batched = len(frames) > 1 and isinstance(model, BatchModel)
    with timed("upload"):
        inputs = [transfers.upload([f for window in frames for f in window])] if batched else [
            transfers.upload(window) for window in frames
        ]  # fmt: skip
    with timed("model"):
        if batched:
            flat = inputs[0].view(len(frames), len(frames[0]), *inputs[0].shape[1:])
            results = [model.batch(flat, fps_x, **facts).flatten(0, 1)]
        else:
            results = [model(window, fps_x, **facts) for window in inputs]
        if not model.arbitrary_times:  # the model made every 1/fps_x step: keep those needed
            made = fps_x * (len(frames[0]) - 1) + 1
            results = [r.unflatten(0, (-1, made))[:, call.needed].flatten(0, 1) for r in results]
        results = [luma_tensor(r) if call.grey else r for r in results]
    with timed("download"):
        pending = [transfers.download(r, frames[0][0].dtype) for r in results]

    def collect() -> list[list[Frame]]:
        with timed("download"):
            made = [frame for wait in pending for frame in wait()]
        return [made[i * len(call.needed) : (i + 1) * len(call.needed)] for i in range(len(frames))]

    return collect


def run_windows(
    frames: Iterable[np.ndarray], plan: WindowPlan, model: WindowModel | FrameModel, emit: Callable[[Frame], None],
    progress: Callable[[int], None] | None = None, *, skip_windows: int = 0, first_frame: int = 0,
    on_window_done: Callable[[int, int], None] | None = None, pin_memory: bool = True, batch_windows: int = 1,
    clock: StageClock | None = None, transfers: Transfers | None = None, grey: Callable[[Window], bool] | None = None,
) -> int:  # fmt: skip
    """Feed ``plan``'s windows through ``model`` and ``emit`` every output frame once, in order;
    returns the number emitted. ``frames`` yields ``[H, W, 3]`` arrays from ``first_frame`` on.

    The first ``skip_windows`` model calls are not made (an earlier, interrupted run made their
    frames, which count as done; ``frames`` may start at ``plan.first_frame_after(skip_windows)``).
    ``on_window_done(windows, frames)`` follows each window with the counts so far. Up to
    ``batch_windows`` windows go through one model call (``plan_calls``); the outputs of the
    windows ``grey`` names become their luma. ``transfers`` says how frames travel to the model's
    device and back (default: RGB arrays, page-locked as ``pin_memory`` says); with a copy stream a
    call's frames are collected after the next call is queued. ``clock`` times the stages.
    """
    held = HeldFrames(frames, first_frame, plan.n_frames)
    if transfers is None and not isinstance(model, FrameModel):
        transfers = Transfers(model.device, pinned=pin_memory)
    done = sum(len(steps) for _, steps in islice(plan.calls(), skip_windows))
    emitted, queued = done, []

    def finish(call: Call, collect: Callable[[], list[list[Frame]]]) -> None:
        nonlocal emitted
        for number, steps, outputs in zip(call.numbers, call.steps, collect()):
            made = dict(zip(call.needed, outputs))
            for step in steps:
                emit(made[step.index])
                emitted += 1
                if progress is not None:
                    progress(emitted)
            if on_window_done is not None:
                on_window_done(number + 1, emitted)

    for call in plan_calls(plan, skip_windows, batch_windows, grey):
        collect = start_call(model, call, [held.window(w) for w in call.windows], plan.fps_x, transfers, clock)
        while queued:  # the previous call's copy ran beside this call's model
            finish(*queued.pop(0))
        queued.append((call, collect))
        if not (transfers is not None and transfers.deferred):
            finish(*queued.pop(0))
    while queued:
        finish(*queued.pop(0))
    return emitted - done
