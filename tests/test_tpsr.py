"""TPSR: temporal profiles, feature shuffling, shapes, training through stvsr train."""

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from media import make_training_clips, make_video, stream_facts, train_tiny

from stvsr_cli.cli import main
from stvsr_cli.models.classic import Classic
from stvsr_cli.models.tpsr import PAPER_PARAMS, TPSR, from_profiles, profile_base, shuffle_width, to_profiles

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


def test_tpsrm_residual_base_is_classic_s_picture():
    """``profile_base`` is x2 in height and x1 in width (time is the profile's width); classic is x2 in
    both. On a video whose rows are flat, classic's x2 in width changes nothing, so every column of
    ``Classic(scale=2)`` is the base's picture: bicubic on the same grid, clamped to [0, 1], blended in
    time. Stripes of 0 and 1 make bicubic overshoot, so the clamp shows."""
    torch.manual_seed(0)
    rows = torch.randint(0, 2, (2, 4, 3, 6, 1)).float()  # [B, T, C, h, 1]: black and white stripes
    video = rows.expand(-1, -1, -1, -1, 5)
    base = from_profiles(profile_base(to_profiles(video)), 2)  # [2, 7, 3, 12, 5]
    classic = Classic(scale=2)(video, fps_x=2)  # [2, 7, 3, 12, 10]
    torch.testing.assert_close(base, classic[..., ::2], rtol=0, atol=1e-6)
    torch.testing.assert_close(base, classic[..., 1::2], rtol=0, atol=1e-6)
    raw = F.interpolate(video.flatten(0, 1), size=(12, 5), mode="bicubic", align_corners=False)
    assert raw.max() > 1.05 and raw.min() < -0.05  # unclamped bicubic leaves [0, 1] here


def test_papers_configuration_has_the_papers_size_and_no_long_skip():
    model = TPSR(**PAPER_PARAMS)
    assert abs(sum(p.numel() for p in model.parameters()) / 7.53e6 - 1) < 0.01
    assert not model.long_skip and not TPSR(**TINY).long_skip  # the paper's FSM is the default
    torch.manual_seed(0)
    plain, skipped = TPSR(**TINY).eval(), TPSR(**TINY, long_skip=True).eval()
    skipped.load_state_dict(plain.state_dict())  # same parameters: the skip is a wire, not a layer
    video = torch.rand(1, 3, 3, 8, 8)
    with torch.no_grad():
        assert not torch.allclose(plain(video), skipped(video))


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


def test_first_stage_is_l1_between_the_middle_volume_and_the_target_shrunk_in_height_and_width(monkeypatch):
    """Eq. 2: TPSRM's volume (x2 in height and time) against the ground truth shrunk 1/2 in height and
    1/4 in width, frame by frame. Flat frames make every shrink exact, so the loss is known by hand."""
    torch.manual_seed(0)
    model = TPSR(**TINY)
    frames = torch.rand(1, 3, 3, 8, 8)
    assert model.middle_volume(frames).shape == (1, 5, 3, 16, 8)  # x2 in height and time, width unchanged
    colours = torch.rand(1, 5, 3, 1, 1)  # one flat colour per output frame
    monkeypatch.setattr(model, "middle_volume", lambda _: colours.expand(1, 5, 3, 16, 8))
    with torch.no_grad():
        same = model.training_loss(frames, colours.expand(1, 5, 3, 32, 32), 2, 0.0)
        reversed_in_time = model.training_loss(frames, colours.flip(1).expand(1, 5, 3, 32, 32), 2, 0.0)
    eps = 1e-3  # Charbonnier's, standing for L1: sqrt(d^2 + eps^2)
    assert same.item() == pytest.approx(eps, rel=1e-3)  # the volume is the shrunk target: only eps is left
    by_hand = ((colours - colours.flip(1)) ** 2 + eps**2).sqrt().mean().item()
    assert reversed_in_time.item() == pytest.approx(by_hand, rel=1e-4)  # frame t is compared with frame t


def eq10(out, target, frames):
    """The paper's Eq. 10 with its weights (Sec. 4.1: lambda_1 = 0.1, lambda_3 = 1; the VGG term is
    left out), each term as Eqs. 6, 7 and 9 define it: means over frames, and for the cycle term over
    the horizontal profiles of the output degraded 1/2 in frame rate and 1/4 in height and width."""

    from stvsr_cli.models.ops.losses import charbonnier, ssim

    n = out.shape[1]
    l1 = sum(charbonnier(out[:, t], target[:, t]) for t in range(n)) / n
    structure = sum(1 - ssim(out[:, t], target[:, t]) for t in range(n)) / n
    kept = out[:, ::2]  # 1/2 in frame rate: the frames at the input positions
    degraded = F.interpolate(  # the protocol's antialiased bicubic x1/4
        kept.flatten(0, 1), scale_factor=0.25, mode="bicubic", antialias=True, align_corners=False
    ).unflatten(0, kept.shape[:2])
    rows = frames.shape[-2]  # horizontal profile h: row h of every frame, a W x T image per channel
    cycle = sum(charbonnier(degraded[..., h, :], frames[..., h, :]) for h in range(rows)) / rows
    return l1 + 0.1 * structure + 1.0 * cycle


def test_final_stage_is_the_papers_eq10_in_value_and_in_gradient():
    """L1 + 0.1 (1 - SSIM) + the cycle term of Eq. 9, and every term trains the network: the cycle
    term's gradient reaches the parameters (a degradation with a zero gradient, such as rounding to
    8 bits, would leave the value right and the term untrained)."""
    torch.manual_seed(0)
    model = TPSR(**TINY)
    frames, target = torch.rand(1, 3, 3, 8, 8), torch.rand(1, 5, 3, 32, 32)
    params = [p for p in model.parameters() if p.requires_grad]
    loss = model.training_loss(frames, target, 2, 0.9)
    expected = eq10(model(frames), target, frames)
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-7)

    def flat(value):
        grads = torch.autograd.grad(value, params, allow_unused=True, retain_graph=True)
        return torch.cat([torch.zeros(p.numel()) if g is None else g.flatten() for p, g in zip(params, grads)])

    torch.testing.assert_close(flat(loss), flat(expected), rtol=1e-4, atol=1e-7)
    cycle = expected - eq10(model(frames), target, torch.zeros_like(frames))  # the inputs enter only there
    assert flat(cycle).abs().sum() > 0  # so the comparison above sees a cycle term that does not train
