"""STVUN: frames at any time between the inputs; training with random t; --fps through upscale."""

import math

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from media import make_training_clips, make_video, stream_facts, train_tiny

from stvsr_cli.cli import main
from stvsr_cli.models.ops.losses import charbonnier
from stvsr_cli.models.stvun import STVUN, FlowNet, flows_at, warp

TINY = {"nf": 8, "levels": 2, "frames": 3, "flow_nf": 8}


def tiny(**extra) -> STVUN:
    torch.manual_seed(0)
    return STVUN(**{**TINY, **extra}).eval()


@pytest.mark.parametrize("times", [[0.0], [0.25, 0.5, 0.75], [0, 1, 2], [1.9, 0.1, 2.0]])
def test_one_output_per_time_at_four_times_the_size(times):
    with torch.no_grad():
        out = tiny()(torch.rand(2, 3, 3, 12, 10), times=times)
    assert out.shape == (2, len(times), 3, 48, 40)


def test_input_positions_do_not_depend_on_the_other_times_asked():
    model, frames = tiny(), torch.rand(1, 3, 3, 8, 8)
    with torch.no_grad():
        alone = model(frames, times=[1])
        mixed = model(frames, times=[0.3, 1, 1.5])
        grid = model(frames, fps_x=4)  # times 0, 1/4, ..., 2
    torch.testing.assert_close(mixed[:, 1], alone[:, 0])
    torch.testing.assert_close(grid[:, 4], alone[:, 0])
    assert grid.shape[1] == 9


def test_time_enters_through_the_flows_and_the_ends_are_the_frames():
    """Eq. 4 at the ends: t=0 looks at frame 0 itself and at frame 1 through the full flow, t=1 the
    other way round; for steady motion (f10 = -f01) the flows are exactly linear in t."""
    f01 = torch.randn(1, 2, 4, 4)
    f10 = torch.randn(1, 2, 4, 4)
    to_first, to_second = flows_at(0.0, f01, f10)
    assert to_first.abs().max() == 0 and torch.equal(to_second, f01)
    to_first, to_second = flows_at(1.0, f01, f10)
    assert torch.equal(to_first, f10) and to_second.abs().max() == 0
    for t in (0.2, 0.5, 0.9):
        to_first, to_second = flows_at(t, f01, -f01)
        torch.testing.assert_close(to_first, -t * f01)
        torch.testing.assert_close(to_second, (1 - t) * f01)


def test_flow_warps_a_shifted_picture_back():
    picture = torch.rand(1, 3, 12, 12)
    shifted = torch.roll(picture, shifts=2, dims=-1)  # content moved 2 px right
    flow = torch.zeros(1, 2, 12, 12)
    flow[:, 0] = 2.0
    back = warp(shifted, flow)
    torch.testing.assert_close(back[..., 2:-2], picture[..., 2:-2])
    assert FlowNet(8)(picture, shifted).abs().max() == 0  # untrained: zero flow


def test_gradients_reach_every_part_when_training_on_in_between_times():
    """The first step reaches every part, the flow network through its zero-initialised last layers;
    after one step the gradient reaches every parameter, the whole flow network included."""
    torch.manual_seed(0)
    model = STVUN(**TINY).train()
    frames = torch.rand(1, 3, 3, 8, 8)

    def learning() -> set[str]:
        model.zero_grad()
        model(frames, times=[0, 0.5, 1, 1.25, 2]).square().mean().backward()
        return {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}

    names = {n for n, _ in model.named_parameters()}
    first = learning()
    assert names - first <= {n for n in names if n.startswith("flow.")}
    assert any(n.startswith("flow.") for n in first)  # the flow learns from the first step
    torch.optim.SGD(model.parameters(), lr=0.1).step()
    assert learning() == names


class SteadyShift(torch.nn.Module):
    """The true flow of a picture moving ``speed`` px right per frame, in either direction:
    ``warp(b, flow(a, b)) == a``."""

    def __init__(self, speed: int) -> None:
        super().__init__()
        self.speed = speed

    def forward(self, a, b):
        later = (torch.roll(a, self.speed, -1) - b).abs().mean() < (torch.roll(a, -self.speed, -1) - b).abs().mean()
        flow = torch.zeros(a.shape[0], 2, *a.shape[-2:])
        flow[:, 0] = self.speed if later else -self.speed
        return flow


