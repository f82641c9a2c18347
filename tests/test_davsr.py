"""DAVSR: the Fourier data transform's closed form, the blur degradation, window edges, shapes, training
and eval."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner
from media import make_training_clips, make_video, pattern, stream_facts, train_tiny

from stvsr_cli import hub
from stvsr_cli.cli import main
from stvsr_cli.evaluation import blur_window, degrade, degrade_tensor, temporal_blur
from stvsr_cli.metrics import psnr_y
from stvsr_cli.models.classic import Classic
from stvsr_cli.models.davsr import (
    DAVSR,
    QUANTISATION_SIGMA,
    bicubic_taps,
    box_taps,
    degrade_circular,
    fourier_data_transform,
    kernel_spectrum,
    pad_symmetric,
)
from stvsr_cli.models.registry import load_registry
from stvsr_cli.pipeline.run import run_windows
from stvsr_cli.pipeline.windows import plan_windows

TINY = {"nf": 8, "blocks": 1, "flow_nf": 8, "deform_groups": 2}
F64 = torch.float64

# A small circular problem: an asymmetric kernel, a different factor on each axis.
TAPS = ((-1, (0.2, 0.5, 0.3)), (-1, (0.25, 0.5, 0.25)), (0, (0.6, 0.4)))
GRID, SCALE = (4, 4, 6), (2, 2, 3)


pytestmark = pytest.mark.usefixtures("one_thread")


def blur_and_subsample(x: torch.Tensor, taps=TAPS, scale=SCALE) -> torch.Tensor:
    """The degradation the FDT inverts, written out directly: ``y[j] = sum_o w_o x[s j + o]``, circular."""
    out = torch.zeros_like(x)
    for a, wa in enumerate(taps[0][1]):
        for b, wb in enumerate(taps[1][1]):
            for c, wc in enumerate(taps[2][1]):
                shift = (-(taps[0][0] + a), -(taps[1][0] + b), -(taps[2][0] + c))
                out = out + wa * wb * wc * torch.roll(x, shifts=shift, dims=(-3, -2, -1))
    return out[..., :: scale[0], :: scale[1], :: scale[2]]


def spectrum(taps=TAPS, grid=GRID) -> torch.Tensor:
    return kernel_spectrum(taps, grid, torch.device("cpu"), torch.complex128)


def test_fdt_is_the_exact_minimiser_of_the_data_subproblem():
    """Eq. 6 against a dense solve of Eq. 4: (A^T A + alpha I) z = A^T y + alpha x."""
    torch.manual_seed(0)
    n = int(np.prod(GRID))
    a = torch.stack([blur_and_subsample(e.view(GRID)).flatten() for e in torch.eye(n, dtype=F64)], 1)
    x, y, alpha = torch.rand(n, dtype=F64), torch.rand(a.shape[0], dtype=F64), 0.3
    dense = torch.linalg.solve(a.T @ a + alpha * torch.eye(n, dtype=F64), a.T @ y + alpha * x)
    low = y.view(GRID[0] // 2, GRID[1] // 2, GRID[2] // 3)
    fdt = fourier_data_transform(x.view(GRID), low, spectrum(), SCALE, torch.tensor(alpha, dtype=F64))
    torch.testing.assert_close(fdt, dense.view(GRID), rtol=0, atol=1e-10)


def test_fdt_recovers_a_known_video_from_noise_free_data():
    torch.manual_seed(0)
    truth = torch.rand(2, 3, *GRID, dtype=F64)
    low = blur_and_subsample(truth)
    # The truth is the one zero of the (strictly convex) objective: started there, any alpha keeps it.
    for alpha in (1e-4, 1.0, 100.0):
        z = fourier_data_transform(truth, low, spectrum(), SCALE, torch.tensor(alpha, dtype=F64))
        torch.testing.assert_close(z, truth, rtol=0, atol=1e-10)
    # Started anywhere, alpha -> 0 fits the data exactly (what is unobserved comes from the start).
    z = fourier_data_transform(torch.rand_like(truth), low, spectrum(), SCALE, torch.tensor(1e-9, dtype=F64))
    torch.testing.assert_close(blur_and_subsample(z), low, rtol=0, atol=1e-6)
    # No subsampling and an invertible blur (|F(K)| >= 0.2 here): alpha -> 0 is deconvolution, from nothing.
    taps = ((0, (1.0,)), (0, (1.0,)), (0, (0.6, 0.4)))
    blurred = blur_and_subsample(truth, taps, (1, 1, 1))
    z = fourier_data_transform(
        torch.zeros_like(truth), blurred, spectrum(taps), (1, 1, 1), torch.tensor(1e-9, dtype=F64)
    )
    torch.testing.assert_close(z, truth, rtol=0, atol=1e-6)


def test_degrade_circular_is_the_degradation_written_out():
    torch.manual_seed(0)
    x = torch.rand(2, 3, *GRID, dtype=F64)
    fx = torch.fft.fftn(x, dim=(-3, -2, -1))
    torch.testing.assert_close(degrade_circular(fx, spectrum(), SCALE), blur_and_subsample(x), rtol=0, atol=1e-12)


def test_fdt_is_differentiable():
    torch.manual_seed(0)
    grid, scale = (4, 4, 4), (2, 2, 2)
    taps = ((-1, (0.25, 0.5, 0.25)), (-1, (0.3, 0.4, 0.3)), (0, (0.6, 0.4)))
    estimate = torch.rand(1, *grid, dtype=F64, requires_grad=True)
    low = torch.rand(1, 2, 2, 2, dtype=F64, requires_grad=True)
    alpha = torch.tensor(0.2, dtype=F64, requires_grad=True)
    fdt = lambda e, y, a: fourier_data_transform(e, y, spectrum(taps, grid), scale, a)
    assert torch.autograd.gradcheck(fdt, (estimate, low, alpha), fast_mode=True)


def test_the_model_kernel_is_the_protocol_downscale_and_blur():
    first, weights = bicubic_taps(4)
    assert (first, len(weights)) == (-6, 16) and sum(weights) == pytest.approx(1)  # centred on 4j + 1.5
    assert weights == pytest.approx(weights[::-1])
    assert box_taps(3) == (-1, (1 / 3, 1 / 3, 1 / 3)) and blur_window(2) == 3
    # Flat frames: the model's data step, started at the truth, keeps it exactly only if its
    # temporal kernel and clip-end handling are the degradation's.
    levels = torch.tensor([0, 9, 3, 30, 12], dtype=torch.float32) / 255  # multiples of 3/255: exact 8-bit means
    truth = levels.view(1, 5, 1, 1, 1).expand(1, 5, 3, 12, 8).contiguous()
    frames = degrade_tensor(truth, 2, 4, "blur")
    expected = torch.tensor([6, 14, 24], dtype=torch.float32) / 255  # (9+0+9)/3, (9+3+30)/3, (30+12+30)/3
    torch.testing.assert_close(frames[0, :, 0, 0, 0], expected)
    alpha = torch.tensor(0.01)
    torch.testing.assert_close(DAVSR(**TINY).data_step(truth, frames, alpha), truth, rtol=0, atol=1e-5)
    wrong = DAVSR(**TINY, exposure=1).data_step(truth, frames, alpha)  # a model of the standard protocol
    assert (wrong - truth).abs().max() > 0.01


def test_blur_degradation_on_a_hand_made_clip():
    clip = torch.tensor([0.0, 3, 6, 9, 12, 15, 18]).view(7, 1, 1, 1)
    # x2: three frames centred on 0, 2, 4, 6; the ends reflect (frame -1 is frame 1, frame 7 is frame 5).
    assert temporal_blur(clip, 2).flatten().tolist() == [2.0, 6.0, 12.0, 16.0]
    # x3 averages three frames, x4 five: frame -2 is frame 2, frame 8 is frame 4.
    assert temporal_blur(clip, 3).flatten().tolist() == [2.0, 9.0, 16.0]
    assert temporal_blur(clip[:5], 4).flatten().tolist() == pytest.approx([3.6, 8.4])
    assert temporal_blur(clip[:1], 2).flatten().tolist() == [0.0]
    assert temporal_blur(clip, 1).flatten().tolist() == clip.flatten().tolist()
    # With space: uint8 frames through eval's path and training's agree; standard keeps every k-th.
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (8, 12, 3), dtype=np.uint8) for _ in range(5)]
    hr = torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).float() / 255
    for degradation in ("standard", "blur"):
        ours = torch.from_numpy(np.stack(degrade(frames, 2, 4, degradation))).permute(0, 3, 1, 2).float() / 255
        assert ours.shape == (3, 3, 2, 3)
        torch.testing.assert_close(ours, degrade_tensor(hr, 2, 4, degradation), rtol=0, atol=1.01 / 255)
    torch.testing.assert_close(degrade_tensor(hr, 2, 4, "standard"), degrade_tensor(hr[::2], 1, 4, "blur"))


def mirrored_data_step(model: DAVSR, estimate: torch.Tensor, frames: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """The data step with both window edges mirrored, written out: what a window whose edges are both
    real must give, bit for bit."""

    def mirror_time(x: torch.Tensor) -> torch.Tensor:  # frames 0..N-1, then N-2 down to 1
        return torch.cat([x, x[:, 1:-1].flip(1)], 1)

    pad, s = model.fdt_pad, model.scale
    x = pad_symmetric(mirror_time(estimate), s * pad).transpose(1, 2)
    y = pad_symmetric(mirror_time(frames), pad).transpose(1, 2)
    grid = tuple(x.shape[-3:])
    spectrum = kernel_spectrum((model.temporal_taps, bicubic_taps(s), bicubic_taps(s)), grid, x.device)
    z = fourier_data_transform(x, y, spectrum, (grid[0] // y.shape[-3], s, s), alpha)
    n, h, w, e = estimate.shape[1], estimate.shape[-2], estimate.shape[-1], s * pad
    return z.transpose(1, 2)[:, :n, :, e : e + h, e : e + w]


class EdgeRecorder:
    """The pipeline's view of a tiny DAVSR (``pipeline.run.WindowModel``), noting the edges of each call."""

    device = torch.device("cpu")
    arbitrary_times, shot_edges, size_multiple = False, True, 1

    def __init__(self, module: DAVSR) -> None:
        self.module, self.edges, self.outputs = module, [], []

    def __call__(self, frames: torch.Tensor, fps_x: int, edges: tuple[bool, bool]) -> torch.Tensor:
        self.edges.append(edges)
        with torch.no_grad():
            self.outputs.append(self.module(frames[None], fps_x, edges=edges)[0])
        return self.outputs[-1].clamp(0, 1)


