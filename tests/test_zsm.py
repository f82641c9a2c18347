"""Zooming Slow-Mo: the official layout, the official outputs, any frame size."""

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from stvsr_cli.models.zsm import ZoomingSlowMo

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference"
needs_reference = pytest.mark.skipif(not REFERENCE.is_dir(), reason="../shared/reference is not here")

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny networks: a second thread only adds synchronisation


def tiny(seed=0):
    torch.manual_seed(seed)
    return ZoomingSlowMo(nf=16, groups=8, front_rbs=1, back_rbs=2).eval()


def test_default_configuration_is_the_official_one():
    model = ZoomingSlowMo()
    assert sum(p.numel() for p in model.parameters()) == 11_102_771
    assert len(model.state_dict()) == 416


@needs_reference
def test_state_dict_matches_the_official_checkpoint_layout():
    rows = [
        line.split("\t")
        for line in (REFERENCE / "zsm_official_state_dict.tsv").read_text().splitlines()
        if not line.startswith("#")
    ]
    official = {key: tuple(int(n) for n in shape.split(",")) for key, shape, _ in rows}
    ours = {key: tuple(t.shape) for key, t in ZoomingSlowMo().state_dict().items()}
    assert ours == official


@needs_reference
@pytest.mark.parametrize("impl", ["pure", "torchvision"])
def test_reproduces_the_official_network_outputs(impl):
    """Through our deformable convolution (the CPU's) and torchvision's (CUDA's) alike."""
    from stvsr_cli.models.ops.dcn import deform_conv2d_torch, torchvision_deform_conv2d, use_deform_conv

    vector = load_file(str(REFERENCE / "zsm_tiny_vector.safetensors"))
    state = {k.removeprefix("state_dict."): v for k, v in vector.items() if k.startswith("state_dict.")}
    model = ZoomingSlowMo(nf=16, groups=8, front_rbs=1, back_rbs=2).eval()
    model.load_state_dict(state, strict=True)
    use_deform_conv(model, {"pure": deform_conv2d_torch, "torchvision": torchvision_deform_conv2d}[impl])
    with torch.no_grad():
        for case in ("a", "b"):  # b is 13x18: padded to 16x20 and cropped, as the official scripts do
            out = model.run(vector[f"input.{case}"])
            assert out.shape == vector[f"output.{case}"].shape
            assert (out - vector[f"output.{case}"]).abs().max() < 1e-4


@pytest.mark.parametrize("n,h,w", [(2, 8, 8), (3, 17, 23), (4, 12, 16)])
def test_any_size_gives_two_n_minus_one_frames_at_four_times_the_size(n, h, w):
    with torch.no_grad():
        out = tiny().run(torch.rand(1, n, 3, h, w))
    assert out.shape == (1, 2 * n - 1, 3, 4 * h, 4 * w)


@pytest.mark.parametrize("global_residual", [False, True], ids=["official", "global-residual"])
def test_an_off_size_frame_gives_the_top_left_of_forward_on_the_frame_continued_as_the_network_declares(
    global_residual,
):
    """``run`` on a 17x23 frame gives exactly 68x92, and that is the top-left 68x92 of ``forward`` on
    the 20x24 frame that continues it down and right the way the network says it pads (``pad_mode``):
    black for the official network (as the authors' test scripts pad), the edge repeated with the
    classic residual (so the bicubic baseline stays as it is at the border). The other continuation
    gives another picture at this size, so a ``run`` that pads the other way, pads at the top or left,
    or crops one row or column off fails here."""
    torch.manual_seed(1)
    model = ZoomingSlowMo(**TINY, global_residual=global_residual).eval()
    visible = torch.rand(1, 2, 3, 17, 23)
    black = torch.zeros(1, 2, 3, 20, 24)
    black[..., :17, :23] = visible
    edge = visible[..., [min(i, 16) for i in range(20)], :][..., [min(j, 22) for j in range(24)]]
    assert torch.equal(edge[..., :17, :23], visible) and torch.equal(edge[..., 19, 23], visible[..., 16, 22])
    declared, other = (edge, black) if global_residual else (black, edge)
    with torch.no_grad():
        out = model.run(visible)
        expected, wrong = model(declared)[..., :68, :92], model(other)[..., :68, :92]
    assert out.shape == (1, 3, 3, 68, 92)
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=0)
    assert (out - wrong).abs().max() > 1e-4


def test_forward_refuses_sizes_off_the_multiple_and_run_takes_them():
    model = tiny()
    with pytest.raises(ValueError, match="multiples of 4"):
        model(torch.rand(1, 2, 3, 13, 18))
    assert model.run(torch.rand(1, 2, 3, 13, 18)).shape == (1, 3, 3, 52, 72)


