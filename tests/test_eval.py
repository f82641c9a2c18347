"""stvsr eval: the protocol's frame selection and scores against hand-computed values."""

import json
import math

import av
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from media import make_video

from stvsr_cli.cli import main
from stvsr_cli.evaluation import evaluate, find_clips
from stvsr_cli.metrics import psnr_y, rgb_to_y, ssim_y
from stvsr_cli.models.loader import load_model
from stvsr_cli.models.registry import load_registry


def gray(value, h=24, w=32):
    return torch.full((3, h, w), float(value))


def test_luma_is_bt601_studio_range():
    assert rgb_to_y(gray(0)).unique().item() == pytest.approx(16)
    assert rgb_to_y(gray(255)).unique().item() == pytest.approx(235)


def test_psnr_of_a_known_offset():
    assert psnr_y(gray(100), gray(100)) == math.inf
    # +1 on R, G and B moves Y by 219/255: PSNR = 20 log10(255 / (219/255)).
    assert psnr_y(gray(101), gray(100)) == pytest.approx(20 * math.log10(255 / (219 / 255)))


def test_ssim_of_flat_frames_is_the_luminance_term():
    assert ssim_y(gray(80), gray(80)) == pytest.approx(1.0)
    ya, yb = 16 + 219 * 80 / 255, 16 + 219 * 120 / 255
    c1 = (0.01 * 255) ** 2
    assert ssim_y(gray(80), gray(120)) == pytest.approx((2 * ya * yb + c1) / (ya**2 + yb**2 + c1))