def test_real_edges_give_the_mirrored_output_bit_for_bit_and_a_one_window_clip_is_unchanged(monkeypatch):
    torch.manual_seed(0)
    model = DAVSR(**TINY).eval()
    frames = torch.rand(1, 3, 3, 5, 6)
    estimate, alpha = model.initial(frames), model.alpha_beta()[0][0].detach()
    mirrored = mirrored_data_step(model, estimate, frames, alpha)
    assert torch.equal(model.data_step(estimate, frames, alpha), mirrored)
    assert torch.equal(model.data_step(estimate, frames, alpha, (True, True)), mirrored)
    for edges in ((False, False), (True, False), (False, True)):
        assert not torch.equal(model.data_step(estimate, frames, alpha, edges), mirrored)

    with torch.no_grad():
        default, real = model(frames), model(frames, edges=(True, True))
        interior = model(frames, edges=(False, False))
    assert torch.equal(default, real) and not torch.equal(default, interior)
    assert interior.shape == default.shape and torch.isfinite(interior).all()

    # Through the run loop: a clip of one window has both edges real; a longer clip's windows are
    # told which of their edges are the clip's.
    clip = [np.asarray(f.permute(1, 2, 0) * 255).round().astype(np.uint8) for f in torch.rand(4, 3, 5, 6)]
    ours = EdgeRecorder(model)
    run_windows(clip, plan_windows(4, 4, 2, 2), ours, lambda frame: None)
    monkeypatch.setattr(model, "data_step", lambda e, f, a, edges: mirrored_data_step(model, e, f, a))
    before = EdgeRecorder(model)
    run_windows(clip, plan_windows(4, 4, 2, 2), before, lambda frame: None)
    assert ours.edges == [(True, True)] and torch.equal(ours.outputs[0], before.outputs[0])
    monkeypatch.undo()
    ours = EdgeRecorder(model)
    run_windows(clip + clip, plan_windows(8, 4, 2, 2), ours, lambda frame: None)
    assert ours.edges == [(True, False), (False, False), (False, True)]


