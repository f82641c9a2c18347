"""The GPU campaign (benchmarks/gpu_campaign.py) is run here in its quick dry-run form (every stage
on the CPU at its smallest sizes, no time box a busy CPU can break), so that the one command a lent
GPU gets cannot rot; its plan of the GPU's time is checked as arithmetic, its time box on a process
that sleeps, and its helpers for the payload on real files. The full dry run (larger sizes, a few
minutes): benchmarks/README.md."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
from media import make_video

REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "benchmarks" / "gpu_campaign.py"
STAGES = ("machine", "pytest", "bench", "dcn", "frames", "probe", "train")  # every stage, the probe too


def _campaign():
    spec = importlib.util.spec_from_file_location("gpu_campaign", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look themselves up there
    spec.loader.exec_module(module)
    return module


def test_dry_run_writes_a_complete_record(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--dry-run", "--quick", "--out", str(out), "--only", ",".join(STAGES)],
        capture_output=True, text=True, timeout=1800,  # a guard against a hang, not a measure of speed
    )  # fmt: skip
    record = json.loads((out / "campaign.json").read_text())
    assert proc.returncode == 0, (record.get("failed_stages"), record.get("error"), proc.stdout[-2000:])
    assert record["complete"] and record["dry_run"] and record["quick"] and not record["failed_stages"]
    stages = record["stages"]
    assert stages["machine"]["torch"] and stages["machine"]["av"]
    assert stages["pytest"]["tests"] > 0  # the CUDA tests were collected (and skipped: no GPU here)
    rows = stages["bench"]["rows"]
    assert len(rows) == stages["bench"]["planned"]
    plain = [r for r in rows if r["plain"]]
    assert plain and all(r["precision"] == "fp32" for r in plain)
    for row in rows:
        assert row["model_useful_fps"] <= row["model_fps"]  # overlap outputs are not counted as useful
        assert row["e2e_frames"] > 0 and row["codec"]
    assert all(c["steps_per_s"] > 0 for c in stages["probe"]["candidates"])
    frames = stages["frames"]["models"]
    assert frames and not any("error" in m for m in frames), frames
    for model in frames:  # a peak per size; for each cap a predicted frame, checked by a call
        assert all(isinstance(v, float) and v > 0 for v in model["peak_gib"].values())
        assert all(entry["tries"] and entry["tries"][0]["ok"] for entry in model["largest"].values())
    train = stages["train"]
    assert train["rc"] == 0 and train["log"][-1]["step"] == train["steps"]
    weights = out / "train" / train["exported"][".safetensors"]
    assert weights.stat().st_size > 0
    parts = sorted((out / "train").glob("checkpoint.pt.part*"))
    assert [p.name for p in parts] == train["checkpoint_parts"]
    # What comes back from the device tool: at most 8 files, each under 16 MB, two folders deep.
    files = [p for p in out.rglob("*") if p.is_file()]
    assert len(files) <= 8 and all(p.stat().st_size < 16 * 10**6 for p in files)
    assert all(len(p.relative_to(out).parts) <= 3 for p in files)
    assert "fits" in record["payload"]


@pytest.mark.parametrize("budget", [560, 565])  # the script's default; benchmarks/README.md's command
@pytest.mark.parametrize("with_probe", [False, True])
def test_the_plan_of_the_gpus_time_adds_up(budget, with_probe):
    """Every stage gets its whole box even when each one before runs out its own, training keeps
    more than a minute and a half, and the call ends inside the device tool's limit even when
    training is stopped at its box (the others' overruns come out of training's time)."""
    campaign = _campaign()
    only = campaign.DEFAULT_STAGES + (("probe",) if with_probe else ())
    boxes = campaign.planned_boxes(budget, only)
    assert set(boxes) == set(only) - {"machine"}
    assert all(boxes[stage] == campaign.BOXES[stage] for stage in boxes if stage != "train")
    assert boxes["train"] >= 100
    assert sum(boxes.values()) + campaign.KEEP["train"] == budget
    assert budget + campaign.STOP_GRACE <= campaign.DEVICE_CALL_LIMIT - 10  # 10 s: unpacking PyAV, the last save
    assert campaign.time_box("bench", 5.0, dry_run=True) == campaign.DRY_BOX  # a dry run is never cut short


def test_a_stage_that_overruns_its_box_is_stopped(tmp_path):
    campaign = _campaign()
    record = campaign.Campaign(tmp_path / "out", dry_run=True, budget=60)
    sleeper = [sys.executable, "-c", "import time; time.sleep(120)"]
    result = campaign.run_boxed(record, "sleeper", sleeper, 1.0)
    assert result["timed_out"] and result["rc"] != 0 and result["seconds"] < 60
    assert not campaign.stage_ok(result)


def test_copy_prefix_keeps_the_first_frames_bit_exact(tmp_path):
    campaign = _campaign()
    src = tmp_path / "src.mp4"
    make_video(src, frames=40, rate=25, size=(64, 48))
    dst = tmp_path / "dst.mp4"
    kept = campaign.copy_prefix(src, dst, 17)
    with av.open(str(dst)) as c:
        cut = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    with av.open(str(src)) as c:
        whole = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert 17 <= len(cut) == kept < 40
    assert all(np.array_equal(a, b) for a, b in zip(cut, whole))  # no re-encoding, no gap


def test_split_file_parts_join_back(tmp_path):
    campaign = _campaign()
    src = tmp_path / "blob"
    data = np.random.default_rng(0).bytes(2500)
    src.write_bytes(data)
    (tmp_path / "out").mkdir()
    names = campaign.split_file(src, tmp_path / "out" / "ckpt", 1000)
    assert names == ["ckpt.part0", "ckpt.part1", "ckpt.part2"]
    assert b"".join((tmp_path / "out" / n).read_bytes() for n in names) == data
    assert campaign.split_file(src, tmp_path / "out" / "ckpt", 5000) == ["ckpt.part0"]  # old parts removed
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["ckpt.part0"]


@pytest.mark.parametrize("result, ok", [
    ({"rc": 0}, True), ({"rc": 1}, False), ({"rc": 0, "timed_out": True}, False),
    ({"rc": 0, "failed": [{"test": "t"}]}, False), ({"rc": 0, "rows": [{"error": "x"}]}, False),
])  # fmt: skip
def test_stage_ok(result, ok):
    assert _campaign().stage_ok(result) is ok


def test_prepare_trims_training_clips_to_fit_and_leaves_out_what_cannot_shrink(tmp_path, monkeypatch):
    """The payload limit is tight (the tree grows): clips are cut shorter, and one already as short
    as a cut can be is left out, rather than cut again forever (it once looped)."""
    campaign = _campaign()
    train, evaluate = tmp_path / "train", tmp_path / "eval"
    train.mkdir()
    evaluate.mkdir()
    for name, frames in (("long.mp4", 60), ("short1.mp4", 16), ("short2.mp4", 16)):
        make_video(train / name, frames=frames, size=(64, 48))
    payload = tmp_path / "payload"
    payload.mkdir()
    (payload / "av.tar.xz").write_bytes(b"stands in for PyAV")
    monkeypatch.setattr(campaign, "PAYLOAD", payload)
    monkeypatch.setattr(campaign, "tracked_bytes", lambda: 0)
    one_short = (train / "short1.mp4").stat().st_size
    monkeypatch.setattr(campaign, "PAYLOAD_LIMIT", 18 + int(1.5 * one_short))  # room for about 1.5 short clips
    report = campaign.prepare(None, train, evaluate, eval_clips=0)
    assert report["fits"], report
    kept = sorted(p.name for p in (payload / "train").iterdir())
    assert kept and len(kept) < 3 and set(kept) == set(report["frames_kept"]), report
    assert all(16 <= frames for frames in report["frames_kept"].values())