def write_clip(path, frames):
    """A lossless RGB video of the given uint8 frames."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("ffv1", rate=25)
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "bgr0"
        for i, f in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(f, format="rgb24")
            frame.pts = i
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def flat(value, h=29, w=37):
    return np.full((h, w, 3), value, np.uint8)


@pytest.fixture
def classic():
    return load_model(load_registry().get("classic"), scale=4, device="cpu")


def test_static_clip_is_reproduced_exactly(tmp_path, classic):
    write_clip(tmp_path / "static.mkv", [flat(90)] * 7)
    result = evaluate([tmp_path / "static.mkv"], classic)
    (clip,) = result.clips
    assert clip.frames == 7 and clip.psnr_y == math.inf and clip.ssim_y == pytest.approx(1.0)


def test_inputs_are_the_even_frames_and_in_between_frames_are_scored_apart(tmp_path, classic):
    # Even frames are 100, odd ones 110: the input sees only 100s, so every output is 100.
    frames = [flat(100 if i % 2 == 0 else 110) for i in range(8)]
    write_clip(tmp_path / "blink.mkv", frames)
    (clip,) = evaluate([tmp_path / "blink.mkv"], classic).clips
    assert clip.frames == 7  # frame 7 has no input after it: not scored
    assert clip.input_psnr_y == math.inf
    expected = 20 * math.log10(255 / (10 * 219 / 255))
    assert clip.interp_psnr_y == pytest.approx(expected)
    assert clip.psnr_y == math.inf  # the mean over all frames includes the identical ones


def test_frame_folders_and_videos_score_the_same(tmp_path, classic):
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (29, 37, 3), dtype=np.uint8) for _ in range(5)]
    (tmp_path / "videos").mkdir()
    write_clip(tmp_path / "videos" / "noise.mkv", frames)
    folder = tmp_path / "frames" / "noise"
    folder.mkdir(parents=True)
    for i, f in enumerate(frames):
        write_png(folder / f"{i:03d}.png", f)
    assert [c.name for c in find_clips([tmp_path / "frames"])] == ["noise"]
    from_video = evaluate([tmp_path / "videos"], classic).clips[0]
    from_frames = evaluate([tmp_path / "frames"], classic).clips[0]
    assert from_video.psnr_y == pytest.approx(from_frames.psnr_y) and from_video.frames == 5
    assert math.isfinite(from_video.psnr_y) and 0 < from_video.ssim_y < 1


def write_png(path, rgb):
    with av.open(str(path), "w", format="image2") as container:
        stream = container.add_stream("png")
        stream.height, stream.width = rgb.shape[:2]
        stream.pix_fmt = "rgb24"
        for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
            container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def test_eval_command_writes_the_json_summary(tmp_path):
    (tmp_path / "clips").mkdir()
    make_video(tmp_path / "clips" / "a.mp4", frames=5, size=(40, 32))
    write_clip(tmp_path / "clips" / "b.mkv", [flat(90)] * 3)
    out = tmp_path / "scores.json"
    result = CliRunner().invoke(main, ["eval", str(tmp_path / "clips"), "--model", "classic", "--json", str(out)])
    assert result.exit_code == 0, result.stderr
    data = json.loads(out.read_text())
    assert data["model"] == "classic" and [c["name"] for c in data["clips"]] == ["a", "b"]
    assert {"name", "frames", "psnr_y", "ssim_y"} <= set(data["clips"][0])
    assert data["clips"][1]["psnr_y"] == "inf"  # JSON has no infinity
    assert data["mean"]["psnr_y"] == "inf" and isinstance(data["clips"][0]["psnr_y"], float)


def test_eval_of_missing_data_fails_in_one_line(tmp_path):
    result = CliRunner().invoke(main, ["eval", str(tmp_path / "nothing")])
    assert result.exit_code == 1 and "not found" in result.stderr and "Traceback" not in result.stderr


def test_bench_runs_a_tiny_model_on_the_cpu(tmp_path, monkeypatch):
    """The rates are frames over time: with every model call made to take 0.25 s on bench's clock, a
    window of 3 frames at x2 (5 outputs, 4 of them new in a long run with overlap 1) is 20 and 16
    frames/s, and 20 x 128 x 96 pixels/s."""
    from types import SimpleNamespace

    from stvsr_cli import bench as bench_module

    registry = tmp_path / "models.toml"
    registry.write_text(
        '[models.tiny]\narch = "zsm"\nparams = { nf = 8, groups = 8, front_rbs = 1, back_rbs = 1 }\n'
        'window = 3\noverlap = 1\nweights = "https://example.invalid/w.safetensors"\nsha256 = "' + "0" * 64 + '"\n'
    )
    monkeypatch.setenv("STVSR_REGISTRY", str(registry))
    clock, outputs = [0.0], []
    real_load = bench_module.load_model

    class QuarterSecondCalls:
        def __init__(self, upscaler):
            self.upscaler = upscaler

        def __getattr__(self, name):
            return getattr(self.upscaler, name)

        def __call__(self, *args, **kwargs):
            out = self.upscaler(*args, **kwargs)
            clock[0] += 0.25
            outputs.append(out.shape[0])
            return out

    monkeypatch.setattr(bench_module, "load_model", lambda *a, **k: QuarterSecondCalls(real_load(*a, **k)))
    monkeypatch.setattr(bench_module, "time", SimpleNamespace(perf_counter=lambda: clock[0]))
    result = CliRunner().invoke(
        main, ["bench", "--model", "tiny", "--size", "32x24", "--frames", "4", "--device", "cpu", "--json"]
    )
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["model"] == "tiny" and data["random_weights"] is True and data["device"] == "cpu"
    assert (data["out_width"], data["out_height"], data["e2e_frames"]) == (128, 96, 8)
    assert data["e2e_fps"] > 0 and data["peak_memory_gib"] > 0
    assert outputs and set(outputs) == {5}  # 3 inputs and 2 in-between frames per call
    assert data["model_seconds_per_call"] == pytest.approx(0.25)
    assert data["model_fps"] == pytest.approx(20.0) and data["model_useful_fps"] == pytest.approx(16.0)
    assert data["model_mpix_s"] == pytest.approx(20 * 128 * 96 / 1e6, abs=1e-4)  # the JSON keeps 4 decimals
    assert data["model_useful_mpix_s"] == pytest.approx(16 * 128 * 96 / 1e6, abs=1e-4)
