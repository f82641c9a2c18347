"""STINet (Yue et al.): space-time video super-resolution by spatial-temporal feature interaction.

Our own implementation of the paper's design (STINet, spatial-temporal feature interaction):

- **S-SR** initialises each input frame's LR features ``L_i`` (a convolution and residual blocks)
  and HR features ``H_i`` (pixel-shuffle upsampling of ``L_i``, ``nf`` channels at ``scale`` x).
- **Flows.** The paper does not say how it computes the flows between input frames; ours, our
  choice, come from a small coarse-to-fine flow network (``FlowNet``, SpyNet-like, trained with the
  model), which gives ``O_{i->i+1}`` and ``O_{i+1->i}`` on the LR frames, adapted to time tau in
  (0, 1) by the paper's Eq. 1: ``O_{tau->i} = tau * O_{i+1->i}``, ``O_{tau->i+1} = (1 - tau) *
  O_{i->i+1}``. This is how fps_x 2, 4 and 6 work.
- **ST-FI**: Mnet (a convolution, two residual blocks, a convolution) turns the two adapted flows
  into a motion representation ``M``; Pnet has an LR and an HR branch, each ``cat(M, neighbour
  features) -> conv``, then ``pnet_blocks`` residual blocks shared by both branches, then a
  convolution over ``cat(input, output)`` of the shared blocks (the paper's skip), per branch.
- Phase-1 supervision: separate 1x1 convolutions map every ``L_t`` / ``H_t`` (inputs and
  in-between) to an LR / HR frame, supervised by the downscaled / full ground truth (``l'_rec``).
- **ST-LR** (``lr_modules`` of them in a row, each shared by all frames): for a sliding window of
  three features (the ends repeat themselves), two convolutions per branch predict deformable
  offsets (and DCNv2 masks) from ``cat(X_t, X_neighbour)``; **Inet**, shared by both directions,
  mixes the LR and HR offsets (one convolution over both, at LR) and refines each with one
  convolution over ``cat(mix, own offsets)``; a deformable convolution per branch aligns the
  neighbours (``ops.dcn``: pure PyTorch, or torchvision's kernel on CUDA); four convolutions fuse
  ``cat(X_t, aligned previous, aligned next)``.
- **ST-GR**: one node per frame and resolution (global average pooling); edges from every node to
  its LR/HR counterpart and to all nodes of its own resolution; edge attributes frame-level cosine
  similarity E_F, pixel-level cosine similarity E_P (HR average-pooled to LR size), temporal
  closeness E_T = 1 - sigmoid(|t1 - t2|); four GraphSAGE layers; each output node modulates its
  feature map channel-wise: ``X + X * g``.
- **Reconstruction**: ``V = conv1x1(pixelshuffle(L^G)) + conv1x1(H^G)``.
- **Loss** (Eq. 4): the reconstruction loss ``l_rec`` on every output frame, plus the phase-1 LR
  and HR terms ``l'_rec`` (weight 1), plus 0.1 x the motion consistency loss (``l_abs + l_rel``,
  Eqs. 2-3, lambda_2 = 0.1 as in the paper; ``l_abs`` is the squared L2 of the paper, a mean squared
  error). ``l_rec`` and ``l'_rec`` are Charbonnier by default (a deviation, below);
  ``reconstruction_loss="l2"`` makes them the paper's squared L2 (Sec. 3.6), as mean squared errors.
  No perceptual (VGG) term: VGG weights cannot be downloaded here.

Deviations from the paper, and our choices where it is silent, each with its reason:

- Reconstruction loss: Charbonnier (eps 1e-3, ``ops.losses.charbonnier``) for ``l_rec`` and
  ``l'_rec`` by default, where the paper writes squared L2 (Sec. 3.6). Kept because the shipped
  weights (``stinet-cpu``, see its card) were trained with it, and it is the loss the other
  networks here train with, so scores compare; the paper's loss is ``reconstruction_loss="l2"``. Either way each term is a mean over pixels, channels and frames
  where the paper sums (only the balance against the motion term changes).
- Flow: the paper names no flow estimator; ours is ``FlowNet``, learnt with the model. A learned
  flow that only sees the reconstruction loss need not stay a flow, and the motion consistency
  loss needs a real one, so it also gets a photometric term (Charbonnier of the backward-warped LR
  input frames, weight 0.1), not in the paper. Its last layers start small (x0.1), not zero, so
  that every layer learns from the first step.
- Pnet concatenates ``M`` with the neighbours' features *backward-warped* by the adapted flows (the
  paper concatenates them as they are); this gives the flow a direct reconstruction signal. A
  plane holding tau also enters Mnet, so that still regions (zero flow) know the time.
- ``M`` is computed once at LR and bilinearly upsampled for the HR branch; the HR branch warps with
  the adapted flows upsampled and multiplied by ``scale``.
- ST-LR: DCNv2 (offsets and sigmoid masks; only the offsets go through Inet) with ``groups``
  deformable groups; the HR offsets are average-pooled and divided by ``scale`` (LR pixels) before
  Inet mixes them, the mix is upsampled bilinearly and multiplied by ``scale`` (HR pixels) for the
  HR branch; Inet's refinements and the fusion are residual (``s + conv(...)``, ``X + convs(...)``)
  and start small, so an untrained module is close to the identity.
- ST-GR: edge weights ``softmax(a . (E_F, E_P, E_T))`` over a node's neighbours (``a`` learned,
  starting at ones); GraphSAGE ``h' = W_self h + W_neigh sum_u w_u h_u``, LeakyReLU between layers,
  none after the last; cosine similarities and softmax in float32.
- Motion consistency: the flows between predicted frames (and between ground-truth frames) come
  from the same ``FlowNet``, with its parameters detached for this term (else zero flow everywhere
  would be a trivial minimum), run on the frames average-pooled to LR size (the resolution it is
  trained at). ``l_abs`` (mean squared error) and ``l_rel`` use the pairs at distance 1 and 2 (what
  ``l_rel`` needs), not all N^2 pairs, to bound the cost; both are means, not sums.
- ``global_residual`` (on by default): ``classic`` (bicubic + linear blending) is added to the
  output, and the lerp of the LR frames / classic to the phase-1 images; the output convolutions
  start at 0.1 x their default initialisation, so an untrained network starts near classic.
- ``size_multiple`` is ``2 ** (flow_levels - 1)`` (the flow pyramid); ``VideoSRNet.run`` pads the
  input to it (replicating the edge) and crops the output back, so any h, w work.

Default configuration (``nf`` 64, 26 S-SR residual blocks, 5 shared Pnet blocks, 4 ST-LR modules
with 8 deformable groups, 4 GraphSAGE layers; the paper gives no block counts, these were picked to
match its size): 11,781,477 parameters (the paper reports 11.76 M). Any integer ``fps_x`` works;
training draws 2, 4 and 6.

Layout: input ``[B, T, 3, h, w]`` in [0, 1], any T >= 2; ``forward(frames, fps_x=k)`` gives
``[B, k(T-1)+1, 3, 4h, 4w]``, not clamped: output ``k*i`` is input frame i, output ``k*i+s`` the
frame at time ``s/k`` between inputs i and i+1.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from stvsr_cli.models.base import VideoSRNet
from stvsr_cli.models.classic import Classic, blend
from stvsr_cli.models.ops.blocks import ResidualBlock, lrelu
from stvsr_cli.models.ops.dcn import DeformConv, deform_conv2d_torch
from stvsr_cli.models.ops.losses import charbonnier
from stvsr_cli.models.ops.motion import FlowNet, resize_flow, warp

MCL_WEIGHT = 0.1  # lambda_2 of the paper
FLOW_PHOTOMETRIC_WEIGHT = 0.1


def conv3x3(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, 1, 1)


def _shrink(*convs: nn.Conv2d, factor: float = 0.1) -> None:
    with torch.no_grad():
        for conv in convs:
            conv.weight.mul_(factor)
            if conv.bias is not None:
                conv.bias.mul_(factor)


def adapted_flows(tau: torch.Tensor, f01: torch.Tensor, f10: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eq. 1 (linear motion): the flows from time ``tau`` in (0, 1) to the frames before and after,
    ``(tau * f10, (1 - tau) * f01)``; ``tau`` broadcasts against the flows."""
    return tau * f10, (1 - tau) * f01


