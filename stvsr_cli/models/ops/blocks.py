"""Building blocks several architectures share (their parameter names are part of the checkpoints)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def lrelu(x: torch.Tensor, slope: float = 0.1) -> torch.Tensor:
    """The leaky ReLU every architecture here uses (0.1 unless its paper says otherwise)."""
    return F.leaky_relu(x, slope)


class ResidualBlock(nn.Module):
    """``x + conv2(relu(conv1(x)))``: 3x3 convolutions, no batch norm, no activation after the sum
    (EDSR's block, the one ZSM, TPSR, STINet and DAVSR use)."""

    def __init__(self, nf: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(nf, nf, 3, 1, 1)
        self.conv2 = nn.Conv2d(nf, nf, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.relu(self.conv1(x)))