def test_the_flow_moves_the_in_between_frames_with_the_motion():
    """With the residual head at zero an output is the bicubic upscale of its warped LR base, so for
    a picture moving 2 px per frame and the true flow, the frame at t = 0.5 is the picture moved 1 px
    (1.5: moved 3 px); the zero flow of an untrained (or dead) flow network gives a ghosted blend."""
    model = tiny()
    torch.nn.init.zeros_(model.head2.weight)
    torch.nn.init.zeros_(model.head2.bias)
    picture = torch.rand(1, 3, 10, 24)
    frames = torch.stack([torch.roll(picture, 2 * k, -1) for k in range(3)], 1)

    def moved(pixels):
        return F.interpolate(torch.roll(picture, pixels, -1), scale_factor=4, mode="bicubic", align_corners=False)

    inner = (..., slice(16, -16))  # away from the rolled-in columns and the border padding
    with torch.no_grad():
        blended = model(frames, times=[0.5, 1.5])
        model.flow = SteadyShift(2)
        steered = model(frames, times=[0.5, 1.5])
    torch.testing.assert_close(steered[:, 0][inner], moved(1)[inner], rtol=0, atol=1e-5)
    torch.testing.assert_close(steered[:, 1][inner], moved(3)[inner], rtol=0, atol=1e-5)
    assert (blended[:, 0] - moved(1))[inner].abs().mean() > 0.05


def test_in_between_features_move_with_the_motion_in_their_own_level_s_pixels():
    """A texture moving 4 LR px right per frame, seen through two feature levels, one at the frames' size
    and one at twice it (the shipped network's levels are all at the frames' size; a level at another
    size must still be moved in its own pixels). With the true LR flows, the in-between features at
    t = 0.25 are the texture moved 1 LR px: the frame before moved 1 px and the frame after moved back
    3 px at the first level, 2 and 6 px at the second; the LR base the decoder adds to is the moved
    picture too."""
    model = tiny()
    model.flow = SteadyShift(4)

    def texture(xs: torch.Tensor, rows: int) -> torch.Tensor:  # [8, rows, len(xs)]: smooth, at real columns xs
        y, x = torch.arange(rows, dtype=torch.float32)[:, None], xs[None, :]
        planes = [torch.sin(0.6 * x + 0.2 * y), torch.cos(0.45 * x - 0.3 * y), torch.sin(0.3 * x) * torch.cos(0.4 * y)]
        return 0.5 + 0.3 * torch.stack(torch.broadcast_tensors(*planes)).repeat(3, 1, 1)[:8]

    def level(size: int, shift: float) -> torch.Tensor:  # columns of a level ``size`` times the frames', in LR px
        return texture((torch.arange(24 * size, dtype=torch.float32) + 0.5) / size - 0.5 - shift, 10 * size)

    frames = torch.stack([level(1, 4 * k)[:3] for k in range(3)])[None]
    feats = [torch.stack([level(size, 4 * k) for k in range(3)])[None] for size in (1, 2)]
    model._encode = lambda frames: feats
    decoded = []

    def decode(feats, guides, base):
        decoded.append((feats, base))
        return base.new_zeros(1, 3, 4 * base.shape[-2], 4 * base.shape[-1]), guides

    model._decode = decode
    with torch.no_grad():
        model(frames, times=[0.25])
    middle, lr_middle = decoded[-1]  # after the space pass of frame 0
    torch.testing.assert_close(middle[0][..., 1:-3], level(1, 1)[None, ..., 1:-3], rtol=0, atol=1e-5)
    torch.testing.assert_close(middle[1][..., 2:-6], level(2, 1)[None, ..., 2:-6], rtol=0, atol=1e-5)
    torch.testing.assert_close(lr_middle[..., 1:-3], level(1, 1)[None, :3, :, 1:-3], rtol=0, atol=1e-5)


def test_a_window_the_network_was_not_built_for_is_refused_in_one_line(tmp_path):
    clip = tmp_path / "in.mp4"
    make_video(clip, frames=6, size=(16, 12))
    result = CliRunner().invoke(
        main, ["upscale", str(clip), str(tmp_path / "o.mp4"), "--model", "stvun", "--window", "5"]
    )
    assert result.exit_code == 2 and "works on windows of exactly 4 frames" in result.output
    assert not (tmp_path / "o.mp4").exists()


def test_wrong_window_length_is_refused():
    with pytest.raises(ValueError, match="windows of 3 frames"):
        tiny()(torch.rand(1, 4, 3, 8, 8), times=[0])