def test_one_frame_is_refused():
    with pytest.raises(ValueError, match="two input frames"):
        tiny()(torch.rand(1, 1, 3, 8, 8))


def untrained(model):
    """The parameters whose gradient is missing, not finite, or zero everywhere."""
    return [
        name
        for name, p in model.named_parameters()
        if p.grad is None or not torch.isfinite(p.grad).all() or not p.grad.any()
    ]


def test_gradients_reach_every_parameter():
    """Every parameter gets a finite gradient that is not zero everywhere, but on the first step the
    deformable alignments' offset branches (``L*_offset_conv*``), which get exactly zero by design: they
    feed only the ``conv_offset_mask`` convolutions, which start at zero (a ``DCNPack`` starts as a
    plain convolution). After one optimiser step has moved those, the offset branches learn too."""
    model = tiny().train()
    frames, target = torch.rand(1, 2, 3, 8, 8), torch.rand(1, 3, 3, 32, 32)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.training_loss(frames, target, 2, 0.0).backward()
    offset_branches = {name for name, _ in model.named_parameters() if "_offset_conv" in name}
    assert len(offset_branches) == 3 * 2 * 8 * 2  # 3 alignments (top level, h, c) x 2 branches x 8 convs x w, b
    idle = untrained(model)
    assert set(idle) == offset_branches, sorted(set(idle) ^ offset_branches)  # exactly those, and exactly zero
    optimiser.step()
    optimiser.zero_grad()
    model.training_loss(frames, target, 2, 0.0).backward()
    idle = untrained(model)
    assert not idle, idle


def test_zsm_runs_in_the_pipeline_from_local_weights(tmp_path):
    """A tiny ZSM registered by the user runs end to end, windowed and tiled."""
    from click.testing import CliRunner
    from media import make_video, stream_facts
    from safetensors.torch import save_file

    from stvsr_cli.cli import main

    save_file(tiny(2).state_dict(), str(tmp_path / "tiny.safetensors"))
    registry = tmp_path / "models.toml"
    registry.write_text(
        '[models.tiny-zsm]\narch = "zsm"\nparams = { nf = 16, groups = 8, front_rbs = 1, back_rbs = 2 }\n'
        'window = 3\noverlap = 2\ncontext = 4\nweights = "tiny.safetensors"\n'  # context 4: tiles of 32 px allowed
    )
    src = tmp_path / "in.mp4"
    make_video(src, frames=5, size=(40, 36))
    env = {"STVSR_REGISTRY": str(registry)}
    for args in ([], ["--tile", "32"]):
        out = tmp_path / f"out{len(args)}.mp4"
        result = CliRunner(env=env).invoke(main, ["upscale", str(src), str(out), "--model", "tiny-zsm", *args])
        assert result.exit_code == 0, result.stderr
        facts = stream_facts(out)
        assert (facts["frames"], facts["width"], facts["height"]) == (10, 160, 144)


def test_zsm_without_its_weights_fails_in_one_line(clip, tmp_path):
    from click.testing import CliRunner

    from stvsr_cli.cli import main

    result = CliRunner().invoke(main, ["upscale", str(clip), str(tmp_path / "out.mp4"), "--model", "zsm"])
    assert result.exit_code == 1 and "Traceback" not in result.stderr
    assert "not in the cache" in result.stderr and "stvsr weights import zsm" in result.stderr
    assert not (tmp_path / "out.mp4").exists()


def test_global_residual_adds_the_classic_baseline_and_no_parameters():
    from stvsr_cli.models.classic import Classic

    plain = ZoomingSlowMo(nf=16, groups=8, front_rbs=1, back_rbs=2)
    residual = ZoomingSlowMo(nf=16, groups=8, front_rbs=1, back_rbs=2, global_residual=True).eval()
    assert plain.state_dict().keys() == residual.state_dict().keys()  # official checkpoints still load
    torch.nn.init.zeros_(residual.conv_last.weight)
    torch.nn.init.zeros_(residual.conv_last.bias)
    frames = torch.rand(1, 3, 3, 13, 18)
    with torch.no_grad():
        torch.testing.assert_close(residual.run(frames), Classic(scale=4)(frames, fps_x=2), atol=0, rtol=0)


# -- the TPAMI version's cyclic interpolation loss (training option, off by default) ------------------------------
TINY = {"nf": 16, "groups": 8, "front_rbs": 1, "back_rbs": 2}


def cyclic(seed=0, **extra):
    torch.manual_seed(seed)
    return ZoomingSlowMo(**TINY, cyclic_loss=True, lr_synthesis_blocks=1, **extra)