def test_started_at_the_truth_the_data_step_keeps_it_where_the_clip_holds_still_past_the_window():
    """Flat frames under ``--degradation blur``; windows of 3 inputs. Past an edge that is not the clip's
    the data step extends the window by its edge frame, so where the clip holds still beyond the
    window it fits the input exactly and keeps the truth; the mirror reads the frame beyond as the one
    inside, and does not where they differ."""
    levels = torch.tensor([0, 9, 9, 3, 30, 30, 30, 30, 12, 6, 0], dtype=torch.float32) / 255  # multiples of 3/255
    truth = levels.view(11, 1, 1, 1).expand(11, 3, 12, 8).contiguous()
    inputs = degrade_tensor(truth, 2, 4, "blur")[None]  # frames 0, 2, ..., 10, each the mean of 3
    expected = torch.tensor([6, 7, 21, 30, 16, 4], dtype=torch.float32) / 255
    torch.testing.assert_close(inputs[0, :, 0, 0, 0], expected)
    model, alpha = DAVSR(**TINY), torch.tensor(0.01)
    for first, edges, mirror_holds in ((0, (True, False), False), (1, (False, False), False), (3, (False, True), True)):
        gt, frames = truth[None, 2 * first : 2 * first + 5], inputs[:, first : first + 3]
        torch.testing.assert_close(model.data_step(gt, frames, alpha, edges), gt, rtol=0, atol=1e-5)
        mirrored = (model.data_step(gt, frames, alpha) - gt).abs().max()
        assert mirrored < 1e-5 if mirror_holds else mirrored > 1 / 255  # over one 8-bit level


