"""Differentiable image losses the networks' own ``training_loss`` use (the trainer imports them
from here too: models sit below training)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def charbonnier(output: torch.Tensor, target: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """A smooth L1: ``mean(sqrt((output - target)^2 + eps^2))``."""
    return torch.sqrt((output - target) ** 2 + eps * eps).mean()


def _window(size: int, sigma: float, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    x = torch.arange(size, device=device, dtype=dtype) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def ssim(output: torch.Tensor, target: torch.Tensor, size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Mean SSIM of images ``[..., C, H, W]`` in [0, 1], per channel, Gaussian window (valid positions);
    the window shrinks to fit images smaller than ``size``."""
    size = min(size, output.shape[-1], output.shape[-2])
    c = output.shape[-3]
    a = output.reshape(-1, c, *output.shape[-2:]).float()
    b = target.reshape(-1, c, *target.shape[-2:]).float()
    g = _window(size, sigma, a.device, a.dtype)
    stack = torch.cat([a, b, a * a, b * b, a * b], 1)
    k = 5 * c
    blurred = F.conv2d(stack, g.view(1, 1, 1, -1).expand(k, 1, 1, -1), groups=k)
    blurred = F.conv2d(blurred, g.view(1, 1, -1, 1).expand(k, 1, -1, 1), groups=k)
    mu_a, mu_b, aa, bb, ab = blurred.split(c, dim=1)
    var_a, var_b, cov = aa - mu_a**2, bb - mu_b**2, ab - mu_a * mu_b
    c1, c2 = 0.01**2, 0.03**2
    return (((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))).mean()
