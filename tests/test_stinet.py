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


def texture(xs: torch.Tensor, rows: int = 6) -> torch.Tensor:
    """A smooth picture, ``[1, 3, rows, len(xs)]``, sampled at the (any real) columns ``xs``."""
    y, x = torch.arange(rows, dtype=torch.float32)[:, None], xs[None, :]
    planes = [
        0.5 + 0.3 * torch.sin(0.5 * x + 0.3 * y),
        0.5 + 0.3 * torch.cos(0.35 * x - 0.5 * y),
        0.5 + 0.2 * torch.sin(0.8 * x),
    ]
    return torch.stack(torch.broadcast_tensors(*planes))[None]


@pytest.mark.parametrize(("tau", "back", "ahead"), [(0.25, -1.0, 3.0), (0.5, -2.0, 2.0), (0.75, -3.0, 1.0)])
def test_eq1_flows_to_an_in_between_time_warp_both_neighbours_onto_the_picture_at_that_time(tau, back, ahead):
    """A texture moving 4 px right per frame: f(0->1) = +4 px, f(1->0) = -4 px (``warp(frame 1, f01)`` is
    frame 0). At time tau the picture has moved 4 tau px, so its flow to frame 0 is -4 tau px and to
    frame 1 is 4 (1 - tau) px (worked out by hand: -1 and +3 at tau = 1/4), and warping either frame
    by its flow gives the picture at tau."""
    xs = torch.arange(20, dtype=torch.float32)
    frame0, frame1, middle = texture(xs), texture(xs - 4), texture(xs - 4 * tau)
    f01, f10 = torch.zeros(1, 2, 6, 20), torch.zeros(1, 2, 6, 20)
    f01[:, 0], f10[:, 0] = 4.0, -4.0
    to_before, to_after = adapted_flows(torch.tensor(tau), f01, f10)
    assert to_before[:, 0].unique().tolist() == [back] and to_after[:, 0].unique().tolist() == [ahead]
    assert to_before[:, 1].abs().max() == 0 and to_after[:, 1].abs().max() == 0
    inner = (..., slice(3, -3))  # where neither warp reads past the frame's edge
    torch.testing.assert_close(warp(frame0, to_before)[inner], middle[inner], rtol=0, atol=1e-6)
    torch.testing.assert_close(warp(frame1, to_after)[inner], middle[inner], rtol=0, atol=1e-6)


def test_interleave_keeps_time_order():
    keys = torch.tensor([[0.0, 3.0, 6.0]])  # times 0, 1, 2 at fps_x 3
    middles = torch.tensor([[[1.0, 2.0], [4.0, 5.0]]])
    assert interleave(keys, middles).tolist() == [[0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0]]


class Rolls(torch.nn.Module):
    """The true flow between frames of a texture that moves by whole pixels (``warp(z, flow(a, z)) == a``),
    found by trying every shift: a flow network that is never wrong."""

    def forward(self, a: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        shifts = range(-8, 9)
        errors = torch.stack([(torch.roll(a, s, -1) - z).abs().mean((1, 2, 3)) for s in shifts])  # [shifts, N]
        flow = torch.zeros(a.shape[0], 2, *a.shape[-2:])
        flow[:, 0] = torch.tensor(list(shifts), dtype=torch.float32)[errors.argmin(0)].view(-1, 1, 1)
        return flow


def test_motion_consistency_of_a_texture_moving_at_half_the_true_speed_and_of_one_turning_back():
    """Worked by hand, flows at LR size (frames pooled x1/4). The target moves 8 HR px a frame, i.e. 2 LR px
    (4 at distance 2); an output moving 4 HR px a frame has flows 1 and 2: l_abs is the mean over the
    distances of the mean squared error over both flow channels, ((1 - 2)^2 / 2 + (2 - 4)^2 / 2) / 2 =
    1.25, and l_rel 0 (steady motion: the far flow is not behind the near one). An output that moves 4 px
    and comes back has near flow +1 and far flow 0 at t = 0: l_rel = relu(1 * (1 - 0)) on the x channel,
    0 on y, mean 0.5 (with l_abs ((1-2)^2 + (-1-2)^2) / 4 / 2 + (0 - 4)^2 / 2 / 2 = 1.25 + 4)."""
    model = tiny()
    model.flow = Rolls()
    picture = torch.rand(1, 3, 8, 64)

    def video(positions):
        return torch.stack([torch.roll(picture, p, -1) for p in positions], 1)

    target = video([0, 8, 16])
    with torch.no_grad():
        torch.testing.assert_close(model.motion_consistency(target, target), torch.tensor(0.0))
        torch.testing.assert_close(model.motion_consistency(video([0, 4, 8]), target), torch.tensor(1.25))
        torch.testing.assert_close(model.motion_consistency(video([0, 4, 0]), target), torch.tensor(1.25 + 4 + 0.5))


def test_hr_offsets_are_the_lr_offsets_in_hr_pixels():
    """ST-LR with Inet rigged to pass offsets through: the LR predictor says the previous frame's
    content sits 1 LR px to the right (a texture moving 4 HR px left per frame, x4), the HR predictor
    says nothing, and the HR offsets are Inet's mix alone. The deformable convolutions (centre tap only)
    then sample each neighbour at the offset, so the aligned previous frame is the current one at both
    sizes only if the mix reaches HR as 4 px, not 1."""
    torch.manual_seed(0)
    module, o = stinet.STLR(3, 1, 4), 18
    with torch.no_grad():
        for predictor, dx in ((module.lr_offsets, 1.0), (module.hr_offsets, 0.0)):
            predictor[-1].weight.zero_()
            predictor[-1].bias.zero_()
            predictor[-1].bias[1:o:2] = dx  # (dy, dx) per tap
            predictor[-1].bias[o:] = 30.0  # masks of 1
        for conv in (module.inet_mix, module.inet_lr, module.inet_hr):
            conv.weight.zero_()
            conv.bias.zero_()
        for channel in range(o):
            module.inet_mix.weight[channel, channel, 1, 1] = 1.0  # mix = lrelu(LR offsets)
            module.inet_hr.weight[channel, channel, 1, 1] = 1.0  # HR offsets = 0 + mix at HR
        for align in (module.lr_align, module.hr_align):
            align.weight.zero_()
            align.bias.zero_()
            for channel in range(3):
                align.weight[channel, channel, 1, 1] = 1.0
    aligned = {}
    module.lr_align.register_forward_hook(lambda m, i, out: aligned.update(lr=out))
    module.hr_align.register_forward_hook(lambda m, i, out: aligned.update(hr=out))
    lr_xs, hr_xs = torch.arange(10, dtype=torch.float32), (torch.arange(40, dtype=torch.float32) + 0.5) / 4 - 0.5
    lr = torch.stack([texture(lr_xs - k)[0] for k in (1, 0, -1)])[None]  # frames 0, 1, 2: moving left
    hr = torch.stack([texture(hr_xs - k, rows=24)[0] for k in (1, 0, -1)])[None]
    with torch.no_grad():
        module(lr, hr)
    previous_of_frame1 = 1  # [before, after] x [frames]: the before half, frame 1
    torch.testing.assert_close(aligned["lr"][previous_of_frame1][..., :-1], lr[0, 1][..., :-1], rtol=0, atol=1e-5)
    torch.testing.assert_close(aligned["hr"][previous_of_frame1][..., :-4], hr[0, 1][..., :-4], rtol=0, atol=1e-5)


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
