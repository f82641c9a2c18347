"""STVUN (Kang et al., ECCV 2020): space-time video upsampling at any intermediate time.

Our own implementation of the paper's design (../shared/papers/stvun_space_time_upsampling_eccv2020.txt):

- **Encoder**, shared by all frames: a 3x3 convolution, then ``levels`` dense blocks (64 channels,
  3x3, LeakyReLU 0.1) at the LR resolution; each block's output is one level of features.
- **EFST** (early fusion with spatio-temporal weights), one instance shared by all levels: the
  frames' features are fused by a 1x1 convolution (N*C -> C); each frame gets a confidence map
  ``sigmoid(<theta(e_t), delta(E)>)`` (dot product over channels) that re-weights its features; a
  two-level pyramid (max and average pooling) over the re-weighted features gives ``alpha`` and
  ``beta``, and the fused features are ``alpha * E + beta``. No frame is aligned to another.
- **Time**: a flow between the two frames around time t, turned into flows from t to each of them
  by the paper's quadratic formula (Eq. 4); the two frames' features (every level) and pixels are
  backward-warped and averaged (Eqs. 5, 6). t enters nowhere else, so any t in (0, 1) works.
- **Decoder**, shared by the space and the space-time pass: per level, a dense block over
  ``cat(features of the frame, guide)``; the guide is the fused features (space pass) or the space
  pass's decoded features of the frame before t (space-time pass, the paper's D); a head of two
  3x3 convolutions and PixelShuffle(4) gives a residual added to the upsampled (warped) LR frame.

Where the paper is silent, the simplest choice, said here: the flow is a small coarse-to-fine
(SpyNet-like) network trained with the model instead of PWC-Net (no pretrained weights, no
compiled correlation); it runs on the LR frames, its last layer starts at zero (so an untrained
model blends the two frames' features). The decoder's block is one dense block per level (the
official code stacks three with up to 512 channels). The base image is bicubic (the paper says
bilinear), so that an untrained residual gives ``classic``. The paper's flow loss L_M, which needs
the LR frames between the inputs, is not used; training uses the reconstruction loss on all
frames (input positions and in-between) with t drawn from several factors.

Layout: input ``[B, N, 3, h, w]`` in [0, 1] with N = ``frames`` (the EFST fusion is sized for it);
``forward(frames, times=[...])`` gives ``[B, len(times), 3, 4h, 4w]``, one frame per time (a
position from 0 to N-1: integers are the input frames, fractions between them), or with
``fps_x=k`` every time ``j/k``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from stvsr_cli.models.base import VideoSRNet
from stvsr_cli.models.ops.blocks import lrelu
from stvsr_cli.models.ops.motion import FlowNet, resize, warp


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

    def __init__(self, nf: int, frames: int) -> None:
        super().__init__()
        self.fusion = nn.Conv2d(frames * nf, nf, 1)
        self.theta = nn.Conv2d(nf, nf, 3, 1, 1)
        self.delta = nn.Conv2d(nf, nf, 3, 1, 1)
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
        alpha = 2 * torch.sigmoid(att)
        beta = self.add2(lrelu(self.add1(att)))
        return alpha * fused + beta


def flows_at(t: float, f01: torch.Tensor, f10: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The flows from time t to the frames before and after it, from the flows between them (the
    paper's Eq. 4, Super SloMo's quadratic approximation): (f_t->0, f_t->1)."""
    return -(1 - t) * t * f01 + t * t * f10, (1 - t) ** 2 * f01 - t * (1 - t) * f10


class STVUN(VideoSRNet):
    time_factors = None  # any integer factor
    arbitrary_times = True  # t enters only the flows: any time between two inputs
    window_param = "frames"  # EFST fuses exactly ``frames`` inputs

    def __init__(self, *, nf: int = 64, levels: int = 4, frames: int = 7, flow_nf: int = 32, scale: int = 4) -> None:
        super().__init__()
        self.nf, self.levels, self.frames, self.scale = nf, levels, frames, scale
        self.conv_first = nn.Conv2d(3, nf, 3, 1, 1)
        self.encoder = nn.ModuleList(DenseBlock(nf, nf) for _ in range(levels))
        self.efst = EFST(nf, frames)
        self.decoder = nn.ModuleList(DenseBlock(2 * nf, nf) for _ in range(levels))
        self.merge = nn.ModuleList(nn.Conv2d(2 * nf, nf, 1) for _ in range(levels - 1))
        self.head1 = nn.Conv2d(nf, 48, 3, 1, 1)
        self.head2 = nn.Conv2d(48, 3 * scale * scale, 3, 1, 1)
        with torch.no_grad():
            self.head2.weight.mul_(0.1)  # start near the upsampled frame (classic); not zero, which stalls training
        self.flow = FlowNet(flow_nf)

    def forward(self, frames: torch.Tensor, fps_x: int = 2, times: list[float] | None = None) -> torch.Tensor:
        b, n, c, h, w = frames.shape
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
            i = min(int(math.floor(time)), n - 1)
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
            middle = [
                (
                    warp(level[:, i], resize(to_first, level.shape[-2:]))
                    + warp(level[:, i + 1], resize(to_second, level.shape[-2:]))
                )
                / 2
                for level in feats
            ]
            lr_middle = (warp(frames[:, i], to_first) + warp(frames[:, i + 1], to_second)) / 2
            out.append(self._decode(middle, decoded, lr_middle)[0])
        return torch.stack(out, 1)

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
