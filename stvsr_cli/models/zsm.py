"""Zooming Slow-Mo (Xiang et al., CVPR 2020 / TPAMI): the reference one-stage STVSR network.

Our own implementation of what the official network computes (the official checkpoint's parameter names and shapes),
with the official parameter names, so the authors' checkpoint ``xiang2020zooming.pth`` loads with
``strict=True``. The deformable convolutions run through ``ops.dcn`` (pure PyTorch, torchvision's
kernel or a Triton one): no compiled DCNv2 extension is needed.

Layout: input ``[B, N, 3, H, W]`` RGB in [0, 1], N >= 2, H and W multiples of 4 (``run`` pads any
size); output ``[B, 2N-1, 3, 4H, 4W]``, not clamped. Output 2i is input frame i, output 2i+1 the
frame halfway between inputs i and i+1. Every output depends on every input (bidirectional
recurrence). Under autocast only the deformable layers' sampling positions stay in float32 (in
``ops.dcn``); torchvision's kernel runs in float32 under CUDA autocast.

Training (``training_loss``): by default the CVPR 2020 objective, Charbonnier (eps 1e-3) on every
output frame (the TPAMI paper's Eq. 7). ``cyclic_loss=True`` adds the TPAMI version's guided feature
interpolation learning (Sec. 3.5, Eqs. 8-10): an **LR synthesis module** rho (``lr_synthesis``:
``lr_synthesis_blocks`` residual blocks, then a 3x3 convolution to RGB) turns a feature map into an
LR frame; the **first-order** term (Eq. 8) compares rho of each interpolated feature (the
``fusion(pcd_align(...))`` output that enters the ConvLSTM in place of a missing frame) with that
frame's LR ground truth; the **second-order** term (Eq. 9) interpolates the interpolated features of
neighbouring gaps again with the same module, giving features at the N - 2 inner input frames,
compared the same way; the loss is ``l_rec + w1 l_i1 + w2 l_i2`` (Eq. 10, ``cyclic_weights``).
rho only serves the loss and is built last, under ``lr_synthesis.``, only with ``cyclic_loss``: the
official state dict still loads with ``strict=True`` (rho keeps its initial weights), so ``stvsr
train --init zsm --params '{"cyclic_loss": true}'`` fine-tunes the CVPR checkpoint with the TPAMI loss.

Deviations from the paper:

- The shipped network is the CVPR 2020 one (the authors' checkpoint has no LR synthesis module);
  the cyclic loss is a training option, off by default. ``global_residual`` is ours, off by default.
- The paper gives no value for k3 (rho's residual blocks) nor for the weights of Eq. 10: ours are
  ``lr_synthesis_blocks=5`` (k1, the feature extractor's count) and ``cyclic_weights=(1.0, 1.0)``.
- Where the paper is not explicit: the LR ground truth of a frame is the HR target shrunk by the
  training data's own downscaler (``evaluation.downscale_tensor``) without its 8-bit rounding, and
  clean whatever ``--degradation`` made the input; the second-order interpolation reuses the
  first-order module; rho has no activation before its output convolution and adds no upsampled copy.
- Charbonnier is per pixel and channel, averaged (Eq. 7's norm inside the root, read per pixel).
- Optimiser and schedule are the trainer's (AdamW, warm-up, cosine decay), not the paper's Adam
  with cosine annealing from 4e-4 to 1e-7 at batch 24 (its Sec. 3.6).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from stvsr_cli.models.base import VideoSRNet
from stvsr_cli.models.classic import Classic
from stvsr_cli.models.ops.blocks import ResidualBlock, lrelu
from stvsr_cli.models.ops.dcn import DeformConv, deform_conv2d_torch
from stvsr_cli.models.ops.losses import charbonnier


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


class LRSynthesis(nn.Sequential):
    """rho of the TPAMI paper (Eqs. 8, 9): residual blocks, then a 3x3 convolution to an LR RGB frame."""

    def __init__(self, nf: int, blocks: int) -> None:
        super().__init__(*[ResidualBlock(nf) for _ in range(blocks)], conv3x3(nf, 3))


def _lr_synthesis_may_be_missing(module: nn.Module, incompatible) -> None:
    """``load_state_dict`` post-hook: a state dict without rho (the official checkpoint) loads
    strictly, rho keeping its weights (rho only serves the training loss); any other key is checked."""
    incompatible.missing_keys[:] = [key for key in incompatible.missing_keys if ".lr_synthesis." not in f".{key}"]


class ZoomingSlowMo(VideoSRNet):
    """Zooming Slow-Mo; defaults are the official checkpoint's configuration (11,102,771 parameters)."""

    size_multiple = 4  # the feature pyramid's two stride-2 levels

    def __init__(
        self, *, nf: int = 64, groups: int = 8, front_rbs: int = 5, back_rbs: int = 40, global_residual: bool = False,
        cyclic_loss: bool = False, lr_synthesis_blocks: int = 5, cyclic_weights: Sequence[float] = (1.0, 1.0),
    ) -> None:  # fmt: skip
        """``global_residual`` is our addition, off in the official configuration: the network then
        predicts a correction to bicubic upscaling and linear blending (``classic``), so training
        starts near that baseline instead of from nothing. It adds no parameters.

        ``cyclic_loss`` (off in the official configuration) trains with the TPAMI paper's cyclic
        interpolation loss: it builds the LR synthesis module (``lr_synthesis_blocks`` residual
        blocks) and weighs the first- and second-order terms by ``cyclic_weights`` (module docstring)."""
        super().__init__()
        if len(cyclic_weights) != 2:
            raise TypeError(f"cyclic_weights takes two numbers (first, second order), got {cyclic_weights!r}")
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
        self.cyclic_weights = (float(cyclic_weights[0]), float(cyclic_weights[1]))
        self.lr_synthesis = None
        if cyclic_loss:  # built last: the rest of the network draws the same initial weights either way
            self.lr_synthesis = LRSynthesis(nf, lr_synthesis_blocks)
            self.register_load_state_dict_post_hook(_lr_synthesis_may_be_missing)
            w1, w2 = self.cyclic_weights
            self.loss_description = (
                f"Charbonnier loss + {w1:g} x first-order + {w2:g} x second-order cyclic interpolation loss "
                f"(Charbonnier at LR through the LR synthesis module, {lr_synthesis_blocks} residual blocks; "
                "TPAMI Eqs. 7-10)"
            )

    def pyramid(self, l1: torch.Tensor) -> list[torch.Tensor]:
        """Levels 1-3 of the top-level feature pyramid (level 1 is ``l1`` itself)."""
        l2 = lrelu(self.fea_L2_conv2(lrelu(self.fea_L2_conv1(l1))))
        l3 = lrelu(self.fea_L3_conv2(lrelu(self.fea_L3_conv1(l2))))
        return [l1, l2, l3]

    def interpolate(self, a: list[torch.Tensor], b: list[torch.Tensor]) -> torch.Tensor:
        """The feature temporal interpolation: the feature halfway between two pyramids'."""
        return self.fusion(self.pcd_align(a, b))

    def forward(self, frames: torch.Tensor, fps_x: int = 2) -> torch.Tensor:
        return self._run(frames, fps_x)[0]

    def _run(self, frames: torch.Tensor, fps_x: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The output, and the interpolated features ``[B, N-1, nf, h, w]`` (``F_2t`` of the paper)."""
        b, n, c, h, w = frames.shape
        if n < 2:
            raise ValueError("Zooming Slow-Mo needs at least two input frames")
        if fps_x != 2:
            raise ValueError(f"Zooming Slow-Mo makes x2 in time, not x{fps_x}")
        if h % self.size_multiple or w % self.size_multiple:
            raise ValueError(f"frame sizes must be multiples of {self.size_multiple}, got {h}x{w}: use run()")
        x = frames.reshape(b * n, c, h, w)

        levels = [
            lvl.view(b, n, *lvl.shape[1:]) for lvl in self.pyramid(self.feature_extraction(lrelu(self.conv_first(x))))
        ]

        sequence, middles = [], []
        for i in range(n - 1):
            a = [lvl[:, i] for lvl in levels]
            nxt = [lvl[:, i + 1] for lvl in levels]
            middles.append(self.interpolate(a, nxt))
            sequence += [a[0], middles[-1]]
        sequence.append(levels[0][:, n - 1])

        features = torch.stack(self.ConvBLSTM(sequence), 1).view(b * (2 * n - 1), -1, h, w)
        out = self.recon_trunk(features)
        out = lrelu(F.pixel_shuffle(self.upconv1(out), 2))
        out = lrelu(F.pixel_shuffle(self.upconv2(out), 2))
        out = self.conv_last(lrelu(self.HRconv(out)))
        out = out.view(b, 2 * n - 1, 3, 4 * h, 4 * w)
        if self.baseline is not None:
            out = out + self.baseline(frames, fps_x=2)
        return out, torch.stack(middles, 1)

    def training_loss(self, frames: torch.Tensor, target: torch.Tensor, fps_x: int, progress: float) -> torch.Tensor:
        """Charbonnier on the output (Eq. 7); with ``cyclic_loss``, plus the weighted first- and
        second-order cyclic interpolation terms (Eq. 10)."""
        if self.lr_synthesis is None:
            return super().training_loss(frames, target, fps_x, progress)
        terms = self.loss_terms(frames, target, fps_x)
        w1, w2 = self.cyclic_weights
        return terms["reconstruction"] + w1 * terms["first_order"] + w2 * terms["second_order"]

    def loss_terms(self, frames: torch.Tensor, target: torch.Tensor, fps_x: int = 2) -> dict[str, torch.Tensor]:
        """``l_rec`` (Eq. 7), ``l_i1`` (Eq. 8) and ``l_i2`` (Eq. 9, zero for two input frames), unweighted,
        float32 scalars; needs ``cyclic_loss``. Takes any frame size (padded as ``run`` pads)."""
        if self.lr_synthesis is None:
            raise ValueError("the cyclic interpolation loss needs a model built with cyclic_loss=True")
        b, n, _, h, w = frames.shape
        m = self.size_multiple
        ph, pw = -h % m, -w % m
        padded = frames
        if ph or pw:
            padded = F.pad(frames.flatten(0, 1), (0, pw, 0, ph), mode=self.pad_mode).unflatten(0, (b, n))
        output, middles = self._run(padded, fps_x)
        output = output[..., : self.scale * h, : self.scale * w]
        if output.shape != target.shape:
            raise ValueError(f"gives {tuple(output.shape)} for the target {tuple(target.shape)}")
        # LR ground truth of every output frame: the data's downscaler, unrounded (module docstring).
        lr_truth = F.interpolate(
            target.flatten(0, 1).float(), scale_factor=1 / self.scale, mode="bicubic", antialias=True,
            align_corners=False,
        ).unflatten(0, target.shape[:2])  # fmt: skip

        def synthesise(features: torch.Tensor) -> torch.Tensor:  # [B, K, nf, hp, wp] -> [B, K, 3, h, w]
            return self.lr_synthesis(features.flatten(0, 1)).unflatten(0, features.shape[:2])[..., :h, :w].float()

        terms = {
            "reconstruction": charbonnier(output.float(), target),
            "first_order": charbonnier(synthesise(middles), lr_truth[:, 1::2]),
        }
        if n < 3:
            terms["second_order"] = terms["first_order"].new_zeros(())
            return terms
        levels = [lvl.unflatten(0, middles.shape[:2]) for lvl in self.pyramid(middles.flatten(0, 1))]
        again = self.interpolate(
            [lvl[:, :-1].flatten(0, 1) for lvl in levels], [lvl[:, 1:].flatten(0, 1) for lvl in levels]
        )
        terms["second_order"] = charbonnier(synthesise(again.unflatten(0, (b, n - 2))), lr_truth[:, 2:-1:2])
        return terms
