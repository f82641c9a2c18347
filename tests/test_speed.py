"""The speed-ups (issue 24), each on its own switch: on the CPU each runs and changes no frame beyond
float rounding, or is refused in one line."""

import os
import threading
import time

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from media import make_video, pattern, read_frames

from stvsr_cli.api import upscale
from stvsr_cli.bench import bench
from stvsr_cli.cli import main
from stvsr_cli.errors import UsageError
from stvsr_cli.io.encode import EncodeSettings
from stvsr_cli.models.loader import load_model
from stvsr_cli.models.registry import load_registry
from stvsr_cli.models.speed import Speed
from stvsr_cli.pipeline import memory
from stvsr_cli.pipeline.run import run_windows
from stvsr_cli.pipeline.stages import STAGES, StageClock
from stvsr_cli.pipeline.tiles import OutOfMemoryFallback
from stvsr_cli.pipeline.windows import plan_windows

LOSSLESS = EncodeSettings(codec="ffv1", pix_fmt="bgr0")


def counted_runs(upscaler) -> list[int]:
    """The batch size of every network call ``upscaler`` makes."""
    sizes: list[int] = []
    run = upscaler.module.run

    def counting(frames, *args, **kwargs):
        sizes.append(frames.shape[0])
        return run(frames, *args, **kwargs)

    upscaler.module.run = counting
    return sizes


@pytest.mark.parametrize("name", ["stvun", "zsm-lite-cpu"])  # arbitrary times, and a fixed factor
def test_batched_windows_make_the_same_frames_in_fewer_calls(name):
    spec = load_registry().get(name)
    frames = [pattern(i, 24, 32) for i in range(16)]
    plan = plan_windows(len(frames), spec.window, spec.overlap, 2, spec.min_frames)
    made = {}
    for batch in (1, 3):
        upscaler = load_model(spec, scale=4, device="cpu")
        sizes = counted_runs(upscaler)
        out: list[np.ndarray] = []
        run_windows(frames, plan, OutOfMemoryFallback(upscaler, 4), out.append, batch_windows=batch)
        made[batch] = (out, sizes)
    (one, one_sizes), (three, three_sizes) = made[1], made[3]
    assert len(one) == len(three) == 32
    assert set(one_sizes) == {1} and max(three_sizes) == 3 and len(three_sizes) < len(one_sizes)
    assert sum(three_sizes) == len(one_sizes)  # every window once
    assert max(np.abs(a.astype(int) - b).max() for a, b in zip(one, three, strict=True)) <= 1  # float rounding


def test_a_batch_that_runs_out_of_memory_goes_on_one_window_at_a_time():
    class Model:
        device, arbitrary_times, shot_edges, size_multiple = torch.device("cpu"), False, False, 1

        def __init__(self):
            self.calls = []

        def __call__(self, frames, fps_x):
            self.calls.append(1)
            return frames.repeat_interleave(2, dim=-1).repeat_interleave(2, dim=-2)

        def batch(self, windows, fps_x):
            self.calls.append(len(windows))
            if len(windows) > 1:
                raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 8.00 GiB")
            return self(windows[0], fps_x).unsqueeze(0)

    model = Model()
    runner = OutOfMemoryFallback(model, 2)
    windows = torch.rand(3, 2, 3, 4, 5)
    out = runner.batch(windows, 1)
    torch.testing.assert_close(out[1], model(windows[1], 1))
    assert runner.notes == ["out of memory on cpu with 3 windows a call: one at a time"]
    model.calls.clear()
    runner.batch(windows, 1)
    assert model.calls == [1, 1, 1]  # no second try at a batch


def test_speed_options_are_checked_in_one_line(tmp_path):
    with pytest.raises(UsageError):
        Speed(batch_windows=0)
    src = tmp_path / "in.mp4"
    make_video(src, frames=4, size=(32, 24))
    for model in ("classic", "stvun"):
        result = CliRunner().invoke(
            main, ["upscale", str(src), str(tmp_path / "out.mp4"), "-m", model, "--device", "cpu", "--cuda-graphs"]
        )
        assert result.exit_code == 2, result.output
        assert "--cuda-graphs needs a CUDA device" in result.output and "Traceback" not in result.output
        assert sorted(p.name for p in tmp_path.iterdir()) == ["in.mp4"]
    result = CliRunner().invoke(main, ["upscale", str(src), str(tmp_path / "out.mp4"), "--batch-windows", "0"])
    assert result.exit_code == 2 and "batch-windows" in result.output


def test_channels_last_and_batches_change_no_frame_of_a_run(tmp_path):
    src = tmp_path / "in.mkv"
    make_video(src, frames=9, size=(32, 24), codec="ffv1", pix_fmt="bgr0")
    options = {"model": "stvun", "device": "cpu", "encode": LOSSLESS, "scene_detect": False}
    plain = upscale(src, tmp_path / "plain.mkv", **options)
    fast = upscale(src, tmp_path / "fast.mkv", speed=Speed(channels_last=True, batch_windows=2), **options)
    assert plain.frames_out == fast.frames_out == 18
    for a, b in zip(read_frames(tmp_path / "plain.mkv"), read_frames(tmp_path / "fast.mkv"), strict=True):
        assert np.abs(a.astype(int) - b).max() <= 1