def interleave(keys: torch.Tensor, middles: torch.Tensor) -> torch.Tensor:
    """``keys`` ``[B, T, ...]`` and ``middles`` ``[B, T-1, k-1, ...]`` -> ``[B, k(T-1)+1, ...]`` in time order."""
    gaps = torch.cat([keys[:, :-1].unsqueeze(2), middles], 2).flatten(1, 2)
    return torch.cat([gaps, keys[:, -1:]], 1)


class Upsampler(nn.Sequential):
    """log2(scale) times: conv (nf -> 4 nf), pixel shuffle x2, LeakyReLU."""

    def __init__(self, nf: int, scale: int) -> None:
        layers: list[nn.Module] = []
        for _ in range(int(math.log2(scale))):
            layers += [conv3x3(nf, 4 * nf), nn.PixelShuffle(2), nn.LeakyReLU(0.1)]
        super().__init__(*layers)


def _conv_chain(channels: list[int], kernel: int = 3) -> list[nn.Module]:
    """Convolutions ``channels[0] -> channels[1] -> ...`` with a LeakyReLU between them."""
    layers: list[nn.Module] = []
    for i, (cin, cout) in enumerate(itertools.pairwise(channels)):
        layers += [nn.LeakyReLU(0.1)] if i else []
        layers.append(nn.Conv2d(cin, cout, kernel, 1, kernel // 2))
    return layers


class SpatialSR(nn.Module):
    """S-SR: LR features of a frame, and HR features upsampled from them."""

    def __init__(self, nf: int, blocks: int, scale: int) -> None:
        super().__init__()
        self.conv_first = conv3x3(3, nf)
        self.blocks = nn.Sequential(*(ResidualBlock(nf) for _ in range(blocks)))
        self.upsample = Upsampler(nf, scale)
        self.conv_hr = conv3x3(nf, nf)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        lr = self.blocks(lrelu(self.conv_first(x)))
        return lr, self.conv_hr(self.upsample(lr))


class STFI(nn.Module):
    """Spatial-temporal feature interpolation: Mnet, and Pnet's LR and HR branches joined by shared blocks."""

    def __init__(self, nf: int, blocks: int, scale: int) -> None:
        super().__init__()
        self.scale = scale
        self.mnet = nn.Sequential(
            conv3x3(5, nf), nn.LeakyReLU(0.1), ResidualBlock(nf), ResidualBlock(nf), conv3x3(nf, nf)
        )
        self.pnet_lr_head = conv3x3(3 * nf, nf)
        self.pnet_hr_head = conv3x3(3 * nf, nf)
        self.pnet_shared = nn.Sequential(*(ResidualBlock(nf) for _ in range(blocks)))
        self.pnet_lr_tail = conv3x3(2 * nf, nf)
        self.pnet_hr_tail = conv3x3(2 * nf, nf)

    def _branch(self, head: nn.Conv2d, tail: nn.Conv2d, motion, before, after) -> torch.Tensor:
        x = lrelu(head(torch.cat([motion, before, after], 1)))
        return tail(torch.cat([x, self.pnet_shared(x)], 1))

    def forward(
        self, lr: tuple[torch.Tensor, torch.Tensor], hr: tuple[torch.Tensor, torch.Tensor],
        to_before: torch.Tensor, to_after: torch.Tensor, tau: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
        """Features of the frames before/after (repeated per time), LR flows from each time to them,
        ``tau`` ``[N, 1, 1, 1]`` -> the LR and HR features at those times."""
        h, w = to_before.shape[-2:]
        time_plane = tau.to(to_before.dtype).expand(-1, 1, h, w)
        motion = self.mnet(torch.cat([to_before, to_after, time_plane], 1))
        lr_mid = self._branch(
            self.pnet_lr_head, self.pnet_lr_tail, motion, warp(lr[0], to_before), warp(lr[1], to_after)
        )
        big = hr[0].shape[-2:]
        hr_before, hr_after = resize_flow(to_before, big), resize_flow(to_after, big)
        motion_hr = F.interpolate(motion, size=big, mode="bilinear", align_corners=False)
        hr_mid = self._branch(
            self.pnet_hr_head, self.pnet_hr_tail, motion_hr, warp(hr[0], hr_before), warp(hr[1], hr_after)
        )
        return lr_mid, hr_mid


class DeformAlign(nn.Module):
    """A 3x3 modulated deformable convolution whose offsets and masks are given."""

    deform_conv: DeformConv = staticmethod(deform_conv2d_torch)

    def __init__(self, nf: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(nf, nf, 3, 3))
        self.bias = nn.Parameter(torch.zeros(nf))
        nn.init.kaiming_uniform_(self.weight, a=5**0.5)

    def forward(self, x: torch.Tensor, offset: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.deform_conv(x, offset.contiguous(), mask.contiguous(), self.weight, self.bias, padding=1)


class STLR(nn.Module):
    """Spatial-temporal local refinement of every LR and HR feature from its two temporal neighbours."""

    def __init__(self, nf: int, groups: int, scale: int) -> None:
        super().__init__()
        self.scale = scale
        self.offset_channels = 18 * groups
        self.lr_offsets = nn.Sequential(*_conv_chain([2 * nf, nf, 27 * groups]))
        self.hr_offsets = nn.Sequential(*_conv_chain([2 * nf, nf, 27 * groups]))
        o = self.offset_channels
        self.inet_mix = conv3x3(2 * o, o)
        self.inet_lr = conv3x3(2 * o, o)
        self.inet_hr = conv3x3(2 * o, o)
        self.lr_align, self.hr_align = DeformAlign(nf), DeformAlign(nf)
        self.lr_fusion = nn.Sequential(*_conv_chain([3 * nf, nf, nf, nf, nf]))
        self.hr_fusion = nn.Sequential(*_conv_chain([3 * nf, nf, nf, nf, nf]))
        _shrink(self.lr_offsets[-1], self.hr_offsets[-1], self.inet_lr, self.inet_hr)  # start near plain convs
        _shrink(self.lr_fusion[-1], self.hr_fusion[-1])  # and near the identity

    def _offsets(
        self, predictor: nn.Sequential, x: torch.Tensor, neighbours: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        out = predictor(torch.cat([x.repeat(2, 1, 1, 1), neighbours], 1))
        return out[:, : self.offset_channels], torch.sigmoid(out[:, self.offset_channels :])

    def forward(self, lr: torch.Tensor, hr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``lr`` ``[B, N, C, h, w]``, ``hr`` ``[B, N, C, sh, sw]`` -> both refined."""
        b, n = lr.shape[:2]
        before = [max(i - 1, 0) for i in range(n)]  # the ends are their own neighbours
        after = [min(i + 1, n - 1) for i in range(n)]

        def stack(x):  # the frames, and their neighbours before then after, batched as [2BN, ...]
            return x.flatten(0, 1), torch.cat([x[:, before].flatten(0, 1), x[:, after].flatten(0, 1)], 0)

        lr_x, lr_nb = stack(lr)
        hr_x, hr_nb = stack(hr)
        s_lr, m_lr = self._offsets(self.lr_offsets, lr_x, lr_nb)
        s_hr, m_hr = self._offsets(self.hr_offsets, hr_x, hr_nb)
        # Inet: both offset sets in LR pixels at LR size, mixed, then each refined by the mix.
        mix = lrelu(self.inet_mix(torch.cat([s_lr, F.avg_pool2d(s_hr, self.scale) / self.scale], 1)))
        s_lr = s_lr + self.inet_lr(torch.cat([mix, s_lr], 1))
        # The mix is in LR pixels: HR offsets move `scale` times as many pixels for the same motion.
        mix_hr = self.scale * F.interpolate(mix, size=s_hr.shape[-2:], mode="bilinear", align_corners=False)
        s_hr = s_hr + self.inet_hr(torch.cat([mix_hr, s_hr], 1))
        lr_out = self._fuse(self.lr_fusion, lr_x, self.lr_align(lr_nb, s_lr, m_lr))
        hr_out = self._fuse(self.hr_fusion, hr_x, self.hr_align(hr_nb, s_hr, m_hr))
        return lr_out.unflatten(0, (b, n)), hr_out.unflatten(0, (b, n))

    @staticmethod
    def _fuse(fusion: nn.Sequential, x: torch.Tensor, aligned: torch.Tensor) -> torch.Tensor:
        before, after = aligned.chunk(2, 0)
        return x + fusion(torch.cat([x, before, after], 1))


class SAGELayer(nn.Module):
    """GraphSAGE with a weighted-mean aggregator: ``W_self h_v + W_neigh sum_u w_vu h_u``."""

    def __init__(self, nf: int) -> None:
        super().__init__()
        self.self_weight = nn.Linear(nf, nf)
        self.neighbour_weight = nn.Linear(nf, nf, bias=False)

    def forward(self, nodes: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        return self.self_weight(nodes) + self.neighbour_weight(weights @ nodes)


class STGR(nn.Module):
    """Spatial-temporal global refinement: a graph over all LR and HR frame features."""

    def __init__(self, nf: int, layers: int, scale: int) -> None:
        super().__init__()
        self.scale = scale
        self.edge_weight = nn.Parameter(torch.ones(3))  # (E_F, E_P, E_T) -> edge logit
        self.sage = nn.ModuleList(SAGELayer(nf) for _ in range(layers))

    def forward(self, lr: torch.Tensor, hr: torch.Tensor, times: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``lr`` ``[B, N, C, h, w]``, ``hr`` ``[B, N, C, sh, sw]``, ``times`` ``[N]`` -> both refined."""
        b, n, c, h, w = lr.shape
        hr_small = F.avg_pool2d(hr.flatten(0, 1), self.scale).view(b, n, c, h, w)
        pixels = torch.cat([lr, hr_small], 1).float().flatten(3)  # [B, 2N, C, hw]
        nodes = torch.cat([lr.mean((-2, -1)), hr.mean((-2, -1))], 1).float()  # [B, 2N, C]
        unit = F.normalize(nodes, dim=-1)
        frame_sim = unit @ unit.transpose(1, 2)
        unit_px = F.normalize(pixels, dim=2)
        pixel_sim = torch.einsum("bucp,bvcp->buv", unit_px, unit_px) / pixels.shape[-1]
        t = torch.cat([times, times]).to(nodes)
        closeness = 1 - torch.sigmoid((t[:, None] - t[None, :]).abs())
        logits = self.edge_weight[0] * frame_sim + self.edge_weight[1] * pixel_sim + self.edge_weight[2] * closeness
        weights = torch.softmax(logits.masked_fill(~self._edges(n, nodes.device), float("-inf")), dim=-1)
        x = nodes
        for i, layer in enumerate(self.sage):
            x = layer(x, weights)
            if i < len(self.sage) - 1:
                x = lrelu(x)
        gate = x.to(lr.dtype)[..., None, None]
        return lr + lr * gate[:, :n], hr + hr * gate[:, n:]

    @staticmethod
    def _edges(n: int, device: torch.device) -> torch.Tensor:
        """Nodes 0..N-1 are LR, N..2N-1 HR: same resolution (other frames), or the counterpart."""
        resolution = torch.arange(2 * n, device=device) // n
        frame = torch.arange(2 * n, device=device) % n
        same_res = (resolution[:, None] == resolution[None, :]) & (frame[:, None] != frame[None, :])
        counterpart = (frame[:, None] == frame[None, :]) & (resolution[:, None] != resolution[None, :])
        return same_res | counterpart


class STINet(VideoSRNet):
    """x``scale`` in space, x``fps_x`` in time: ``[B, T, 3, h, w]`` -> ``[B, fps_x(T-1)+1, 3, sh, sw]``;
    made for fps_x 2, 4 and 6 (``registry.ARCHITECTURES["stinet"]``)."""

    loss_description = (
        "Charbonnier (output and phase-1 LR/HR) + 0.1 motion consistency + 0.1 flow photometric (no perceptual term)"
    )
    RECONSTRUCTION_LOSSES = ("charbonnier", "l2")

    def __init__(
        self, *, nf: int = 64, sr_blocks: int = 26, pnet_blocks: int = 5, lr_modules: int = 4, groups: int = 8,
        gcn_layers: int = 4, flow_nf: int = 32, flow_levels: int = 3, scale: int = 4, global_residual: bool = True,
        reconstruction_loss: str = "charbonnier",
    ) -> None:  # fmt: skip
        """``reconstruction_loss``: ``"charbonnier"`` (the shipped weights' training) or ``"l2"`` (the
        paper's squared L2, Sec. 3.6) for the output and phase-1 terms; it changes training only."""
        super().__init__()
        if reconstruction_loss not in self.RECONSTRUCTION_LOSSES:
            raise ValueError(f"reconstruction_loss is 'charbonnier' or 'l2', got {reconstruction_loss!r}")
        self.reconstruction_loss = reconstruction_loss
        if reconstruction_loss == "l2":
            self.loss_description = self.loss_description.replace(
                "Charbonnier (output and phase-1 LR/HR)", "squared L2 (output and phase-1 LR/HR, the paper's)"
            )
        if scale < 2 or scale & (scale - 1):
            raise ValueError(f"STINet upsamples by pixel shuffles x2: scale must be a power of two, got {scale}")
        if nf % groups:
            raise ValueError(f"nf={nf} does not split into {groups} deformable groups")
        self.scale, self.flow_levels = scale, flow_levels
        self.size_multiple = 2 ** (flow_levels - 1)  # the flow pyramid halves the frames flow_levels - 1 times
        self.flow = FlowNet(flow_nf, flow_levels, zero_start=False)  # its photometric loss needs a live flow
        self.ssr = SpatialSR(nf, sr_blocks, scale)
        self.stfi = STFI(nf, pnet_blocks, scale)
        self.phase1_lr_out = nn.Conv2d(nf, 3, 1)
        self.phase1_hr_out = nn.Conv2d(nf, 3, 1)
        self.stlr = nn.ModuleList(STLR(nf, groups, scale) for _ in range(lr_modules))
        self.stgr = STGR(nf, gcn_layers, scale)
        self.recon_lr_up = Upsampler(nf, scale)
        self.recon_lr_out = nn.Conv2d(nf, 3, 1)
        self.recon_hr_out = nn.Conv2d(nf, 3, 1)
        self.global_residual = global_residual
        if global_residual:
            self.baseline = Classic(scale=scale)
            # Start close to classic: the network's images enter as small residuals.
            _shrink(self.recon_lr_out, self.recon_hr_out, self.phase1_lr_out, self.phase1_hr_out)

    def forward(self, frames: torch.Tensor, fps_x: int = 2) -> torch.Tensor:
        return self._run(frames, fps_x)["output"]

    def _run(self, frames: torch.Tensor, fps_x: int) -> dict[str, Any]:
        """The output, the phase-1 LR and HR images, and the LR input flows (for the losses)."""
        b, t = frames.shape[:2]
        if t < 2:
            raise ValueError(f"STINet needs at least 2 frames, got {t}")
        k = fps_x
        lr_key, hr_key = self.ssr(frames.flatten(0, 1))
        lr_key, hr_key = lr_key.unflatten(0, (b, t)), hr_key.unflatten(0, (b, t))
        first, second = frames[:, :-1].flatten(0, 1), frames[:, 1:].flatten(0, 1)
        both = self.flow(torch.cat([first, second]), torch.cat([second, first]))  # both directions at once
        f01, f10 = both.chunk(2, 0)  # [B(T-1), 2, hp, wp] each
        images = {"flows": (first, second, f01, f10)}
        if k > 1:
            m = k - 1
            taus = torch.arange(1, k, device=frames.device, dtype=frames.dtype) / k

            def per_time(x):  # [B(T-1), ...] -> [B(T-1)(k-1), ...], each repeated for every time
                return x.unsqueeze(1).expand(-1, m, *x.shape[1:]).flatten(0, 1)

            tau = taus.view(1, m, 1, 1, 1).expand(b * (t - 1), -1, -1, -1, -1).flatten(0, 1)
            to_before, to_after = adapted_flows(tau, per_time(f01), per_time(f10))
            lr_pair = (per_time(lr_key[:, :-1].flatten(0, 1)), per_time(lr_key[:, 1:].flatten(0, 1)))
            hr_pair = (per_time(hr_key[:, :-1].flatten(0, 1)), per_time(hr_key[:, 1:].flatten(0, 1)))
            lr_mid, hr_mid = self.stfi(lr_pair, hr_pair, to_before, to_after, tau)
            lr_seq = interleave(lr_key, lr_mid.view(b, t - 1, m, *lr_mid.shape[1:]))
            hr_seq = interleave(hr_key, hr_mid.view(b, t - 1, m, *hr_mid.shape[1:]))
        else:
            lr_seq, hr_seq = lr_key, hr_key
        n = lr_seq.shape[1]
        images["phase1_lr"] = self.phase1_lr_out(lr_seq.flatten(0, 1)).unflatten(0, (b, n))
        images["phase1_hr"] = self.phase1_hr_out(hr_seq.flatten(0, 1)).unflatten(0, (b, n))

        for module in self.stlr:
            lr_seq, hr_seq = module(lr_seq, hr_seq)
        times = torch.arange(n, device=frames.device, dtype=torch.float32) / k  # in input-frame units
        lr_seq, hr_seq = self.stgr(lr_seq, hr_seq, times)
        out = self.recon_lr_out(self.recon_lr_up(lr_seq.flatten(0, 1))) + self.recon_hr_out(hr_seq.flatten(0, 1))
        out = out.unflatten(0, (b, n))
        if self.global_residual:
            base = self.baseline(frames, fps_x=k)
            out = out + base
            images["phase1_hr"] = images["phase1_hr"] + base
            images["phase1_lr"] = images["phase1_lr"] + blend(frames, k)
        images["output"] = out
        return images

    def training_loss(self, frames: torch.Tensor, target: torch.Tensor, fps_x: int, progress: float) -> torch.Tensor:
        """The reconstruction loss (Charbonnier, or squared L2 with ``reconstruction_loss="l2"``) on the
        output and on the phase-1 images, 0.1 x the motion consistency loss, 0.1 x the flow network's
        photometric loss (see the module docstring)."""
        recon = F.mse_loss if self.reconstruction_loss == "l2" else charbonnier
        run = self._run(frames, fps_x)
        target_lr = F.interpolate(
            target.flatten(0, 1), scale_factor=1 / self.scale, mode="bicubic", antialias=True, align_corners=False
        ).unflatten(0, target.shape[:2])
        loss = recon(run["output"].float(), target)
        loss = loss + recon(run["phase1_hr"].float(), target) + recon(run["phase1_lr"].float(), target_lr)
        loss = loss + MCL_WEIGHT * self.motion_consistency(run["output"], target)
        first, second, f01, f10 = run["flows"]
        photometric = charbonnier(warp(second, f01).float(), first.float()) + charbonnier(
            warp(first, f10).float(), second.float()
        )
        return loss + FLOW_PHOTOMETRIC_WEIGHT * photometric

    def motion_consistency(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """``l_abs + l_rel`` (Eqs. 2, 3) on the flows between frames at distance 1 and 2, estimated
        by the flow network with its parameters detached, at LR size."""
        n = output.shape[1]
        frozen = {name: p.detach() for name, p in self.flow.named_parameters()}

        def flows(video: torch.Tensor, d: int) -> torch.Tensor:
            small = F.avg_pool2d(video.flatten(0, 1), self.scale).unflatten(0, video.shape[:2])
            a, z = small[:, :-d].flatten(0, 1), small[:, d:].flatten(0, 1)
            return functional_call(self.flow, frozen, (a, z)).unflatten(0, (video.shape[0], n - d)).float()

        distances = [d for d in (1, 2) if d < n]
        absolute = output.new_zeros((), dtype=torch.float32)
        predicted = {}
        for d in distances:
            predicted[d] = flows(output, d)
            with torch.no_grad():
                truth = flows(target, d)
            absolute = absolute + F.mse_loss(predicted[d], truth)
        absolute = absolute / len(distances)
        if 2 not in predicted:
            return absolute
        near, far = predicted[1][:, :-1], predicted[2]  # O_{t->t+1} and O_{t->t+2}, t = 0..N-3
        relative = F.relu(torch.sign(near) * (near - far)).mean()
        return absolute + relative
