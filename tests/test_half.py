"""Half precision checked on the CPU before any GPU sees it: each shipped model under float16 and
bfloat16 autocast against float32, on real frames of the example clip: no inf or NaN, and a PSNR
no more than a few dB below what was measured when these tests were written.

Two sizes, so that no CPU pays for kernels it lacks. Where torch has no fast kernels for a
half type (``cpu_autocast_is_fast``: bfloat16 wants AVX-512, float16 AVX512-FP16 or AMX-FP16),
its convolutions run 15-50x slower than float32 (a 2-core AVX2 CPU once spent 40 minutes here):

- ``tiny``, on every CPU: an 8x8 crop, the shortest window each model takes (seconds a model);
- ``full``, only where the type is fast: the sizes of the first measurements, float16 on a 16x16
  crop and bfloat16 on 64x64, one whole window; and zsm at its official size (random weights made
  to behave like trained ones; bfloat16 on 32x32), which is zsm-lite-cpu's code, 11x the weights.

The GPU campaign compares every model, zsm included, on CUDA at 64x64 (zsm 32x32; tests/test_cuda.py).
"""

import pytest
import torch
from precision import SHIPPED, autocast_vs_cpu, shortest_window

from stvsr_cli.training.trainer import cpu_autocast_is_fast

# PSNR (dB) of each model's autocast output against its float32 output, measured on the 2-core
# development machine (AMD EPYC, Zen 5: AVX-512 with AVX512_BF16, no AVX512_FP16; torch 2.14.1) on
# 2026-12-07 (stvun-open: 2026-12-08). "tiny" also with AVX2 only (ONEDNN_MAX_CPU_ISA=AVX2
# ATEN_CPU_CAPABILITY=avx2): within 0.3 dB; the lower of the two, rounded down. On the
# H200 (torch 2.11, float16 at 64x64) the shipped models measured 83-100 dB in float16 and
# 64-84 dB in bfloat16: the same picture.
MEASURED = {
    "tiny": {
        torch.float16: {
            "davsr": 100.5, "stinet": 106.7, "stvun": 94.9, "stvun-gpu": 88.1, "stvun-film": 84.0, "tpsr": 88.8,
            "zsm-lite-cpu": 95.3, "stvun-open": 95.2,
        },
        torch.bfloat16: {
            "davsr": 80.8, "stinet": 90.0, "stvun": 86.9, "stvun-gpu": 80.7, "stvun-film": 79.5, "tpsr": 71.7,
            "zsm-lite-cpu": 79.5, "stvun-open": 83.1,
        },
    },
    "full": {
        torch.float16: {
            "davsr": 106.2, "stinet": 106.8, "stvun": 91.0, "stvun-gpu": 83.3, "stvun-film": 81.4, "tpsr": 88.0,
            "zsm-lite-cpu": 90.7, "zsm": 73.2, "stvun-open": 88.5,
        },
        torch.bfloat16: {
            "davsr": 77.3, "stinet": 85.3, "stvun": 75.3, "stvun-gpu": 71.9, "stvun-film": 72.4, "tpsr": 70.8,
            "zsm-lite-cpu": 75.7, "zsm": 53.3, "stvun-open": 73.3,
        },
    },
}  # fmt: skip
MARGIN = 6.0  # dB below the measurement still passes (other CPUs and torch versions round differently)
TINY_CROP = 8
FULL_CROP = {torch.float16: 16, torch.bfloat16: None}  # None: precision.crop_for's size (64; zsm 32)
DTYPES = [torch.float16, torch.bfloat16]


def _size(tier: str, name: str, dtype: torch.dtype) -> dict:
    if tier == "tiny":
        return {"crop": TINY_CROP, "frames": shortest_window(name)}
    return {"crop": FULL_CROP[dtype], "frames": None}  # frames None: the model's whole window


@pytest.mark.parametrize("dtype", DTYPES, ids=["fp16", "bf16"])
@pytest.mark.parametrize(
    "tier, name", [("tiny", name) for name in SHIPPED] + [("full", name) for name in [*SHIPPED, "zsm"]]
)
def test_half_precision_keeps_the_picture(tier, name, dtype):
    assert name in MEASURED[tier][dtype], f"measure {name} in {dtype} at the {tier} size and record it in MEASURED"
    if tier == "full" and not cpu_autocast_is_fast(dtype):
        slow = str(dtype).removeprefix("torch.")
        pytest.skip(f"{slow} is slow on this CPU ({torch.backends.cpu.get_cpu_capability()}): the tiny size only")
    value, _ = autocast_vs_cpu(name, "cpu", dtype, **_size(tier, name, dtype))  # also: no inf/NaN in the raw output
    assert value >= MEASURED[tier][dtype][name] - MARGIN, f"{name} in {dtype} at the {tier} size: {value:.1f} dB"


def test_every_shipped_model_is_measured():
    for dtype in DTYPES:
        assert set(MEASURED["tiny"][dtype]) == set(SHIPPED)
        assert set(MEASURED["full"][dtype]) == set(SHIPPED) | {"zsm"}