def test_off_by_default_the_loss_is_charbonnier_on_the_output_and_there_is_no_lr_synthesis():
    from stvsr_cli.models.ops.losses import charbonnier

    model = tiny()
    assert model.lr_synthesis is None and not any(k.startswith("lr_synthesis") for k in model.state_dict())
    frames, target = torch.rand(1, 3, 3, 8, 8), torch.rand(1, 5, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model.training_loss(frames, target, 2, 0.5), charbonnier(model.run(frames), target))
    assert model.loss_description == "Charbonnier loss"
    with pytest.raises(ValueError, match="cyclic_loss=True"):
        model.loss_terms(frames, target)


def test_cyclic_loss_only_adds_the_lr_synthesis_module_and_official_weights_still_load_strictly():
    plain, extended = tiny(), cyclic().eval()
    ours, theirs = plain.state_dict(), extended.state_dict()
    extra = set(theirs) - set(ours)
    assert set(ours) <= set(theirs) and extra and all(k.startswith("lr_synthesis.") for k in extra)
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)  # built last: the same seed, the same network
    frames = torch.rand(1, 3, 3, 13, 18)
    with torch.no_grad():
        assert torch.equal(plain.run(frames), extended.run(frames))  # rho does not touch the output
    rho = {k: v.clone() for k, v in theirs.items() if k in extra}
    fresh = cyclic(seed=5)
    fresh.load_state_dict(ours, strict=True)  # a checkpoint without rho: rho keeps its weights
    assert all(torch.equal(fresh.state_dict()[k], ours[k]) for k in ours)
    fresh.load_state_dict(theirs, strict=True)
    assert all(torch.equal(fresh.state_dict()[k], rho[k]) for k in extra)
    missing_one = {k: v for k, v in ours.items() if k != "conv_last.bias"}
    with pytest.raises(RuntimeError, match="conv_last.bias"):
        fresh.load_state_dict(missing_one, strict=True)  # every other key is still checked
    with pytest.raises(RuntimeError, match="Unexpected key"):
        plain.load_state_dict(theirs, strict=True)


@needs_reference
def test_the_official_tiny_vector_loads_into_a_cyclic_model_and_gives_the_official_outputs():
    vector = load_file(str(REFERENCE / "zsm_tiny_vector.safetensors"))
    state = {k.removeprefix("state_dict."): v for k, v in vector.items() if k.startswith("state_dict.")}
    model = cyclic().eval()
    model.load_state_dict(state, strict=True)
    with torch.no_grad():
        assert (model.run(vector["input.a"]) - vector["output.a"]).abs().max() < 1e-4


def test_cyclic_terms_compare_rho_of_the_interpolated_features_with_the_right_lr_frames():
    """rho's output convolution at zero makes rho give black frames, so each term is the Charbonnier
    of black against its LR ground truth: flat target frames of distinct colours show which frames
    each term compares with (first order: the frames between the inputs, 1, 3, 5; second order: the
    inner inputs, 2, 4)."""
    model = cyclic()
    torch.nn.init.zeros_(model.lr_synthesis[-1].weight)
    torch.nn.init.zeros_(model.lr_synthesis[-1].bias)
    torch.manual_seed(3)
    colours = torch.rand(1, 7, 3, 1, 1)
    frames, target = torch.rand(1, 4, 3, 8, 8), colours.expand(1, 7, 3, 32, 32)
    with torch.no_grad():
        terms = model.loss_terms(frames, target)
        loss = model.training_loss(frames, target, 2, 0.3)

    def black(indices):
        return (colours[:, indices] ** 2 + 1e-6).sqrt().mean()

    torch.testing.assert_close(terms["first_order"], black([1, 3, 5]))
    torch.testing.assert_close(terms["second_order"], black([2, 4]))
    assert (black([1, 3, 5]) - black([2, 4])).abs() > 1e-2 and (black([1, 3, 5]) - black([0, 2, 4, 6])).abs() > 1e-2
    with torch.no_grad():
        from stvsr_cli.models.ops.losses import charbonnier

        torch.testing.assert_close(terms["reconstruction"], charbonnier(model(frames), target))
    torch.testing.assert_close(loss, terms["reconstruction"] + terms["first_order"] + terms["second_order"])


