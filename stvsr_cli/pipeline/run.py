"""The run loop: frames in, windows through the model, output frames out in order.

Knows nothing of files, click or rich: frames come from any iterator, results go to a callback,
progress is reported through another. Only the frames the current and next windows need are held.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from fractions import Fraction
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np

from stvsr_cli.pipeline.stages import StageClock, clock_or_nothing
from stvsr_cli.pipeline.transfer import Frame, Pending, Transfers
from stvsr_cli.pipeline.windows import Step, Window, WindowPlan

if TYPE_CHECKING:  # PyTorch is imported where tensors are made: a run on arrays never needs it
    import torch


class WindowModel(Protocol):
    """``[N, 3, H, W]`` in [0, 1] -> ``[fps_x*(N-1)+1, 3, sH, sW]`` in [0, 1]. A model whose
    ``arbitrary_times`` is true also takes ``times=`` (positions 0..N-1) and returns one frame each;
    ``size_multiple`` is the frame size rule its network pads to. ``Upscaler`` is one."""

    device: torch.device
    arbitrary_times: bool
    size_multiple: int

    def __call__(self, frames: torch.Tensor, fps_x: int) -> torch.Tensor: ...


@runtime_checkable
class BatchModel(Protocol):
    """A window model that also takes several windows of one shape at once: ``[B, N, 3, H, W]``."""

    def batch(self, windows: torch.Tensor, fps_x: int, times: list | None = None) -> torch.Tensor: ...


@runtime_checkable
class FrameModel(Protocol):
    """A model that works on the decoded arrays themselves (no tensors, no float frames):
    ``frames_at(frames, times)`` gives the output arrays at ``times`` (positions 0..N-1)."""

    def frames_at(self, frames: list[np.ndarray], times: list[Fraction]) -> list[np.ndarray]: ...


def start_window_outputs(
    model: WindowModel | FrameModel,
    windows: list[list[np.ndarray]],
    fps_x: int,
    needed: list[int],
    pin_memory: bool = True,
    clock: StageClock | None = None,
    transfers: Transfers | None = None,
) -> Callable[[], list[list[Frame]]]:
    """Model calls on ``windows`` (each a list of frames; all of one shape) queued, their results
    collected by the call returned: for each window, the output frames at ``needed`` (in units of
    1/``fps_x`` from its first frame), as arrays of the input's dtype or the encoder's planes, as
    ``transfers`` says. Several windows go through one call where the model takes batches
    (``batch``). With a copy stream (``transfers.deferred``) the caller queues the next windows
    before collecting, so that copies and model overlap. ``clock`` times the stages "upload",
    "model" and "download"."""
    timed = clock_or_nothing(clock)
    times = [Fraction(i, fps_x) for i in needed]
    if isinstance(model, FrameModel):
        with timed("model"):
            made = [model.frames_at(frames, times) for frames in windows]
        return lambda: made
    if transfers is None:
        transfers = Transfers(model.device, pinned=pin_memory)
    if len(windows) == 1 or not isinstance(model, BatchModel):
        pending = [_one_call(model, transfers, frames, fps_x, needed, times, timed) for frames in windows]

        def collect_each() -> list[list[Frame]]:
            with timed("download"):
                return [collect() for collect in pending]

        return collect_each
    with timed("upload"):
        flat = transfers.upload([frame for frames in windows for frame in frames])
    inputs = flat.view(len(windows), len(windows[0]), *flat.shape[1:])
    with timed("model"):
        result = model.batch(inputs, fps_x, times) if model.arbitrary_times else model.batch(inputs, fps_x)[:, needed]
    with timed("download"):
        collect = transfers.download(result.flatten(0, 1), windows[0][0].dtype)

    def collect_batch() -> list[list[Frame]]:
        with timed("download"):
            made = collect()
        return [made[i * len(needed) : (i + 1) * len(needed)] for i in range(len(windows))]

    return collect_batch


def _one_call(
    model: WindowModel, transfers: Transfers, frames: list[np.ndarray], fps_x: int, needed: list[int],
    times: list[Fraction], timed: Callable,
) -> Pending:  # fmt: skip
    with timed("upload"):
        inputs = transfers.upload(frames)  # uint8 until it is on the device
    with timed("model"):
        # Models with arbitrary times make only the frames needed, at their exact times.
        result = model(inputs, fps_x, times=times) if model.arbitrary_times else model(inputs, fps_x)[needed]
    with timed("download"):
        return transfers.download(result, frames[0].dtype)


def run_windows(
    frames: Iterable[np.ndarray],
    plan: WindowPlan,
    model: WindowModel | FrameModel,
    emit: Callable[[np.ndarray], None],
    progress: Callable[[int], None] | None = None,
    *,
    skip_windows: int = 0,
    first_frame: int = 0,
    on_window_done: Callable[[int, int], None] | None = None,
    pin_memory: bool = True,
    batch_windows: int = 1,
    clock: StageClock | None = None,
    transfers: Transfers | None = None,
) -> int:
    """Feed ``plan``'s windows through ``model`` and ``emit`` every output frame once, in order.

    ``frames`` must yield at least ``plan.n_frames`` arrays ``[H, W, 3]``. Only windows that supply
    output frames are run. The first ``skip_windows`` of them are not (their frames were made by an
    earlier, interrupted run); their output frames count as done, and ``frames`` may then start at
    ``first_frame`` (``plan.first_frame_after(skip_windows)`` at most). ``on_window_done(windows, frames)``
    follows each window run, with the numbers of windows and output frames done so far. Returns the
    number of frames emitted. ``pin_memory=False`` copies frames to a GPU from pageable memory (the
    plain baseline of benchmarks). ``batch_windows`` consecutive windows of the same length that
    need the same outputs go through one model call where the model takes batches. ``clock``
    times the model call's stages. ``transfers`` says how frames travel to the model's device and
    back (default: RGB arrays, pinned as ``pin_memory`` says); with a copy stream, each call's
    frames are collected after the next call is queued. Memory stays flat: the plan is streamed,
    and only the frames of the current windows are held.
    """
    source = iter(frames)
    held: dict[int, np.ndarray] = {}
    next_index = first_frame
    done = emitted = 0
    pending: list[tuple[int, Window, list[Step], list[int]]] = []  # windows read, waiting for their call
    queued: list[tuple[list, Callable[[], list[list[Frame]]]]] = []  # calls whose frames are not collected yet
    deferred = transfers is not None and transfers.deferred

    def emit_outputs(calls: list, collect: Callable[[], list[list[Frame]]]) -> None:
        nonlocal done, emitted
        needed = calls[0][3]
        for (number, _, steps, _), outputs in zip(calls, collect()):
            made = dict(zip(needed, outputs))
            for step in steps:
                emit(made[step.index])
                emitted += 1
                done += 1
                if progress is not None:
                    progress(done)
            if on_window_done is not None:
                on_window_done(number + 1, done)

    def run_pending() -> None:
        windows = [[held[i] for i in window.frames] for _, window, _, _ in pending]
        collect = start_window_outputs(model, windows, plan.fps_x, pending[0][3], pin_memory, clock, transfers)
        calls = list(pending)
        pending.clear()
        while queued:  # the previous call's copy ran beside this call's model
            emit_outputs(*queued.pop(0))
        if deferred:
            queued.append((calls, collect))
        else:
            emit_outputs(calls, collect)

    for number, (window, steps) in enumerate(plan.calls()):
        if number < skip_windows:
            done += len(steps)
            continue
        needed = sorted({step.index for step in steps})
        if pending and (
            len(pending) >= batch_windows or len(window.frames) != len(pending[0][1].frames) or needed != pending[0][3]
        ):
            run_pending()
        first_held = pending[0][1].start if pending else window.start
        for i in [i for i in held if i < first_held]:
            del held[i]
        while next_index <= window.last:
            try:
                frame = next(source)
            except StopIteration:
                raise RuntimeError(f"the frame source ended after {next_index} of {plan.n_frames} frames") from None
            if next_index >= window.start:
                held[next_index] = frame
            next_index += 1
        pending.append((number, window, steps, needed))
    if pending:
        run_pending()
    while queued:
        emit_outputs(*queued.pop(0))
    return emitted
