"""DAVSR (Geng et al., ECCV 2022): deep alternating video super-resolution for blurry input.

No official code is used; this follows the paper (../shared/papers/davsr_deep_alternating_eccv2022.txt).
The degradation is Eq. 1, ``Y = (X * K) subsampled by s = (s_t, s_h, s_w)``; half-quadratic
splitting alternates, K = 3 times, a data step (Eq. 4) and a prior step (Eq. 5):

- **FDT** (Fourier data transform, Eq. 6, no weights): the exact minimiser of
  ``|Y - (Z * K)subsampled|^2 + alpha_k |Z - X_{k-1}|^2`` for circular convolution, in closed form with
  ``torch.fft``. With ``d = conj(FK) F(Y zero-upsampled) + alpha_k F(X_{k-1})``:
  ``Z = F^-1((d - conj(FK) * repeat(mean_blocks(FK d) / (mean_blocks(|FK|^2) + alpha_k))) / alpha_k)``,
  where ``mean_blocks`` averages the s_t x s_h x s_w distinct blocks of the spectrum (the aliasing
  of subsampling) and ``repeat`` tiles it back (the printed Eq. 6 differs, see the deviations);
  ``fourier_data_transform`` is checked against a dense solve.
- **K**, the blur the FDT inverts, is separable: in time the box of ``exposure`` frames centred on
  each kept frame (``exposure = 3`` is ``stvsr train/eval --degradation blur`` at x2, see
  ``evaluation.temporal_blur``; ``exposure = 1`` is the standard protocol, no motion blur); in
  space the protocol's antialiased bicubic 1/4 kernel, measured from ``F.interpolate`` itself
  (``bicubic_taps``), with its centre shift (Eq. 1 with a shifted kernel, as the paper notes).
- **Boundaries.** The FDT is circular. In time the clip is extended by its mirror image first,
  which makes the circular model exact for the degradation's reflected clip ends: T input and
  2T-1 output frames become 2T-2 and 4T-4 (the FFT's s_t T_l frames are one period of the
  reflected clip) and the 2T-1 real frames are cropped back out. In space the frames get
  ``FDT_PAD`` LR pixels (x4 in HR) of half-pixel-symmetric padding, cropped after: the protocol's
  bicubic truncates its kernel at the borders, so no extension is exact there, and on natural
  clips 4 pixels score as a full mirror (2h x 2w, 4x the FFT) does and 0.1 dB above none.
- **RVE** (recurrent video enhancement, Eqs. 8-10), one set of weights shared by the K iterations
  and told the iteration by the noise level ``beta_k`` (an extra input plane): features ``g`` from
  ``[Z_k; beta_k]``, then ``branches`` propagation branches alternating backward / forward in time,
  each a second-order flow-guided deformable alignment ``G`` (BasicVSR++ style: the offsets are
  the flows to the two previous frames plus learned residuals, at most ``max_offset`` pixels)
  followed by ``C``, a 3x3 fusion of ``[branch below; aligned]`` and ``blocks`` residual blocks;
  ``X_k = Z_k + reconstruction``.
- ``alpha_k`` (the FDT's weight on ``X_{k-1}``) and ``beta_k`` (the RVE's noise level), one pair
  per iteration, learned: apart by default, or tied to one ``mu_k`` as the paper does (see the
  deviations).

Where the paper is silent, the simplest choice, said here. Two branches (BasicVSR++ has four),
guided by ``g^i`` as Eq. 9 says; the flows come from the shared coarse-to-fine ``ops.motion.FlowNet``
(zero padding when warping) trained with the model (no pretrained weights, no compiled ops),
computed at each iteration on ``Z_k`` shrunk to the LR size, the second-order flow composed from two
first-order ones. ``X_0`` (Algorithm 1: "initialise X_0 on Y in space and time"): with
``global_residual`` (default) it is ``classic`` (bicubic + linear blending), so an untrained network
starts at classic refined by the FDT, and trains fast on a CPU; without it, USRNet's
nearest-neighbour start (in time: the previous input frame). The RVE's last convolution starts at
zero, so the untrained network is ``classic`` refined by the FDT alone: on natural clips under
``--degradation blur`` that scores 1.5 to 2 dB above ``classic`` (0.7 dB with ``exposure=1`` on the
standard protocol), with ``alpha_init = 0.003``, about where the FDT alone scores best.
The loss is the paper's Charbonnier loss (Eq. 11, per pixel: see below), the trainer's default.

Deviations from the paper, each kept for a reason:

- **alpha_k and beta_k learned apart** (``log_alpha``, ``log_beta``; the default and the shipped
  weights). The paper ties both to the HQS penalty ``mu_k`` of Eq. 3: ``alpha_k = mu_k sigma^2``
  (under Eq. 6) and ``beta_k = sqrt(lambda / mu_k)`` (Eq. 8), sigma the noise level of Eq. 1 and
  lambda the prior's weight in Eq. 2; it does not say how ``mu_k`` is set (USRNet, which it
  follows, predicts alpha_k and beta_k from sigma and s with a small network). Tied,
  ``alpha_k beta_k^2 = lambda sigma^2`` at every iteration, a constant the paper gives no value for,
  and our input has no noise of Eq. 1's kind, only its rounding to 8 bits. Kept because the shipped
  weights were trained so; ``tie_to_mu=True`` builds the paper's form: one learned ``log_mu`` per
  iteration, ``noise_sigma`` fixed (default ``QUANTISATION_SIGMA``, the rounding's
  1 / (255 sqrt 12)) and ``prior_lambda`` fixed (default: the lambda at which the tied model starts
  where the untied one does, ``alpha_k = alpha_init`` and ``beta_k = beta_init``).
- **Eq. 6 as printed** writes ``R = F(K)F(Y up) - alpha X`` and ``s alpha + (...)``: we read ``R``
  as ``d`` above (USRNet's form, the one that solves Eq. 4) and the block operator as an average in
  both places, which is the printed form with block *sums* and ``s = s_t s_h s_w``. Kept: the
  printed ``R`` does not minimise Eq. 4; ours does (checked against a dense solve).
- **The blur averages 3 frames, REDS' 5.** The paper's data, REDS "blur" (and Vid4 made the same
  way), averages five subsequent frames into each input frame, one whole input frame interval
  there (500 ground-truth frames to 100 input frames). Our ``--degradation blur``
  (``evaluation.temporal_blur``, in ``stvsr train`` and ``stvsr eval`` alike) averages
  ``blur_window(2) = 3``, ground-truth frames 2i-1, 2i and 2i+1 for input i, and ``exposure = 3`` is
  the K the shipped FDT inverts. Why: our clips are at their recorded rate and the model is x2 in
  time, so one input frame interval is 2 ground-truth frames; centred on the kept frame (so that
  input i stays at output 2i) the box needs an odd count, and 3 is the nearest to an interval (it
  shares one frame with each neighbour). Five of our frames would be 2.5 intervals, an exposure
  well past the time between frames.
- **The RVE runs at the LR resolution**: the HR frames enter by pixel-unshuffle (x4, lossless) and
  leave by pixel-shuffle, where the paper calls its RVE multi-scale (its ``G`` is detailed in a
  supplement that is not public). Kept: the prior then costs what a plain VSR network does, which
  a CPU can train.
- **Eq. 11 as printed** puts one square root around the whole squared norm; the trainer's
  Charbonnier is the usual per-pixel one, ``mean(sqrt(d^2 + eps^2))``, with the paper's
  ``eps = 1e-3``. Kept: the printed form is an L2 loss, without the robustness to outliers the
  paper chooses Charbonnier for.
- **Size and training.** The constructor's defaults are the paper's (64 channels, 7 residual blocks
  per branch, K = 3); the shipped ``davsr`` is 0.25 M parameters (``nf = 24``, 3 blocks), trained
  1,500 steps on a CPU on our clips (``weights/davsr-cpu.md``), where the paper trains 300K
  iterations on REDS (batch 4, 64 x 64 LR patches, Adam, cosine decay from 1e-4). Kept: no GPU was
  lent for that training.

Layout: input ``[B, T, 3, h, w]`` in [0, 1], any T >= 2, any h and w; output
``[B, 2T-1, 3, 4h, 4w]``, not clamped: output 2i is input frame i, 2i+1 the frame between.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
from torch import nn

from stvsr_cli.models.base import VideoSRNet
from stvsr_cli.models.classic import Classic
from stvsr_cli.models.ops.blocks import ResidualBlock
from stvsr_cli.models.ops.dcn import DeformConv, deform_conv2d_torch
from stvsr_cli.models.ops.motion import FlowNet, warp

# Eq. 1's noise in our degradations: the input's rounding to 8 bits, uniform over one level.
QUANTISATION_SIGMA = 1 / (255 * math.sqrt(12))
FDT_PAD = 4  # LR pixels of symmetric padding around the frames before the (circular) FDT
Taps = tuple[int, tuple[float, ...]]  # (offset of the first tap, weights): y[j] = sum_i w_i x[s*j + first + i]


# -- the Fourier data transform -----------------------------------------------------------------


@functools.lru_cache(maxsize=8)
def bicubic_taps(scale: int) -> Taps:
    """The 1-D kernel of antialiased bicubic 1/``scale`` (``evaluation.downscale_tensor``), read off
    ``F.interpolate`` applied to unit impulses, away from the borders."""
    n = 16 * scale
    impulses = torch.eye(n, dtype=torch.float64).view(n, 1, 1, n)
    rows = F.interpolate(impulses, scale_factor=(1, 1 / scale), mode="bicubic", antialias=True, align_corners=False)
    row = rows[:, 0, 0, 8].tolist()  # output sample 8, far from both ends: what input i adds to it
    nonzero = [i for i, v in enumerate(row) if abs(v) > 1e-12]
    first, last = nonzero[0], nonzero[-1]
    return first - 8 * scale, tuple(row[first : last + 1])


def box_taps(exposure: int) -> Taps:
    """``exposure`` (odd) consecutive frames averaged, centred on the kept frame."""
    if exposure < 1 or exposure % 2 == 0:
        raise ValueError(f"exposure must be an odd number of frames, not {exposure}")
    return -(exposure // 2), (1 / exposure,) * exposure


def kernel_spectrum(
    taps: tuple[Taps, Taps, Taps],
    shape: tuple[int, int, int],
    device: torch.device,
    dtype: torch.dtype = torch.complex64,
) -> torch.Tensor:
    """F(K) for the separable kernel ``taps`` (time, height, width), circular on a ``shape`` grid:
    ``(X * K)[n] = sum_o w_o X[n + o]``, so tap ``o`` sits at index ``-o`` (wrapping as often as needed)."""
    spectrum = None
    for axis, ((first, weights), n) in enumerate(zip(taps, shape, strict=True)):
        kernel = torch.zeros(n, dtype=torch.float64)
        index = torch.tensor([(-(first + i)) % n for i in range(len(weights))])
        kernel.index_add_(0, index, torch.tensor(weights, dtype=torch.float64))
        one = torch.fft.fft(kernel).to(device=device, dtype=dtype)
        one = one.view([-1 if a == axis else 1 for a in range(3)])
        spectrum = one if spectrum is None else spectrum * one
    return spectrum


def mean_blocks(x: torch.Tensor, scale: tuple[int, int, int]) -> torch.Tensor:
    """The distinct-block average of the last three axes: ``[.., s_t M_t, s_h M_h, s_w M_w]`` ->
    ``[.., M_t, M_h, M_w]``, the mean of the s_t s_h s_w blocks (subsampling's aliasing in Fourier)."""
    *lead, nt, nh, nw = x.shape
    st, sh, sw = scale
    return x.view(*lead, st, nt // st, sh, nh // sh, sw, nw // sw).mean(dim=(-6, -4, -2))


def _tile(x: torch.Tensor, scale: tuple[int, int, int]) -> torch.Tensor:
    return x.repeat(*([1] * (x.dim() - 3)), *scale)


def fourier_data_transform(
    estimate: torch.Tensor, low: torch.Tensor, spectrum: torch.Tensor, scale: tuple[int, int, int], alpha: torch.Tensor
) -> torch.Tensor:
    """Eq. 6: ``argmin_Z |low - (Z * K) subsampled by scale|^2 + alpha |Z - estimate|^2``, circular.

    ``estimate`` ``[..., T, H, W]`` real; ``low`` ``[..., T/s_t, H/s_h, W/s_w]``; ``spectrum`` F(K) on
    the ``[T, H, W]`` grid; ``alpha`` > 0 broadcasts against the leading axes. Subsampling keeps
    indices 0, s, 2s, ... Differentiable in all inputs."""
    dims = (-3, -2, -1)
    conj = spectrum.conj()
    # F(zero-upsampled Y) is F(Y) tiled: no need to build the upsampled video.
    d = conj * _tile(torch.fft.fftn(low, dim=dims), scale) + alpha * torch.fft.fftn(estimate, dim=dims)
    ratio = mean_blocks(spectrum * d, scale) / (
        mean_blocks(spectrum.real.square() + spectrum.imag.square(), scale) + alpha
    )
    return torch.fft.ifftn((d - conj * _tile(ratio, scale)) / alpha, dim=dims).real


def mirror_time(x: torch.Tensor) -> torch.Tensor:
    """``[B, N, ...]`` -> ``[B, 2N-2, ...]`` (N >= 2): frames 0..N-1, then N-2 down to 1, one period of
    the clip reflected about its end frames."""
    return torch.cat([x, x[:, 1:-1].flip(1)], 1)


def pad_symmetric(x: torch.Tensor, pad: int) -> torch.Tensor:
    """``[..., H, W]`` -> ``[..., H + 2 pad, W + 2 pad]``, mirrored about the pixel edges (pixel -1 is
    pixel 0); a pad wider than the image repeats the mirroring."""
    for dim in (-1, -2):
        left = right = pad
        while left:
            step = min(left, x.shape[dim])
            x = torch.cat([x.narrow(dim, 0, step).flip(dim), x], dim)
            left -= step
        while right:
            step = min(right, x.shape[dim])
            x = torch.cat([x, x.narrow(dim, x.shape[dim] - step, step).flip(dim)], dim)
            right -= step
    return x


# -- the recurrent video enhancement -------------------------------------------------------------


class FlowGuidedAlign(nn.Module):
    """``G`` of Eq. 9: a deformable 3x3 convolution over the two previous states (``2 nf`` channels,
    ``groups`` deformable groups, half per state) whose offsets are each state's flow plus a learned
    residual (``max_offset * tanh``), guided by the current features and the flow-warped states."""

    deform_conv: DeformConv = staticmethod(deform_conv2d_torch)

    def __init__(self, nf: int, groups: int, max_offset: float) -> None:
        super().__init__()
        if groups % 2 or (2 * nf) % groups:
            raise ValueError(f"deform_groups must be even and divide {2 * nf}, not {groups}")
        self.groups, self.max_offset = groups, max_offset
        self.conv_offset = nn.Sequential(
            nn.Conv2d(3 * nf + 4, nf, 3, 1, 1), nn.LeakyReLU(0.1), nn.Conv2d(nf, nf, 3, 1, 1), nn.LeakyReLU(0.1),
            nn.Conv2d(nf, 27 * groups, 3, 1, 1),
        )  # fmt: skip
        nn.init.zeros_(self.conv_offset[-1].weight)  # start as flow-warping (no residual offsets, masks 1/2)
        nn.init.zeros_(self.conv_offset[-1].bias)
        self.weight = nn.Parameter(torch.empty(nf, 2 * nf, 3, 3))
        self.bias = nn.Parameter(torch.zeros(nf))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))

    def forward(
        self, current: torch.Tensor, prev1: torch.Tensor, prev2: torch.Tensor, flow1: torch.Tensor, flow2: torch.Tensor
    ) -> torch.Tensor:
        guide = torch.cat([warp(prev1, flow1, "zeros"), current, warp(prev2, flow2, "zeros"), flow1, flow2], 1)
        out = self.conv_offset(guide)
        residual, mask = out[:, : 18 * self.groups], torch.sigmoid(out[:, 18 * self.groups :])
        # Offsets are (dy, dx) per tap and group; the first half of the groups reads prev1.
        half = 9 * self.groups // 2
        base = torch.cat([flow1.flip(1).repeat(1, half, 1, 1), flow2.flip(1).repeat(1, half, 1, 1)], 1)
        offset = self.max_offset * torch.tanh(residual) + base
        states = torch.cat([prev1, prev2], 1)
        return self.deform_conv(states, offset.contiguous(), mask.contiguous(), self.weight, self.bias, padding=1)


