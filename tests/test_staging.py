"""Staging the training data for a GPU machine in parts (benchmarks/campaign_staging.py): the plan of
which file travels in which call, the manifests, receiving parts on the machine and telling which
arrived; and packing a clip for travel."""

import importlib.util
import json
import sys
from pathlib import Path

import av
import numpy as np
import pytest
from media import make_video, smooth

REPO = Path(__file__).resolve().parent.parent


def _staging():
    spec = importlib.util.spec_from_file_location("campaign_staging", REPO / "benchmarks" / "campaign_staging.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _item(staging, name, size, frames=0):
    return staging.Item(name, f"/src/{name}", size, frames)


def test_the_last_call_holds_what_training_needs_and_earlier_calls_the_rest():
    staging = _staging()
    required = [_item(staging, "av.tar.xz", 50), _item(staging, "eval/e.mkv", 10)]
    training = [_item(staging, f"train/{c}.mp4", size, 10) for c, size in zip("abcde", (30, 50, 40, 60, 20))]
    parts = staging.plan_parts(required, training, room=100)
    assert all(sum(i.bytes for i in part) <= 100 for part in parts)
    assert sorted(i.name for part in parts for i in part) == sorted(i.name for i in required + training)
    # First fit decreasing, the last part first: d (60) and b (50) open parts, c (40) fills the
    # last, a (30) joins d, e (20) joins b.
    assert [[i.name for i in part] for part in parts] == [
        ["train/d.mp4", "train/a.mp4"],
        ["train/b.mp4", "train/e.mp4"],
        ["av.tar.xz", "eval/e.mkv", "train/c.mp4"],
    ]
    summary = staging.plan_summary(parts)
    assert summary["parts"] == 3 and summary["training_frames"] == 50 and summary["training_frames_in_last_call"] == 10
    assert summary["bytes_per_call"] == [90, 70, 100]


def test_what_the_first_call_needs_opens_a_part_of_its_own():
    staging = _staging()
    tool = _item(staging, "av.tar.xz", 50)
    parts = staging.plan_parts([tool], [_item(staging, "train/a.mp4", 30), _item(staging, "train/b.mp4", 40)], 100,
                               first=[tool])  # fmt: skip
    assert [[i.name for i in part] for part in parts] == [["av.tar.xz", "train/a.mp4"], ["av.tar.xz", "train/b.mp4"]]


def test_a_plan_that_cannot_travel_says_why():
    staging = _staging()
    with pytest.raises(staging.PlanError, match="larger than one call holds"):
        staging.plan_parts([], [_item(staging, "train/huge.mp4", 101)], room=100)
    with pytest.raises(staging.PlanError, match="what the training call needs"):
        staging.plan_parts([_item(staging, "a", 60), _item(staging, "b", 60)], [], room=100)
    assert len(staging.plan_parts([_item(staging, "a", 60)], [], room=100)) == 1


def _write(staging, tmp_path, sizes=(300, 200, 250), room=520):
    files = []
    for i, size in enumerate(sizes):
        path = tmp_path / "src" / f"{i}.mp4"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(bytes([i]) * size)
        files.append(staging.Item(f"train/{i}.mp4", str(path), size, frames=10 + i))
    evaluate = tmp_path / "src" / "e.mkv"
    evaluate.write_bytes(b"e" * 20)
    required = [staging.Item("eval/e.mkv", str(evaluate), 20)]
    parts = staging.plan_parts(required, files, room)
    plan = staging.write_parts(parts, tmp_path / "parts", {"licence": "permissive"})
    return parts, plan


def _carry(tmp_path, k):
    """What one call brings: its own part's folder alone."""
    import shutil

    carried = tmp_path / f"carried{k}"
    shutil.copytree(tmp_path / "parts" / str(k), carried / str(k))
    return carried


def test_parts_received_one_call_at_a_time_all_arrive(tmp_path):
    staging = _staging()
    parts, plan = _write(staging, tmp_path)
    assert plan["parts"] == len(parts) == 2 and plan["licence"] == "permissive"
    store = tmp_path / "store"
    for k in (1, 2):
        report = staging.receive(_carry(tmp_path, k), store)
        assert report == {"received": [k], "broken": []}
        assert not (tmp_path / f"carried{k}" / str(k)).exists()  # moved, not copied
    arrived = staging.arrival(store)
    assert arrived["arrived"] == [1, 2] and arrived["missing"] == [] and arrived["files_missing"] == []
    assert arrived["training_frames"] == arrived["training_frames_planned"] == 10 + 11 + 12
    for i, size in enumerate((300, 200, 250)):
        assert (store / "train" / f"{i}.mp4").read_bytes() == bytes([i]) * size


def test_a_part_that_never_came_or_came_broken_is_missing_and_the_rest_is_used(tmp_path):
    staging = _staging()
    parts, _ = _write(staging, tmp_path)
    store = tmp_path / "store"
    last = len(parts)
    assert staging.arrival(store) == {"planned": False, "arrived": [], "missing": [], "training_frames": 0}
    staging.receive(_carry(tmp_path, last), store)  # the earlier call was lost (a machine gone cold)
    arrived = staging.arrival(store)
    assert arrived["arrived"] == [last] and arrived["missing"] == [1]
    in_last = sum(i.frames for i in parts[-1])
    assert arrived["training_frames"] == in_last < arrived["training_frames_planned"]
    # A file cut short on the way: not stored, reported, its part missing.
    carried = _carry(tmp_path, 1)
    victim = next(p for p in (carried / "1" / "train").iterdir())
    victim.write_bytes(victim.read_bytes()[:-7])
    report = staging.receive(carried, store)
    assert report["received"] == [1] and report["broken"] == [f"train/{victim.name}"]
    arrived = staging.arrival(store)
    assert arrived["missing"] == [1] and arrived["files_missing"] == [f"train/{victim.name}"]
    assert not (store / "train" / victim.name).exists()
    assert arrived["training_frames"] == sum(i.frames for part in parts for i in part if i.name != f"train/{victim.name}")


def test_packing_keeps_frames_and_colour_and_copy_is_exact(tmp_path):
    staging = _staging()
    src = tmp_path / "src.mp4"
    make_video(src, frames=12, rate=25, size=(64, 48), content=smooth)
    copied = tmp_path / "copy.mp4"
    assert staging.pack_clip(src, copied, staging.COPY) == 12
    assert copied.read_bytes() == src.read_bytes()
    packed = tmp_path / "packed.mkv"
    assert staging.pack_clip(src, packed, "h264-420-crf18", frames=10) == 10
    with av.open(str(packed)) as c:
        stream = c.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
        assert stream.codec_context.pix_fmt == "yuv420p" and stream.average_rate == 25
    with av.open(str(src)) as c:
        original = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)][:10]
    assert len(frames) == 10
    difference = np.stack(frames).astype(int) - np.stack(original).astype(int)
    assert np.abs(difference).mean() < 3 and np.abs(difference.mean(axis=(0, 1, 2))).max() < 1  # no colour shift
    assert json.dumps(staging.SETTINGS)  # the settings are plain data, recorded as they are
