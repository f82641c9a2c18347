"""Quality metrics the way the STVSR papers compute them: PSNR and SSIM on the BT.601 luma (Y).

All functions take RGB tensors ``[..., 3, H, W]`` of 8-bit values (uint8, or floats holding
integers in [0, 255]) and compute in float64, so results do not depend on the device.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def rgb_to_y(rgb: torch.Tensor) -> torch.Tensor:
    """BT.601 studio-range luma in [16, 235]: Y = 16 + 65.481 R + 128.553 G + 24.966 B, RGB in [0, 1]."""
    r, g, b = (rgb.double() / 255.0).unbind(-3)
    return 16.0 + 65.481 * r + 128.553 * g + 24.966 * b


def psnr_y(output: torch.Tensor, target: torch.Tensor) -> float:
    """PSNR in dB of the Y channel (peak 255), no border crop; ``inf`` for identical frames."""
    mse = torch.mean((rgb_to_y(output) - rgb_to_y(target)) ** 2).item()
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


def _gaussian(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def _blur(x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """The 2-D Gaussian filter, as two 1-D passes (the window is separable), valid positions only."""
    channels = x.shape[1]
    x = F.conv2d(x, g.view(1, 1, 1, -1).expand(channels, 1, 1, -1), groups=channels)
    return F.conv2d(x, g.view(1, 1, -1, 1).expand(channels, 1, -1, 1), groups=channels)


def ssim_y(output: torch.Tensor, target: torch.Tensor) -> float:
    """SSIM of the Y channel in [0, 255]: 11x11 Gaussian window (sigma 1.5), C1 = (0.01*255)^2,
    C2 = (0.03*255)^2, averaged over the positions where the window fits inside the frame."""
    a = rgb_to_y(output).reshape(-1, 1, *output.shape[-2:])
    b = rgb_to_y(target).reshape(-1, 1, *target.shape[-2:])
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mu_a, mu_b, aa, bb, ab = _blur(torch.cat([a, b, a * a, b * b, a * b], 1), _gaussian().to(a.device)).unbind(1)
    var_a, var_b, cov = aa - mu_a**2, bb - mu_b**2, ab - mu_a * mu_b
    ssim_map = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return ssim_map.mean().item()