def test_a_compiled_network_makes_the_same_frames(tmp_path, monkeypatch):
    """``--compile`` through TorchDynamo. Inductor's code generation takes minutes on 2 cores, so the
    graphs dynamo captures run on its eager backend here: what is tested is that each call goes
    through the compiled module and that tracing the network changes nothing; and that what
    inductor compiles is kept in stvsr's cache folder, for the next run."""
    monkeypatch.setenv("STVSR_CACHE", str(tmp_path))
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", "restored after the test")
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR")
    compiled_calls = []
    original = torch.nn.Module.compile

    def eager_compile(self, *args, **kwargs):
        compiled_calls.append(kwargs.get("mode"))
        original(self, backend="eager", dynamic=kwargs.get("dynamic"))

    monkeypatch.setattr(torch.nn.Module, "compile", eager_compile)
    spec = load_registry().get("stvun")
    frames = torch.from_numpy(np.stack([pattern(i, 24, 32) for i in range(spec.window)])).permute(0, 3, 1, 2) / 255
    plain = load_model(spec, scale=4, device="cpu")(frames, 2)
    compiled = load_model(spec, scale=4, device="cpu", speed=Speed(compile=True))
    assert compiled_calls == ["default"] and compiled.module._compiled_call_impl is not None
    assert os.environ["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path / "torch-compile")
    torch.testing.assert_close(compiled(frames, 2), plain, rtol=0, atol=1e-4)


def test_bench_reports_the_options_and_the_arithmetic_limit():
    r = bench("stvun", size=(32, 24), frames=4, device="cpu", speed=Speed(batch_windows=2), calls=1)
    assert r.batch_windows == 2 and not r.channels_last and r.compile_mode is None
    useful = 2 * 2 * (r.window - r.overlap)  # two windows, two outputs per input step
    assert r.model_useful_fps == pytest.approx(useful / r.model_seconds_per_call)
    assert r.peak_tflop_s > 0 and r.flops_per_useful_frame > 0
    assert r.percent_of_limit == pytest.approx(100 * r.model_useful_fps / r.limit_useful_fps)
    assert list(r.stage_seconds) == list(STAGES) and all(v > 0 for v in r.stage_seconds.values())
    with pytest.raises(UsageError):
        bench("stvun", size=(32, 24), frames=4, device="cpu", plain=True, speed=Speed(batch_windows=2))


def test_batches_that_do_not_fit_the_memory_budget_run_one_window_a_call(tmp_path, monkeypatch):
    """A budget with room for one window a call (whole frames) but not for four: no tiles, no batches."""
    monkeypatch.setenv("STVSR_CACHE", str(tmp_path))
    monkeypatch.setattr(memory, "measure_profile", lambda *a, **k: memory.MemoryProfile(fixed=0, per_pixel=1e5))
    upscaler = load_model(load_registry().get("stvun"), scale=4, device="cpu")
    budget = memory.resident_memory() + 3 * 2**30  # one window: 1.4 GB with headroom; four: 5.8 GB
    size = {"window": 4, "fps_x": 2, "height": 100, "width": 120, "max_memory": budget}
    runner, note = memory.budgeted_runner(upscaler, batch_windows=4, **size)
    assert runner.tile == 0 and note is None
    assert runner.notes == ["4 windows a call do not fit the memory budget: one window a call"]
    runner, _ = memory.budgeted_runner(upscaler, batch_windows=4, **{**size, "max_memory": budget + 4 * 2**30})
    assert runner.tile == 0 and not runner.notes  # room for four


def test_the_stage_clock_sums_each_stage_over_threads_and_syncs_the_device_stages():
    synced = []
    clock = StageClock(sync=lambda: synced.append(1))

    def work(stage):
        with clock(stage):
            time.sleep(0.05)

    threads = [threading.Thread(target=work, args=(stage,)) for stage in ("decode", "model", "model")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    table = clock.table()
    assert list(table) == ["decode", "model"]  # in the order a frame meets them
    assert table["model"] >= 0.1 > table["decode"] >= 0.05  # two threads' seconds, added
    assert len(synced) == 2  # after each model block, not after decoding


def test_the_deformable_convolution_is_chosen_by_flag_or_refused_in_one_line(tmp_path, monkeypatch):
    from stvsr_cli.errors import UnsupportedOptionError
    from stvsr_cli.models.ops.dcn import deform_conv2d_torch, pick_deform_conv, torchvision_deform_conv2d

    cpu = torch.device("cpu")
    assert pick_deform_conv(cpu, "torch") is deform_conv2d_torch
    assert pick_deform_conv(cpu, "torchvision") is torchvision_deform_conv2d
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(UnsupportedOptionError, match="needs Triton and a CUDA device"):
        pick_deform_conv(cpu, "triton")
    with pytest.raises(UsageError):
        Speed(deform_conv="cudnn")
    upscaler = load_model(
        load_registry().get("zsm-lite-cpu"), scale=4, device="cpu", speed=Speed(deform_conv="torchvision")
    )
    layers = [m for m in upscaler.module.modules() if hasattr(type(m), "deform_conv")]
    assert layers and all(m.deform_conv is torchvision_deform_conv2d for m in layers)
    src = tmp_path / "in.mp4"
    make_video(src, frames=4, size=(16, 12))
    result = CliRunner().invoke(
        main, ["upscale", str(src), str(tmp_path / "out.mp4"), "-m", "zsm-lite-cpu", "--deform-conv", "triton"]
    )
    assert result.exit_code == 2 and "--deform-conv triton needs Triton" in result.output, result.output
    assert "Traceback" not in result.output and not (tmp_path / "out.mp4").exists()
