"""Zooming Slow-Mo (Xiang et al., CVPR 2020 / TPAMI): the reference one-stage STVSR network.

Our own implementation of what the official network computes (../shared/reference/zsm_notes.md),
with the official parameter names, so the authors' checkpoint ``xiang2020zooming.pth`` loads with
``strict=True``. The deformable convolutions run through ``ops.dcn`` (pure PyTorch, or
torchvision's kernel on CUDA): no compiled DCNv2 extension is needed.

Layout: input ``[B, N, 3, H, W]`` RGB in [0, 1], N >= 2, any H and W; output
``[B, 2N-1, 3, 4H, 4W]``, not clamped. Output 2i is input frame i, output 2i+1 the frame halfway
between inputs i and i+1. Every output depends on every input (bidirectional recurrence).

Half precision: nothing here needs float32 under autocast, the ConvLSTM states included (at the
official size, float16 stays 73 dB from float32, bfloat16 53 dB: tests/test_half.py); only the
deformable layers' sampling positions are computed in float32, inside ``ops.dcn``. torchvision's
kernel runs in float32 under CUDA autocast.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from stvsr_cli.models.base import VideoSRNet
from stvsr_cli.models.classic import Classic
from stvsr_cli.models.ops.blocks import ResidualBlock, lrelu
from stvsr_cli.models.ops.dcn import DeformConv, deform_conv2d_torch


def up2(x: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)


def conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride, 1)


class DCNPack(nn.Module):
    """Deformable 3x3 convolution whose offsets and masks come from a separate guide feature.

    ``conv_offset_mask`` gives 3 * groups * 9 channels; the first two thirds, as they are, are the
    offsets, the sigmoid of the last third is the mask (the three chunks are not dy / dx / mask).
    """

    deform_conv: DeformConv = staticmethod(deform_conv2d_torch)

    def __init__(self, nf: int, groups: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(nf, nf, 3, 3))
        self.bias = nn.Parameter(torch.zeros(nf))
        nn.init.kaiming_uniform_(self.weight, a=5**0.5)
        self.conv_offset_mask = conv3x3(nf, 3 * groups * 9)
        nn.init.zeros_(self.conv_offset_mask.weight)  # start as a plain convolution (zero offsets)
        nn.init.zeros_(self.conv_offset_mask.bias)

    def forward(self, x: torch.Tensor, guide: torch.Tensor) -> torch.Tensor:
        out = self.conv_offset_mask(guide)
        third = out.shape[1] // 3
        offset, mask = out[:, : 2 * third], torch.sigmoid(out[:, 2 * third :])
        return self.deform_conv(x, offset.contiguous(), mask.contiguous(), self.weight, self.bias, padding=1)


class PCDAlign(nn.Module):
    """Two-way pyramid, cascading, deformable alignment of two frames' feature pyramids.

    Branch ``_1`` aligns A guided by (A, B), branch ``_2`` aligns B guided by (B, A); the result is
    both level-1 alignments concatenated (2 * nf channels).
    """

    def __init__(self, nf: int, groups: int) -> None:
        super().__init__()
        for s in ("1", "2"):
            for name, cin in (("L3_offset_conv1", 2), ("L3_offset_conv2", 1), ("L2_offset_conv1", 2),
                              ("L2_offset_conv2", 2), ("L2_offset_conv3", 1), ("L2_fea_conv", 2),
                              ("L1_offset_conv1", 2), ("L1_offset_conv2", 2), ("L1_offset_conv3", 1),
                              ("L1_fea_conv", 2)):  # fmt: skip
                setattr(self, f"{name}_{s}", conv3x3(cin * nf, nf))
            for level in ("L3", "L2", "L1"):
                setattr(self, f"{level}_dcnpack_{s}", DCNPack(nf, groups))

    def _branch(self, a: list[torch.Tensor], b: list[torch.Tensor], s: str) -> torch.Tensor:
        m = lambda name: getattr(self, f"{name}_{s}")  # noqa: E731
        o3 = lrelu(m("L3_offset_conv1")(torch.cat([a[2], b[2]], 1)))
        o3 = lrelu(m("L3_offset_conv2")(o3))
        a3 = lrelu(m("L3_dcnpack")(a[2], o3))
        o2 = lrelu(m("L2_offset_conv1")(torch.cat([a[1], b[1]], 1)))
        o2 = lrelu(m("L2_offset_conv2")(torch.cat([o2, up2(o3) * 2], 1)))
        o2 = lrelu(m("L2_offset_conv3")(o2))
        a2 = m("L2_dcnpack")(a[1], o2)
        a2 = lrelu(m("L2_fea_conv")(torch.cat([a2, up2(a3)], 1)))
        o1 = lrelu(m("L1_offset_conv1")(torch.cat([a[0], b[0]], 1)))
        o1 = lrelu(m("L1_offset_conv2")(torch.cat([o1, up2(o2) * 2], 1)))
        o1 = lrelu(m("L1_offset_conv3")(o1))
        a1 = m("L1_dcnpack")(a[0], o1)
        return m("L1_fea_conv")(torch.cat([a1, up2(a2)], 1))

    def forward(self, a: list[torch.Tensor], b: list[torch.Tensor]) -> torch.Tensor:
        return torch.cat([self._branch(a, b, "1"), self._branch(b, a, "2")], 1)


class Pyramid(nn.Module):
    """Levels 2 and 3 of a feature pyramid (level 1 is the feature itself, no activation)."""

    def __init__(self, nf: int) -> None:
        super().__init__()
        self.fea_L2_conv1 = conv3x3(nf, nf, stride=2)
        self.fea_L2_conv2 = conv3x3(nf, nf)
        self.fea_L3_conv1 = conv3x3(nf, nf, stride=2)
        self.fea_L3_conv2 = conv3x3(nf, nf)

    def pyramid(self, l1: torch.Tensor) -> list[torch.Tensor]:
        l2 = lrelu(self.fea_L2_conv2(lrelu(self.fea_L2_conv1(l1))))
        l3 = lrelu(self.fea_L3_conv2(lrelu(self.fea_L3_conv1(l2))))
        return [l1, l2, l3]


class StateAlign(Pyramid):
    """Aligns a recurrent state to the current input: own pyramids, own PCD, own 1x1 fusion."""

    def __init__(self, nf: int, groups: int) -> None:
        super().__init__(nf)
        self.pcd_align = PCDAlign(nf, groups)
        self.fusion = nn.Conv2d(2 * nf, nf, 1)

    def forward(self, x: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        return self.fusion(self.pcd_align(self.pyramid(x), self.pyramid(state)))


class ConvLSTMCell(nn.Module):
    def __init__(self, nf: int) -> None:
        super().__init__()
        self.conv = conv3x3(2 * nf, 4 * nf)


class DeformableConvLSTM(nn.Module):
    """One-layer ConvLSTM whose hidden and cell states are aligned to each input before the gates."""

    def __init__(self, nf: int, groups: int) -> None:
        super().__init__()
        self.cell_list = nn.ModuleList([ConvLSTMCell(nf)])
        self.pcd_h = StateAlign(nf, groups)
        self.pcd_c = StateAlign(nf, groups)

    def forward(self, sequence: list[torch.Tensor]) -> list[torch.Tensor]:
        h = torch.zeros_like(sequence[0])
        c = torch.zeros_like(sequence[0])
        outputs = []
        for x in sequence:  # the zero states at step 0 are aligned too, as the official network does
            h_aligned, c_aligned = self.pcd_h(x, h), self.pcd_c(x, c)
            i, f, o, g = torch.chunk(self.cell_list[0].conv(torch.cat([x, h_aligned], 1)), 4, dim=1)
            c = torch.sigmoid(f) * c_aligned + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
            outputs.append(h)
        return outputs


class BiDeformableConvLSTM(nn.Module):
    """The same recurrent net run forwards and over the reversed sequence, merged by a 1x1 conv."""

    def __init__(self, nf: int, groups: int) -> None:
        super().__init__()
        self.forward_net = DeformableConvLSTM(nf, groups)
        self.conv_1x1 = nn.Conv2d(2 * nf, nf, 1)

    def forward(self, sequence: list[torch.Tensor]) -> list[torch.Tensor]:
        forwards = self.forward_net(sequence)
        backwards = self.forward_net(sequence[::-1])[::-1]
        return [self.conv_1x1(torch.cat([f, b], 1)) for f, b in zip(forwards, backwards, strict=True)]


class ZoomingSlowMo(VideoSRNet):
    """Zooming Slow-Mo; defaults are the official checkpoint's configuration (11,102,771 parameters)."""

    size_multiple = 4  # the feature pyramid's two stride-2 levels

    def __init__(
        self, *, nf: int = 64, groups: int = 8, front_rbs: int = 5, back_rbs: int = 40, global_residual: bool = False
    ) -> None:
        """``global_residual`` is our addition, off in the official configuration: the network then
        predicts a correction to bicubic upscaling and linear blending (``classic``), so training
        starts near that baseline instead of from nothing. It adds no parameters."""
        super().__init__()
        self.conv_first = conv3x3(3, nf)
        self.feature_extraction = nn.Sequential(*[ResidualBlock(nf) for _ in range(front_rbs)])
        self.fea_L2_conv1 = conv3x3(nf, nf, stride=2)
        self.fea_L2_conv2 = conv3x3(nf, nf)
        self.fea_L3_conv1 = conv3x3(nf, nf, stride=2)
        self.fea_L3_conv2 = conv3x3(nf, nf)
        self.pcd_align = PCDAlign(nf, groups)
        self.fusion = nn.Conv2d(2 * nf, nf, 1)
        self.ConvBLSTM = BiDeformableConvLSTM(nf, groups)
        self.recon_trunk = nn.Sequential(*[ResidualBlock(nf) for _ in range(back_rbs)])
        self.upconv1 = conv3x3(nf, nf * 4)
        self.upconv2 = conv3x3(nf, 64 * 4)
        self.HRconv = conv3x3(64, 64)
        self.conv_last = conv3x3(64, 3)
        self.baseline = Classic(scale=4) if global_residual else None
        # ``run`` pads with zeros as the official test scripts do; with the classic residual it
        # replicates the edge, which leaves the bicubic baseline (clamped at the border) unchanged.
        self.pad_mode = "replicate" if global_residual else "constant"

    def forward(self, frames: torch.Tensor, fps_x: int = 2) -> torch.Tensor:
        b, n, c, h, w = frames.shape
        if n < 2:
            raise ValueError("Zooming Slow-Mo needs at least two input frames")
        if fps_x != 2:
            raise ValueError(f"Zooming Slow-Mo makes x2 in time, not x{fps_x}")
        if h % self.size_multiple or w % self.size_multiple:
            raise ValueError(f"frame sizes must be multiples of {self.size_multiple}, got {h}x{w}: use run()")
        x = frames.reshape(b * n, c, h, w)

        l1 = self.feature_extraction(lrelu(self.conv_first(x)))
        l2 = lrelu(self.fea_L2_conv2(lrelu(self.fea_L2_conv1(l1))))
        l3 = lrelu(self.fea_L3_conv2(lrelu(self.fea_L3_conv1(l2))))
        levels = [lvl.view(b, n, *lvl.shape[1:]) for lvl in (l1, l2, l3)]

        sequence = []
        for i in range(n - 1):
            a = [lvl[:, i] for lvl in levels]
            nxt = [lvl[:, i + 1] for lvl in levels]
            sequence += [a[0], self.fusion(self.pcd_align(a, nxt))]
        sequence.append(levels[0][:, n - 1])

        features = torch.stack(self.ConvBLSTM(sequence), 1).view(b * (2 * n - 1), -1, h, w)
        out = self.recon_trunk(features)
        out = lrelu(F.pixel_shuffle(self.upconv1(out), 2))
        out = lrelu(F.pixel_shuffle(self.upconv2(out), 2))
        out = self.conv_last(lrelu(self.HRconv(out)))
        out = out.view(b, 2 * n - 1, 3, 4 * h, 4 * w)
        if self.baseline is not None:
            out = out + self.baseline(frames, fps_x=2)
        return out