class Branch(nn.Module):
    """One propagation branch of Eq. 10: align, then ``z = aligned + C([below; aligned])``."""

    def __init__(self, nf: int, blocks: int, groups: int, max_offset: float) -> None:
        super().__init__()
        self.align = FlowGuidedAlign(nf, groups, max_offset)
        self.fuse = nn.Sequential(
            nn.Conv2d(2 * nf, nf, 3, 1, 1), nn.LeakyReLU(0.1), *(ResidualBlock(nf) for _ in range(blocks))
        )

    def forward(
        self,
        features: list[torch.Tensor],
        below: list[torch.Tensor],
        flows: list[torch.Tensor | None],
        order: list[int],
    ) -> list[torch.Tensor]:
        """``order``: the frames in the order visited; ``flows[i]``: from frame i to the frame visited
        just before it (unused for the first)."""
        out: list[torch.Tensor | None] = [None] * len(features)
        zeros = torch.zeros_like(features[0])
        zero_flow = zeros.new_zeros(zeros.shape[0], 2, *zeros.shape[-2:])
        prev1 = prev2 = zeros
        flow1 = flow2 = zero_flow
        for step, i in enumerate(order):
            if step >= 1:
                prev1, flow1 = out[order[step - 1]], flows[i]
            if step >= 2:
                prev2 = out[order[step - 2]]
                # Second order: i -> i-1, then on from there to i-2.
                flow2 = flow1 + warp(flows[order[step - 1]], flow1, "zeros")
            aligned = self.align(features[i], prev1, prev2, flow1, flow2)
            out[i] = aligned + self.fuse(torch.cat([below[i], aligned], 1))
        return out


