"""DAVSR (Geng et al., ECCV 2022): deep alternating video super-resolution for blurry input.

Our code, from the paper ("Deep Alternating Video Super-Resolution", ECCV 2022). The degradation is
Eq. 1, ``Y = (X * K) subsampled by s = (s_t, s_h, s_w)``; half-quadratic splitting alternates, K = 3
times, a data step (Eq. 4) and a prior step (Eq. 5):

- **FDT** (Fourier data transform, Eq. 6, no weights): the exact minimiser of
  ``|Y - (Z * K)subsampled|^2 + alpha_k |Z - X_{k-1}|^2`` for circular convolution, in closed form
  (``fourier_data_transform``, checked against a dense solve). K is separable: in time the box of
  ``exposure`` frames centred on each kept frame (3 is ``--degradation blur`` at x2, 1 the standard
  protocol), in space the protocol's antialiased bicubic 1/4 read off ``F.interpolate``.
- **Boundaries.** The FDT is circular, a window is not. In space the frames get ``FDT_PAD`` LR pixels
  of symmetric padding, cropped after (the protocol's bicubic truncates its kernel at the borders:
  no extension is exact there). In time, at a real window edge (the first or last frame of its
  shot: ``forward``'s ``edges``) the degradation reflects the clip, so the window is extended by
  its mirror image, exact there. At an edge inside the clip the edge input frame also averages a
  frame beyond the window, which a mirror would take for the one inside (wrong wherever the picture
  moves); there ``X_{k-1}`` is extended by repeating its edge frame as far as the blur reaches, and
  the extension's input frames are that extension degraded: nil residual, so the data term says
  nothing past the edge and the frame beyond is a free unknown of the edge input frame (``time_axis``).
- **RVE** (recurrent video enhancement, Eqs. 8-10), one set of weights for the K iterations, told
  the iteration by the noise level ``beta_k`` (an input plane): features from ``[Z_k; beta_k]``, then
  ``branches`` propagation branches alternating backward and forward, each a second-order
  flow-guided deformable alignment ``G`` (BasicVSR++ style) and ``C``, a fusion of ``[branch below;
  aligned]`` with ``blocks`` residual blocks; ``X_k = Z_k + reconstruction``.

Where the paper is silent, the simplest choice: two branches, flows from the shared
``ops.motion.FlowNet`` trained with the model; ``X_0`` is ``classic`` (bicubic + linear blending;
without ``global_residual``, nearest-neighbour). The RVE's last convolution starts at zero, so the
untrained network is ``classic`` refined by the FDT alone.

Deviations from the paper, each kept for a reason:

- **alpha_k and beta_k learned apart** (the shipped weights). The paper ties both to the HQS penalty
  ``mu_k`` (``alpha_k = mu_k sigma^2``, ``beta_k = sqrt(lambda / mu_k)``) without saying how
  ``mu_k`` is set; ``tie_to_mu=True`` builds that form.
- **Eq. 6 as printed** (``R = F(K)F(Y up) - alpha X``, block sums) does not minimise Eq. 4; we use
  USRNet's form above, which does.
- **The blur averages 3 frames, REDS' 5**: one input frame interval is 2 of our ground-truth frames
  at x2, and a box centred on the kept frame needs an odd count.
- **The RVE runs at the LR resolution** (pixel-unshuffle in, pixel-shuffle out; the paper's is
  multi-scale, its supplement not public), costing what a plain VSR network does.
- **Eq. 11 as printed** is an L2 loss; the trainer's Charbonnier is per pixel (``eps = 1e-3``), robust
  as the paper intends.
- **Size**: the constructor's defaults are the paper's (64 channels, 7 blocks, K = 3); the shipped
  weights are a smaller configuration trained on a CPU (``weights/davsr-cpu.md``).

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
    estimate: torch.Tensor, low: torch.Tensor, spectrum: torch.Tensor, scale: tuple[int, int, int], alpha: torch.Tensor,
    *, estimate_fft: torch.Tensor | None = None,
) -> torch.Tensor:  # fmt: skip
    """Eq. 6: ``argmin_Z |low - (Z * K) subsampled by scale|^2 + alpha |Z - estimate|^2``, circular.

    ``estimate`` ``[..., T, H, W]`` real; ``low`` ``[..., T/s_t, H/s_h, W/s_w]``; ``spectrum`` F(K) on
    the ``[T, H, W]`` grid; ``alpha`` > 0 broadcasts against the leading axes. Subsampling keeps
    indices 0, s, 2s, ... ``estimate_fft``: F(estimate), where the caller has it already.
    Differentiable in all inputs."""
    dims = (-3, -2, -1)
    conj = spectrum.conj()
    if estimate_fft is None:
        estimate_fft = torch.fft.fftn(estimate, dim=dims)
    # F(zero-upsampled Y) is F(Y) tiled: no need to build the upsampled video.
    d = conj * _tile(torch.fft.fftn(low, dim=dims), scale) + alpha * estimate_fft
    ratio = mean_blocks(spectrum * d, scale) / (
        mean_blocks(spectrum.real.square() + spectrum.imag.square(), scale) + alpha
    )
    return torch.fft.ifftn((d - conj * _tile(ratio, scale)) / alpha, dim=dims).real


def degrade_circular(estimate_fft: torch.Tensor, spectrum: torch.Tensor, scale: tuple[int, int, int]) -> torch.Tensor:
    """``(X * K) subsampled by scale``, circular, from ``estimate_fft`` = F(X) on the grid of ``spectrum``:
    subsampling averages the spectrum's blocks."""
    dims = (-3, -2, -1)
    return torch.fft.ifftn(mean_blocks(spectrum * estimate_fft, scale), dim=dims).real


