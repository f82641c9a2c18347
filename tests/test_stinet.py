"""STINet: shapes for fps_x 2/4/6 at any size, ST-FI flows and graph, the losses, training through stvsr train."""

import pytest
import torch
from click.testing import CliRunner
from media import make_training_clips, make_video, stream_facts, train_tiny

from stvsr_cli.cli import main
from stvsr_cli.models import stinet
from stvsr_cli.models.classic import Classic
from stvsr_cli.models.ops.losses import charbonnier
from stvsr_cli.models.stinet import STGR, STINet, adapted_flows, interleave, warp

TINY = {"nf": 8, "sr_blocks": 1, "pnet_blocks": 1, "lr_modules": 1, "groups": 1, "flow_nf": 8, "flow_levels": 2}


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny(**extra) -> STINet:
    torch.manual_seed(0)
    return STINet(**{**TINY, **extra})


@pytest.mark.parametrize(
    ("fps_x", "frames", "size"), [(2, 2, (8, 8)), (2, 5, (9, 12)), (4, 3, (13, 11)), (6, 4, (5, 7)), (6, 2, (8, 6))]
)
def test_any_window_and_size_gives_k_frames_per_gap_at_four_times_the_size(fps_x, frames, size):
    with torch.no_grad():
        out = tiny().eval()(torch.rand(1, frames, 3, *size), fps_x=fps_x)
    assert out.shape == (1, fps_x * (frames - 1) + 1, 3, 4 * size[0], 4 * size[1])
    assert torch.isfinite(out).all()


def test_eq1_adapts_the_flows_linearly_and_interleave_keeps_time_order():
    f01, f10 = torch.randn(1, 2, 4, 4), torch.randn(1, 2, 4, 4)
    to_before, to_after = adapted_flows(torch.tensor(0.25), f01, f10)
    torch.testing.assert_close(to_before, 0.25 * f10)
    torch.testing.assert_close(to_after, 0.75 * f01)
    keys = torch.tensor([[0.0, 3.0, 6.0]])  # times 0, 1, 2 at fps_x 3
    middles = torch.tensor([[[1.0, 2.0], [4.0, 5.0]]])
    assert interleave(keys, middles).tolist() == [[0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0]]


def test_warp_moves_a_shifted_picture_back():
    picture = torch.rand(1, 3, 10, 12)
    shifted = torch.roll(picture, shifts=2, dims=-1)  # content moved 2 px right
    flow = torch.zeros(1, 2, 10, 12)
    flow[:, 0] = 2.0
    torch.testing.assert_close(warp(shifted, flow)[..., 2:-2], picture[..., 2:-2])


def test_graph_joins_each_node_to_its_counterpart_and_its_own_resolution():
    edges = STGR._edges(3, torch.device("cpu"))  # LR nodes 0-2, HR nodes 3-5
    assert not edges.diagonal().any()
    assert edges[0].tolist() == [False, True, True, True, False, False]
    assert edges[4].tolist() == [False, True, False, True, False, True]


