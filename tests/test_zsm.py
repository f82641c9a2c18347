"""Zooming Slow-Mo: the official layout, the official outputs, any frame size."""

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from stvsr_cli.models.zsm import ZoomingSlowMo

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference"
needs_reference = pytest.mark.skipif(not REFERENCE.is_dir(), reason="../shared/reference is not here")


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
        line.rstrip("\n").split("\t")
        for line in open(REFERENCE / "zsm_official_state_dict.tsv")
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


def test_padding_does_not_leak_into_the_visible_frame():
    # The official rule: pad bottom/right, run, crop. Our crop of a 17x23 input must equal the
    # top-left of running the explicitly zero-padded 20x24 input.
    frames = torch.rand(1, 2, 3, 17, 23)
    padded = torch.nn.functional.pad(frames, (0, 1, 0, 3))
    model = tiny(1)
    with torch.no_grad():
        torch.testing.assert_close(model.run(frames), model(padded)[..., :68, :92])


def test_forward_refuses_sizes_off_the_multiple_and_run_takes_them():
    model = tiny()
    with pytest.raises(ValueError, match="multiples of 4"):
        model(torch.rand(1, 2, 3, 13, 18))
    assert model.run(torch.rand(1, 2, 3, 13, 18)).shape == (1, 3, 3, 52, 72)


def test_one_frame_is_refused():
    with pytest.raises(ValueError, match="two input frames"):
        tiny()(torch.rand(1, 1, 3, 8, 8))


def test_gradients_reach_every_parameter():
    model = tiny().train()
    model(torch.rand(1, 2, 3, 8, 8)).mean().backward()
    assert all(p.grad is not None for p in model.parameters())


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
        'scale = 4\nfps_x = 2\nwindow = 3\noverlap = 2\nweights = "tiny.safetensors"\n'
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
