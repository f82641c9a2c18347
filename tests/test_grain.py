"""--grain keep: the input's grain measured per shot on flat areas, by brightness, and added back
after the model at the output's scale, new each frame, the same on a resume."""

import json

import numpy as np
import pytest
from media import make_video, read_frames

from stvsr_cli import upscale
from stvsr_cli.io.encode import EncodeSettings, Planes
from stvsr_cli.io.workdir import work_folder_for
from stvsr_cli.pipeline.grain import (
    GrainProfile, add_grain, grain_adder, grain_field, luma, measure_grain, measure_shots, sampled,
)  # fmt: skip


def grainy(level: float, sigma: float, seed: int, size=(64, 96)) -> np.ndarray:
    """A flat grey picture at ``level`` with white grain of spread ``sigma`` (8-bit levels)."""
    noise = np.random.default_rng(seed).normal(0, sigma, size)
    return np.clip(np.rint(level + noise), 0, 255).astype(np.uint8)


def test_the_grain_is_measured_by_brightness_on_flat_areas():
    # Dark half with little grain, bright half with more; an edge between them that is not grain.
    frames = []
    for seed in range(4):
        y = np.concatenate([grainy(60, 2.0, seed), grainy(180, 6.0, seed + 10)], axis=1).astype(np.float32)
        frames.append(y)
    profile = measure_grain(frames)
    dark, bright = int(60 / 255 * 8), int(180 / 255 * 8)  # their brightness bins; between them, a straight line
    assert profile.sigma[dark] == pytest.approx(2.0, rel=0.1) and profile.sigma[bright] == pytest.approx(6.0, rel=0.1)
    assert profile.sigma == sorted(profile.sigma)  # the edge between the halves was not taken for grain
    clean = measure_grain([np.full((64, 64), 128, np.float32)])
    assert max(clean.sigma) == 0


def test_each_shot_is_sampled_evenly():
    chosen = sampled(100, [40], per_shot=4)
    assert sorted(chosen) == [5, 15, 25, 35, 47, 62, 77, 92] and set(chosen.values()) == {0, 40}
    assert sorted(sampled(3, [], per_shot=6)) == [0, 1, 2]


def test_grain_is_new_each_frame_the_same_for_the_same_frame_and_as_strong_as_measured():
    a, b, again = grain_field(96, 128, 4, 7), grain_field(96, 128, 4, 8), grain_field(96, 128, 4, 7)
    assert np.array_equal(a, again) and abs(np.corrcoef(a.ravel(), b.ravel())[0, 1]) < 0.1
    assert a.std() == pytest.approx(1.0, rel=1e-3)
    # Enlarged: neighbours within the scale are alike, as the input's grain enlarged would be.
    assert np.corrcoef(a[:, :-1].ravel(), a[:, 1:].ravel())[0, 1] > 0.5
    profile = GrainProfile([0.25, 0.75], [2.0, 6.0])
    frame = np.zeros((96, 128, 3), np.uint8)
    frame[:, :64], frame[:, 64:] = 64, 191
    grained = add_grain(frame, profile, 4, 3)
    noise = grained.astype(np.float64) - frame
    assert (noise[..., 0] == noise[..., 1]).all() and (noise[..., 1] == noise[..., 2]).all()  # grey stays grey
    dark, bright = noise[:, :64, 0].std(), noise[:, 64:, 0].std()
    assert dark == pytest.approx(2.0 + (6.0 - 2.0) * (64 / 255 - 0.25) / 0.5, rel=0.1)
    assert bright == pytest.approx(2.0 + (6.0 - 2.0) * (191 / 255 - 0.25) / 0.5, rel=0.1)


def test_the_encoders_planes_get_grain_on_luma_only():
    profile = GrainProfile([0.0, 1.0], [4.0, 4.0])
    y = np.full((32, 48), 126, np.uint8)
    u = np.full((16, 24), 140, np.uint8)
    grained = add_grain(Planes("yuv420p", (y, u, u.copy())), profile, 2, 0)
    assert np.array_equal(grained.arrays[1], u) and grained.arrays[0].std() == pytest.approx(4 * 219 / 255, rel=0.1)


def test_frames_are_grained_with_their_shots_profile_and_number():
    profiles = {0: GrainProfile([0.0, 1.0], [0.0, 0.0]), 10: GrainProfile([0.0, 1.0], [5.0, 5.0])}
    adder = grain_adder(profiles, scale=2, input_frame=lambda j: j // 2, first_output=18)
    frame = np.full((16, 16, 3), 128, np.uint8)
    first, second, third = adder(frame), adder(frame), adder(frame)  # outputs 18, 19 (input 9), 20 (input 10)
    assert np.array_equal(first, frame) and np.array_equal(second, frame) and not np.array_equal(third, frame)
    assert np.array_equal(third, add_grain(frame, profiles[10], 2, 20))


def test_measure_shots_keeps_each_shots_own_grain():
    frames = [np.repeat(grainy(128, 1.0 if i < 10 else 5.0, i)[..., None], 3, axis=-1) for i in range(20)]
    profiles = measure_shots(frames, 20, [10])
    assert sorted(profiles) == [0, 10]
    assert max(profiles[0].sigma) < 1.5 and min(profiles[10].sigma) > 4.0


def test_upscale_keeps_the_grain_and_a_resume_draws_the_same(tmp_path):
    def content(i, h, w):
        return np.repeat(grainy(120, 6.0, i, (h, w))[..., None], 3, axis=-1)

    src = tmp_path / "grainy.mkv"
    make_video(src, frames=24, size=(64, 48), codec="ffv1", pix_fmt="bgr0", content=content)
    options = {"model": "classic", "scale": 2, "fps_x": 2, "scene_detect": False, "segment_frames": 16}
    lossless = EncodeSettings(codec="ffv1", pix_fmt="bgr0")
    plain = upscale(src, tmp_path / "plain.mkv", encode=lossless, **options)
    kept = upscale(src, tmp_path / "kept.mkv", encode=lossless, grain="keep", **options)
    assert plain.frames_out == kept.frames_out == 48
    assert plain.grain is None and list(kept.grain) == [0] and len(kept.grain[0]["sigma"]) == 8
    smooth_out = [luma(f) for f in read_frames(tmp_path / "plain.mkv")]
    grained_out = [luma(f) for f in read_frames(tmp_path / "kept.mkv")]
    added = np.std([g - s for g, s in zip(grained_out, smooth_out, strict=True)])
    measured = measure_grain([luma(f) for f in read_frames(src)]).at(np.array([120 / 255]))[0]
    assert measured == pytest.approx(6.0, rel=0.15) and added == pytest.approx(measured, rel=0.15)

    def interrupt(done, total):
        if done >= 36:
            raise KeyboardInterrupt

    out = tmp_path / "resumed.mkv"
    with pytest.raises(KeyboardInterrupt):
        upscale(src, out, encode=lossless, grain="keep", progress=interrupt, **options)
    assert json.loads((work_folder_for(out) / "manifest.json").read_text())["grain"]["0"]["sigma"]
    upscale(src, out, encode=lossless, grain="keep", **options)
    for a, b in zip(read_frames(out), read_frames(tmp_path / "kept.mkv"), strict=True):
        np.testing.assert_array_equal(a, b)