def test_cyclic_weights_weigh_the_two_terms_and_two_inputs_have_no_second_order_term():
    frames, target = torch.rand(1, 3, 3, 8, 8), torch.rand(1, 5, 3, 32, 32)
    model = cyclic(cyclic_weights=[0.5, 2.0])
    with torch.no_grad():
        terms = model.loss_terms(frames, target)
        loss = model.training_loss(frames, target, 2, 0.0)
    assert terms["first_order"] > 1e-3 and terms["second_order"] > 1e-3
    torch.testing.assert_close(loss, terms["reconstruction"] + 0.5 * terms["first_order"] + 2.0 * terms["second_order"])
    assert "0.5 x first-order + 2 x second-order cyclic interpolation" in model.loss_description
    with torch.no_grad():
        two = model.loss_terms(frames[:, :2], target[:, :3])
    assert two["second_order"] == 0 and two["first_order"] > 1e-3
    with pytest.raises(TypeError, match="two numbers"):
        ZoomingSlowMo(**TINY, cyclic_loss=True, cyclic_weights=[1.0])


def test_cyclic_terms_train_rho_and_reach_the_interpolation_module_through_both_orders():
    """The second-order term interpolates the interpolated features again: its gradient reaches the
    interpolation module and the feature extractor, not only rho. Any frame size (padded as ``run``)."""
    frames, target = torch.rand(1, 3, 3, 9, 10), torch.rand(1, 5, 3, 36, 40)
    for term in ("first_order", "second_order"):
        model = cyclic().train()
        model.loss_terms(frames, target)[term].backward()
        for name in ("lr_synthesis.0.conv1.weight", "lr_synthesis.1.weight", "fusion.weight",
                     "pcd_align.L1_fea_conv_1.weight", "feature_extraction.0.conv1.weight"):  # fmt: skip
            grad = model.get_parameter(name).grad
            assert grad is not None and grad.abs().sum() > 0, (term, name)
        assert model.recon_trunk[0].conv1.weight.grad is None  # the reconstruction branch is not in these terms
    model = cyclic().train()  # the whole loss trains every parameter, as test_gradients_reach_every_parameter
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.training_loss(frames, target, 2, 0.0).backward()
    idle = untrained(model)
    assert idle and all("_offset_conv" in name for name in idle), idle
    optimiser.step()
    optimiser.zero_grad()
    model.training_loss(frames, target, 2, 0.0).backward()
    idle = untrained(model)
    assert not idle, idle


def test_stvsr_train_takes_the_cyclic_loss_and_exports_a_model_that_loads(tmp_path):
    from click.testing import CliRunner
    from media import make_training_clips, make_video, stream_facts, train_tiny

    from stvsr_cli.cli import main

    params = {"nf": 8, "groups": 8, "front_rbs": 1, "back_rbs": 1, "cyclic_loss": True, "lr_synthesis_blocks": 1}
    data = make_training_clips(tmp_path / "train", frames=7)
    out = tmp_path / "run"
    logs = train_tiny("zsm", params, data, out, "tiny-cyclic", steps=2, lr="1e-3", extra=("--log-every", "1"))
    assert [e["step"] for e in logs] == [1, 2] and all(e["loss"] > 0 for e in logs)
    assert "cyclic_loss = true" in (out / "tiny-cyclic.toml").read_text()
    assert "second-order cyclic interpolation loss" in (out / "tiny-cyclic.md").read_text()
    clip = tmp_path / "in.mp4"
    make_video(clip, frames=3, size=(16, 12))
    env = {"STVSR_REGISTRY": str(out / "tiny-cyclic.toml")}
    result = CliRunner(env=env).invoke(main, ["upscale", str(clip), str(tmp_path / "o.mp4"), "--model", "tiny-cyclic"])
    assert result.exit_code == 0, result.stderr
    assert stream_facts(tmp_path / "o.mp4")["frames"] == 6


def test_stvsr_train_init_fine_tunes_a_checkpoint_without_rho_with_the_cyclic_loss(tmp_path, monkeypatch):
    """``--init`` a registered ZSM (no rho in its weights) with ``--params '{"cyclic_loss": true}'``."""
    from safetensors.torch import save_file

    from stvsr_cli.training.trainer import TrainConfig, Trainer

    start = tiny(4).state_dict()
    save_file(start, str(tmp_path / "mine.safetensors"))
    (tmp_path / "models.toml").write_text(
        '[models.mine]\narch = "zsm"\nparams = { nf = 16, groups = 8, front_rbs = 1, back_rbs = 2 }\n'
        'weights = "mine.safetensors"\n'
    )
    monkeypatch.setenv("STVSR_REGISTRY", str(tmp_path / "models.toml"))
    params = {"cyclic_loss": True, "lr_synthesis_blocks": 1}
    trainer = Trainer(TrainConfig(arch=None, params=params, data=[], out=str(tmp_path / "run"), name="ft", init="mine"))
    assert trainer.model.lr_synthesis is not None
    state = trainer.model.state_dict()
    assert all(torch.equal(state[k], start[k]) for k in start)