class RVE(nn.Module):
    """The prior step ``X_k = R(Z_k | beta_k)``, at the LR resolution (see the module docstring)."""

    def __init__(
        self, *, nf: int, blocks: int, branches: int, groups: int, max_offset: float, flow_nf: int, scale: int
    ) -> None:
        super().__init__()
        self.scale = scale
        cin = 3 * scale * scale
        self.extract = nn.Sequential(nn.Conv2d(cin + 1, nf, 3, 1, 1), nn.LeakyReLU(0.1), nn.Conv2d(nf, nf, 3, 1, 1))
        self.flow = FlowNet(flow_nf)
        self.branches = nn.ModuleList(Branch(nf, blocks, groups, max_offset) for _ in range(branches))
        self.reconstruct = nn.Sequential(nn.Conv2d(nf, nf, 3, 1, 1), nn.LeakyReLU(0.1), nn.Conv2d(nf, cin, 3, 1, 1))
        nn.init.zeros_(self.reconstruct[-1].weight)  # start at X_k = Z_k: the untrained model is the FDT alone
        nn.init.zeros_(self.reconstruct[-1].bias)

    def forward(self, z: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
        b, n, c, hh, ww = z.shape
        flat = z.reshape(b * n, c, hh, ww)
        small = F.pixel_unshuffle(flat, self.scale)
        noise = beta.to(z.dtype).expand(b * n, 1, *small.shape[-2:])
        features = self.extract(torch.cat([small, noise], 1)).view(b, n, -1, *small.shape[-2:])
        features = list(features.unbind(1))
        # Flows between neighbours on the frames shrunk to the LR size: i -> i+1 and i -> i-1.
        images = F.avg_pool2d(flat, self.scale).view(b, n, c, *small.shape[-2:])
        if n > 1:
            pairs = self.flow(
                torch.cat([images[:, :-1], images[:, 1:]], 0).flatten(0, 1),
                torch.cat([images[:, 1:], images[:, :-1]], 0).flatten(0, 1),
            ).view(2, b, n - 1, 2, *small.shape[-2:])
            to_next = [*pairs[0].unbind(1), None]  # i -> i+1
            to_prev = [None, *pairs[1].unbind(1)]  # i -> i-1
        else:
            to_next = to_prev = [None]
        state = features
        for j, branch in enumerate(self.branches):
            backward = j % 2 == 0
            order = list(range(n - 1, -1, -1)) if backward else list(range(n))
            state = branch(features, state, to_next if backward else to_prev, order)
        out = torch.stack(state, 1).flatten(0, 1)
        out = F.pixel_shuffle(self.reconstruct(out), self.scale)
        return z + out.view(b, n, c, hh, ww)


# -- the network -------------------------------------------------------------------------------


class DAVSR(VideoSRNet):
    """x4 in space, x2 in time: ``[B, T, 3, h, w]`` -> ``[B, 2T-1, 3, 4h, 4w]``."""

    loss_description = "Charbonnier loss (the paper's Eq. 11)"
    scale = 4
    fps_x = 2
    time_factors = (2,)

    def __init__(
        self, *, nf: int = 64, blocks: int = 7, branches: int = 2, iterations: int = 3, deform_groups: int = 8,
        max_offset: float = 10.0, flow_nf: int = 24, exposure: int = 3, alpha_init: float = 0.003,
        beta_init: float = 0.1, global_residual: bool = True, tie_to_mu: bool = False,
        noise_sigma: float = QUANTISATION_SIGMA, prior_lambda: float | None = None,
    ) -> None:  # fmt: skip
        """``exposure``: HR frames averaged into each input frame, the temporal blur the FDT inverts
        (3 for ``--degradation blur`` at x2, 1 for the standard protocol). ``alpha_init`` /
        ``beta_init``: the starting alpha_k and beta_k, the same for every iteration.

        ``tie_to_mu``: the paper's parametrisation instead of two free parameters per iteration: one
        learned ``mu_k`` (``log_mu``), ``alpha_k = mu_k sigma^2`` (Eq. 6) and ``beta_k = sqrt(lambda /
        mu_k)`` (Eq. 8), with ``sigma = noise_sigma`` (Eq. 1's noise level, default the 8-bit rounding
        of the input) and ``lambda = prior_lambda`` (Eq. 2's trade-off, fixed), by default the one at
        which ``beta_k`` starts at ``beta_init`` when ``alpha_k`` starts at ``alpha_init``. Off (the
        default, and the shipped weights): ``log_alpha`` and ``log_beta`` are learned apart."""
        super().__init__()
        self.temporal_taps = box_taps(exposure)
        self.fdt_pad = FDT_PAD
        self.iterations = iterations
        self.rve = RVE(
            nf=nf, blocks=blocks, branches=branches, groups=deform_groups, max_offset=max_offset, flow_nf=flow_nf,
            scale=self.scale,
        )  # fmt: skip
        self.tie_to_mu = tie_to_mu
        if tie_to_mu:
            if noise_sigma <= 0 or (prior_lambda is not None and prior_lambda <= 0):
                raise ValueError("noise_sigma and prior_lambda must be positive")
            mu_init = alpha_init / noise_sigma**2
            self.sigma = noise_sigma
            self.prior_lambda = beta_init**2 * mu_init if prior_lambda is None else prior_lambda
            self.log_mu = nn.Parameter(torch.full((iterations,), math.log(mu_init)))
        else:
            self.log_alpha = nn.Parameter(torch.full((iterations,), math.log(alpha_init)))
            self.log_beta = nn.Parameter(torch.full((iterations,), math.log(beta_init)))
        self.baseline = Classic(scale=self.scale) if global_residual else None

    def alpha_beta(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(alpha, beta)``, one per iteration: learned apart, or (``tie_to_mu``) from ``mu_k``: Eqs. 6 and 8."""
        if not self.tie_to_mu:
            return self.log_alpha.exp(), self.log_beta.exp()
        mu = self.log_mu.exp()
        return mu * self.sigma**2, (self.prior_lambda / mu).sqrt()

    def initial(self, frames: torch.Tensor) -> torch.Tensor:
        """X_0: ``classic``, or nearest-neighbour in space and time (the previous input frame)."""
        if self.baseline is not None:
            return self.baseline(frames, fps_x=self.fps_x)
        b, t, c, h, w = frames.shape
        up = F.interpolate(frames.reshape(b * t, c, h, w), scale_factor=self.scale, mode="nearest")
        up = up.view(b, t, c, h * self.scale, w * self.scale)
        return up.repeat_interleave(self.fps_x, 1)[:, : self.fps_x * (t - 1) + 1]

    def data_step(self, estimate: torch.Tensor, frames: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
        """``T(X_{k-1} | Y, K, s, alpha_k)`` on the mirrored clip (float32; see the module docstring)."""
        n, hh, ww = estimate.shape[1], estimate.shape[-2], estimate.shape[-1]
        with torch.autocast(estimate.device.type, enabled=False):
            pad = self.fdt_pad
            x = pad_symmetric(mirror_time(estimate.float()), self.scale * pad).transpose(1, 2)  # [B, 3, T, H, W]
            y = pad_symmetric(mirror_time(frames.float()), pad).transpose(1, 2)
            grid = tuple(x.shape[-3:])
            taps = (self.temporal_taps, bicubic_taps(self.scale), bicubic_taps(self.scale))
            spectrum = kernel_spectrum(taps, grid, x.device)
            scale = (grid[0] // y.shape[-3], self.scale, self.scale)
            z = fourier_data_transform(x, y, spectrum, scale, alpha.float())
        edge = self.scale * pad
        return z.transpose(1, 2)[:, :n, :, edge : edge + hh, edge : edge + ww].to(estimate.dtype)

    def forward(self, frames: torch.Tensor, fps_x: int = 2) -> torch.Tensor:
        if fps_x != self.fps_x:
            raise ValueError(f"DAVSR makes x{self.fps_x} in time, not x{fps_x}")
        if frames.shape[1] < 2:
            raise ValueError("DAVSR needs at least two input frames")
        x = self.initial(frames)
        alphas, betas = self.alpha_beta()
        for k in range(self.iterations):
            z = self.data_step(x, frames, alphas[k])
            x = self.rve(z, betas[k])
        return x
