"""The film degradation: each step's effect measured on synthetic frames, seeding, the clean target,
and ``--degradation film`` in ``stvsr eval`` and ``stvsr train``."""

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from media import make_training_clips, make_video, smooth, train_tiny

from stvsr_cli.cli import main
from stvsr_cli.evaluation import degrade, degrade_tensor, downscale_tensor
from stvsr_cli.film import (
    FILM,
    add_dust,
    add_grain,
    add_scratches,
    blur,
    compress,
    defocus_kernel,
    draw_params,
    film_degrade,
    flicker,
    gaussian_kernel,
    generator,
    grain_strength,
    luma,
    motion_kernel,
    to_grey,
)
from stvsr_cli.training.data import PatchSampler, load_frames

# Every artefact off: what is left is the standard protocol's frame selection and downscaling.
CLEAN = replace(
    FILM, blur_p=0.0, resize_modes=("bicubic",), flicker_brightness=(0.0, 0.0), flicker_contrast=(0.0, 0.0),
    grain_sigma=(0.0, 0.0), dust_rate=(0.0, 0.0), scratch_rate=(0.0, 0.0), grey_p=0.0, codecs=(),
)  # fmt: skip


def flat(value: float, n: int = 4, h: int = 32, w: int = 32) -> torch.Tensor:
    return torch.full((n, 3, h, w), value)


def clip(frames: int = 7, h: int = 32, w: int = 48) -> torch.Tensor:
    """``[L, 3, H, W]`` float frames of a smooth moving pattern."""
    return torch.from_numpy(np.stack([smooth(i, h, w) for i in range(frames)])).permute(0, 3, 1, 2).float() / 255


def spread(image: torch.Tensor) -> tuple[float, float]:
    """The standard deviation along y and along x of a non-negative image taken as a distribution."""
    p = image / image.sum()
    y, x = torch.meshgrid(torch.arange(p.shape[0]).double(), torch.arange(p.shape[1]).double(), indexing="ij")
    p = p.double()
    my, mx = (p * y).sum(), (p * x).sum()
    return float(((p * (y - my) ** 2).sum()).sqrt()), float(((p * (x - mx) ** 2).sum()).sqrt())


