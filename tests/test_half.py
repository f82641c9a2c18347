"""Half precision checked on the CPU before any GPU sees it: every shipped model, and zsm at its
official size (random weights made to behave like trained ones), under float16 and bfloat16
autocast against float32, on one window of the example clip: no inf or NaN, and a PSNR no more
than a few dB below what was measured when these tests were written.

float16 convolutions are slow on this CPU (torch has no fast kernel for them here: 1-4 minutes a
model at 64x64), so float16 runs on 16x16 crops; bfloat16 on the usual 64x64 (zsm: 32x32). The same
comparison on CUDA is tests/test_cuda.py's.
"""

import pytest
import torch
from precision import SHIPPED, autocast_vs_cpu

# PSNR (dB) of each model's autocast output against its float32 output, measured on the 2-core
# development machine (torch 2.14.1, 2026-11-30; davsr and tpsr re-measured 2026-12-05 after their retraining). On the H200 (torch 2.11, float16 at 64x64) the
# shipped models measured 83-100 dB in float16 and 64-84 dB in bfloat16: the same picture.
MEASURED = {
    torch.float16: {
        "davsr": 106.2, "stinet": 106.9, "stvun": 90.8, "stvun-gpu": 83.2, "stvun-film": 81.4, "tpsr": 88.0,
        "zsm-lite-cpu": 90.8, "zsm": 73.3,
    },
    torch.bfloat16: {
        "davsr": 77.4, "stinet": 85.3, "stvun": 64.1, "stvun-gpu": 60.8, "stvun-film": 72.4, "tpsr": 70.9,
        "zsm-lite-cpu": 75.7, "zsm": 53.3,
    },
}  # fmt: skip
MARGIN = 6.0  # dB below the measurement still passes (other CPUs and torch versions round differently)
CROP = {torch.float16: 16, torch.bfloat16: None}  # None: precision.crop_for's size


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("name", [*SHIPPED, "zsm"])
def test_half_precision_keeps_the_picture(name, dtype):
    assert name in MEASURED[dtype], f"measure {name} in {dtype} and record it in MEASURED"
    value, _ = autocast_vs_cpu(name, "cpu", dtype, crop=CROP[dtype])  # also: no inf/NaN in the raw output
    assert value >= MEASURED[dtype][name] - MARGIN, f"{name} in {dtype}: {value:.1f} dB"


def test_every_shipped_model_is_measured():
    assert set(SHIPPED) | {"zsm"} == set(MEASURED[torch.float16]) == set(MEASURED[torch.bfloat16])