def time_axis(frames: int, step: int, reach: int, edges: tuple[bool, bool]) -> tuple[int, int, list[int]]:
    """The FDT's time axis for a window of ``frames`` input frames, ``step`` output frames apart, whose
    blur reaches ``reach`` output frames either side of an input frame; ``edges`` says whether the
    window's first and last frames are the clip's. Returns ``(before, after, source)``: the window's
    output frames get ``before`` frames ahead and ``after`` behind, beyond each edge that is not
    real (as many as the blur reaches past it, ``before`` a multiple of ``step`` so that input 0 stays
    on a kept frame), and grid position t holds frame ``source[t]`` of that extended window: the
    extended window then its reflection where an edge is real, else the extended window alone
    (circular), ``after`` grown to a whole number of input frames."""
    before = 0 if edges[0] else step * -(-reach // step)
    after = 0 if edges[1] else reach
    length = before + step * (frames - 1) + 1 + after
    if any(edges):
        return before, after, [*range(length), *range(length - 2, 0, -1)]
    whole = -length % step
    return before, after + whole, list(range(length + whole))


def extend_time(x: torch.Tensor, before: int, after: int) -> torch.Tensor:
    """``[B, N, ...]`` -> ``[B, before + N + after, ...]``: the first frame repeated ``before`` times
    ahead, the last ``after`` times behind."""
    if not before and not after:
        return x
    return torch.cat([x[:, :1].expand(-1, before, *x.shape[2:]), x, x[:, -1:].expand(-1, after, *x.shape[2:])], 1)


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
    """x4 in space, x2 in time: ``[B, T, 3, h, w]`` -> ``[B, 2T-1, 3, 4h, 4w]``; told which window
    edges are its shot's (``registry.ARCHITECTURES["davsr"]``)."""

    loss_description = "Charbonnier loss (the paper's Eq. 11)"
    scale = 4
    fps_x = 2

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

    def data_step(
        self, estimate: torch.Tensor, frames: torch.Tensor, alpha: torch.Tensor, edges: tuple[bool, bool] = (True, True)
    ) -> torch.Tensor:
        """``T(X_{k-1} | Y, K, s, alpha_k)`` (float32), the window extended in time as ``edges`` (whether
        its first and last frames are the clip's) says: see the module docstring."""
        n, hh, ww = estimate.shape[1], estimate.shape[-2], estimate.shape[-1]
        with torch.autocast(estimate.device.type, enabled=False):
            pad, s, st = self.fdt_pad, self.scale, self.fps_x
            taps = (self.temporal_taps, bicubic_taps(s), bicubic_taps(s))
            first, after, source = time_axis(frames.shape[1], st, -self.temporal_taps[0], edges)
            extended = extend_time(estimate.float(), first, after)
            x = pad_symmetric(extended[:, source], s * pad).transpose(1, 2)
            spectrum = kernel_spectrum(taps, tuple(x.shape[-3:]), x.device)
            fx = torch.fft.fftn(x, dim=(-3, -2, -1))
            # Each input frame of the grid: which of the window's it is, or -1 past an edge that is
            # not real, where it is the extended estimate degraded: no residual, so no information.
            which = [source[t] - first for t in range(0, len(source), st)]
            which = [i // st if 0 <= i < n and i % st == 0 else -1 for i in which]
            mine = [t for t, i in enumerate(which) if i >= 0]
            low = pad_symmetric(frames.float(), pad).transpose(1, 2)
            if len(mine) == len(which):
                y = low[:, :, which]
            else:
                y = degrade_circular(fx, spectrum, (st, s, s))
                y = y.index_copy(2, torch.tensor(mine, device=y.device), low[:, :, [which[t] for t in mine]])
            z = fourier_data_transform(x, y, spectrum, (st, s, s), alpha.float(), estimate_fft=fx)
        edge = s * pad
        return z.transpose(1, 2)[:, first : first + n, :, edge : edge + hh, edge : edge + ww].to(estimate.dtype)

    def forward(self, frames: torch.Tensor, fps_x: int = 2, edges: tuple[bool, bool] | None = None) -> torch.Tensor:
        """``edges``: whether the window's first and last frames are its shot's (None: both)."""
        if fps_x != self.fps_x:
            raise ValueError(f"DAVSR makes x{self.fps_x} in time, not x{fps_x}")
        if frames.shape[1] < 2:
            raise ValueError("DAVSR needs at least two input frames")
        x = self.initial(frames)
        alphas, betas = self.alpha_beta()
        for k in range(self.iterations):
            z = self.data_step(x, frames, alphas[k], (True, True) if edges is None else tuple(edges))
            x = self.rve(z, betas[k])
        return x
