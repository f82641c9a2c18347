"""STVUN (Kang et al., ECCV 2020): space-time video upsampling at any intermediate time.

Our own implementation of the paper's design (Kim et al., "Space-Time Video Upsampling", ECCV 2020):

- **Encoder**, shared by all frames: a 3x3 convolution, then ``levels`` dense blocks (64 channels,
  3x3, LeakyReLU 0.1) at the LR resolution; each block's output is one level of features.
- **EFST** (early fusion with spatio-temporal weights), one instance shared by all levels: the
  frames' features are fused by a 1x1 convolution (N*C -> C); each frame gets a confidence map
  ``sigmoid(<theta(e_t), delta(E)>)`` (Eq. 1, dot product over channels) that re-weights its
  features; a two-level pyramid (max and average pooling) over the re-weighted features gives
  ``alpha`` and ``beta``, and the fused features are ``alpha * E + beta`` (Eq. 3). No frame is
  aligned to another.
- **Time**: a flow between the two frames around time t, turned into flows from t to each of them
  by the paper's quadratic formula (Eq. 4); the two frames' features (every level) and pixels are
  backward-warped and averaged (Eqs. 5, 6). t enters nowhere else, so any t in (0, 1) works.
- **Decoder**, shared by the space and the space-time pass: per level, a dense block over
  ``cat(features of the frame, guide)``; the guide is the fused features (space pass) or the space
  pass's decoded features of the frame before t (space-time pass, the paper's D); a head of two
  3x3 convolutions and PixelShuffle(4) gives a residual added to the upsampled (warped) LR frame.

Layout: input ``[B, N, 3, h, w]`` in [0, 1] with N = ``frames`` (the EFST fusion is sized for it);
``forward(frames, times=[...])`` gives ``[B, len(times), 3, 4h, 4w]``, one frame per time (a
position from 0 to N-1: integers are the input frames, fractions between them), or with
``fps_x=k`` every time ``j/k``.

Params beyond the sizes (``nf``, ``levels``, ``frames``, ``flow_nf``, ``scale``), each defaulting
to what the shipped weights (stvun-cpu, stvun-gpu, stvun-film) were trained with:

- ``efst_kernel`` (3): the kernel of EFST's theta and delta; 1 is the paper's (Eq. 1: "single
  convolutional layer with filter size 1 x 1"). Only their weights change shape, so weights trained
  at one size do not load into the other.
- ``vsr_pretrain`` (0.0): the share of a ``stvsr train`` run spent on the paper's VSR pre-training
  (section 3.3: the loss on the input-position frames only, so the flow network is idle), the
  learning-rate schedule restarting for the joint stage after it; 0 trains jointly from the start.
  Training only: inference is the same either way.

Deviations from the paper
-------------------------

Each kept on purpose; the reason follows.

- **Which outputs a window decodes.** The paper feeds 7 frames and decodes the centre frame and
  the times after it (section 3.1, Fig. 2: X3 and T in [3, 4]); a video would be covered by sliding
  that window one frame at a time, and its EFST is trained to fuse for the centre frame. Ours
  decodes every input position and every gap of its window from one fused guide, edge frames
  included, and is trained on all of them; the pipeline's windows (4 frames, overlap 2 for the
  shipped models) then need half the model calls of a one-frame slide, and the planner still takes
  each output frame from the window in which it is most central. The paper's decoding is one option
  away (``--window 4 --overlap 3``; ``benchmarks/stvun_centre_windows.py`` also pads the clip ends);
  measured, it gains nothing worth its 1.45-2.2x model time (weights/stvun-gpu.md, "Decoding").
- **theta and delta** are 3x3 convolutions (the paper: 1x1). The shipped weights were trained so,
  and a 3x3 confidence sees a frame's neighbourhood, some slack for frames that are not aligned;
  whether it beats 1x1 was not measured (that needs a training run per choice). ``efst_kernel=1``
  builds the paper's.
- **alpha = 2 * sigmoid(.)**: the paper gives Eq. 3 (``alpha * E + beta``) but not how alpha is
  produced or bounded. Ours is a bounded scale in (0, 2), exactly 1 (the fused features unchanged)
  when the layer before it outputs 0; beta is unbounded (two 1x1 convolutions).
- **T_in as an input**: the paper says T_in "is given as an input to the network" but names no
  layer that takes it besides Eq. 4; ours uses t only there (the flows to t, then warping), which
  is also what lets one network serve any t. No time channel is fed to the decoder.
- **Training**: the paper pre-trains the VSR part (encoder and spatial decoder, L_S) for 300K
  iterations, then trains everything with L_M + L_S + L_F. The shipped weights were trained jointly
  from the start (``vsr_pretrain=0``): a short CPU or single-session GPU run has little budget for
  two stages, and joint training worked from the first step (the flow's last layer starts at zero,
  so the untrained model blends the two frames' features rather than warping them at random);
  ``vsr_pretrain`` offers the two stages, not yet tried on shipped weights. The loss is Charbonnier
  on all output frames (input positions and in-between, t drawn from x2, x3 and x4) rather than L1;
  the flow loss L_M, which needs the LR frames between the inputs, is not used.
- **Flow**: a small coarse-to-fine (SpyNet-like) network trained with the model instead of
  PWC-Net (no pretrained weights, no compiled correlation); it runs on the LR frames, and its last
  layer starts at zero (so an untrained model blends the two frames' features).
- **Decoder depth**: one dense block per level (the paper's decoder blocks are deeper, Fig. 3; the
  official code stacks three with up to 512 channels), and a small model (0.95-1.68 M parameters shipped against
  the paper's 30.9 M): sized for CPU training and inference.
- **Base image**: bicubic (the paper says bilinear), so that an untrained residual gives
  ``classic``.
- **Window size**: the shipped models fuse 4 frames (``frames=4``; the paper's 7 is the default):
  a Vimeo septuplet gives 4 input frames at x2, so a 7-frame window would be mostly padding on the
  eval clips, and 4 frames train faster on the CPU.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from stvsr_cli.models.base import VideoSRNet
from stvsr_cli.models.ops.blocks import lrelu
from stvsr_cli.models.ops.losses import charbonnier
from stvsr_cli.models.ops.motion import FlowNet, resize, resize_flow, warp


class DenseBlock(nn.Module):
    """conv3x3(c -> c), then conv3x3 over [input, that] (2c -> out); LeakyReLU after each."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cin, 3, 1, 1)
        self.conv2 = nn.Conv2d(2 * cin, cout, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return lrelu(self.conv2(torch.cat([x, lrelu(self.conv1(x))], 1)))


class EFST(nn.Module):
    """Early fusion with spatio-temporal weights: ``[B, N, C, h, w]`` -> ``[B, C, h, w]``."""

    def __init__(self, nf: int, frames: int, kernel: int = 3) -> None:
        super().__init__()
        self.fusion = nn.Conv2d(frames * nf, nf, 1)
        self.theta = nn.Conv2d(nf, nf, kernel, 1, kernel // 2)  # the paper's Eq. 1: 1x1 (``efst_kernel``)
        self.delta = nn.Conv2d(nf, nf, kernel, 1, kernel // 2)
        self.att1 = nn.Conv2d(frames * nf, nf, 1)
        self.att2 = nn.Conv2d(2 * nf, nf, 1)
        self.att_l1 = nn.Conv2d(nf, nf, 1)
        self.att_l2 = nn.Conv2d(2 * nf, nf, 3, 1, 1)
        self.att_l3 = nn.Conv2d(nf, nf, 3, 1, 1)
        self.att3 = nn.Conv2d(nf, nf, 3, 1, 1)
        self.att4 = nn.Conv2d(nf, nf, 1)
        self.att5 = nn.Conv2d(nf, nf, 3, 1, 1)
        self.add1 = nn.Conv2d(nf, nf, 1)
        self.add2 = nn.Conv2d(nf, nf, 1)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        b, n, c, h, w = feats.shape
        fused = self.fusion(feats.reshape(b, n * c, h, w))
        key = self.delta(fused)
        frames = self.theta(feats.reshape(b * n, c, h, w)).reshape(b, n, c, h, w)
        confidence = torch.sigmoid((frames * key.unsqueeze(1)).sum(2, keepdim=True))  # [B, N, 1, h, w]
        weighted = (feats * confidence).reshape(b, n * c, h, w)
        # Pyramid attention over the weighted features (max and average pooling, two levels).
        att = lrelu(self.att1(weighted))
        att = lrelu(self.att2(torch.cat([F.max_pool2d(att, 3, 2, 1), F.avg_pool2d(att, 3, 2, 1)], 1)))
        low = lrelu(self.att_l1(att))
        low = lrelu(self.att_l2(torch.cat([F.max_pool2d(low, 3, 2, 1), F.avg_pool2d(low, 3, 2, 1)], 1)))
        low = lrelu(self.att_l3(low))
        att = lrelu(self.att3(att)) + resize(low, att.shape[-2:])
        att = lrelu(self.att4(att))
        att = self.att5(resize(att, (h, w)))
        alpha = 2 * torch.sigmoid(att)  # a scale in (0, 2), 1 at zero: our choice, the paper gives no range
        beta = self.add2(lrelu(self.add1(att)))
        return alpha * fused + beta


def flows_at(t: float, f01: torch.Tensor, f10: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The flows from time t to the frames before and after it, from the flows between them (the
    paper's Eq. 4, Super SloMo's quadratic approximation): (f_t->0, f_t->1)."""
    return -(1 - t) * t * f01 + t * t * f10, (1 - t) ** 2 * f01 - t * (1 - t) * f10


class STVUN(VideoSRNet):
    # Any time between two inputs (t enters only the flows), windows of exactly ``frames`` (EFST's
    # fusion is sized for it): registry.ARCHITECTURES["stvun"].

    def __init__(
        self,
        *,
        nf: int = 64,
        levels: int = 4,
        frames: int = 7,
        flow_nf: int = 32,
        scale: int = 4,
        efst_kernel: int = 3,
        vsr_pretrain: float = 0.0,
    ) -> None:
        super().__init__()
        if efst_kernel < 1 or efst_kernel % 2 == 0:
            raise ValueError(f"efst_kernel must be odd and positive, got {efst_kernel}")
        if not 0 <= vsr_pretrain < 1:
            raise ValueError(f"vsr_pretrain is a share of the training run, from 0 to below 1, got {vsr_pretrain}")
        self.nf, self.levels, self.frames, self.scale = nf, levels, frames, scale
        self.vsr_pretrain = vsr_pretrain
        if vsr_pretrain > 0:
            self.stage_ends = (vsr_pretrain,)  # the trainer restarts the learning-rate schedule for the joint stage
        self.conv_first = nn.Conv2d(3, nf, 3, 1, 1)
        self.encoder = nn.ModuleList(DenseBlock(nf, nf) for _ in range(levels))
        self.efst = EFST(nf, frames, efst_kernel)
        self.decoder = nn.ModuleList(DenseBlock(2 * nf, nf) for _ in range(levels))
        self.merge = nn.ModuleList(nn.Conv2d(2 * nf, nf, 1) for _ in range(levels - 1))
        self.head1 = nn.Conv2d(nf, 48, 3, 1, 1)
        self.head2 = nn.Conv2d(48, 3 * scale * scale, 3, 1, 1)
        with torch.no_grad():
            self.head2.weight.mul_(0.1)  # start near the upsampled frame (classic); not zero, which stalls training
        self.flow = FlowNet(flow_nf)

    def forward(self, frames: torch.Tensor, fps_x: int = 2, times: list[float] | None = None) -> torch.Tensor:
        n = frames.shape[1]
        if n != self.frames:
            raise ValueError(f"STVUN was built for windows of {self.frames} frames, got {n}")
        if times is None:
            times = [j / fps_x for j in range(fps_x * (n - 1) + 1)]
        feats = self._encode(frames)
        fused = [self.efst(level) for level in feats]
        space: dict[int, tuple[torch.Tensor, list[torch.Tensor]]] = {}
        flows: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        out = []
        for time in times:
            i = min(math.floor(time), n - 1)
            t = float(time) - i
            if i not in space:
                space[i] = self._decode([level[:, i] for level in feats], fused, frames[:, i])
            picture, decoded = space[i]
            if t < 1e-6:
                out.append(picture)
                continue
            if i not in flows:
                a, z = frames[:, i], frames[:, i + 1]
                flows[i] = (self.flow(a, z), self.flow(z, a))  # f(i->i+1), f(i+1->i)
            to_first, to_second = flows_at(t, *flows[i])
            # A level at another size than the frames needs the flows' vectors rescaled, not only resampled.
            middle = [
                (
                    warp(level[:, i], resize_flow(to_first, level.shape[-2:]))
                    + warp(level[:, i + 1], resize_flow(to_second, level.shape[-2:]))
                )
                / 2
                for level in feats
            ]
            lr_middle = (warp(frames[:, i], to_first) + warp(frames[:, i + 1], to_second)) / 2
            out.append(self._decode(middle, decoded, lr_middle)[0])
        return torch.stack(out, 1)

    def training_loss(self, frames: torch.Tensor, target: torch.Tensor, fps_x: int, progress: float) -> torch.Tensor:
        """Charbonnier on every output frame; during the first ``vsr_pretrain`` share of the run, on the
        input positions only (the paper's VSR pre-training: encoder, EFST and decoder, no flow)."""
        if progress >= self.vsr_pretrain:
            return super().training_loss(frames, target, fps_x, progress)
        n = frames.shape[1]
        output = self.run(frames, fps_x, times=[float(i) for i in range(n)])
        target = target[:, ::fps_x]
        if output.shape != target.shape:
            raise ValueError(f"gives {tuple(output.shape)} for the target {tuple(target.shape)}")
        return charbonnier(output.float(), target)

    def _encode(self, frames: torch.Tensor) -> list[torch.Tensor]:
        b, n, c, h, w = frames.shape
        x = lrelu(self.conv_first(frames.reshape(b * n, c, h, w)))
        levels = []
        for block in self.encoder:
            x = block(x)
            levels.append(x.reshape(b, n, self.nf, h, w))
        return levels

    def _decode(
        self, feats: list[torch.Tensor], guides: list[torch.Tensor], base: torch.Tensor
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The HR picture (residual on the bicubic-upscaled ``base``) and each level's decoded features."""
        decoded = []
        previous = None
        for level, (feat, guide) in enumerate(zip(feats, guides)):
            if previous is not None:
                guide = self.merge[level - 1](torch.cat([previous, guide], 1))
            previous = self.decoder[level](torch.cat([feat, guide], 1))
            decoded.append(previous)
        residual = F.pixel_shuffle(self.head2(lrelu(self.head1(previous))), self.scale)
        up = F.interpolate(base, scale_factor=self.scale, mode="bicubic", align_corners=False)
        return up + residual, decoded
