"""Half precision asked for on the CPU: refused in one line where it would only be slow (``--half``:
float16, slow on nearly every CPU; ``train --amp fp16``), and one line of warning where it runs but
far slower than float32 on this CPU (``train --amp bf16`` without AVX-512). No traceback anywhere."""

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from media import make_training_clips, make_video

from stvsr_cli.cli import main
from stvsr_cli.training.trainer import amp_slowdown_note, cpu_autocast_is_fast

REFUSED = "stvsr: error: --half needs a CUDA device (drop --half to run in float32 on the CPU)"
TINY_ZSM = {"nf": 8, "groups": 8, "front_rbs": 1, "back_rbs": 1}


def _error_lines(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("stvsr: error:")]


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clips")
    make_video(folder / "a.mp4", frames=3, size=(16, 12))
    make_video(folder / "b.mp4", frames=3, size=(16, 12))
    return folder


@pytest.mark.parametrize("command", ["upscale", "upscale-classic", "batch", "eval", "bench"])
def test_half_on_the_cpu_is_refused_in_one_line(command, clips, tmp_path):
    out = tmp_path / "out"
    args = {
        "upscale": ["upscale", str(clips / "a.mp4"), str(tmp_path / "a.mp4")],
        "upscale-classic": ["upscale", str(clips / "a.mp4"), str(tmp_path / "a.mp4"), "--model", "classic"],
        "batch": ["batch", str(clips), str(out)],  # once, not once per file
        "eval": ["eval", str(clips)],
        "bench": ["bench", "--size", "16x12", "--frames", "3"],
    }[command]
    result = CliRunner().invoke(main, [*args, "--device", "cpu", "--half"])
    assert result.exit_code == 2, result.stderr
    assert _error_lines(result) == [REFUSED]
    assert "Traceback" not in result.stderr + result.stdout
    assert not (tmp_path / "a.mp4").exists() and (not out.exists() or not any(out.rglob("*")))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_training_clips(tmp_path_factory.mktemp("train"), frames=9)


def _train(data, out, amp: str):
    return CliRunner().invoke(
        main,
        ["train", "--arch", "zsm", "--params", json.dumps(TINY_ZSM), "--data", str(data), "--out", str(out),
         "--steps", "1", "--batch", "1", "--patch", "16", "--device", "cpu", "--amp", amp, "-q"],
    )  # fmt: skip


def test_train_amp_fp16_on_the_cpu_is_refused_in_one_line(data, tmp_path):
    result = _train(data, tmp_path / "run", "fp16")
    assert result.exit_code == 2
    assert _error_lines(result) == ["stvsr: error: --amp fp16 needs a CUDA device (use --amp bf16 or none on the CPU)"]
    assert "Traceback" not in result.stderr and not (tmp_path / "run").exists()


@pytest.mark.parametrize("capability, warned", [("AVX2", True), ("AVX512", False)])
def test_train_amp_bf16_on_the_cpu_warns_in_one_line_where_it_is_slow(data, tmp_path, monkeypatch, capability, warned):
    """The note comes before the first step; the steps themselves are stubbed out (one bfloat16 step
    of even a tiny zsm takes a minute on a CPU without fast bfloat16: what the note is about)."""
    from stvsr_cli.training import export, trainer

    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
    monkeypatch.setattr(trainer.Trainer, "run", lambda self, cache, on_log=None: [])
    files = {"weights": Path("w.safetensors"), "card": Path("w.md"), "registry": Path("w.toml")}
    done = export.Export(**files, result=None, baseline=None)
    monkeypatch.setattr(export, "export", lambda trainer, cache, eval_data: done)
    result = _train(data, tmp_path / "run", "bf16")
    assert result.exit_code == 0, result.stderr
    notes = [line for line in result.stderr.splitlines() if "--amp bf16" in line]
    want = (
        "stvsr: note: --amp bf16 will be far slower than float32 on this CPU (AVX2: no fast bfloat16 "
        "convolutions); --amp none trains faster here"
    )
    assert notes == ([want] if warned else [])  # shown even with -q
    assert "Traceback" not in result.stderr and "wrote w.safetensors" in result.stdout


@pytest.mark.parametrize("capability, features, fast_bf16, fast_fp16", [
    ("AVX2", {"avx512_bf16": True, "avx512_fp16": True}, False, False),  # ATen limited to AVX2: its kernels decide
    ("AVX512", {}, True, False),  # oneDNN's bfloat16 on AVX-512: 2x float32 at most (measured)
    ("AVX512", {"avx512_bf16": True}, True, False),  # float16 stays slow (measured on Zen 5)
    ("AVX512", {"avx512_fp16": True}, True, True),
    ("AVX512", {"amx_fp16": True}, True, True),
    ("DEFAULT", {}, False, False),
    ("SVE256", {}, False, False),
])  # fmt: skip
def test_which_cpus_run_half_precision_fast(monkeypatch, capability, features, fast_bf16, fast_fp16):
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: features)
    assert cpu_autocast_is_fast(torch.bfloat16) is fast_bf16
    assert cpu_autocast_is_fast(torch.float16) is fast_fp16
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert (amp_slowdown_note(torch.bfloat16, cpu) is None) is fast_bf16
    assert amp_slowdown_note(torch.bfloat16, cuda) is None and amp_slowdown_note(None, cpu) is None