def test_the_paper_s_1x1_theta_and_delta_build_and_run_and_the_default_stays_3x3():
    """``efst_kernel=1`` is Eq. 1's 1x1 theta and delta; the default keeps the 3x3 the shipped weights
    hold, and nothing else changes shape."""
    paper, ours = tiny(efst_kernel=1), tiny()
    assert paper.efst.theta.weight.shape == paper.efst.delta.weight.shape == (8, 8, 1, 1)
    assert ours.efst.theta.weight.shape == ours.efst.delta.weight.shape == (8, 8, 3, 3)
    ours_state, paper_state = ours.state_dict(), paper.state_dict()
    assert ours_state.keys() == paper_state.keys()
    differ = {k for k in ours_state if ours_state[k].shape != paper_state[k].shape}
    assert differ == {"efst.theta.weight", "efst.delta.weight"}
    frames = torch.rand(1, 3, 3, 8, 12)
    with torch.no_grad():
        out = paper(frames, times=[0, 0.5, 1.25, 2])
    assert out.shape == (1, 4, 3, 32, 48) and torch.isfinite(out).all()
    # The default trains jointly from the first step (no VSR pre-training stage): at progress 0 every
    # output frame is scored, the in-between ones included.
    target = torch.rand(1, 5, 3, 32, 48)
    with torch.no_grad():
        torch.testing.assert_close(
            ours.training_loss(frames, target, 2, 0.0), charbonnier(ours(frames, fps_x=2), target)
        )
    assert ours.stage_ends == ()
    with pytest.raises(ValueError, match="odd"):
        tiny(efst_kernel=2)


def test_the_shipped_weights_load_strictly_with_the_default_options():
    from safetensors.torch import load_file

    from stvsr_cli.models.registry import load_registry, weights_dir

    for name in ("stvun", "stvun-gpu", "stvun-film"):
        spec = load_registry().get(name)
        model = STVUN(**spec.params)
        model.load_state_dict(load_file(str(weights_dir() / spec.weights)), strict=True)
        assert model.efst.theta.kernel_size == (3, 3) and model.vsr_pretrain == 0


def test_vsr_pretraining_scores_the_input_positions_only_and_leaves_the_flow_idle():
    """``vsr_pretrain``: the paper's first stage (L_S only) for that share of the run, a stage of its own
    for the trainer's schedule; then the usual loss on every output frame."""
    torch.manual_seed(0)
    model = STVUN(**TINY, vsr_pretrain=0.25).train()
    assert model.stage_ends == (0.25,) and tiny().stage_ends == ()
    frames, target = torch.rand(1, 3, 3, 8, 8), torch.rand(1, 5, 3, 32, 32)
    early = model.training_loss(frames, target, 2, progress=0.1)
    torch.testing.assert_close(early, charbonnier(model(frames, times=[0, 1, 2]), target[:, ::2]))
    early.backward()
    learning = {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    assert learning and not any(n.startswith("flow.") for n in learning)
    late = model.training_loss(frames, target, 2, progress=0.25)
    torch.testing.assert_close(late, charbonnier(model(frames, fps_x=2), target))
    with pytest.raises(ValueError, match="share"):
        STVUN(**TINY, vsr_pretrain=1.0)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_training_clips(tmp_path_factory.mktemp("train"), frames=12)


def test_training_with_random_t_and_the_export_runs_at_any_frame_rate(data, tmp_path, monkeypatch):
    out = tmp_path / "run"
    params = {k: v for k, v in TINY.items() if k != "frames"}  # frames comes from --frames-in
    logs = train_tiny("stvun", params, data, out, "tiny-stvun", steps=30, lr="2e-3", extra=["--frames-in", "3"])
    assert logs[-1]["loss"] < 0.8 * logs[0]["loss"]
    entry = (out / "tiny-stvun.toml").read_text()
    assert 'times = "any"' in entry and "frames = 3" in entry and "min_frames = 3" in entry
    monkeypatch.setenv("STVSR_REGISTRY", str(out / "tiny-stvun.toml"))
    clip = tmp_path / "in.mp4"
    make_video(clip, frames=10, size=(16, 12), audio=True)
    run = CliRunner().invoke(
        main, ["upscale", str(clip), str(tmp_path / "o.mp4"), "--model", "tiny-stvun", "--fps", "60"]
    )
    assert run.exit_code == 0, run.stderr
    facts = stream_facts(tmp_path / "o.mp4")
    assert facts["frames"] == 24 and facts["rate"] == 60 and (facts["width"], facts["height"]) == (64, 48)
    three = CliRunner().invoke(
        main, ["upscale", str(clip), str(tmp_path / "o3.mp4"), "--model", "tiny-stvun", "-x", "3"]
    )
    assert three.exit_code == 0 and stream_facts(tmp_path / "o3.mp4")["frames"] == 30


def test_training_with_vsr_pretraining_exports_the_option(data, tmp_path):
    out = tmp_path / "run"
    params = {**{k: v for k, v in TINY.items() if k != "frames"}, "vsr_pretrain": 0.5}
    logs = train_tiny("stvun", params, data, out, "tiny-vsr", steps=10, lr="2e-3", extra=["--frames-in", "3"])
    assert logs and all(math.isfinite(log["loss"]) for log in logs)
    assert "vsr_pretrain = 0.5" in (out / "tiny-vsr.toml").read_text()