def impulse_response(kernel: torch.Tensor, size: int = 41) -> torch.Tensor:
    frame = torch.zeros(1, 1, size, size)
    frame[0, 0, size // 2, size // 2] = 1
    return blur(frame, kernel)[0, 0]


def test_blur_width_is_the_kernels():
    widths = []
    for sigma in (0.5, 1.0, 2.5):  # sampled, a Gaussian narrower than a pixel comes out a little narrower
        sy, sx = spread(impulse_response(gaussian_kernel(sigma, sigma)))
        assert sy == pytest.approx(sigma, rel=0.08) and sx == pytest.approx(sigma, rel=0.08)
        widths.append(sx)
    assert widths == sorted(widths) and widths[-1] == pytest.approx(2.5, rel=0.01)
    sy, sx = spread(impulse_response(gaussian_kernel(2.0, 0.5, angle=np.pi / 2)))  # the long axis turned upright
    assert sy == pytest.approx(2.0, rel=0.03) and sx == pytest.approx(0.5, rel=0.08)
    sy, sx = spread(impulse_response(defocus_kernel(3.0)))  # a disc of radius r: std r / 2 on each axis
    assert sy == pytest.approx(1.5, rel=0.1) and sx == pytest.approx(1.5, rel=0.1)
    sy, sx = spread(impulse_response(motion_kernel(8.0, angle=0.0)))  # a line of length L: std L / sqrt(12)
    assert sx == pytest.approx(8 / 12**0.5, rel=0.1) and sy < 0.05
    edge = torch.zeros(1, 3, 16, 40)
    edge[..., 20:] = 1
    blurred = blur(edge, gaussian_kernel(2.0, 2.0))
    assert blurred.shape == edge.shape and torch.allclose(blurred.sum(-1), edge.sum(-1), atol=1e-4)  # no light lost
    assert 0 < blurred[0, 0, 8, 17] < 0.5 < blurred[0, 0, 8, 22] < 1


def test_grain_grows_with_its_setting_is_new_each_frame_and_follows_the_luminance():
    rng = np.random.default_rng(0)
    measured = []
    for sigma in (0.01, 0.03, 0.06):
        for size in (0.0, 0.8):  # clumped grain keeps its strength
            noisy = add_grain(flat(0.5), sigma, size, colour=False, rng=rng)
            measured.append(float((noisy - 0.5).std()))
            assert measured[-1] == pytest.approx(sigma, rel=0.12)
    assert measured[::2] == sorted(measured[::2]) and measured[1::2] == sorted(measured[1::2])
    noisy = add_grain(flat(0.5), 0.03, 0.0, colour=False, rng=rng)
    assert not torch.equal(noisy[0], noisy[1])  # a new field every frame
    assert torch.equal(noisy[:, 0], noisy[:, 1]) and torch.equal(noisy[:, 0], noisy[:, 2])  # one grain for R, G, B
    coloured = add_grain(flat(0.5), 0.03, 0.0, colour=True, rng=rng)
    assert not torch.equal(coloured[:, 0], coloured[:, 1])
    dark = float((add_grain(flat(0.12), 0.03, 0.0, colour=False, rng=rng) - 0.12).std())
    assert dark == pytest.approx(0.03 * float(grain_strength(torch.tensor(0.12))), rel=0.12)
    assert dark < 0.6 * 0.03  # weaker in the shadows than in the mid-tones


def test_flicker_moves_each_frames_mean_within_its_range():
    amplitudes = []
    for seed in range(6):
        params = draw_params(generator(seed), 40, 16, 16)
        jitter = flicker(flat(0.5, n=40, h=16, w=16), params.gain, params.offset).mean((1, 2, 3)) - 0.5
        torch.testing.assert_close(jitter, params.offset, rtol=0, atol=1e-6)
        assert jitter.abs().max() <= FILM.flicker_brightness[1] + 1e-6
        amplitudes.append(float(jitter.abs().max()))
        halves = torch.cat([flat(0.3, n=40, h=16, w=8), flat(0.7, n=40, h=16, w=8)], -1)
        contrast = flicker(halves, params.gain, params.offset)
        gain = (contrast[..., 8:] - contrast[..., :8]).mean((1, 2, 3)) / 0.4
        assert (gain - 1).abs().max() <= FILM.flicker_contrast[1] + 1e-5
        torch.testing.assert_close(gain, params.gain, rtol=0, atol=1e-5)
    assert max(amplitudes) > 0.3 * FILM.flicker_brightness[1]  # it does flicker, by different amounts per clip
    assert min(amplitudes) < 0.7 * max(amplitudes)


def run_lengths(changed: np.ndarray) -> set[int]:
    """The lengths of the runs of consecutive frames in which a pixel of ``changed`` ``[N, ...]`` is set."""
    lengths, run = set(), np.zeros(changed.shape[1:], dtype=int)
    for frame in [*changed, np.zeros_like(changed[0])]:
        lengths.update(run[(run > 0) & ~frame].tolist())
        run = np.where(frame, run + 1, 0)
    return lengths


def test_dust_lasts_one_or_two_frames():
    settings = replace(FILM, dust_rate=(0.5, 0.5))
    params = draw_params(generator(1), 40, 48, 48, settings)
    assert 10 < len(params.spots) < 40
    dusty = add_dust(flat(0.5, n=40, h=48, w=48), params.spots)
    changed = (dusty != 0.5).any(1).numpy()
    assert run_lengths(changed) == {1, 2}  # (this seed's spots never overlap in time and space)
    for spot in params.spots:  # each alone: a blob where drawn, in one frame or two
        alone = (add_dust(flat(0.5, n=40, h=48, w=48), [spot]) != 0.5).any(1).numpy()
        assert np.nonzero(alone.any((1, 2)))[0].tolist() == list(range(spot.first, spot.first + spot.frames))
        ys, xs = np.nonzero(alone[spot.first])
        if 3 <= spot.y <= 45 and 3 <= spot.x <= 45:  # whole in the frame
            assert abs(ys.mean() - spot.y) < 1 and abs(xs.mean() - spot.x) < 1
        assert 1 <= len(ys) <= np.pi * (spot.radius + 1) ** 2


def test_scratches_are_vertical_and_last_a_few_frames():
    settings = replace(FILM, scratch_rate=(0.3, 0.3))
    params = draw_params(generator(2), 40, 24, 48, settings)
    assert len(params.scratches) >= 5
    scratched = add_scratches(flat(0.5, n=40, h=24, w=48), params.scratches)
    changed = (scratched != 0.5).any(1).numpy()  # [N, H, W]
    assert changed.any()
    assert np.array_equal(changed.any(1), changed.all(1))  # a column is scratched over its whole height or not
    assert changed.any(1).sum(1).max() <= 3 * len(params.scratches)  # thin: a few columns each
    low, high = FILM.scratch_frames
    for scratch in params.scratches:
        assert low <= len(scratch.xs) <= high or scratch.first + len(scratch.xs) == 40  # cut by the clip's end
        alone = (add_scratches(flat(0.5, n=40, h=24, w=48), [scratch]) != 0.5).any(1).numpy()
        hit = np.nonzero(alone.any((1, 2)))[0].tolist()
        if all(1 <= x <= 46 for x in scratch.xs):  # not drifted off the frame
            assert hit == list(range(scratch.first, scratch.first + len(scratch.xs)))
        assert np.abs(np.diff(scratch.xs)).max(initial=0) < 1.5  # drifts, never jumps


def test_grey_gives_equal_channels():
    frames = clip(3)
    grey = to_grey(frames)
    assert torch.equal(grey[:, 0], grey[:, 1]) and torch.equal(grey[:, 0], grey[:, 2])
    torch.testing.assert_close(grey[:, :1], luma(frames))
    out = film_degrade(clip(5), 2, 4, 0, replace(CLEAN, grey_p=1.0, grain_sigma=(0.03, 0.03), dust_rate=(1, 1)))
    assert torch.equal(out[:, 0], out[:, 1]) and torch.equal(out[:, 0], out[:, 2])


@pytest.mark.parametrize("codec,good,bad", [("h264", 18, 36), ("mpeg2", 2, 16)])
def test_compression_changes_the_frames_but_keeps_shape_and_dtype(codec, good, bad):
    frames = np.stack([smooth(i, 13, 22) for i in range(5)])  # odd height: padded for 4:2:0, cropped back
    frames = (frames + np.random.default_rng(0).integers(-20, 20, frames.shape)).clip(0, 255).astype(np.uint8)
    errors = []
    for quality in (good, bad):
        out = compress(frames, codec, quality)
        assert out.shape == frames.shape and out.dtype == np.uint8
        assert np.array_equal(out, compress(frames, codec, quality))  # one thread: deterministic
        errors.append(np.abs(out.astype(int) - frames).mean())
    assert 0 < errors[0] < errors[1] < 30


def test_the_same_seed_gives_the_same_input_and_another_seed_another():
    frames = torch.stack([clip(7, 16, 16), clip(7, 16, 16).flip(-1)])
    out = film_degrade(frames, 2, 4, (3, 7))
    assert out.shape == (2, 4, 3, 4, 4) and out.dtype == torch.float32
    assert torch.equal(out, (out * 255).round() / 255)  # 8-bit levels
    assert torch.equal(out, film_degrade(frames, 2, 4, (3, 7)))
    assert not torch.equal(out, film_degrade(frames, 2, 4, (3, 8)))
    same = film_degrade(torch.stack([frames[0], frames[0]]), 2, 4, (3, 7))
    assert not torch.equal(same[0], same[1])  # each sample its own draw
    assert torch.equal(same[0], out[0])
    long = [np.ascontiguousarray(f) for f in (clip(9) * 255).round().byte().permute(0, 2, 3, 1).numpy()]
    assert all(np.array_equal(a, b) for a, b in zip(degrade(long, 2, 4, "film", 5), degrade(long, 2, 4, "film", 5)))
    assert not all(np.array_equal(a, b) for a, b in zip(degrade(long, 2, 4, "film", 5), degrade(long, 2, 4, "film", 6)))


def test_with_every_artefact_off_it_is_the_standard_protocol():
    frames = clip(7)
    torch.testing.assert_close(film_degrade(frames, 2, 4, 0, CLEAN), downscale_tensor(frames[::2], 4), rtol=0, atol=0)


def test_the_clean_target_is_untouched():
    frames = clip(7)
    kept = frames.clone()
    out = degrade_tensor(frames, 2, 4, "film", seed=1)
    assert torch.equal(frames, kept) and out.shape == (4, 3, 8, 12)
    as_uint8 = [np.ascontiguousarray(f) for f in (frames * 255).round().byte().permute(0, 2, 3, 1).numpy()]
    copies = [f.copy() for f in as_uint8]
    small = degrade(as_uint8, 2, 4, "film", 1)
    assert len(small) == 4 and small[0].shape == (8, 12, 3) and small[0].dtype == np.uint8
    assert all(np.array_equal(a, b) for a, b in zip(as_uint8, copies))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_training_clips(tmp_path_factory.mktemp("film"), frames=9)


def test_training_samples_film_input_against_the_clean_target(data):
    kwargs = {"frames_in": 4, "fps_x": 2, "patch": 16, "scale": 4, "seed": 3}
    film = PatchSampler(load_frames([data]), degradation="film", **kwargs)
    lr, hr = film.batch(7, 2)
    assert torch.equal(hr, film.crops(7, 2).float() / 255)  # the target is the clean frames
    standard_lr, standard_hr = PatchSampler(load_frames([data]), **kwargs).batch(7, 2)
    assert torch.equal(hr, standard_hr) and lr.shape == standard_lr.shape == (2, 4, 3, 4, 4)
    assert not torch.equal(lr, standard_lr)
    assert torch.equal(lr, film.batch(7, 2)[0])  # batch s depends on (seed, s) only
    other_step, same_target = film.degrade(film.crops(7, 2), 8)  # the same crops at another step: new draws
    assert torch.equal(same_target, hr) and not torch.equal(other_step, lr)


def test_stvsr_train_accepts_film(data, tmp_path, one_thread):
    tiny = {"nf": 8, "groups": 8, "front_rbs": 1, "back_rbs": 1}
    logs = train_tiny("zsm", tiny, data, tmp_path / "run", "tiny", steps=2, lr="1e-3", extra=["--degradation", "film"])
    assert [e["step"] for e in logs] == [2]
    assert "(film degradation)" in (tmp_path / "run" / "tiny.md").read_text()


def test_stvsr_eval_film_names_its_degradation_and_seed_and_repeats(tmp_path):
    video = tmp_path / "clip.mkv"
    make_video(video, frames=5, size=(32, 24), codec="ffv1", pix_fmt="bgr0", content=smooth)
    results = []
    for seed in ("0", "0", "1"):
        report = tmp_path / f"{len(results)}.json"
        args = ["eval", str(video), "--model", "classic", "--degradation", "film", "--json", str(report)]
        run = CliRunner().invoke(main, [*args, "--degradation-seed", seed])
        assert run.exit_code == 0, run.stderr
        assert "film degradation" in run.stdout
        results.append(json.loads(report.read_text()))
    assert results[0]["degradation"] == "film" and results[0]["degradation_seed"] == 0
    assert results[2]["degradation_seed"] == 1 and results[0]["clips"][0]["frames"] == 5
    assert results[0]["mean"] == results[1]["mean"]  # a fixed seed: runs compare
    assert results[0]["mean"] != results[2]["mean"]
    run = CliRunner().invoke(main, ["eval", str(video), "--model", "classic", "--json", str(tmp_path / "s.json")])
    assert run.exit_code == 0 and "degradation_seed" not in json.loads((tmp_path / "s.json").read_text())
