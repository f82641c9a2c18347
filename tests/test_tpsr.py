"""TPSR: temporal profiles, feature shuffling, shapes, training through stvsr train."""

import pytest
import torch
from click.testing import CliRunner
from media import make_training_clips, make_video, stream_facts, train_tiny

from stvsr_cli.cli import main
from stvsr_cli.models.classic import Classic
from stvsr_cli.models.tpsr import TPSR, from_profiles, shuffle_width, to_profiles

TINY = {"imdn_nf": 8, "imdn_blocks": 1, "nf": 8, "rs_blocks": 1, "refine_nf": 8}


def test_profiles_are_an_exact_reshape_of_the_video():
    video = torch.rand(2, 5, 3, 6, 7)
    profiles = to_profiles(video)
    assert profiles.shape == (2 * 7, 3, 6, 5)  # one y-t image per column
    torch.testing.assert_close(profiles[1 * 7 + 4], video[1, :, :, :, 4].permute(1, 2, 0))  # column 4 of clip 1
    assert torch.equal(from_profiles(profiles, 2), video)


def test_feature_shuffling_doubles_the_width_from_channel_pairs():
    features = torch.arange(2 * 4 * 3 * 5, dtype=torch.float32).reshape(2, 4, 3, 5)
    out = shuffle_width(features)
    assert out.shape == (2, 2, 3, 10)
    for c in range(2):
        for i in range(2):
            assert torch.equal(out[:, c, :, i::2], features[:, 2 * c + i])


@pytest.mark.parametrize("frames", [2, 3, 5])
def test_any_window_gives_twice_less_one_frames_at_four_times_the_size(frames):
    torch.manual_seed(0)
    model = TPSR(**TINY).eval()
    with torch.no_grad():
        out = model(torch.rand(1, frames, 3, 8, 12))
    assert out.shape == (1, 2 * frames - 1, 3, 32, 48)


def test_untrained_model_starts_near_classic_and_every_parameter_learns():
    torch.manual_seed(0)
    model = TPSR(**TINY)
    video = torch.rand(1, 3, 3, 8, 8)
    out = model(video)
    assert (out - Classic(scale=4)(video, fps_x=2)).abs().mean() < 0.05
    out.square().mean().backward()
    dead = [n for n, p in model.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert all(".attention." in n for n in dead)  # only a ReLU-gated 1-unit squeeze may be off at this tiny width


def test_training_smoke_and_the_export_runs_in_upscale(tmp_path, monkeypatch):
    data = make_training_clips(tmp_path / "train", frames=9)
    out = tmp_path / "run"
    logs = train_tiny("tpsr", TINY, data, out, "tiny-tpsr", steps=25, lr="2e-3")
    assert logs[-1]["loss"] < 0.9 * logs[0]["loss"]
    monkeypatch.setenv("STVSR_REGISTRY", str(out / "tiny-tpsr.toml"))
    clip = tmp_path / "in.mp4"
    make_video(clip, frames=5, size=(16, 12))
    run = CliRunner().invoke(main, ["upscale", str(clip), str(tmp_path / "o.mp4"), "--model", "tiny-tpsr"])
    assert run.exit_code == 0, run.stderr
    assert stream_facts(tmp_path / "o.mp4")["frames"] == 10


@pytest.mark.parametrize(
    ("progress", "trained"),
    [
        (0.0, {"tpsrm"}),  # TPSRM alone
        (0.5, {"extract", "stacking", "reconstruct", "csr"}),  # FSM, TPSRM frozen, no RM yet
        (0.9, {"tpsrm", "extract", "stacking", "reconstruct", "csr", "refine"}),  # all three
    ],
)
def test_staged_schedule_trains_the_papers_modules_in_turn(progress, trained):
    torch.manual_seed(0)
    model = TPSR(**TINY)
    loss = model.training_loss(torch.rand(2, 3, 3, 8, 8), torch.rand(2, 5, 3, 32, 32), 2, progress)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    moved = {n.split(".")[0] for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert moved == trained


def test_first_stage_compares_the_middle_volume_with_the_target_shrunk_in_height_and_width():
    torch.manual_seed(0)
    model = TPSR(**TINY)
    frames, target = torch.rand(1, 3, 3, 8, 8), torch.rand(1, 5, 3, 32, 32)
    middle = model.middle_volume(frames)
    assert middle.shape == (1, 5, 3, 16, 8)  # x2 in height and time, width unchanged
    with torch.no_grad():
        perfect_target = torch.nn.functional.interpolate(middle.reshape(5, 3, 16, 8), size=(32, 32)).reshape(
            1, 5, 3, 32, 32
        )
        # A target whose 1/2-height, 1/4-width shrink is far from the volume scores worse.
        assert model.training_loss(frames, target, 2, 0.0) > 0
        assert model.training_loss(frames, perfect_target, 2, 0.0) < model.training_loss(frames, target, 2, 0.0)


def test_final_stage_adds_ssim_and_cycle_terms_to_the_reconstruction_loss():
    from stvsr_cli.evaluation import downscale_tensor
    from stvsr_cli.training.losses import charbonnier, ssim

    torch.manual_seed(0)
    model = TPSR(**TINY)
    frames, target = torch.rand(1, 3, 3, 8, 8), torch.rand(1, 5, 3, 32, 32)
    with torch.no_grad():
        out = model(frames)
        expected = (
            charbonnier(out, target)
            + 0.1 * (1 - ssim(out, target))
            + charbonnier(downscale_tensor(out[:, ::2], 4), frames)
        )
        torch.testing.assert_close(model.training_loss(frames, target, 2, 0.9), expected)
