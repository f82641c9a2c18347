import pytest
import torch
import torch.nn.functional as F

from stvsr_cli.models.classic import Classic


def direct(frames: torch.Tensor, scale: int, k: int) -> list[torch.Tensor]:
    """The classic baseline written out one frame at a time."""
    up = [
        F.interpolate(f[None], scale_factor=scale, mode="bicubic", align_corners=False)[0].clamp(0, 1) for f in frames
    ]
    out = []
    for i in range(len(up) - 1):
        for s in range(k):
            out.append((1 - s / k) * up[i] + (s / k) * up[i + 1])
    out.append(up[-1])
    return out


@pytest.mark.parametrize("scale,k,n", [(4, 2, 4), (2, 3, 3), (3, 1, 2), (1, 4, 2), (4, 2, 1)])
def test_classic_is_bicubic_then_linear_blend(scale, k, n):
    torch.manual_seed(0)
    frames = torch.rand(n, 3, 7, 9)
    out = Classic(scale=scale)(frames[None], fps_x=k)[0]
    expected = direct(frames, scale, k)
    assert out.shape == (len(expected), 3, 7 * scale, 9 * scale)
    for got, want in zip(out, expected):
        torch.testing.assert_close(got, want, atol=1e-6, rtol=0)


def test_classic_output_stays_in_range_where_bicubic_overshoots():
    frames = torch.zeros(1, 2, 3, 8, 8)
    frames[..., 4:] = 1.0  # a hard edge: bicubic rings past 0 and 1
    out = Classic(scale=4)(frames, fps_x=2)
    assert out.min() >= 0 and out.max() <= 1