def moving_texture(frames: int, height: int, width: int, speed: int) -> torch.Tensor:
    """``[frames, 3, height, width]`` in [0, 1]: a smooth random texture moving ``speed`` pixels a frame
    to the left."""
    g = torch.Generator().manual_seed(0)
    texture = torch.rand(1, 3, height + 8, width + speed * frames + 8, generator=g)
    texture = F.avg_pool2d(F.avg_pool2d(texture, 9, 1, 4), 9, 1, 4)[0, :, 4:-4, 4:-4]
    texture = (texture - texture.min()) / (texture.max() - texture.min())
    return torch.stack([texture[:, :, speed * t : speed * t + width] for t in range(frames)])


def test_a_window_inside_the_clip_has_no_false_reflection_at_its_edges():
    """12 ground-truth frames under ``--degradation blur``: 6 input frames, each the mean of 3 frames
    (then bicubic 1/4). A window of inputs 1-4 (frames 2-8): its first input also averages frame 1,
    its last frame 9, which lie outside it. Mirrored there, the data step reads them as frames 3 and 7
    (the picture moving the other way) and makes the edge frames worse than where it started; told
    the edges are not the clip's, it improves them as it does the middle."""
    truth = moving_texture(12, 48, 64, speed=2)
    inputs = degrade_tensor(truth, 2, 4, "blur")[None]
    assert inputs.shape == (1, 6, 3, 12, 16)
    model = DAVSR(**TINY)
    alpha = model.alpha_beta()[0][0].detach()

    def errors(window: slice, edges: tuple[bool, bool] | None) -> list[float]:
        frames = inputs[:, window]
        start = model.initial(frames)
        out = start if edges is None else model.data_step(start, frames, alpha, edges)
        gt = truth[2 * window.start : 2 * window.stop - 1]
        return [(o - g).square().mean().sqrt().item() for o, g in zip(out[0], gt, strict=True)]

    inside = slice(1, 5)
    start, mirrored, told = errors(inside, None), errors(inside, (True, True)), errors(inside, (False, False))
    for edge in (0, -1):
        assert told[edge] < start[edge] < mirrored[edge]
        assert told[edge] < 0.95 * mirrored[edge]
    assert told[3] == pytest.approx(mirrored[3], rel=0.01)  # the middle, far from both edges
    # The first window: its first frame is the clip's (the degradation reflects there, as the mirror
    # does), its last is not.
    first = slice(0, 4)
    mirrored, told = errors(first, (True, True)), errors(first, (True, False))
    assert told[0] == pytest.approx(mirrored[0], rel=0.01)
    assert told[-1] < 0.95 * mirrored[-1]


