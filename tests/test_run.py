import numpy as np
import torch

from stvsr_cli.models.classic import Classic
from stvsr_cli.pipeline.run import run_windows
from stvsr_cli.pipeline.transfer import to_arrays, to_tensor
from stvsr_cli.pipeline.windows import plan_windows


class Recorder:
    """A stand-in model: output frame i of a window is the input time it stands for, as a flat image."""

    device = torch.device("cpu")
    arbitrary_times, shot_edges, size_multiple = False, False, 1

    def __init__(self):
        self.calls = []

    def __call__(self, frames, fps_x):
        ids = [int(round(f[0, 0, 0].item() * 255)) for f in frames]
        self.calls.append(ids)
        times = [ids[0] * fps_x + i for i in range(fps_x * (len(ids) - 1) + 1)]
        return torch.stack([torch.full((3, 2, 2), t / 255.0) for t in times])


def test_run_loop_emits_each_output_once_in_time_order():
    n, k = 11, 3
    frames = [np.full((2, 2, 3), i, np.uint8) for i in range(n)]
    plan = plan_windows(n, 4, 2, k)
    model, out, progress = Recorder(), [], []
    count = run_windows(iter(frames), plan, model, out.append, progress.append)
    assert count == len(out) == k * n == progress[-1]
    times = [int(o[0, 0, 0]) for o in out]
    last = k * (n - 1)
    assert times == [min(j, last) for j in range(k * n)]  # the tail holds the last frame
    # The model sees each planned window that supplies output, in order, with the frames planned.
    assert model.calls == [list(w.frames) for w, used in zip(plan.windows, plan.output_ranges) if used]


def test_windowed_classic_equals_the_whole_clip_at_once():
    rng = np.random.default_rng(1)
    frames = [rng.integers(0, 256, (5, 6, 3), dtype=np.uint8) for _ in range(9)]

    class Model:
        device = torch.device("cpu")
        arbitrary_times, shot_edges, size_multiple = False, False, 1
        module = Classic(scale=2)

        def __call__(self, x, fps_x):
            return self.module(x[None], fps_x=fps_x)[0]

    out = []
    run_windows(frames, plan_windows(9, 4, 1, 2), Model(), out.append)
    whole = to_arrays(Model()(to_tensor(frames, torch.device("cpu")), 2), np.uint8)
    assert len(out) == 18
    for got, want in zip(out, list(whole) + [whole[-1]]):
        np.testing.assert_array_equal(got, want)


def test_sixteen_bit_frames_keep_their_precision():
    frames = [np.full((2, 2, 3), 1023 * 64 + i, np.uint16) for i in range(2)]
    tensor = to_tensor(frames, torch.device("cpu"))
    back = to_arrays(tensor, np.uint16)
    assert back.dtype == np.uint16
    np.testing.assert_array_equal(back, np.stack(frames))
