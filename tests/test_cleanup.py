"""Clean-up before the model: FFmpeg's denoiser and deflicker on the decoded frames, in upscale and eval."""

import json

import numpy as np
from click.testing import CliRunner
from media import make_video, read_frames

from stvsr_cli import upscale
from stvsr_cli.cli import main
from stvsr_cli.io.filters import DEFLICKER_FRAMES, DENOISE_FILTERS, FrameFilters, filter_arrays

OPTIONS = {"model": "classic", "scale": 2, "fps_x": 2, "scene_detect": False}


def noisy(index: int, height: int, width: int) -> np.ndarray:
    """A smooth picture under strong white noise, new each frame."""
    y, x = np.mgrid[0:height, 0:width]
    base = 120 + 40 * np.sin(x / 9.0) * np.cos(y / 7.0)
    noise = np.random.default_rng(index).normal(0, 12, (height, width))
    return np.repeat(np.clip(base + noise, 0, 255).astype(np.uint8)[..., None], 3, axis=-1)


def high_pass(frame: np.ndarray) -> float:
    y = frame.astype(np.float64).mean(axis=-1)
    return float(np.abs(2 * y[1:-1, 1:-1] - y[:-2, 1:-1] - y[2:, 1:-1]).mean())


def test_the_chain_runs_in_order():
    chain = FrameFilters(ivtc=True, deflicker=True, denoise="medium").chain()
    assert [name for name, _ in chain] == ["fieldmatch", "bwdif", "decimate", "deflicker", DENOISE_FILTERS["medium"][0]]
    assert FrameFilters(deinterlace=True, denoise="light").chain()[0][0] == "bwdif"
    assert not FrameFilters() and FrameFilters(denoise="strong")


def test_denoise_removes_noise_more_at_each_level():
    frames = [noisy(i, 48, 64) for i in range(8)]
    energy = [np.mean([high_pass(f) for f in frames])]
    for level in ("light", "medium", "strong"):
        energy.append(np.mean([high_pass(f) for f in filter_arrays(frames, FrameFilters(denoise=level))]))
    assert energy == sorted(energy, reverse=True) and energy[-1] < 0.6 * energy[0]


def test_deflicker_evens_brightness_and_leaves_short_clips_alone():
    rng = np.random.default_rng(0)
    base = np.random.default_rng(1).random((32, 32, 3)) * 160 + 40
    frames = [np.clip(base * (1 + 0.08 * rng.standard_normal()), 0, 255).astype(np.uint8) for _ in range(12)]
    evened = filter_arrays(frames, FrameFilters(deflicker=True))
    assert np.std([f.mean() for f in evened]) < 0.6 * np.std([f.mean() for f in frames])
    short = frames[: DEFLICKER_FRAMES - 1]  # FFmpeg's filter would darken them all
    assert all(np.array_equal(a, b) for a, b in zip(filter_arrays(short, FrameFilters(deflicker=True)), short))


def test_upscale_denoises_before_the_model(tmp_path):
    src = tmp_path / "noisy.mkv"
    make_video(src, frames=8, size=(64, 48), codec="ffv1", pix_fmt="bgr0", content=noisy)
    plain = upscale(src, tmp_path / "plain.mkv", **OPTIONS)
    cleaned = upscale(src, tmp_path / "clean.mkv", denoise="strong", deflicker=True, **OPTIONS)
    assert plain.frames_out == cleaned.frames_out == 16
    assert plain.cleanup == [] and cleaned.cleanup == ["deflicker=size=5:mode=am", "=".join(DENOISE_FILTERS["strong"])]
    before = np.mean([high_pass(f) for f in read_frames(tmp_path / "plain.mkv")])
    after = np.mean([high_pass(f) for f in read_frames(tmp_path / "clean.mkv")])
    assert after < 0.6 * before


def test_eval_cleans_the_input_and_says_so(tmp_path):
    clip = tmp_path / "clip.mkv"
    make_video(clip, frames=9, size=(64, 48), codec="ffv1", pix_fmt="bgr0", content=noisy)
    out = tmp_path / "scores.json"
    args = ["eval", str(clip), "-m", "classic", "--denoise", "medium", "--json", str(out), "-q"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())["cleanup"] == ["=".join(DENOISE_FILTERS["medium"])]