def test_untrained_model_starts_near_classic_and_every_parameter_learns():
    model = tiny()
    video = torch.rand(1, 3, 3, 8, 8)
    for k in (2, 6):
        with torch.no_grad():
            assert (model(video, fps_x=k) - Classic(scale=4)(video, fps_x=k)).abs().mean() < 0.05
    target = Classic(scale=4)(torch.rand(1, 3, 3, 8, 8), fps_x=2)
    model.training_loss(video, target, 2, 0.0).backward()
    dead = [n for n, p in model.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert dead == []  # the phase-1 heads and the flow network learn through the loss, not the output


def test_training_loss_is_a_finite_scalar_with_the_motion_term(monkeypatch):
    """0.1 x the motion consistency term, with a flow network that sees motion (an untrained one may
    give zero flow, and the term zero, whatever its weight)."""
    model, video = tiny(), torch.rand(1, 3, 3, 8, 8)
    target = Classic(scale=4)(torch.rand(1, 3, 3, 8, 8), fps_x=4)
    torch.manual_seed(1)
    with torch.no_grad():
        for p in model.flow.parameters():
            p.add_(0.05 * torch.randn_like(p))
    loss = model.training_loss(video, target, 4, 0.5)
    assert loss.dim() == 0 and torch.isfinite(loss)
    with torch.no_grad():
        motion = model.motion_consistency(model(video, fps_x=4), target)
    monkeypatch.setattr(stinet, "MCL_WEIGHT", 0.0)
    without = model.training_loss(video, target, 4, 0.5)
    assert motion > 1e-4
    torch.testing.assert_close(loss - without, 0.1 * motion, rtol=1e-3, atol=1e-6)


@pytest.mark.parametrize("reconstruction", ["charbonnier", "l2"])
def test_training_loss_adds_the_phase1_lr_and_hr_terms_and_the_flow_photometric_term(reconstruction):
    """Flat frames make every term but the output and motion ones known by hand: with the phase-1 heads
    at zero the phase-1 images are classic's (HR) and the LR frames blended (LR), both the flat colours
    blended in time, and a flat frame warps onto itself whatever the flow. So the loss is R(output) +
    R(blend, target) + R(blend, target at LR) + 0.1 motion + 0.1 (C(frame i+1, frame i) both ways), R the
    reconstruction loss: Charbonnier C by default, the paper's squared L2 with ``reconstruction_loss="l2"``
    (the flow's photometric term stays Charbonnier)."""
    model = tiny() if reconstruction == "charbonnier" else tiny(reconstruction_loss=reconstruction)
    for head in (model.phase1_lr_out, model.phase1_hr_out):
        torch.nn.init.zeros_(head.weight)
        torch.nn.init.zeros_(head.bias)
    torch.manual_seed(2)
    colours, truth = torch.rand(1, 3, 3, 1, 1), torch.rand(1, 5, 3, 1, 1)  # 3 flat inputs, 5 flat targets (x2)
    video, target = colours.expand(1, 3, 3, 8, 8), truth.expand(1, 5, 3, 32, 32)
    c = colours[:, :, :, 0, 0]
    blend = torch.stack([c[:, 0], (c[:, 0] + c[:, 1]) / 2, c[:, 1], (c[:, 1] + c[:, 2]) / 2, c[:, 2]], 1)
    eps = 1e-3  # Charbonnier: sqrt(d^2 + eps^2)
    if reconstruction == "l2":
        recon = torch.nn.functional.mse_loss
        phase1 = ((blend - truth[:, :, :, 0, 0]) ** 2).mean()  # same at LR and HR: flat
    else:
        recon = charbonnier
        phase1 = ((blend - truth[:, :, :, 0, 0]) ** 2 + eps**2).sqrt().mean()
    photometric = 2 * ((c[:, 1:] - c[:, :-1]) ** 2 + eps**2).sqrt().mean()  # 1 -> 0 and 0 -> 1
    with torch.no_grad():
        output = model(video, fps_x=2)
        motion = model.motion_consistency(output, target)
        loss = model.training_loss(video, target, 2, 0.5)
    expected = recon(output, target) + 2 * phase1 + 0.1 * motion + 0.1 * photometric
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)
    assert (0.1 * photometric).item() > 1e-3 and phase1.item() > 1e-3  # each term shows above the tolerance


def test_the_papers_squared_l2_is_an_option_that_changes_the_loss_and_nothing_else():
    default, paper = tiny(), tiny(reconstruction_loss="l2")
    assert default.reconstruction_loss == "charbonnier"  # the shipped weights' training
    assert default.state_dict().keys() == paper.state_dict().keys()
    video, target = torch.rand(1, 3, 3, 8, 8), torch.rand(1, 5, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(default(video, fps_x=2), paper(video, fps_x=2))
        first, second = default.training_loss(video, target, 2, 0.5), paper.training_loss(video, target, 2, 0.5)
    assert (first - second).abs() > 1e-2
    assert "squared L2" in paper.loss_description and "Charbonnier (output" in default.loss_description
    with pytest.raises(ValueError, match="reconstruction_loss"):
        tiny(reconstruction_loss="l1")


def test_motion_consistency_reaches_the_frames_not_the_flow_network():
    model = tiny()
    target = torch.rand(1, 5, 3, 16, 16)
    output = target.flip(1).clone().requires_grad_(True)  # motion reversed
    loss = model.motion_consistency(output, target)
    loss.backward()
    assert loss > 0 and output.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.flow.parameters())  # else zero flow would be a trivial minimum


def test_training_smoke_and_the_export_runs_in_upscale_at_fps_x_4(tmp_path, monkeypatch):
    data = make_training_clips(tmp_path / "train", frames=13)  # 3 inputs at x6
    out = tmp_path / "run"
    logs = train_tiny("stinet", TINY, data, out, "tiny-stinet", steps=25, lr="2e-3", extra=("--frames-in", "3"))
    assert logs[-1]["loss"] < 0.9 * logs[0]["loss"]
    entry = (out / "tiny-stinet.toml").read_text()
    assert "fps_x = [2, 4, 6]" in entry
    monkeypatch.setenv("STVSR_REGISTRY", str(out / "tiny-stinet.toml"))
    clip = tmp_path / "in.mp4"
    make_video(clip, frames=5, size=(16, 12))
    run = CliRunner().invoke(
        main, ["upscale", str(clip), str(tmp_path / "o.mp4"), "--model", "tiny-stinet", "--fps-x", "4"]
    )
    assert run.exit_code == 0, run.stderr
    facts = stream_facts(tmp_path / "o.mp4")
    assert facts["frames"] == 20 and (facts["width"], facts["height"]) == (64, 48)