@pytest.mark.parametrize(("frames", "h", "w"), [(2, 5, 7), (3, 8, 8), (5, 3, 6)])
def test_any_window_and_size_gives_twice_less_one_frames_at_four_times_the_size(frames, h, w):
    torch.manual_seed(0)
    with torch.no_grad():
        out = DAVSR(**TINY).eval()(torch.rand(1, frames, 3, h, w))
    assert out.shape == (1, 2 * frames - 1, 3, 4 * h, 4 * w)


def test_untrained_model_beats_classic_on_blurred_input_and_every_parameter_learns():
    torch.manual_seed(0)
    truth = torch.from_numpy(np.stack([pattern(i, 64, 96) for i in range(5)])).permute(0, 3, 1, 2).float() / 255
    frames = degrade_tensor(truth, 2, 4, "blur")[None]
    model = DAVSR(**TINY)
    with torch.no_grad():
        base = Classic(scale=4)(frames, fps_x=2)[0]
        out = model(frames)[0]

    def score(video):
        return np.mean([psnr_y((v.clamp(0, 1) * 255).round(), t * 255) for v, t in zip(video, truth, strict=True)])

    assert score(out) > score(base) + 0.5  # classic refined by the FDT: the RVE starts as the identity
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for _ in range(3):  # zero-initialised layers open the way, one a step
        optimizer.zero_grad()
        model(frames[:, :3, :, :8, :8]).square().mean().backward()
        optimizer.step()
    dead = [n for n, p in model.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not dead


def test_tie_to_mu_is_the_papers_alpha_and_beta_from_one_mu_and_learns_it():
    """``tie_to_mu``: one learned mu_k gives alpha_k = mu_k sigma^2 (Eq. 6) and beta_k = sqrt(lambda / mu_k)
    (Eq. 8); it starts where the untied model starts, and mu_k gets gradients."""
    torch.manual_seed(0)
    untied = DAVSR(**TINY)
    torch.manual_seed(0)
    tied = DAVSR(**TINY, tie_to_mu=True)
    names = {n for n, _ in tied.named_parameters()}
    assert "log_mu" in names and not names & {"log_alpha", "log_beta"}
    assert tied.sigma == QUANTISATION_SIGMA == pytest.approx(1 / (255 * 12**0.5))
    alphas, betas = tied.alpha_beta()
    torch.testing.assert_close(alphas, torch.full((3,), 0.003))  # alpha_init, beta_init: the untied start
    torch.testing.assert_close(betas, torch.full((3,), 0.1))
    frames = torch.rand(1, 3, 3, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(tied(frames), untied(frames), rtol=0, atol=1e-5)

    model = DAVSR(**TINY, tie_to_mu=True, noise_sigma=0.01, prior_lambda=0.5)
    with torch.no_grad():
        model.log_mu.copy_(torch.tensor([1.0, 2.5, 4.0]))
    mu = model.log_mu.detach().exp()
    alphas, betas = model.alpha_beta()
    torch.testing.assert_close(alphas, mu * 0.01**2)
    torch.testing.assert_close(betas, (0.5 / mu).sqrt())
    torch.testing.assert_close(alphas * betas.square(), torch.full((3,), 0.5 * 0.01**2))  # lambda sigma^2
    out = model(frames)
    assert out.shape == (1, 5, 3, 32, 32) and torch.isfinite(out).all()
    (out - frames.mean()).square().mean().backward()
    assert model.log_mu.grad is not None and torch.isfinite(model.log_mu.grad).all()
    assert (model.log_mu.grad != 0).all()  # every iteration's mu_k learns
    with pytest.raises(ValueError, match="positive"):
        DAVSR(**TINY, tie_to_mu=True, noise_sigma=0.0)


def test_default_keeps_alpha_and_beta_apart_and_the_shipped_weights_load():
    model = DAVSR(**TINY)
    assert {"log_alpha", "log_beta"} <= set(model.state_dict()) and "log_mu" not in model.state_dict()
    alphas, betas = model.alpha_beta()
    assert torch.equal(alphas, model.log_alpha.exp()) and torch.equal(betas, model.log_beta.exp())
    spec = load_registry().get("davsr")
    state = hub.read_state_dict(Path(spec.weights))
    spec.build().load_state_dict(state, strict=True)  # shipped: untied
    with pytest.raises(RuntimeError, match="log_mu"):
        DAVSR(**spec.params, tie_to_mu=True).load_state_dict(state, strict=True)


def test_blur_training_smoke_exports_a_model_for_upscale_and_eval(tmp_path, monkeypatch):
    data = make_training_clips(tmp_path / "train", frames=9)
    out = tmp_path / "run"
    logs = train_tiny("davsr", TINY, data, out, "tiny-davsr", steps=20, lr="2e-3", extra=["--degradation", "blur"])
    assert logs[-1]["loss"] < 0.9 * logs[0]["loss"]
    assert "(blur degradation)" in (out / "tiny-davsr.md").read_text()
    monkeypatch.setenv("STVSR_REGISTRY", str(out / "tiny-davsr.toml"))
    clip = tmp_path / "in.mp4"
    make_video(clip, frames=5, size=(16, 12))
    run = CliRunner().invoke(main, ["upscale", str(clip), str(tmp_path / "o.mp4"), "--model", "tiny-davsr"])
    assert run.exit_code == 0, run.stderr
    assert stream_facts(tmp_path / "o.mp4")["frames"] == 10

    truth = tmp_path / "truth.mkv"
    make_video(truth, frames=7, size=(24, 16), codec="ffv1", pix_fmt="bgr0")
    scores = {}
    for model in ("tiny-davsr", "classic"):
        for degradation in ("standard", "blur"):
            report = tmp_path / f"{model}-{degradation}.json"
            args = ["eval", str(truth), "--model", model, "--degradation", degradation, "--json", str(report)]
            run = CliRunner().invoke(main, args)
            assert run.exit_code == 0, run.stderr
            result = json.loads(report.read_text())
            assert result["degradation"] == degradation and result["clips"][0]["frames"] == 7
            scores[model, degradation] = result["mean"]["psnr_y"]
    assert scores["classic", "blur"] < scores["classic", "standard"]  # the blurred input is harder
    assert scores["tiny-davsr", "blur"] > scores["classic", "blur"]
